//! Answers for the balancer's own addresses on the link: ARP replies (RFC 826) for requests
//! asking for a VIP or the node's IPv4 address, and IPv6 neighbour advertisements (RFC 4861)
//! for solicitations of a VIP or the node's IPv6 address. Each answer is written over the
//! request, in place: no allocation, and the frame goes back out of the port it came from.
//! And the other way: resolving next hops configured without a MAC ([`NeighbourTable`]).

use packet::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use packet::checksum;
use packet::ipv4::PROTO_ICMPV6;
use packet::parse::Parsed;
use packet::MacAddr;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Mutex;

/// What answering and learning on the link needs to know of the configuration. The
/// snapshot provides it; this module needs nothing else of it (and so does not depend on it).
pub trait LinkView {
    /// The node's MAC, which answers carry.
    fn node_mac(&self) -> MacAddr;
    /// Whether `a` is an address the balancer answers for (a VIP or a node address).
    fn answers_for(&self, a: IpAddr) -> bool;
    /// The slot of next hop `a` in [`LinkView::neighbours`], if the data path resolves it.
    fn next_hop_slot(&self, a: IpAddr) -> Option<u16>;
    fn neighbours(&self) -> &NeighbourTable;
}

fn ours(snap: &impl LinkView, a: IpAddr) -> bool {
    snap.answers_for(a)
}

/// Turns an ARP request for one of our addresses into the reply. False (frame untouched)
/// for anything else: replies, gratuitous ARP, other hosts' addresses.
pub fn answer_arp(frame: &mut [u8], p: &Parsed, snap: &impl LinkView) -> bool {
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
    let me = snap.node_mac();
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
pub fn answer_ns(frame: &mut [u8], p: &Parsed, snap: &impl LinkView) -> Option<usize> {
    let IpAddr::V6(asker) = p.src else {
        return None;
    };
    // RFC 4861 7.1.1: hop limit 255 (never forwarded), code 0, at least the fixed part.
    if p.proto != PROTO_ICMPV6
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
    let me = snap.node_mac();
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
    let c = checksum::finish(
        checksum::pseudo_v6(target, asker, PROTO_ICMPV6, icmp_len as u32),
        m,
    );
    m[2..4].copy_from_slice(&c.to_be_bytes());
    set_eth(frame, peer, me);
    Some(p.l4_off + icmp_len)
}

/// How long a learned MAC is used before it is confirmed again.
pub const REACHABLE_NS: u64 = 30_000_000_000;
/// Between requests for a next hop that has not answered yet.
pub const RETRY_NS: u64 = 1_000_000_000;
/// Between requests once [`MAX_PROBES`] went unanswered.
pub const SLOW_RETRY_NS: u64 = 5_000_000_000;
/// Unanswered requests after which a confirmation fails (the MAC is forgotten) or requests
/// slow down.
pub const MAX_PROBES: u32 = 3;
/// How often worker 0 looks at the next hops, and how many it looks at each time.
pub const TICK_NS: u64 = 10_000_000;
pub const TICK_BUDGET: usize = 16;
/// Next hops one configuration may leave to the data path to resolve (backends and the
/// gateway given without a MAC). The configuration's validation refuses more with the key and
/// fix (`config::MAX_RESOLVED_NEXT_HOPS`, the same number, checked by a control-plane test).
pub const CAPACITY: usize = 4096;

const RESOLVED: u64 = 1 << 63;
const NEVER: u64 = u64::MAX;

/// One next hop's state, on a cache line of its own (workers read `mac` on the hot path).
#[repr(align(64))]
pub struct NeighbourSlot {
    /// The MAC in the low 48 bits with [`RESOLVED`] set; 0 while unresolved.
    mac: AtomicU64,
    /// When a worker last heard from the next hop (workers share one clock).
    confirmed_ns: AtomicU64,
    // Written by the ticking worker (and `probes` reset by a learning one).
    requested_ns: AtomicU64,
    probes: AtomicU32,
    /// Requests sent, MACs forgotten, packets dropped for want of a MAC.
    requests: AtomicU64,
    expiries: AtomicU64,
    unresolved_drops: AtomicU64,
}

impl NeighbourSlot {
    fn new() -> Self {
        NeighbourSlot {
            mac: AtomicU64::new(0),
            confirmed_ns: AtomicU64::new(0),
            requested_ns: AtomicU64::new(NEVER),
            probes: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            unresolved_drops: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        for a in [
            &self.mac,
            &self.confirmed_ns,
            &self.requests,
            &self.expiries,
            &self.unresolved_drops,
        ] {
            a.store(0, Relaxed);
        }
        self.requested_ns.store(NEVER, Relaxed);
        self.probes.store(0, Relaxed);
    }
}

/// What the control plane shows of one next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourState {
    pub addr: IpAddr,
    pub mac: Option<MacAddr>,
    /// Unanswered requests since the last answer.
    pub probes: u32,
    pub requests: u64,
    pub expiries: u64,
    pub unresolved_drops: u64,
}

/// Next hops (backends and the gateway given without a MAC) whose MACs the data path
/// resolves itself. [`NeighbourTable`] holds what is learned; workers read it on every
/// packet to such a next hop, and write it when an ARP packet or neighbour advertisement
/// from one arrives, with plain atomics: no lock, no allocation. Worker 0 sends the requests
/// ([`NeighbourTable::tick`]): at once for a new next hop, every [`RETRY_NS`] while
/// unanswered (every [`SLOW_RETRY_NS`] after [`MAX_PROBES`]), and, [`REACHABLE_NS`] after a
/// MAC was last confirmed, again to confirm it; [`MAX_PROBES`] unanswered confirmations
/// forget the MAC. Packets to an unresolved next hop are dropped and counted, per next hop
/// and as `unresolved_next_hop`.
///
/// The table is shared by all workers and kept across configuration changes: a next hop
/// keeps its slot, and its MAC, for as long as some configuration names it.
pub struct NeighbourTable {
    slots: Box<[NeighbourSlot]>,
    /// Which slot each address has. Only snapshot builds (the control thread) lock it;
    /// workers find slots through their snapshot.
    assigned: Mutex<HashMap<IpAddr, u16>>,
}

/// The table has no free slot for another next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourTableFull {
    pub capacity: usize,
}

