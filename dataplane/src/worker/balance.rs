//! Balancing a flow: a tracked flow keeps its backend; a new one is given one by Maglev (and
//! an SNAT port), tracked, and rewritten for its service's forwarding mode.

use super::{Verdict, Worker};
use crate::conntrack::{initial_state, Flow, FlowState, PackedKey, Tracked};
use crate::forward::{set_macs, translate, translate_to_backend_v4};
use crate::port::Frame;
use crate::setup::{Forwarding, SynProxyMode};
use crate::snapshot::{ServiceEntry, Snapshot};
use crate::stats::{DropReason, WorkerStats};
use crate::synproxy::{HeldSegments, ProxyHandshake, ProxyShift};
use packet::encap::{self, InnerInfo, Outer, Tunnel};
use packet::ipv4::{Ipv4Packet, PROTO_TCP};
use packet::ipv6::Ipv6Packet;
use packet::parse::{Network, Parsed};
use packet::tcp;
use packet::FlowKey;
use std::net::{IpAddr, SocketAddr};

/// Table entries a new flow looks through for a backend under its `max_flows` before it
/// considers every backend.
const FULL_PROBES: usize = 32;

/// SNAT ports tried for a new flow before giving up.
const SNAT_TRIES: usize = 64;

/// Points a flow's service and backend indices at `snap` if they refer to an older
/// generation (`u16::MAX` where the service or backend is gone). The forward key's
/// destination is the VIP, so the service is found again by it, and the backend by address.
#[inline]
pub fn resolve(snap: &Snapshot, key: &FlowKey, f: &mut Flow) {
    let g = snap.generation as u32;
    if f.generation != g {
        (f.service, f.backend) = reindex(snap, key, f.backend_addr);
        f.generation = g;
    }
}

/// [`resolve`] for a flow found in place by [`ConnTrack::lookup`], whose backend address is
/// read (from the cold half of its record) only when the generation moved.
#[inline]
fn resolve_tracked(snap: &Snapshot, key: &FlowKey, t: &mut Tracked<'_>) {
    let g = snap.generation as u32;
    if t.generation != g {
        let (s, b) = reindex(snap, key, t.backend_addr());
        t.hot.service = s;
        t.hot.backend = b;
        t.hot.generation = g;
    }
}

/// The service (found by the forward key's VIP) and backend (by address) indices in `snap`.
#[cold]
fn reindex(snap: &Snapshot, key: &FlowKey, backend: SocketAddr) -> (u16, u16) {
    let s = snap.service_for(key.dst, key.dst_port, key.proto);
    let b = s.and_then(|s| snap.backend_of(s, backend));
    (s.unwrap_or(u16::MAX), b.unwrap_or(u16::MAX))
}

/// What a tracked flow's packet needs from its record.
struct Kept {
    backend: u16,
    snat_port: u16,
    proxy: ProxyShift,
    seq_delta: u32,
}

/// Accounts for a flow that left the table (expired, evicted or replaced), and frees the
/// data the SYN proxy held for it.
pub(super) fn flow_gone(
    stats: &mut WorkerStats,
    held: &mut HeldSegments,
    snap: &Snapshot,
    key: &FlowKey,
    f: &Flow,
) {
    if let Some(h) = f.proxy.held() {
        held.release(h);
    }
    let mut f = *f;
    resolve(snap, key, &mut f);
    if let Some(c) = stats
        .backends
        .get_mut(f.service as usize)
        .and_then(|v| v.get_mut(f.backend as usize))
    {
        c.active_flows = c.active_flows.saturating_sub(1);
    }
}

/// A flow [`Worker::place`] is to track: its key; with `filed`, the packed key and hash a
/// lookup has just found absent (the express lane's miss, which the general path's lookup
/// would have counted); its first segment's TCP flags; and for one the SYN proxy opens, its
/// handshake.
pub(super) struct NewFlow<'a> {
    pub key: &'a FlowKey,
    pub filed: Option<(PackedKey, u64)>,
    pub tcp_flags: Option<u8>,
    pub proxied: Option<ProxyHandshake>,
}

