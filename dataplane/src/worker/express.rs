//! The express lane: a frame of a flow this worker already tracks, to an IPv4 `nat`, `snat`,
//! `dsr`, `ipip` or `gue` service, forwarded from its raw words ([`Ipv4Flow`]) without the
//! general path's parse summary, classification or VIP lookup; the first frame of a new flow
//! to such a service when no rate limit or SYN proxy gates it, placed the same way; and a
//! bare SYN to a service whose SYN proxy is `on`, answered the same way. That is most frames
//! a balancer sees (and all of a SYN flood's), and the general path is several times the
//! work.
//!
//! The lane is an exact shortcut, not a second policy: it takes a frame only when the general
//! path would forward it to the same backend with the same rewrite, and it changes nothing
//! (no counter, no flow) for a frame it declines, which then takes the general path as if the
//! lane did not exist (`tests` compare the two frame by frame). A tracked flow whose record
//! refers to this snapshot's generation names the service its VIP classifies to — the
//! record was resolved against this very snapshot — so the classification is the record's.
//! Declined: expired or reopened flows, new flows to services with any rate limit or a SYN
//! proxy, records of an older generation, backends that no longer keep flows, proxied
//! flows, SYNs to `auto`-proxied services, services with a packet rate limit, unresolved next hops, TTLs that expire, datagrams too big for the
//! tunnel, and every frame on a VLAN, on a standby node or on a port that must steer forward
//! frames.

use super::balance::{encapsulate, tunnel_overhead, NewFlow, Placed};
use super::Lookahead;
use super::{Verdict, Worker};
use crate::conntrack::{LiveFlow, Miss};
use crate::forward::rewrite_express_to_backend;
use crate::port::Frame;
use crate::setup::{Forwarding, SynProxyMode};
use crate::snapshot::{link_addresses, BackendEntry, ExpressService, ServiceEntry, Snapshot};
use crate::stats::DropReason;
use packet::ipv4::PROTO_TCP;
use packet::{FlowKey, Ipv4Flow};
use std::net::IpAddr;

impl Worker {
    /// Whether frames of this burst may take the express lane at all: settings of the node
    /// and the port that the general path checks on every frame, checked once.
    #[inline(always)]
    pub(super) fn express_open(&self, snap: &Snapshot) -> bool {
        self.express_lane && snap.node.vlan.is_none() && !snap.node.standby && !self.steer_forward
    }