impl std::fmt::Display for NeighbourTableFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than {} next hops to resolve (backends or gateway without `mac`)",
            self.capacity
        )
    }
}

impl NeighbourTable {
    /// Room for twice the next hops a configuration may have (the running configuration's
    /// and a changed one's, while workers move from one to the other).
    pub fn new() -> Self {
        let n = 2 * CAPACITY;
        NeighbourTable {
            slots: (0..n).map(|_| NeighbourSlot::new()).collect(),
            assigned: Mutex::new(HashMap::new()),
        }
    }

    /// The slot of each of `addrs` (the one it had, or a free one).
    pub fn assign(&self, addrs: &[IpAddr]) -> Result<Vec<u16>, NeighbourTableFull> {
        let mut m = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(addrs.len());
        // One pass over the slots for all new addresses: O(slots + addresses).
        let mut used = vec![false; self.slots.len()];
        for &i in m.values() {
            used[i as usize] = true;
        }
        let mut next_free = 0usize;
        for &a in addrs {
            if let Some(&i) = m.get(&a) {
                out.push(i);
                continue;
            }
            while next_free < used.len() && used[next_free] {
                next_free += 1;
            }
            if next_free == used.len() {
                return Err(NeighbourTableFull { capacity: CAPACITY });
            }
            let i = next_free as u16;
            used[next_free] = true;
            self.slots[i as usize].reset();
            m.insert(a, i);
            out.push(i);
        }
        Ok(out)
    }

