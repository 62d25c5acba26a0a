//! TCP headers (RFC 9293): ports, flags and checksum; and the options a SYN carries
//! ([`SynOptions`], read by a checked walk that never reads past the header).

use crate::{be16, be32, checksum, put16, Error, Result};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A view over a TCP segment; the constructor checks the data offset lies within the slice.
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const MIN_HEADER_LEN: usize = 20;
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = (b[12] >> 4) as usize * 4;
        if hl < Self::MIN_HEADER_LEN || hl > b.len() {
            return Err(Error::BadHeaderLength);
        }
        Ok(TcpPacket { buf })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn seq_number(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    pub fn ack_number(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        (self.buf.as_ref()[12] >> 4) as usize * 4
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// The option bytes (between the fixed header and the data offset).
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[Self::MIN_HEADER_LEN..self.header_len()]
    }
    /// What the options of a SYN (or SYN-ACK) offer.
    pub fn syn_options(&self) -> SynOptions {
        SynOptions::parse(self.options())
    }
}

/// Option kinds (RFC 9293, 7323, 2018).
pub const OPT_END: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WINDOW_SCALE: u8 = 3;
pub const OPT_SACK_PERMITTED: u8 = 4;
pub const OPT_SACK: u8 = 5;
pub const OPT_TIMESTAMPS: u8 = 8;

/// The options of a SYN that matter to a peer answering it: the maximum segment size, the
/// window scale shift (RFC 7323 caps it at 14), whether SACK is permitted, and the
/// timestamps. Options malformed or cut short end the walk; what was read before stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

impl SynOptions {
    pub fn parse(opts: &[u8]) -> SynOptions {
        let mut o = SynOptions::default();
        let mut i = 0;
        while i < opts.len() {
            let kind = opts[i];
            if kind == OPT_END {
                break;
            }
            if kind == OPT_NOP {
                i += 1;
                continue;
            }
            let Some(&len) = opts.get(i + 1) else {
                break;
            };
            let len = len as usize;
            if len < 2 || i + len > opts.len() {
                break;
            }
            let v = &opts[i + 2..i + len];
            match (kind, v.len()) {
                (OPT_MSS, 2) => o.mss = Some(be16(v, 0)),
                (OPT_WINDOW_SCALE, 1) => o.window_scale = Some(v[0].min(14)),
                (OPT_SACK_PERMITTED, 0) => o.sack_permitted = true,
                (OPT_TIMESTAMPS, 8) => o.timestamps = Some((be32(v, 0), be32(v, 4))),
                _ => {}
            }
            i += len;
        }
        o
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port, updating the checksum incrementally.
    pub fn set_src_port(&mut self, p: u16) {
        set_port(self.buf.as_mut(), 0, 16, p)
    }
    /// Sets the destination port, updating the checksum incrementally.
    pub fn set_dst_port(&mut self, p: u16) {
        set_port(self.buf.as_mut(), 2, 16, p)
    }
    /// Folds an address change (old → new, 4 or 16 bytes) into the checksum, as the
    /// pseudo header covers the addresses.
    pub fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let b = self.buf.as_mut();
        let c = checksum::update(be16(b, 16), old, new);
        put16(b, 16, c);
    }
}

/// Rewrites a 16-bit port at `off` and the checksum at `csum_off`. Shared by TCP and UDP.
pub(crate) fn set_port(b: &mut [u8], off: usize, csum_off: usize, p: u16) {
    let old = be16(b, off);
    put16(b, off, p);
    let c = checksum::update16(be16(b, csum_off), old, p);
    put16(b, csum_off, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_offset_is_checked() {
        let mut b = [0u8; 24];
        b[12] = 0x60; // 24 bytes
        b[13] = SYN | ACK;
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.header_len(), t.flags()), (24, SYN | ACK));
        assert!(t.payload().is_empty());
        b[12] = 0x70;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).unwrap_err(),
            Error::Truncated
        );
    }
}

#[cfg(test)]
mod syn_option_tests {
    use super::*;

    #[test]
    fn a_linux_syns_options_are_read() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7: what Linux sends.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(
            SynOptions::parse(&opts),
            SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some((1, 0)),
            }
        );
    }

    #[test]
    fn malformed_options_end_the_walk_without_reading_past_them() {
        // MSS, then a length of 0, then what would be window scale.
        let o = SynOptions::parse(&[2, 4, 0x02, 0x18, 3, 0, 3, 3, 9]);
        assert_eq!((o.mss, o.window_scale), (Some(536), None));
        // Cut short inside an option.
        assert_eq!(SynOptions::parse(&[2, 4, 0x05]).mss, None);
        assert_eq!(SynOptions::parse(&[2]), SynOptions::default());
        // A scale past 14 is read as 14 (RFC 7323 2.3); END stops the walk.
        assert_eq!(
            SynOptions::parse(&[3, 3, 20, 0, 2, 4, 1, 1]).window_scale,
            Some(14)
        );
        assert_eq!(SynOptions::parse(&[0, 2, 4, 1, 1]).mss, None);
        // Every prefix of every byte string of length 3 parses without panicking.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 4, 10, 255] {
                let _ = SynOptions::parse(&[a, b, a]);
            }
        }
    }
}