    /// Forwards frame `f` (read as `e`, what the burst's first stages found for it in `a`:
    /// its packed key, hash and likely slot) if it is a kept flow's the lane takes; `None`,
    /// with nothing changed, if not.
    #[inline(always)]
    pub(super) fn express<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        e: &Ipv4Flow,
        a: &Lookahead,
        now: u64,
    ) -> Option<Verdict> {
        let tcp_flags = (e.proto == PROTO_TCP).then_some(e.tcp_flags);
        let live = match self
            .ct
            .find_live_from(a.candidate, &a.key, a.hash, tcp_flags, now)
        {
            Ok(live) => live,
            Err(Miss::Absent) => return self.express_new(snap, f, e, a, tcp_flags, now),
            Err(Miss::Stale) => return None,
        };
        let hot = &live.hot;
        if hot.generation != snap.generation as u32 || hot.proxy.is_proxied() {
            return None;
        }
        let (s, b, snat_port) = (hot.service as usize, hot.backend, hot.snat_port);
        let svc = snap.services.get(s)?;
        let be = svc.backends.get(b as usize)?;
        if !be.keeps_flows {
            return None;
        }
        let mut resolved = [0; 12];
        let link = link_of(snap, be, &mut resolved)?;
        let new_src = match svc.express {
            ExpressService::Nat => None,
            ExpressService::Snat(a) => Some((a, snat_port)),
            ExpressService::Dsr => {
                self.ct.hit(&live, tcp_flags, now)?;
                return Some(self.express_out(f.data_mut(), link, s, b));
            }
            ExpressService::Tunnel => {
                let to = (s, b, link, tcp_flags);
                return self.express_tunnel(snap, svc, be, f, e, live, to, now);
            }
            ExpressService::Declined => return None,
        };
        let rewrite = be.rewrite_v4.as_ref()?;
        if e.ttl <= 1 {
            return None;
        }
        let d = f.data_mut();
        rewrite_express_to_backend(d, e, new_src, rewrite, link)?;
        self.ct.hit(&live, tcp_flags, now)?;
        Some(self.express_counted(d.len(), s, b))
    }

    /// The first frame of a flow the table does not hold (`a`: its key and hash, which the
    /// lookup just found absent), placed and forwarded by the lane when the general path
    /// would do exactly that: its VIP classifies to a service the lane takes, with no rate
    /// limit and no SYN proxy (whose gates decide on each new flow), and the backend Maglev
    /// gives it can be sent to from here. Everything that could decline it is checked
    /// before anything changes; past [`Worker::place`] the frame is the new flow's, as on
    /// the general path. Out of line: a new flow's frame is one of many of the flow's.
    #[inline(never)]
    fn express_new<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        e: &Ipv4Flow,
        a: &Lookahead,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<Verdict> {
        let s = snap.service_for(IpAddr::V4(e.dst.into()), e.dst_port, e.proto)? as usize;
        let svc = snap.services.get(s)?;
        if svc.rate_limit.is_some()
            || (svc.syn_proxy.mode != SynProxyMode::Off && e.proto == PROTO_TCP)
        {
            return None;
        }
        let key = e.flow_key();
        // No backend with room is a drop the general path counts.
        let b = self.choose_backend(svc, s, &key).ok()?;
        let be = svc.backends.get(b as usize)?;
        let mut resolved = [0; 12];
        let link = link_of(snap, be, &mut resolved)?;
        let new_src = match svc.express {
            ExpressService::Nat => None,
            ExpressService::Snat(addr) => Some(addr),
            ExpressService::Dsr => {
                if let Err(r) = self.place_express(&key, a, tcp_flags, snap, s, b, now) {
                    return Some(Verdict::Drop(r));
                }
                return Some(self.express_out(f.data_mut(), link, s, b));
            }
            ExpressService::Tunnel => {
                if !fits_tunnel(snap, svc, be, e) {
                    return None;
                }
                if let Err(r) = self.place_express(&key, a, tcp_flags, snap, s, b, now) {
                    return Some(Verdict::Drop(r));
                }
                if let Err(r) = encapsulate(f, &e.parsed(), svc, snap, be.addr, &key) {
                    return Some(Verdict::Drop(r));
                }
                return Some(self.express_out(f.data_mut(), link, s, b));
            }
            ExpressService::Declined => return None,
        };
        let rewrite = be.rewrite_v4.as_ref()?;
        if e.ttl <= 1 {
            return None;
        }
        let placed = match self.place_express(&key, a, tcp_flags, snap, s, b, now) {
            Ok(p) => p,
            Err(r) => return Some(Verdict::Drop(r)),
        };
        let d = f.data_mut();
        // Cannot fail: the express read found the frame at least this long.
        rewrite_express_to_backend(d, e, new_src.map(|a| (a, placed.snat_port)), rewrite, link)?;
        Some(self.express_counted(d.len(), s, b))
    }

    /// [`Worker::place`] for the lane's new flow `key`, whose lookup missed as `a`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn place_express(
        &mut self,
        key: &FlowKey,
        a: &Lookahead,
        tcp_flags: Option<u8>,
        snap: &Snapshot,
        s: usize,
        b: u16,
        now: u64,
    ) -> Result<Placed, DropReason> {
        let n = NewFlow {
            key,
            filed: Some((a.key, a.hash)),
            tcp_flags,
            proxied: None,
        };
        self.place(n, snap, s, b, now)
    }

    /// A bare SYN while some service proxies (stage one marks it with a hash of 0): answered
    /// with a cookie straight from the express read if its service's proxy is `on` —
    /// classification would give that service, and the balancing step would answer it before
    /// anything else — and left to the general path otherwise (`auto`, whose gate counts each
    /// SYN it decides on; a packet rate limit; no service). It is not looked up: a proxied
    /// SYN is never tracked, and a flood of them should pay for nothing it does not need.
    #[inline(never)]
    pub(super) fn express_syn<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        e: &Ipv4Flow,
        now: u64,
    ) -> Option<Verdict> {
        if !(snap.syn_proxied && e.is_bare_syn()) {
            return None;
        }
        let s = snap.service_for(IpAddr::V4(e.dst.into()), e.dst_port, e.proto)? as usize;
        let svc = snap.services.get(s)?;
        if svc.syn_proxy.mode != SynProxyMode::On
            || svc.rate_limit.is_some_and(|r| r.packets.is_some())
            || svc.forwarding == Forwarding::Offload
        {
            return None;
        }
        Some(self.answer_syn(f, &e.parsed(), snap, svc, now))
    }

    /// The lane's `ipip` and `gue` step: the flow's packet encapsulated toward backend `be`
    /// of `svc` (`to`: their indices, the frame's link addresses and its TCP flags).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn express_tunnel<F: Frame>(
        &mut self,
        snap: &Snapshot,
        svc: &ServiceEntry,
        be: &BackendEntry,
        f: &mut F,
        e: &Ipv4Flow,
        live: LiveFlow,
        (s, b, link, tcp_flags): (usize, u16, &[u8; 12], Option<u8>),
        now: u64,
    ) -> Option<Verdict> {
        if !fits_tunnel(snap, svc, be, e) {
            return None;
        }
        // Past here the frame is the flow's, hit or not, as on the general path, where a
        // failed encapsulation is a drop too.
        self.ct.hit(&live, tcp_flags, now)?;
        if let Err(r) = encapsulate(f, &e.parsed(), svc, snap, be.addr, &e.flow_key()) {
            return Some(Verdict::Drop(r));
        }
        Some(self.express_out(f.data_mut(), link, s, b))
    }

    /// The link addresses and counters of a frame the lane forwards.
    #[inline(always)]
    fn express_out(&mut self, d: &mut [u8], link: &[u8; 12], s: usize, b: u16) -> Verdict {
        if let Some(h) = d.first_chunk_mut::<12>() {
            *h = *link;
        }
        self.express_counted(d.len(), s, b)
    }

    /// The counters of a frame of `len` bytes the lane forwards to backend `b` of service `s`.
    #[inline(always)]
    fn express_counted(&mut self, len: usize, s: usize, b: u16) -> Verdict {
        self.count_backend_packet(s, b, len);
        self.stats.express += 1;
        Verdict::Transmit
    }
}

