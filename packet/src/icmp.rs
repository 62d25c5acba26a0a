//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: type, code, checksum, and the quoted
//! datagram inside error messages. Both share the same 8-byte header layout.

use crate::{be16, checksum, put16, Error, Result};

pub const V4_ECHO_REPLY: u8 = 0;
pub const V4_DEST_UNREACHABLE: u8 = 3;
pub const V4_ECHO_REQUEST: u8 = 8;
pub const V4_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable code 4: fragmentation needed and DF set (path MTU discovery).
pub const V4_CODE_FRAG_NEEDED: u8 = 4;

pub const V6_DEST_UNREACHABLE: u8 = 1;
pub const V6_PACKET_TOO_BIG: u8 = 2;
pub const V6_TIME_EXCEEDED: u8 = 3;
pub const V6_ECHO_REQUEST: u8 = 128;
pub const V6_ECHO_REPLY: u8 = 129;
pub const V6_NEIGHBOR_SOLICIT: u8 = 135;
pub const V6_NEIGHBOR_ADVERT: u8 = 136;

/// A view over an ICMP or ICMPv6 message.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const HEADER_LEN: usize = 8;
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(IcmpPacket { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    pub fn msg_code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// The second 32-bit word (MTU for "packet too big", next-hop MTU for "frag needed").
    pub fn rest_of_header(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[4], b[5], b[6], b[7]]
    }
    /// For error messages: the quoted invoking datagram.
    pub fn data(&self) -> &[u8] {
        &self.buf.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[Self::HEADER_LEN..]
    }
    /// Recomputes the ICMPv4 checksum over the whole message.
    pub fn fill_checksum_v4(&mut self) {
        self.fill_checksum_with(0)
    }
    /// Recomputes the checksum starting from a pseudo-header sum (ICMPv6).
    pub fn fill_checksum_with(&mut self, pseudo: u64) {
        let b = self.buf.as_mut();
        put16(b, 2, 0);
        let c = checksum::finish(pseudo, b);
        put16(b, 2, c);
    }
    /// Folds an address change into the checksum (ICMPv6's pseudo header covers addresses).
    pub fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let b = self.buf.as_mut();
        let c = checksum::update(be16(b, 2), old, new);
        put16(b, 2, c);
    }
}

/// True for ICMPv4 messages that quote an invoking datagram.
pub fn v4_is_error(t: u8) -> bool {
    matches!(t, V4_DEST_UNREACHABLE | V4_TIME_EXCEEDED | 4 | 5 | 12)
}

/// True for ICMPv6 messages that quote an invoking datagram (types below 128).
pub fn v6_is_error(t: u8) -> bool {
    t < 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_fill_verifies() {
        let mut b = [V4_ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1, 0xde, 0xad, 0xbe];
        IcmpPacket::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum_v4();
        assert_eq!(checksum::fold(checksum::sum(0, &b)), 0xffff);
        assert!(IcmpPacket::new_checked(&b[..7]).is_err());
        assert!(v4_is_error(V4_DEST_UNREACHABLE) && !v4_is_error(V4_ECHO_REQUEST));
        assert!(v6_is_error(V6_PACKET_TOO_BIG) && !v6_is_error(V6_ECHO_REQUEST));
    }
}
