//! ARP over Ethernet for IPv4 (RFC 826).

use crate::ethernet::MacAddr;
use crate::{be16, Error, Result};
use core::net::Ipv4Addr;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view over an Ethernet/IPv4 ARP packet (hardware length 6, protocol length 4).
#[derive(Debug, Clone)]
pub struct ArpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const LEN: usize = 28;
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::LEN {
            return Err(Error::Truncated);
        }
        // Only Ethernet (1) / IPv4 (0x0800) with 6- and 4-byte addresses is meaningful here.
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(Error::BadHeaderLength);
        }
        Ok(ArpPacket { buf })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn sender_mac(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[8], b[9], b[10], b[11], b[12], b[13]])
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }
    pub fn target_mac(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[18], b[19], b[20], b[21], b[22], b[23]])
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_and_refuses_other_hardware() {
        let mut b = [0u8; 28];
        b[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        b[14..18].copy_from_slice(&[192, 0, 2, 7]);
        b[24..28].copy_from_slice(&[192, 0, 2, 1]);
        let a = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_ip(), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(a.target_ip(), Ipv4Addr::new(192, 0, 2, 1));
        b[1] = 6;
        assert!(ArpPacket::new_checked(&b[..]).is_err());
        assert_eq!(
            ArpPacket::new_checked(&b[..27]).unwrap_err(),
            Error::Truncated
        );
    }
}
