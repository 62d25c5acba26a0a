//! Path MTU through the tunnels: an IPIP/GUE packet that would be larger than `node.tunnel_mtu`
//! once encapsulated is not sent (the link would drop it, silently). If the client may not
//! have it fragmented — IPv4 with DF, or any IPv6 — it is answered, as Katran does, with ICMP
//! "fragmentation needed" / ICMPv6 "packet too big" from the VIP, carrying the MTU the client
//! must use (the tunnel MTU less the encapsulation), so its path MTU discovery shrinks its
//! packets; the error is written over the packet itself. Either way the packet is counted as
//! `tunnel_too_big`.

use crate::forward::set_macs;
use crate::port::Frame;
use packet::checksum;
use packet::icmp::{V4_CODE_FRAG_NEEDED, V4_DEST_UNREACHABLE, V6_PACKET_TOO_BIG};
use packet::parse::{Network, Parsed};
use packet::MacAddr;
use std::net::IpAddr;

/// Quoted bytes of the offending datagram: IPv4 errors stay within 576 bytes (RFC 1812
/// 4.3.2.3), IPv6 ones within the minimum MTU of 1280 (RFC 4443 2.4).
const V4_QUOTE: usize = 576 - 20 - 8;
const V6_QUOTE: usize = 1280 - 40 - 8;
/// IPv6 hosts never go below 1280 (RFC 8200 5).
const V6_MIN_MTU: u16 = 1280;

/// Whether the datagram needs an error rather than a silent drop: its sender forbade
/// fragmentation (DF), or it is IPv6, which routers never fragment.
pub(super) fn sender_must_shrink(data: &[u8], p: &Parsed) -> bool {
    match p.network {
        // The flags byte of the IPv4 header; DF is 0x40.
        Network::Ipv4 => data.get(p.l2_len + 6).is_some_and(|f| f & 0x40 != 0),
        _ => true,
    }
}

/// Rewrites frame `f` (a datagram `p` from a client to a VIP) into the ICMP error that tells
/// the client to send at most `mtu` bytes, addressed back to it from the VIP; `node` is the
/// source MAC. Returns false (frame unchanged) if there is no headroom for the headers.
pub(super) fn rewrite_as_too_big<F: Frame>(f: &mut F, p: &Parsed, node: MacAddr, mtu: u16) -> bool {
    let v6 = p.network != Network::Ipv4;
    let (hdr, quote) = if v6 {
        (40 + 8, V6_QUOTE)
    } else {
        (20 + 8, V4_QUOTE)
    };
    let l2 = p.l2_len;
    let Some(peer) = f
        .data()
        .get(6..12)
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
    else {
        return false;
    };
    let datagram = p.l3_end.saturating_sub(l2);
    f.truncate(l2 + datagram.min(quote));
    if !f.prepend(hdr) {
        return false;
    }
    let d = f.data_mut();
    // [hdr][L2 of l2][datagram] → [L2][IP + ICMP of hdr][datagram, quoted]
    d.copy_within(hdr..hdr + l2, 0);
    set_macs(d, node, MacAddr(peer));
    let quoted = d.len() - l2 - hdr;
    let (ip, rest) = d[l2..].split_at_mut(if v6 { 40 } else { 20 });
    match (p.dst, p.src) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => {
            let total = (20 + 8 + quoted) as u16;
            ip.copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[12..16].copy_from_slice(&vip.octets());
            ip[16..20].copy_from_slice(&client.octets());
            let c = checksum::finish(0, ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            rest[..8].copy_from_slice(&[
                V4_DEST_UNREACHABLE,
                V4_CODE_FRAG_NEEDED,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            rest[6..8].copy_from_slice(&mtu.to_be_bytes());
            let c = checksum::finish(0, rest);
            rest[2..4].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(vip), IpAddr::V6(client)) => {
            let len = (8 + quoted) as u16;
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&len.to_be_bytes());
            ip[6] = 58;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&vip.octets());
            ip[24..40].copy_from_slice(&client.octets());
            rest[..8].copy_from_slice(&[V6_PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0, 0]);
            rest[4..8].copy_from_slice(&u32::from(mtu.max(V6_MIN_MTU)).to_be_bytes());
            let pseudo = checksum::pseudo_v6(vip, client, 58, len as u32);
            let c = checksum::finish(pseudo, rest);
            rest[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => return false,
    }
    // An 802.1Q tag stays as it was; the ethertype after it is the new header's family,
    // which is the datagram's.
    true
}