/// Where [`Worker::new_flow`] put a flow: its backend (index in its service) and SNAT port.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    pub backend: u16,
    pub snat_port: u16,
}

impl Worker {
    /// Always inlined into the poll loop (its one caller, through `act`): as a call it cost
    /// about 40 instructions a packet (callgrind, the 10,000-flow NAT replay).
    #[inline(always)]
    pub(super) fn forward<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        hint: super::FlowHint,
        now: u64,
    ) -> Verdict {
        let svc = &snap.services[s];
        // The service entry is in cache already: an unlimited service pays one branch.
        if svc.rate_limit.is_some() {
            if let Some(l) = self.limits.get_mut(s) {
                if let Some(r) = l.packets {
                    if !l.bucket.take(now, r) {
                        return Verdict::Drop(DropReason::ServiceRateLimited);
                    }
                }
            }
        }
        let key = p.flow_key();
        if svc.forwarding == Forwarding::Offload {
            return self
                .offload_shard(key.stable_hash())
                .map_or_else(Verdict::Drop, Verdict::Offload);
        }
        let hash = if hint.hash == 0 {
            self.ct.hash(&key)
        } else {
            hint.hash
        };
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        let proxy = !matches!(svc.syn_proxy.mode, SynProxyMode::Off) && p.proto == PROTO_TCP;
        // A SYN the proxy answers is neither tracked nor looked up: that is what lets a flood
        // of them cost one rewrite each and nothing else.
        if proxy
            && p.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN
            && self.proxy_answers_syn(svc, s, now)
        {
            return self.answer_syn(f, p, snap, svc, now);
        }
        // A tracked flow stays on its backend unless that backend is gone, disabled or past
        // its drain timeout, or its VIP now belongs to another service: then it is chosen
        // afresh.
        let kept = self
            .ct
            .lookup_from(hint.candidate, &key, hash, tcp_flags, now)
            .and_then(|mut t| {
                resolve_tracked(snap, &key, &mut t);
                let keep = t.service as usize == s
                    && svc
                        .backends
                        .get(t.backend as usize)
                        .is_some_and(|b| b.keeps_flows);
                keep.then_some(Kept {
                    backend: t.backend,
                    snat_port: t.snat_port,
                    proxy: t.proxy,
                    seq_delta: t.seq_delta,
                })
            });
        let k = match kept {
            Some(k) => k,
            None => {
                if proxy {
                    if let Some(v) = self.proxy_untracked(f, p, snap, s, now) {
                        return v;
                    }
                }
                match self.new_flow(&key, snap, s, tcp_flags, now, None) {
                    Ok(fl) => Kept {
                        backend: fl.backend,
                        snat_port: fl.snat_port,
                        proxy: ProxyShift::NONE,
                        seq_delta: 0,
                    },
                    Err(r) => return Verdict::Drop(r),
                }
            }
        };
        if k.proxy.is_proxied() && !k.proxy.is_open() {
            return self.proxy_opening(f, p, snap, s, &key, k.backend, k.snat_port);
        }
        let (backend, snat_port) = (k.backend, k.snat_port);
        // The flow's backend index is resolved against this snapshot, whose entry carries
        // the same address the flow was given.
        let Some(be) = svc.backends.get(backend as usize) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let node = &snap.node;
        let Some(dst_mac) = snap.mac_of(be.next_hop) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        let mut fragment_to = None;
        let result = match svc.forwarding {
            Forwarding::Nat => match &be.rewrite_v4 {
                Some(r) => translate_to_backend_v4(f.data_mut(), p, None, r),
                None => translate(f.data_mut(), p, None, Some((be.addr.ip(), be.addr.port()))),
            },
            Forwarding::Snat => match (snap.node_addr(p.dst.is_ipv6()), &be.rewrite_v4) {
                (Some(IpAddr::V4(src)), Some(r)) => {
                    translate_to_backend_v4(f.data_mut(), p, Some((src, snat_port)), r)
                }
                (Some(src), _) => translate(
                    f.data_mut(),
                    p,
                    Some((src, snat_port)),
                    Some((be.addr.ip(), be.addr.port())),
                ),
                (None, _) => Err(DropReason::NoNodeAddress),
            },
            Forwarding::Dsr => Ok(()),
            Forwarding::Ipip | Forwarding::Gue => {
                if let Some(mtu) = node.tunnel_mtu {
                    let over = tunnel_overhead(be.addr.ip(), svc.forwarding);
                    let datagram = p.l3_end.saturating_sub(p.l2_len);
                    if datagram + over > mtu as usize {
                        if !super::too_big::sender_must_shrink(f.data(), p) {
                            if !(node.tunnel_fragment && be.addr.is_ipv4()) {
                                return Verdict::Drop(DropReason::TunnelTooBig);
                            }
                            fragment_to = Some(mtu);
                        } else {
                            self.stats.drop(DropReason::TunnelTooBig);
                            let fits = (mtu as usize - over) as u16;
                            if super::too_big::rewrite_as_too_big(f, p, node.mac, fits) {
                                return Verdict::Transmit;
                            }
                            return Verdict::Drop(DropReason::NoHeadroom);
                        }
                    }
                }
                encapsulate(f, p, svc, snap, be.addr, &key)
            }
            // Classification hands these to the offload pool before they get here.
            Forwarding::Offload => Err(DropReason::OffloadUnavailable),
        };
        if let Err(r) = result {
            return Verdict::Drop(r);
        }
        if k.proxy.is_proxied() {
            self.proxied_toward_backend(f, p, &key, &k);
        }
        set_macs(f.data_mut(), node.mac, dst_mac);
        self.count_backend_packet(s, backend, f.data().len());
        match fragment_to {
            Some(mtu) => Verdict::Fragment(mtu),
            None => Verdict::Transmit,
        }
    }

    /// The SYN proxy's translation of a client segment of flow `key`, already rewritten for
    /// its backend (out of line: only proxied flows pay for it).
    #[inline(never)]
    fn proxied_toward_backend<F: Frame>(&self, f: &mut F, p: &Parsed, key: &FlowKey, k: &Kept) {
        let shift = if k.proxy.shifts_to_backend() {
            self.ct
                .peek(key)
                .map_or(0, |fl| fl.proxy.to_backend_shift())
        } else {
            0
        };
        super::synproxy::toward_backend(f.data_mut(), p, k.seq_delta, shift);
    }

    /// Chooses a backend by Maglev and tracks the flow (allocating an SNAT port if needed).
    /// With `proxied`, the flow is one the SYN proxy opens (half-open until the backend's
    /// SYN-ACK), and must be tracked: `syn_proxy_no_flow` if the table refuses it. Returns
    /// where the flow went, not the whole record: returning the record cost a copy of 150
    /// bytes a new flow that both callers threw away.
    pub(super) fn new_flow(
        &mut self,
        key: &FlowKey,
        snap: &Snapshot,
        s: usize,
        tcp_flags: Option<u8>,
        now: u64,
        proxied: Option<ProxyHandshake>,
    ) -> Result<Placed, DropReason> {
        let svc = &snap.services[s];
        if svc.rate_limit.is_some() {
            if let Some(r) = self.limits.get(s).and_then(|l| l.per_source) {
                let source = crate::ratelimit::source_key(key.src);
                if !self.sources.admit(source, svc.limit_key, r, now) {
                    return Err(DropReason::SourceRateLimited);
                }
            }
        }
        let b = self.choose_backend(svc, s, key)?;
        let opening = NewFlow {
            key,
            filed: None,
            tcp_flags,
            proxied,
        };
        self.place(opening, snap, s, b, now)
    }

    /// The backend (index in service `s`, `svc`) a new flow `key` goes to, changing nothing.
    #[inline]
    pub(super) fn choose_backend(
        &self,
        svc: &ServiceEntry,
        s: usize,
        key: &FlowKey,
    ) -> Result<u16, DropReason> {
        let table = svc.table.as_ref().ok_or(DropReason::NoBackend)?;
        self.with_room(svc, s, table, key.stable_hash())
    }

    /// Tracks new flow `n` on backend `b` of service `s` (which [`Worker::choose_backend`]
    /// gave it): its SNAT port, its record, its counters.
    pub(super) fn place(
        &mut self,
        n: NewFlow<'_>,
        snap: &Snapshot,
        s: usize,
        b: u16,
        now: u64,
    ) -> Result<Placed, DropReason> {
        let (key, proxied) = (n.key, n.proxied);
        let svc = &snap.services[s];
        let be = svc.backends.get(b as usize).ok_or(DropReason::NoBackend)?;
        let (snat_port, reply_key) = match svc.forwarding {
            Forwarding::Nat => (
                0,
                Some(FlowKey {
                    src: be.addr.ip(),
                    dst: key.src,
                    src_port: be.addr.port(),
                    dst_port: key.src_port,
                    proto: key.proto,
                }),
            ),
            Forwarding::Snat => {
                let node_ip = snap
                    .node_addr(key.dst.is_ipv6())
                    .ok_or(DropReason::NoNodeAddress)?;
                let port = self.alloc_snat_port(be.addr, node_ip, key.proto)?;
                (
                    port,
                    Some(FlowKey {
                        src: be.addr.ip(),
                        dst: node_ip,
                        src_port: be.addr.port(),
                        dst_port: port,
                        proto: key.proto,
                    }),
                )
            }
            _ => (0, None),
        };
        let flow = Flow {
            service: s as u16,
            backend: b,
            generation: snap.generation as u32,
            backend_addr: be.addr,
            snat_port,
            state: match proxied {
                Some(_) => FlowState::TcpProxyOpening,
                None => initial_state(n.tcp_flags),
            },
            created_ns: now,
            last_seen_ns: now,
            reply_key,
            seq_delta: 0,
            proxy_shift: match proxied {
                Some(_) => ProxyShift::OPENING,
                None => ProxyShift::NONE,
            },
            proxy: proxied.unwrap_or_default(),
        };
        let placed = Placed {
            backend: b,
            snat_port,
        };
        let inserted = match n.filed {
            Some((packed, hash)) => self.ct.file_after_miss(packed, hash, flow, now),
            None => self.ct.insert(*key, flow, now),
        };
        if let Some((k, f)) = inserted.gone {
            flow_gone(&mut self.stats, &mut self.held, snap, &k, &f);
        }
        if proxied.is_some() && !inserted.tracked {
            return Err(DropReason::SynProxyNoFlow);
        }
        if let Some(c) = self
            .stats
            .backends
            .get_mut(s)
            .and_then(|v| v.get_mut(b as usize))
        {
            c.new_flows += 1;
            c.active_flows += inserted.tracked as u64;
        }
        if svc.all_down_fallback {
            if let Some(c) = self.stats.services.get_mut(s) {
                c.all_down_flows += 1;
            }
        }
        Ok(placed)
    }

    /// Maglev's choice for a new flow, or, if that backend is at its `max_flows` (this
    /// worker's share of it), the next entry of the table whose backend has room — the
    /// table's neighbours are other backends in proportion to their weights, as Maglev's
    /// fallback for an overloaded backend takes them — and past [`FULL_PROBES`] entries any
    /// backend with room; `backend_full` when none has.
    #[inline]
    fn with_room(
        &self,
        svc: &ServiceEntry,
        s: usize,
        table: &maglev::MaglevTable,
        hash: u64,
    ) -> Result<u16, DropReason> {
        let workers = self.steering.workers as u32;
        let counts = self.stats.backends.get(s);
        let has_room = |b: u16| {
            let Some(be) = svc.backends.get(b as usize) else {
                return false;
            };
            be.max_flows == 0
                || counts
                    .and_then(|c| c.get(b as usize))
                    .is_none_or(|c| c.active_flows < u64::from(be.max_flows.div_ceil(workers)))
        };
        let entries = table.entries();
        let first = (hash % entries.len() as u64) as usize;
        let b = entries[first];
        if has_room(b) {
            return Ok(b);
        }
        for k in 1..FULL_PROBES.min(entries.len()) {
            let b = entries[(first + k) % entries.len()];
            if has_room(b) {
                return Ok(b);
            }
        }
        (0..svc.backends.len() as u16)
            .find(|&b| svc.backends[b as usize].takes_new_flows && has_room(b))
            .ok_or(DropReason::BackendFull)
    }

    fn alloc_snat_port(
        &mut self,
        backend: SocketAddr,
        node_ip: IpAddr,
        proto: u8,
    ) -> Result<u16, DropReason> {
        let (lo, hi) = self.snat_range;
        for _ in 0..SNAT_TRIES {
            let port = self.snat_next;
            self.snat_next = if port >= hi { lo } else { port + 1 };
            let rk = FlowKey {
                src: backend.ip(),
                dst: node_ip,
                src_port: backend.port(),
                dst_port: port,
                proto,
            };
            if !self.ct.reply_key_in_use(&rk) {
                return Ok(port);
            }
        }
        Err(DropReason::SnatPortsExhausted)
    }
}

