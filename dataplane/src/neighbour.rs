//! Answers for the balancer's own addresses on the link: ARP replies (RFC 826) for requests
//! asking for a VIP or the node's IPv4 address, and IPv6 neighbour advertisements (RFC 4861)
//! for solicitations of a VIP or the node's IPv6 address. Each answer is written over the
//! request, in place: no allocation, and the frame goes back out of the port it came from.

use crate::snapshot::Snapshot;
use packet::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use packet::checksum;
use packet::parse::Parsed;
use packet::MacAddr;
use std::net::{IpAddr, Ipv6Addr};

/// Whether `a` is an address the balancer answers for.
fn ours(snap: &Snapshot, a: IpAddr) -> bool {
    snap.is_vip_addr(a) || snap.is_node_addr(a)
}

/// Turns an ARP request for one of our addresses into the reply. False (frame untouched)
/// for anything else: replies, gratuitous ARP, other hosts' addresses.
pub fn answer_arp(frame: &mut [u8], p: &Parsed, snap: &Snapshot) -> bool {
    let l2 = p.l2_len;
    let Some(body) = frame.get(l2..) else {
        return false;
    };
    let Ok(a) = ArpPacket::new_checked(body) else {
        return false;
    };
    let (target, sender_ip, sender_mac) = (a.target_ip(), a.sender_ip(), a.sender_mac());
    if a.operation() != OP_REQUEST || target == sender_ip || !ours(snap, IpAddr::V4(target)) {
        return false;
    }
    let me = snap.node.mac;
    let Some(arp) = frame.get_mut(l2..l2 + ArpPacket::<&[u8]>::LEN) else {
        return false;
    };
    arp[6..8].copy_from_slice(&OP_REPLY.to_be_bytes());
    arp[8..14].copy_from_slice(&me.0);
    arp[14..18].copy_from_slice(&target.octets());
    arp[18..24].copy_from_slice(&sender_mac.0);
    arp[24..28].copy_from_slice(&sender_ip.octets());
    set_eth(frame, sender_mac, me);
    true
}

fn set_eth(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst.0);
        h[6..12].copy_from_slice(&src.0);
    }
}

/// Length of a neighbour solicitation / advertisement body before options.
const ND_LEN: usize = 24;

/// Turns a neighbour solicitation for one of our addresses into the advertisement (solicited,
/// override, with our link-layer address when the solicitation had room for that option).
/// Returns the advertisement's frame length (the caller truncates to it), or `None` with the
/// frame untouched for anything else, including duplicate address detection probes (from
/// `::`), which must not be answered.
pub fn answer_ns(frame: &mut [u8], p: &Parsed, snap: &Snapshot) -> Option<usize> {
    let IpAddr::V6(asker) = p.src else {
        return None;
    };
    // RFC 4861 7.1.1: hop limit 255 (never forwarded), code 0, at least the fixed part.
    if p.proto != 58
        || p.icmp_type != packet::icmp::V6_NEIGHBOR_SOLICIT
        || p.ttl != 255
        || asker.is_unspecified()
    {
        return None;
    }
    let icmp = frame.get(p.l4_off..p.l3_end)?;
    if icmp.len() < ND_LEN || icmp[1] != 0 {
        return None;
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    let target = Ipv6Addr::from(t);
    if !ours(snap, IpAddr::V6(target)) {
        return None;
    }
    let icmp_len = if icmp.len() >= ND_LEN + 8 {
        ND_LEN + 8
    } else {
        ND_LEN
    };
    let peer = MacAddr(frame.get(6..12)?.try_into().ok()?);
    let me = snap.node.mac;
    // IPv6 header: payload length, hop limit 255, source the target, destination the asker.
    let h = frame.get_mut(p.l2_len..p.l2_len + 40)?;
    h[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    h[7] = 255;
    h[8..24].copy_from_slice(&target.octets());
    h[24..40].copy_from_slice(&asker.octets());
    let m = frame.get_mut(p.l4_off..p.l4_off + icmp_len)?;
    m[0] = packet::icmp::V6_NEIGHBOR_ADVERT;
    m[1] = 0;
    m[2..4].copy_from_slice(&[0, 0]);
    m[4..8].copy_from_slice(&[0x60, 0, 0, 0]); // solicited, override; not a router
    if icmp_len > ND_LEN {
        m[24] = 2; // target link-layer address option, 8 bytes
        m[25] = 1;
        m[26..32].copy_from_slice(&me.0);
    }
    let c = checksum::finish(checksum::pseudo_v6(target, asker, 58, icmp_len as u32), m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    set_eth(frame, peer, me);
    Some(p.l4_off + icmp_len)
}