    /// Frees the slots of addresses that `keep` no longer wants (called by the control plane
    /// with the next hops of every snapshot a worker may still hold).
    pub fn release_unused(&self, keep: impl Fn(IpAddr) -> bool) {
        let mut m = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|a, _| keep(*a));
    }

    /// The MAC of slot `i`, if resolved.
    #[inline]
    pub fn mac(&self, i: u16) -> Option<MacAddr> {
        let v = self.slots.get(i as usize)?.mac.load(Relaxed);
        (v & RESOLVED != 0).then(|| {
            let b = v.to_be_bytes();
            MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    /// Counts a packet dropped because slot `i` is unresolved.
    #[inline]
    pub fn count_unresolved(&self, i: u16) {
        if let Some(s) = self.slots.get(i as usize) {
            s.unresolved_drops.fetch_add(1, Relaxed);
        }
    }

    /// Records `mac` as slot `i`'s, heard from the next hop itself at `now`.
    pub fn learn(&self, i: u16, mac: MacAddr, now: u64) {
        if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
            return; // multicast, broadcast or empty: never a neighbour's own address
        }
        if let Some(s) = self.slots.get(i as usize) {
            let mut b = [0u8; 8];
            b[2..].copy_from_slice(&mac.0);
            s.confirmed_ns.store(now, Relaxed);
            s.probes.store(0, Relaxed);
            s.mac.store(u64::from_be_bytes(b) | RESOLVED, Relaxed);
        }
    }

    /// Slot `i`'s state for the control plane.
    pub fn state(&self, addr: IpAddr, i: u16) -> Option<NeighbourState> {
        let s = self.slots.get(i as usize)?;
        Some(NeighbourState {
            addr,
            mac: self.mac(i),
            probes: s.probes.load(Relaxed),
            requests: s.requests.load(Relaxed),
            expiries: s.expiries.load(Relaxed),
            unresolved_drops: s.unresolved_drops.load(Relaxed),
        })
    }

    /// Whether the next hop in slot `i` needs a request now, updating its timers as if the
    /// request is sent (the caller sends it). Called by one worker only.
    pub fn request_due(&self, i: u16, now: u64) -> bool {
        let Some(s) = self.slots.get(i as usize) else {
            return false;
        };
        let mac = s.mac.load(Relaxed);
        let mut probes = s.probes.load(Relaxed);
        if mac & RESOLVED != 0 {
            if now.saturating_sub(s.confirmed_ns.load(Relaxed)) < REACHABLE_NS {
                return false;
            }
            if probes >= MAX_PROBES {
                // Unconfirmed: forget it, unless it was learned again just now.
                if s.mac.compare_exchange(mac, 0, Relaxed, Relaxed).is_ok() {
                    s.expiries.fetch_add(1, Relaxed);
                }
                probes = 0;
                s.probes.store(0, Relaxed);
            }
        }
        let last = s.requested_ns.load(Relaxed);
        let wait = if probes >= MAX_PROBES {
            SLOW_RETRY_NS
        } else {
            RETRY_NS
        };
        if last != NEVER && now.saturating_sub(last) < wait {
            return false;
        }
        s.requested_ns.store(now, Relaxed);
        s.probes.store(probes.saturating_add(1), Relaxed);
        s.requests.fetch_add(1, Relaxed);
        true
    }
}

impl std::fmt::Debug for NeighbourTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighbourTable")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Default for NeighbourTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Length of the ARP request frame (Ethernet + ARP, padded to the 60-byte minimum).
pub const ARP_REQUEST_LEN: usize = 60;
/// Length of the neighbour solicitation frame (Ethernet + IPv6 + NS with the source
/// link-layer address option).
pub const NS_LEN: usize = 14 + 40 + ND_LEN + 8;

/// Writes a broadcast ARP request from `me` (`my_ip`) for `target` into `frame`, which must
/// be [`ARP_REQUEST_LEN`] bytes. False if it is not.
pub fn write_arp_request(frame: &mut [u8], me: MacAddr, my_ip: Ipv4Addr, target: Ipv4Addr) -> bool {
    if frame.len() != ARP_REQUEST_LEN {
        return false;
    }
    frame.fill(0);
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&me.0);
    frame[12..14].copy_from_slice(&packet::ethernet::ETHERTYPE_ARP.to_be_bytes());
    let a = &mut frame[14..42];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    a[2..4].copy_from_slice(&packet::ethernet::ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&OP_REQUEST.to_be_bytes());
    a[8..14].copy_from_slice(&me.0);
    a[14..18].copy_from_slice(&my_ip.octets());
    a[24..28].copy_from_slice(&target.octets());
    true
}

