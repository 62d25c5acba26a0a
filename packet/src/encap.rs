//! IP-in-IP (RFC 2003, RFC 2473) and GUE (variant 0, draft-ietf-intarea-gue) encapsulation,
//! written into headroom that the caller has already prepended in front of the frame.

use crate::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::ipv4::{Ipv4Repr, PROTO_IPIP, PROTO_IPV6, PROTO_UDP};
use crate::ipv6::Ipv6Repr;
use crate::{checksum, put16, Error, Result};
use core::net::{Ipv4Addr, Ipv6Addr};

pub const GUE_HEADER_LEN: usize = 4;
pub const UDP_HEADER_LEN: usize = 8;
/// TTL / hop limit of the outer header.
pub const OUTER_TTL: u8 = 64;

/// The tunnel to build around the inner datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Gue { src_port: u16, dst_port: u16 },
}

/// The outer header's addresses (and so its family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// What the outer header copies from the inner one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InnerInfo {
    pub is_ipv6: bool,
    pub dscp_ecn: u8,
    pub dont_fragment: bool,
    pub flow_label: u32,
}

/// Bytes the tunnel adds in front of the inner datagram.
pub fn overhead(outer: &Outer, tunnel: &Tunnel) -> usize {
    let ip = match outer {
        Outer::V4 { .. } => Ipv4Repr::LEN,
        Outer::V6 { .. } => Ipv6Repr::LEN,
    };
    ip + match tunnel {
        Tunnel::Ipip => 0,
        Tunnel::Gue { .. } => UDP_HEADER_LEN + GUE_HEADER_LEN,
    }
}

/// Encapsulates in place. On entry `frame` is `[overhead bytes of headroom][L2 header of
/// l2_len][inner datagram]` (the inner datagram runs to the end of `frame`). On return it is
/// `[L2 header][outer IP][UDP + GUE, for GUE][inner datagram]`, the L2 ethertype set for the
/// outer family. The VLAN tag, if any, is part of the L2 header and is kept.
pub fn encapsulate(
    frame: &mut [u8],
    l2_len: usize,
    inner: InnerInfo,
    outer: Outer,
    tunnel: Tunnel,
) -> Result<()> {
    let extra = overhead(&outer, &tunnel);
    if l2_len < 14 || frame.len() < extra + l2_len {
        return Err(Error::NoHeadroom);
    }
    let inner_len = frame.len() - extra - l2_len;
    frame.copy_within(extra..extra + l2_len, 0);
    let inner_proto = if inner.is_ipv6 {
        PROTO_IPV6
    } else {
        PROTO_IPIP
    };
    let (ip_len, ethertype) = match outer {
        Outer::V4 { .. } => (Ipv4Repr::LEN, ETHERTYPE_IPV4),
        Outer::V6 { .. } => (Ipv6Repr::LEN, ETHERTYPE_IPV6),
    };
    put16(frame, l2_len - 2, ethertype);
    let (ip_proto, ip_payload_len) = match tunnel {
        Tunnel::Ipip => (inner_proto, inner_len),
        Tunnel::Gue { .. } => (PROTO_UDP, UDP_HEADER_LEN + GUE_HEADER_LEN + inner_len),
    };
    let ip_payload_len = u16::try_from(ip_payload_len).map_err(|_| Error::BadLength)?;
    let ip_hdr = &mut frame[l2_len..];
    match outer {
        Outer::V4 { src, dst } => Ipv4Repr {
            src,
            dst,
            protocol: ip_proto,
            payload_len: ip_payload_len,
            ttl: OUTER_TTL,
            dscp_ecn: inner.dscp_ecn,
            dont_fragment: inner.dont_fragment,
        }
        .emit(ip_hdr)?,
        Outer::V6 { src, dst } => Ipv6Repr {
            src,
            dst,
            next_header: ip_proto,
            payload_len: ip_payload_len,
            hop_limit: OUTER_TTL,
            traffic_class: inner.dscp_ecn,
            flow_label: inner.flow_label,
        }
        .emit(ip_hdr)?,
    }
    if let Tunnel::Gue { src_port, dst_port } = tunnel {
        let udp = &mut frame[l2_len + ip_len..];
        put16(udp, 0, src_port);
        put16(udp, 2, dst_port);
        put16(udp, 4, ip_payload_len);
        put16(udp, 6, 0);
        // GUE variant 0, no control, no extension fields; protocol names the inner IP version.
        udp[8..12].copy_from_slice(&[0, inner_proto, 0, 0]);
        if let Outer::V6 { src, dst } = outer {
            // IPv6 forbids a zero UDP checksum (RFC 8200), so compute it over the whole datagram.
            let seg = &mut udp[..ip_payload_len as usize];
            let c = checksum::finish(
                checksum::pseudo_v6(src, dst, PROTO_UDP, ip_payload_len as u32),
                seg,
            );
            put16(seg, 6, if c == 0 { 0xffff } else { c });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;

    #[test]
    fn ipip_moves_l2_and_writes_outer() {
        let overhead = 20;
        let mut f = [0u8; 20 + 18 + 28];
        // L2 with a VLAN tag: dst, src, 0x8100, TCI 0x0064, ethertype IPv4
        f[20..32].copy_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        f[32..38].copy_from_slice(&[0x81, 0, 0, 100, 0x08, 0]);
        f[38] = 0x45;
        f[41] = 28;
        let inner = InnerInfo {
            is_ipv6: false,
            dscp_ecn: 0x28,
            dont_fragment: true,
            flow_label: 0,
        };
        let outer = Outer::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(10, 1, 0, 1),
        };
        encapsulate(&mut f, 18, inner, outer, Tunnel::Ipip).unwrap();
        assert_eq!(&f[12..18], &[0x81, 0, 0, 100, 0x08, 0]);
        let o = Ipv4Packet::new_checked(&f[18..]).unwrap();
        assert!(o.verify_checksum() && o.dont_fragment());
        assert_eq!(
            (o.protocol(), o.total_len() as usize, o.dscp_ecn()),
            (PROTO_IPIP, overhead + 28, 0x28)
        );
        assert_eq!(f[38], 0x45);
        assert_eq!(
            encapsulate(&mut f[..30], 18, inner, outer, Tunnel::Ipip),
            Err(Error::NoHeadroom)
        );
    }
}
