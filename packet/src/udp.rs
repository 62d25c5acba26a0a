//! UDP headers (RFC 768). A zero checksum over IPv4 means "none" and is kept as such.

use crate::{be16, checksum, put16, Error, Result};

/// A view over a UDP datagram; the constructor checks the length field against the slice.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = 8;
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = be16(b, 4) as usize;
        if l < Self::HEADER_LEN || l > b.len() {
            return Err(Error::BadLength);
        }
        Ok(UdpPacket { buf })
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    #[inline(always)]
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize == Self::HEADER_LEN
    }
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[Self::HEADER_LEN..self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, p: u16) {
        self.set_port(0, p)
    }
    pub fn set_dst_port(&mut self, p: u16) {
        self.set_port(2, p)
    }
    fn set_port(&mut self, off: usize, p: u16) {
        let b = self.buf.as_mut();
        if be16(b, 6) == 0 {
            put16(b, off, p);
        } else {
            crate::tcp::set_port(b, off, 6, p);
            fix_zero(b);
        }
    }
    /// Folds an address change into the checksum (unless the checksum is absent).
    pub fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let b = self.buf.as_mut();
        if be16(b, 6) != 0 {
            let c = checksum::update(be16(b, 6), old, new);
            put16(b, 6, c);
            fix_zero(b);
        }
    }
}

/// A computed UDP checksum of zero is sent as all ones (RFC 768), since zero means "none".
fn fix_zero(b: &mut [u8]) {
    if be16(b, 6) == 0 {
        put16(b, 6, 0xffff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_field_is_checked() {
        let mut b = [0u8, 53, 0x30, 0x39, 0, 12, 0, 0, 1, 2, 3, 4];
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (53, 12345, &[1u8, 2, 3, 4][..])
        );
        b[5] = 13;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadLength
        );
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadLength
        );
    }

    #[test]
    fn zero_checksum_stays_zero_on_rewrite() {
        let mut b = [0u8, 53, 0x30, 0x39, 0, 8, 0, 0];
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.set_dst_port(80);
        u.update_checksum_for_addr(&[1, 2, 3, 4], &[5, 6, 7, 8]);
        assert_eq!((u.dst_port(), u.checksum()), (80, 0));
    }
}