/// Writes a gratuitous ARP for `ip` at `me` into `frame` ([`ARP_REQUEST_LEN`] bytes): a
/// broadcast request whose sender and target are both `ip`, the form every host and switch
/// updates its cache and forwarding table from. False if the frame is not that long.
pub fn write_gratuitous_arp(frame: &mut [u8], me: MacAddr, ip: Ipv4Addr) -> bool {
    write_arp_request(frame, me, ip, ip)
}

/// Length of the unsolicited neighbour advertisement frame (Ethernet + IPv6 + NA with the
/// target link-layer address option).
pub const NA_LEN: usize = NS_LEN;

/// Writes an unsolicited neighbour advertisement for `ip` at `me` to all nodes (ff02::1),
/// with the override flag (RFC 4861 7.2.6), into `frame` ([`NA_LEN`] bytes).
pub fn write_unsolicited_na(frame: &mut [u8], me: MacAddr, ip: Ipv6Addr) -> bool {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // Override; neither router nor solicited. Option 2: the target's link-layer address.
    write_nd(
        frame,
        [0x33, 0x33, 0, 0, 0, 1],
        me,
        (ip, all_nodes),
        (packet::icmp::V6_NEIGHBOR_ADVERT, 0x20, 2),
        ip,
    )
}

/// Writes a neighbour solicitation from `me` (`my_ip`) for `target`, to the target's
/// solicited-node multicast address, into `frame`, which must be [`NS_LEN`] bytes.
pub fn write_ns(frame: &mut [u8], me: MacAddr, my_ip: Ipv6Addr, target: Ipv6Addr) -> bool {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    // Option 1: the sender's link-layer address.
    write_nd(
        frame,
        [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        me,
        (my_ip, group),
        (packet::icmp::V6_NEIGHBOR_SOLICIT, 0, 1),
        target,
    )
}

/// One neighbour discovery message of [`NS_LEN`] bytes: Ethernet to `dst_mac` from `me`,
/// IPv6 (`src`, `dst`) with hop limit 255, ICMPv6 `(type, flags, option)` about `target`
/// with one link-layer address option carrying `me`, checksummed. False if the frame is not
/// that long.
fn write_nd(
    frame: &mut [u8],
    dst_mac: [u8; 6],
    me: MacAddr,
    (src, dst): (Ipv6Addr, Ipv6Addr),
    (kind, flags, option): (u8, u8, u8),
    target: Ipv6Addr,
) -> bool {
    if frame.len() != NS_LEN {
        return false;
    }
    frame.fill(0);
    frame[..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&me.0);
    frame[12..14].copy_from_slice(&packet::ethernet::ETHERTYPE_IPV6.to_be_bytes());
    let len = ND_LEN + 8;
    let h = &mut frame[14..54];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    h[6] = PROTO_ICMPV6;
    h[7] = 255;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    let m = &mut frame[54..54 + len];
    m[0] = kind;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = option; // 8 bytes long
    m[25] = 1;
    m[26..32].copy_from_slice(&me.0);
    let c = checksum::finish(checksum::pseudo_v6(src, dst, PROTO_ICMPV6, len as u32), m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

/// Learns the sender's MAC from an ARP request or reply sent by a next hop the snapshot
/// resolves. True if it did.
pub fn learn_arp(frame: &[u8], p: &Parsed, snap: &impl LinkView, now: u64) -> bool {
    let Some(a) = frame
        .get(p.l2_len..)
        .and_then(|b| ArpPacket::new_checked(b).ok())
    else {
        return false;
    };
    match snap.next_hop_slot(IpAddr::V4(a.sender_ip())) {
        Some(i) => {
            snap.neighbours().learn(i, a.sender_mac(), now);
            true
        }
        None => false,
    }
}

/// Learns a next hop's MAC from its neighbour advertisement (the target link-layer address
/// option) or its solicitation of one of our addresses (the source link-layer address
/// option). True if it did.
pub fn learn_nd(frame: &[u8], p: &Parsed, snap: &impl LinkView, now: u64) -> bool {
    if p.proto != PROTO_ICMPV6 || p.ttl != 255 {
        return false;
    }
    let Some(icmp) = frame.get(p.l4_off..p.l3_end) else {
        return false;
    };
    if icmp.len() < ND_LEN || icmp[1] != 0 {
        return false;
    }
    let (who, want_option) = match icmp[0] {
        packet::icmp::V6_NEIGHBOR_ADVERT => {
            let mut t = [0u8; 16];
            t.copy_from_slice(&icmp[8..24]);
            (IpAddr::V6(Ipv6Addr::from(t)), 2)
        }
        packet::icmp::V6_NEIGHBOR_SOLICIT => (p.src, 1),
        _ => return false,
    };
    let Some(i) = snap.next_hop_slot(who) else {
        return false;
    };
    // Options: type, length in units of 8 bytes, value.
    let mut opts = &icmp[ND_LEN..];
    while opts.len() >= 8 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return false;
        }
        if opts[0] == want_option && len == 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[2..8]);
            snap.neighbours().learn(i, MacAddr(m), now);
            return true;
        }
        opts = &opts[len..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    /// A gratuitous ARP is a broadcast request with the VIP as sender and target; an
    /// unsolicited advertisement goes to all nodes with the override flag, the target's
    /// link-layer address and a valid checksum. Both parse as what they are.
    #[test]
    fn vip_announcements_are_well_formed() {
        let me = MacAddr([2, 0, 0, 0, 0, 9]);
        let vip = Ipv4Addr::new(10, 99, 0, 100);
        let mut f = vec![0u8; ARP_REQUEST_LEN];
        assert!(write_gratuitous_arp(&mut f, me, vip));
        assert!(
            !write_gratuitous_arp(&mut [0u8; 42], me, vip),
            "wrong length refused"
        );
        let p = packet::parse::parse_frame(&f).unwrap();
        assert_eq!(p.network, packet::parse::Network::Arp);
        assert_eq!(&f[..6], &[0xff; 6]);
        let a = ArpPacket::new_checked(&f[14..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(
            (a.sender_ip(), a.target_ip(), a.sender_mac()),
            (vip, vip, me)
        );

        let vip6: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let mut f = vec![0u8; NA_LEN];
        assert!(write_unsolicited_na(&mut f, me, vip6));
        let p = packet::parse::parse_frame(&f).unwrap();
        assert_eq!(p.proto, PROTO_ICMPV6);
        assert_eq!(p.icmp_type, packet::icmp::V6_NEIGHBOR_ADVERT);
        assert_eq!((p.ttl, p.src), (255, IpAddr::V6(vip6)));
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let m = &f[54..];
        assert_eq!(m[4], 0x20, "override, not solicited, not a router");
        assert_eq!(&m[8..24], &vip6.octets());
        assert_eq!((m[24], m[25], &m[26..32]), (2, 1, &me.0[..]));
        let mut zeroed = m.to_vec();
        zeroed[2..4].fill(0);
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        let c = checksum::finish(
            checksum::pseudo_v6(vip6, all_nodes, PROTO_ICMPV6, m.len() as u32),
            &zeroed,
        );
        assert_eq!(&m[2..4], &c.to_be_bytes());
    }

    /// Addresses keep their slots, a full table is refused, and released slots are reused
    /// empty (no MAC of the address that had them).
    #[test]
    fn slots_are_kept_refused_when_full_and_reused_after_release() {
        let t = NeighbourTable::new();
        let all: Vec<IpAddr> = (0..t.slots.len() as u32).map(v4).collect();
        let slots = t.assign(&all).unwrap();
        assert_eq!(t.assign(&all[5..7]).unwrap(), slots[5..7].to_vec());
        assert!(t.assign(&[v4(u32::MAX >> 8)]).is_err());
        t.learn(slots[3], MacAddr([2, 0, 0, 0, 0, 9]), 1);
        t.release_unused(|a| a != all[3]);
        let again = t.assign(&[v4(999_999)]).unwrap();
        assert_eq!(again, vec![slots[3]]);
        assert_eq!(t.mac(again[0]), None);
    }
}