/// The link addresses of a frame to backend `be`: precomputed for a configured MAC, from the
/// neighbour table for a resolved one (`None` while unresolved: the general path counts it).
/// Borrowed where they are precomputed (written into `resolved` otherwise), so the common
/// case copies them once, into the frame.
#[inline(always)]
fn link_of<'a>(
    snap: &Snapshot,
    be: &'a BackendEntry,
    resolved: &'a mut [u8; 12],
) -> Option<&'a [u8; 12]> {
    match &be.link {
        Some(l) => Some(l),
        None => {
            *resolved = link_addresses(snap.mac_if_resolved(be.next_hop)?, snap.node.mac);
            Some(resolved)
        }
    }
}

/// Whether frame `e`'s datagram fits the node's tunnel MTU once encapsulated toward `be`: one
/// that would not is the general path's (ICMP too big, or outer fragments).
#[inline(always)]
fn fits_tunnel(snap: &Snapshot, svc: &ServiceEntry, be: &BackendEntry, e: &Ipv4Flow) -> bool {
    snap.node.tunnel_mtu.is_none_or(|mtu| {
        let datagram = e.l3_end as usize - Ipv4Flow::L2_LEN;
        datagram + tunnel_overhead(be.addr.ip(), svc.forwarding) <= mtu as usize
    })
}
