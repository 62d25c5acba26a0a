//! Ethernet II frames, the 802.1Q tag, and MAC addresses.

use crate::{be16, put16, Error, Result};
use core::fmt;
use core::str::FromStr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error for a MAC address that is not six colon-separated hex octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMacAddr;

impl fmt::Display for BadMacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected six hex octets separated by ':', like 02:00:00:00:00:01")
    }
}

impl FromStr for MacAddr {
    type Err = BadMacAddr;
    fn from_str(s: &str) -> core::result::Result<Self, BadMacAddr> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or(BadMacAddr)?;
            if p.is_empty() || p.len() > 2 {
                return Err(BadMacAddr);
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| BadMacAddr)?;
        }
        if parts.next().is_some() {
            return Err(BadMacAddr);
        }
        Ok(MacAddr(out))
    }
}

/// A view over an Ethernet II header and what follows it.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(EthernetFrame { buf })
    }
    pub fn dst_addr(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    pub fn src_addr(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Self::HEADER_LEN..]
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, m: MacAddr) {
        self.buf.as_mut()[0..6].copy_from_slice(&m.0);
    }
    pub fn set_src_addr(&mut self, m: MacAddr) {
        self.buf.as_mut()[6..12].copy_from_slice(&m.0);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buf.as_mut(), 12, t);
    }
}

/// A view over an 802.1Q tag (the four bytes after the 0x8100 ethertype: TCI, inner type).
#[derive(Debug, Clone)]
pub struct VlanTag<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const LEN: usize = 4;
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < Self::LEN {
            return Err(Error::Truncated);
        }
        Ok(VlanTag { buf })
    }
    /// Tag control information: PCP (3 bits), DEI (1), VLAN id (12).
    pub fn tci(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }
    pub fn inner_ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
}

/// Tags the untagged Ethernet frame in `frame[..len]` with VLAN `vlan` (priority 0), in
/// place: the addresses stay, the 802.1Q header goes after them, and the rest moves four
/// bytes on. `frame` must be exactly `len + 4` bytes and `len` at least a header; false
/// (frame untouched) otherwise.
pub fn insert_vlan_tag(frame: &mut [u8], len: usize, vlan: u16) -> bool {
    if len < EthernetFrame::<&[u8]>::HEADER_LEN || frame.len() != len + VlanTag::<&[u8]>::LEN {
        return false;
    }
    frame.copy_within(12..len, 16);
    put16(frame, 12, ETHERTYPE_VLAN);
    put16(frame, 14, vlan & 0x0fff);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vlan_tag_goes_after_the_addresses() {
        let mut f = [0u8; 18];
        f[..14].copy_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x06]);
        assert!(insert_vlan_tag(&mut f, 14, 100));
        assert_eq!(
            f,
            [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0, 100, 0x08, 0x06]
        );
        assert!(!insert_vlan_tag(&mut f, 13, 100));
        assert!(!insert_vlan_tag(&mut [0u8; 20], 14, 100));
    }

    #[test]
    fn mac_parse_and_display_round_trip() {
        let m: MacAddr = "02:00:0a:ff:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "0g:00:00:00:00:01",
            "002:0:0:0:0:1",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(BadMacAddr), "{bad}");
        }
    }

    #[test]
    fn short_frame_is_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(),
            Error::Truncated
        );
        let f = EthernetFrame::new_checked(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0][..])
            .unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.src_addr().0, [7, 8, 9, 10, 11, 12]);
        assert!(f.payload().is_empty());
    }
}
