//! TCP headers (RFC 9293): ports, flags and checksum; options are skipped by data offset.

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
