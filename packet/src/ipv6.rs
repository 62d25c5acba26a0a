//! IPv6 headers (RFC 8200) and the walk over extension headers to the upper layer.

use crate::{be16, Error, Result};
use core::net::Ipv6Addr;

pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AUTH: u8 = 51;
pub const NH_NO_NEXT: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;

/// Extension headers followed before giving up; real traffic has one or two.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view over an IPv6 datagram. The checked constructor guarantees version 6, the fixed header
/// in the slice, and `40 + payload length` within the slice.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buf: T,
}

/// Where the upper-layer header starts, after any extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol number (6 TCP, 17 UDP, 58 ICMPv6, …).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// A fragment header was present (any fragment, first or not).
    pub fragment: bool,
    /// The fragment offset was non-zero, so the upper-layer header is not in this packet.
    pub later_fragment: bool,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = 40;

    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        if Self::HEADER_LEN + be16(b, 4) as usize > b.len() {
            return Err(Error::BadLength);
        }
        Ok(Ipv6Packet { buf })
    }
    /// A view over a quoted header (inside an ICMPv6 error): the payload may be cut short.
    pub fn new_quoted(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        Ok(Ipv6Packet { buf })
    }
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        (((b[1] & 0x0f) as u32) << 16) | be16(b, 2) as u32
    }
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buf.as_ref(), 8)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buf.as_ref(), 24)
    }
    /// End of the datagram in the slice (quoted views: the slice end if shorter).
    pub fn end(&self) -> usize {
        (Self::HEADER_LEN + self.payload_len() as usize).min(self.buf.as_ref().len())
    }
    /// Walks hop-by-hop, routing, fragment, destination-options and AH headers.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = self.buf.as_ref();
        let end = self.end();
        let mut nh = self.next_header();
        let mut off = Self::HEADER_LEN;
        let mut fragment = false;
        let mut later_fragment = false;
        for _ in 0..=MAX_EXTENSION_HEADERS {
            let len = match nh {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    if off + 2 > end {
                        return Err(Error::BadExtensionHeader);
                    }
                    (b[off + 1] as usize + 1) * 8
                }
                NH_FRAGMENT => {
                    if off + 8 > end {
                        return Err(Error::BadExtensionHeader);
                    }
                    fragment = true;
                    later_fragment = be16(b, off + 2) >> 3 != 0;
                    8
                }
                NH_AUTH => {
                    if off + 2 > end {
                        return Err(Error::BadExtensionHeader);
                    }
                    (b[off + 1] as usize + 2) * 4
                }
                _ => {
                    return Ok(UpperLayer {
                        protocol: nh,
                        offset: off,
                        fragment,
                        later_fragment,
                    })
                }
            };
            if off + len > end {
                return Err(Error::BadExtensionHeader);
            }
            nh = b[off];
            off += len;
            if later_fragment {
                // Past a non-first fragment header the rest is opaque payload.
                return Ok(UpperLayer {
                    protocol: nh,
                    offset: off,
                    fragment,
                    later_fragment,
                });
            }
        }
        Err(Error::BadExtensionHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[8..24].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[24..40].copy_from_slice(&a.octets());
    }
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buf.as_mut()[7] = h;
    }
}

fn addr_at(b: &[u8], off: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    Ipv6Addr::from(a)
}

/// The fields of a fresh IPv6 header without extension headers, for encapsulation.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub const LEN: usize = 40;
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        let b = b.get_mut(..Self::LEN).ok_or(Error::Truncated)?;
        let first =
            (6u32 << 28) | ((self.traffic_class as u32) << 20) | (self.flow_label & 0xfffff);
        b[0..4].copy_from_slice(&first.to_be_bytes());
        b[4..6].copy_from_slice(&self.payload_len.to_be_bytes());
        b[6] = self.next_header;
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src.octets());
        b[24..40].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(next: u8, ext: &[u8], upper: &[u8]) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0] = 0x60;
        let pl = (ext.len() + upper.len()) as u16;
        b[4..6].copy_from_slice(&pl.to_be_bytes());
        b[6] = next;
        b[7] = 64;
        b[40..40 + ext.len()].copy_from_slice(ext);
        b[40 + ext.len()..40 + ext.len() + upper.len()].copy_from_slice(upper);
        b
    }

    #[test]
    fn walks_extension_headers() {
        // hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (first) -> TCP
        let mut ext = [0u8; 32];
        ext[0] = NH_DEST_OPTS;
        ext[8] = NH_FRAGMENT;
        ext[9] = 1;
        ext[24] = 6;
        ext[27] = 1; // M flag, offset 0
        let b = datagram(NH_HOP_BY_HOP, &ext, &[0u8; 20]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let u = p.upper_layer().unwrap();
        assert_eq!(
            u,
            UpperLayer {
                protocol: 6,
                offset: 72,
                fragment: true,
                later_fragment: false
            }
        );
    }

    #[test]
    fn later_fragment_and_overruns() {
        let mut ext = [0u8; 8];
        ext[0] = 17;
        ext[2] = 0x01; // offset 32 * 8
        let b = datagram(NH_FRAGMENT, &ext, &[0u8; 4]);
        let u = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert!(u.later_fragment);
        // A routing header claiming 256 bytes inside a 16-byte payload.
        let b = datagram(NH_ROUTING, &[6, 31, 0, 0, 0, 0, 0, 0], &[0u8; 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap_err(),
            Error::BadExtensionHeader
        );
        // A chain of hop-by-hop headers longer than we follow.
        let mut chain = [0u8; 80];
        for i in 0..10 {
            chain[i * 8] = NH_HOP_BY_HOP;
        }
        let b = datagram(NH_HOP_BY_HOP, &chain, &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap_err(),
            Error::BadExtensionHeader
        );
        let mut b = datagram(6, &[], &[0u8; 20]);
        b[5] = 100; // payload length past the slice
        assert_eq!(
            Ipv6Packet::new_checked(&b[..60]).unwrap_err(),
            Error::BadLength
        );
    }
}
