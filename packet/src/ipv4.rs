//! IPv4 headers (RFC 791), options included.

use crate::{be16, checksum, put16, Error, Result};
use core::net::Ipv4Addr;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// A view over an IPv4 datagram. The checked constructor guarantees: version 4, IHL >= 5,
/// the header (with options) inside the slice, and total length between the header length and
/// the slice length (Ethernet padding after the datagram is allowed).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        if hl < Self::MIN_HEADER_LEN || hl > b.len() {
            return Err(Error::BadHeaderLength);
        }
        let tl = be16(b, 2) as usize;
        if tl < hl || tl > b.len() {
            return Err(Error::BadLength);
        }
        Ok(Ipv4Packet { buf })
    }
    /// A view over a quoted header (inside an ICMP error), where the datagram is usually cut
    /// short: only the fixed header and options must be present.
    pub fn new_quoted(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        if hl < Self::MIN_HEADER_LEN || hl > b.len() {
            return Err(Error::BadHeaderLength);
        }
        Ok(Ipv4Packet { buf })
    }
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[0] & 0x0f) as usize) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn dont_fragment(&self) -> bool {
        self.buf.as_ref()[6] & 0x40 != 0
    }
    pub fn more_fragments(&self) -> bool {
        self.buf.as_ref()[6] & 0x20 != 0
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), 6) & 0x1fff
    }
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(0, self.header())) == 0xffff
    }
    /// The payload up to the total length (quoted headers: up to the slice end).
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        let end = (self.total_len() as usize).clamp(self.header_len(), b.len());
        &b[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the source address, updating the header checksum incrementally.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(12, a)
    }
    /// Sets the destination address, updating the header checksum incrementally.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(16, a)
    }
    fn set_addr(&mut self, off: usize, a: Ipv4Addr) {
        let b = self.buf.as_mut();
        let mut old = [0u8; 4];
        old.copy_from_slice(&b[off..off + 4]);
        let c = checksum::update(be16(b, 10), &old, &a.octets());
        b[off..off + 4].copy_from_slice(&a.octets());
        put16(b, 10, c);
    }
    /// Decrements the TTL with an incremental checksum update. Returns the new TTL.
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buf.as_mut();
        let old = be16(b, 8);
        b[8] = b[8].wrapping_sub(1);
        let c = checksum::update16(be16(b, 10), old, be16(b, 8));
        put16(b, 10, c);
        b[8]
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        put16(b, 10, 0);
        let c = checksum::finish(0, &b[..hl]);
        put16(b, 10, c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = (self.total_len() as usize).clamp(hl, self.buf.as_ref().len());
        &mut self.buf.as_mut()[hl..end]
    }
}

/// The fields of a fresh option-less IPv4 header, for encapsulation.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: u16,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    pub const LEN: usize = 20;
    /// Writes a 20-byte header with a correct checksum into `b[..20]`.
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        // As one fixed-size array: every write below is in bounds by its type.
        let b: &mut [u8; Self::LEN] = b.first_chunk_mut().ok_or(Error::Truncated)?;
        let total = (self.payload_len as usize + Self::LEN).min(u16::MAX as usize) as u16;
        let flags: u16 = if self.dont_fragment { 0x4000 } else { 0 };
        let [t0, t1] = total.to_be_bytes();
        let [f0, f1] = flags.to_be_bytes();
        let [s0, s1, s2, s3] = self.src.octets();
        let [d0, d1, d2, d3] = self.dst.octets();
        *b = [
            0x45,
            self.dscp_ecn,
            t0,
            t1,
            0,
            0,
            f0,
            f1,
            self.ttl,
            self.protocol,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        // The sum from the fields, not read back from the bytes just written: narrow stores
        // read back as wide words stall the CPU's store forwarding, which cost this function
        // more than its instruction count says (perf).
        let (s, d) = (u32::from(self.src), u32::from(self.dst));
        let acc = (0x4500 | u64::from(self.dscp_ecn))
            + u64::from(total)
            + u64::from(flags)
            + (u64::from(self.ttl) << 8 | u64::from(self.protocol))
            + u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff);
        b[10..12].copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 24] {
        // IHL 6 (one 4-byte option: NOP NOP NOP EOL), total length 24, TTL 64, TCP.
        let mut h = [
            0x46, 0, 0, 24, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 0,
        ];
        let c = checksum::finish(0, &h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn options_and_fields() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum());
        assert!(p.dont_fragment() && !p.is_fragment());
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut h = header();
        h[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        h[0] = 0x4f; // IHL 15 = 60 bytes, past the slice
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        h[0] = 0x56;
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            Error::BadVersion
        );
        let mut h = header();
        h[3] = 25; // total length past the slice
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            Error::BadLength
        );
        h[3] = 20; // total length below header length
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).unwrap_err(),
            Error::BadLength
        );
        assert_eq!(
            Ipv4Packet::new_checked(&h[..19]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn rewrites_keep_checksum_valid() {
        let mut h = header();
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.set_dst_addr(Ipv4Addr::new(192, 168, 77, 5));
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 77, 5));
    }

    #[test]
    fn emit_writes_valid_header() {
        let mut b = [0u8; 20];
        let r = Ipv4Repr {
            src: Ipv4Addr::new(1, 2, 3, 4),
            dst: Ipv4Addr::new(5, 6, 7, 8),
            protocol: PROTO_IPIP,
            payload_len: 40,
            ttl: 64,
            dscp_ecn: 0x10,
            dont_fragment: true,
        };
        r.emit(&mut b).unwrap();
        let p = Ipv4Packet::new_quoted(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.total_len(), p.protocol(), p.ttl(), p.dscp_ecn()),
            (60, 4, 64, 0x10)
        );
        assert!(r.emit(&mut [0u8; 19]).is_err());
        // The checksum, worked out from the fields, is right for any of them.
        for (df, ttl, dscp, len, a) in [
            (false, 1, 0, 0, 0u32),
            (true, 255, 0xff, 65515, u32::MAX),
            (false, 128, 0x2e, 1480, 0x8000_0001),
        ] {
            let r = Ipv4Repr {
                src: a.into(),
                dst: (!a).into(),
                protocol: PROTO_TCP,
                payload_len: len,
                ttl,
                dscp_ecn: dscp,
                dont_fragment: df,
            };
            r.emit(&mut b).unwrap();
            let p = Ipv4Packet::new_quoted(&b[..]).unwrap();
            assert!(p.verify_checksum(), "{r:?}");
            assert_eq!(p.dont_fragment(), df);
        }
    }
}