/// The MAC frames to backend `b` of `svc` go to; `unresolved_next_hop` while the data
/// path has not resolved it.
#[inline]
pub(super) fn backend_mac(
    snap: &Snapshot,
    svc: &ServiceEntry,
    b: u16,
) -> Result<packet::MacAddr, DropReason> {
    svc.backends
        .get(b as usize)
        .and_then(|b| snap.mac_of(b.next_hop))
        .ok_or(DropReason::UnresolvedNextHop)
}

/// Bytes IPIP or GUE adds toward a backend at `backend`: the outer IP header, and for GUE a
/// UDP and a GUE header.
pub(super) fn tunnel_overhead(backend: IpAddr, forwarding: Forwarding) -> usize {
    let ip = if backend.is_ipv6() { 40 } else { 20 };
    ip + if forwarding == Forwarding::Gue {
        8 + 4
    } else {
        0
    }
}

/// Wraps the datagram of flow `key` in IPIP or GUE from the node's address to the backend, in
/// the frame's headroom. Ethernet padding after the datagram is trimmed first.
pub(super) fn encapsulate<F: Frame>(
    f: &mut F,
    p: &Parsed,
    svc: &ServiceEntry,
    snap: &Snapshot,
    backend: SocketAddr,
    key: &FlowKey,
) -> Result<(), DropReason> {
    let inner = {
        let l3 = f.data().get(p.l2_len..p.l3_end).unwrap_or(&[]);
        match p.network {
            Network::Ipv4 => Ipv4Packet::new_quoted(l3).map(|ip| InnerInfo {
                is_ipv6: false,
                dscp_ecn: ip.dscp_ecn(),
                dont_fragment: ip.dont_fragment(),
                flow_label: 0,
            }),
            _ => Ipv6Packet::new_quoted(l3).map(|ip| InnerInfo {
                is_ipv6: true,
                dscp_ecn: ip.traffic_class(),
                dont_fragment: false,
                flow_label: ip.flow_label(),
            }),
        }
        .map_err(|_| DropReason::EncapInnerInvalid)?
    };
    let outer = match (backend.ip(), snap.node.ipv4, snap.node.ipv6) {
        (IpAddr::V4(dst), Some(src), _) => Outer::V4 { src, dst },
        (IpAddr::V6(dst), _, Some(src)) => Outer::V6 { src, dst },
        _ => return Err(DropReason::NoNodeAddress),
    };
    let tunnel = match svc.forwarding {
        // Source port from the flow's stable hash: entropy for ECMP and RSS between us and
        // the backend, the same for the flow whichever worker or instance sends it. (IPIP has
        // no port, so only GUE computes it.)
        Forwarding::Gue => Tunnel::Gue {
            src_port: 49152 | (key.stable_hash() as u16 & 0x3fff),
            dst_port: svc.gue_port,
        },
        _ => Tunnel::Ipip,
    };
    f.truncate(p.l3_end);
    if !f.prepend(encap::overhead(&outer, &tunnel)) {
        return Err(DropReason::NoHeadroom);
    }
    encap::encapsulate(f.data_mut(), p.l2_len, inner, outer, tunnel)
        .map_err(|_| DropReason::NoHeadroom)
}
