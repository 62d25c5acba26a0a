//! The per-core worker: one poll loop over one port queue, with its own connection tracking
//! and counters. Per frame: parse, classify (VIP, NAT/SNAT reply, ICMP error about a VIP flow,
//! or not ours), find or choose the backend (conntrack, then Maglev), rewrite in place, and
//! queue for transmit. No allocation, no locks, no panics on any input.

use crate::conntrack::{initial_state, ConnTrack, Flow, Tracked};
use crate::forward::{set_macs, translate, translate_icmp_error};
use crate::offload::{OffloadPlan, OffloadRings};
use crate::port::{Frame, Port, BURST};
use crate::setup::Forwarding;
use crate::snapshot::{ServiceEntry, Snapshot};
use crate::stats::{DropReason, WorkerStats};
use crate::steering::Steering;
use crossbeam::queue::ArrayQueue;
use packet::encap::{self, InnerInfo, Outer, Tunnel};
use packet::icmp;
use packet::ipv4::Ipv4Packet;
use packet::ipv4::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use packet::ipv6::Ipv6Packet;
use packet::parse::{parse_frame, parse_quoted, Network, Parsed};
use packet::FlowKey;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Conntrack ring entries examined for expiry per burst of up to 32 frames: at 1 Mpps that
/// walks a full 1M-flow table about every two seconds, while costing ~100 instructions per
/// packet rather than the ~345 a budget of 64 cost (measured with callgrind).
pub const SWEEP_BUDGET: usize = 16;
/// SNAT ports tried for a new flow before giving up.
const SNAT_TRIES: usize = 64;

/// What to do with a processed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Transmit,
    ToHost,
    Drop(DropReason),
    /// Another worker owns the flow: pass the (unmodified) frame to it.
    Handoff(usize),
    /// The flow belongs to an offloaded service (or is a reply on a connection an offload
    /// shard opened): pass the (unmodified) frame to that shard.
    Offload(usize),
}

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

/// Accounts for a flow that left the table (expired, evicted or replaced).
fn flow_gone(stats: &mut WorkerStats, snap: &Snapshot, key: &FlowKey, f: &Flow) {
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

/// Bounded inbound rings, one per worker, carrying frames to the worker that owns their flow;
/// and, when an offload pool runs, the rings to and from its shards.
pub struct Rings<F> {
    inbound: Vec<ArrayQueue<F>>,
    offload: Option<OffloadRings<F>>,
}

impl<F> Rings<F> {
    pub fn new(workers: usize, capacity: usize) -> Self {
        Rings {
            inbound: (0..workers.max(1))
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
            offload: None,
        }
    }

    /// Adds the rings of an offload pool (give each worker their plan with
    /// [`Worker::offloading_to`]).
    pub fn with_offload(mut self, o: OffloadRings<F>) -> Self {
        self.offload = Some(o);
        self
    }

    pub fn offload(&self) -> Option<&OffloadRings<F>> {
        self.offload.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.iter().all(|q| q.is_empty())
            && self.offload.as_ref().is_none_or(|o| o.is_empty())
    }

    /// Takes one frame left for worker `w`: handed over by another worker, or returned to it
    /// by an offload shard (shutdown drains them).
    pub fn pop(&self, w: usize) -> Option<F> {
        self.inbound
            .get(w)
            .and_then(|q| q.pop())
            .or_else(|| self.offload.as_ref().and_then(|o| o.returned(w)))
    }

    /// Takes one frame still waiting for an offload shard, with the worker it came from
    /// (shutdown drains them once the shards have stopped).
    pub fn pop_unclaimed(&self) -> Option<(F, usize)> {
        let h = self.offload.as_ref()?.pop_unclaimed()?;
        Some((h.frame, h.worker))
    }
}

/// A worker's burst vectors, reserved once at [`BURST`] frames and reused.
pub struct Bursts<F> {
    rx: Vec<F>,
    tx: Vec<F>,
    host: Vec<F>,
}

impl<F> Bursts<F> {
    pub fn new() -> Self {
        Bursts {
            rx: Vec::with_capacity(BURST),
            tx: Vec::with_capacity(BURST),
            host: Vec::with_capacity(BURST),
        }
    }
}

impl<F> Default for Bursts<F> {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Worker {
    pub id: usize,
    steering: Steering,
    snap: Arc<Snapshot>,
    pub ct: ConnTrack,
    pub stats: WorkerStats,
    snat_range: (u16, u16),
    snat_next: u16,
    host_path: bool,
    /// Per-burst scratch, reserved at BURST entries: each frame's parse result, and the
    /// conntrack hash of its flow key (0 for frames that are not TCP/UDP flows).
    parsed: Vec<Result<Parsed, packet::Malformed>>,
    hashes: Vec<u64>,
    /// The time of the last frame processed (control-plane samples judge expiry by it).
    last_now: u64,
    /// Worker 0 solicits next hops: when it looks next, and where it left off.
    neighbour_due: u64,
    neighbour_cursor: usize,
    /// The port does not deliver each flow to its owner (the kernel picks AF_XDP queues, not
    /// our RSS key): forward frames are checked against [`Steering`] too, and handed over.
    steer_forward: bool,
    /// Where frames of offloaded services go; `None` drops them as `offload_unavailable`.
    offload: Option<OffloadPlan>,
}

/// Which tracked flows a [`Probe`] samples, and where this part of the scan starts.
#[derive(Debug, Clone, Copy)]
pub struct FlowQuery {
    pub vip: Option<(SocketAddr, u8)>,
    pub backend: Option<SocketAddr>,
    /// Conntrack slots examined at most per probe: bounds the time one probe takes from the
    /// worker's poll loop. The control plane sends another probe from `cursor` to go on.
    pub scan: usize,
    /// The slot to start from: 0 first, then the `cursor` the last probe returned.
    pub cursor: usize,
}

/// Conntrack slots a flow probe examines per burst unless asked for fewer (~20 µs of a
/// worker's time).
pub const FLOW_SCAN_PER_PROBE: usize = 4096;

/// A buffer the control plane hands a worker between bursts, which the worker fills with a
/// copy of its counters (and a flow sample, if asked) and hands back. The control plane
/// allocates it; the worker only copies into it.
#[derive(Debug, Clone)]
pub struct Probe {
    pub worker: usize,
    pub stats: WorkerStats,
    pub conntrack: crate::conntrack::ConnTrackCounters,
    pub active_flows: usize,
    pub generation: u64,
    pub now_ns: u64,
    pub flow_query: Option<FlowQuery>,
    pub flows: Vec<(FlowKey, Flow)>,
    /// Where the flow scan stopped, and whether it has seen every slot.
    pub cursor: usize,
    pub scan_done: bool,
    /// Snapshots this worker has swapped in, and the longest a swap took (the most a swap
    /// delayed the next burst); filled by the daemon's worker link.
    pub swaps: u64,
    pub swap_max_ns: u64,
}

impl Probe {
    /// A probe shaped for `snap` (so filling it copies without allocating), sampling up to
    /// `flows` flows when `flow_query` is set.
    pub fn new(snap: &Snapshot, flows: usize) -> Self {
        Probe {
            worker: 0,
            stats: WorkerStats::new(&snap.backend_counts()),
            conntrack: Default::default(),
            active_flows: 0,
            generation: 0,
            now_ns: 0,
            flow_query: None,
            flows: Vec::with_capacity(flows),
            cursor: 0,
            scan_done: false,
            swaps: 0,
            swap_max_ns: 0,
        }
    }
}

impl Worker {
    pub fn new(id: usize, steering: Steering, snap: Arc<Snapshot>, host_path: bool) -> Self {
        let snat_range = steering.snat_range(id);
        Worker {
            id,
            steering,
            ct: ConnTrack::new(&snap.conntrack),
            stats: WorkerStats::new(&snap.backend_counts()),
            snap,
            snat_range,
            snat_next: snat_range.0,
            host_path,
            parsed: Vec::with_capacity(BURST),
            hashes: Vec::with_capacity(BURST),
            last_now: 0,
            neighbour_due: 0,
            neighbour_cursor: 0,
            steer_forward: false,
            offload: None,
        }
    }

    /// Hands frames of services with [`Forwarding::Offload`], and replies to the shards'
    /// upstream ports, to the shards of `plan` (the plan of the [`OffloadRings`] given to
    /// [`Rings::with_offload`]).
    pub fn offloading_to(mut self, plan: OffloadPlan) -> Self {
        self.offload = Some(plan);
        self
    }

    /// For ports whose queues are not chosen by sluice's symmetric RSS key (AF_XDP with
    /// several queues): a client's frame reaching a worker that does not own its flow is
    /// handed to the owner, as replies always are. One Toeplitz hash per forward frame.
    pub fn steering_forward_frames(mut self) -> Self {
        self.steer_forward = true;
        self
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Swaps in a new configuration snapshot, between bursts. Cost: O(services + backends),
    /// never O(flows): tracked flows keep the backend they were given (its address and MAC
    /// live in the flow), and their service and backend indices are re-resolved against the
    /// new snapshot lazily, on their next packet or removal ([`resolve`]). Counters of
    /// services and backends that remain are carried over by identity (VIP and protocol,
    /// backend address).
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        let old = std::mem::replace(&mut self.snap, snap);
        let new = &self.snap;
        let mut stats = WorkerStats::new(&new.backend_counts());
        for (si, svc) in old.services.iter().enumerate() {
            let Some(ns) = new.service_for(svc.vip.ip(), svc.vip.port(), svc.proto) else {
                continue;
            };
            if let (Some(a), Some(b)) = (
                stats.services.get_mut(ns as usize),
                self.stats.services.get(si),
            ) {
                *a = *b;
            }
            for (bi, b) in svc.backends.iter().enumerate() {
                if let (Some(nb), Some(c)) = (
                    new.backend_of(ns, b.addr),
                    self.stats.backends.get(si).and_then(|v| v.get(bi)),
                ) {
                    stats.backends[ns as usize][nb as usize] = *c;
                }
            }
        }
        let WorkerStats {
            backends, services, ..
        } = stats;
        self.stats.backends = backends;
        self.stats.services = services;
    }

    /// One iteration of the poll loop: frames handed over by other workers, then a burst
    /// from the port; each processed; transmit and host bursts sent; a slice of conntrack
    /// swept. Returns the number of frames processed.
    pub fn poll<P: Port>(
        &mut self,
        port: &mut P,
        b: &mut Bursts<P::Frame>,
        rings: &Rings<P::Frame>,
    ) -> usize {
        if let Some(q) = rings.inbound.get(self.id) {
            while b.rx.len() < BURST {
                match q.pop() {
                    Some(f) => b.rx.push(f),
                    None => break,
                }
            }
        }
        let handed_in = b.rx.len();
        port.rx_burst(&mut b.rx);
        let n = b.rx.len();
        self.stats.packets_in += (n - handed_in) as u64;
        let clock = port.clock_ns();
        let snap = Arc::clone(&self.snap);
        // Stage one: parse every frame, hash its flow key, and start loading the index bucket
        // its lookup will read. Stage two: probe those buckets and start loading the flows'
        // slots. By stage three, the per-frame work, both are in cache: the memory latency of
        // 32 lookups overlaps instead of adding up.
        self.parsed.clear();
        self.hashes.clear();
        for f in b.rx.iter() {
            let r = parse_frame(f.data());
            let h = match &r {
                Ok(p) if !p.fragment && (p.proto == PROTO_TCP || p.proto == PROTO_UDP) => {
                    let h = self.ct.hash(&p.flow_key());
                    self.ct.prefetch_index(h);
                    h
                }
                _ => 0,
            };
            self.parsed.push(r);
            self.hashes.push(h);
        }
        for &h in &self.hashes {
            if h != 0 {
                self.ct.prefetch_flow(h);
            }
        }
        if n > 0 || clock.is_some() {
            self.ct.prefetch_sweep(SWEEP_BUDGET);
        }
        let mut now = clock.unwrap_or(0);
        // Borrowed by value for the burst (a move, not an allocation), so each frame's
        // summary is read in place rather than copied out past `&mut self`.
        let parsed = std::mem::take(&mut self.parsed);
        for (i, mut f) in b.rx.drain(..).enumerate() {
            now = clock.unwrap_or_else(|| f.timestamp_ns());
            if i >= handed_in {
                self.stats.bytes_in += f.data().len() as u64;
            }
            let hash = self.hashes.get(i).copied().unwrap_or(0);
            let verdict = match parsed.get(i) {
                Some(r) => self.process_parsed(&snap, &mut f, r, hash, now),
                None => Verdict::Drop(DropReason::NotOurs),
            };
            match verdict {
                Verdict::Transmit => b.tx.push(f),
                Verdict::ToHost => {
                    self.stats.to_host += 1;
                    b.host.push(f);
                }
                Verdict::Drop(r) => {
                    self.stats.drop(r);
                    port.free(f);
                }
                Verdict::Handoff(w) => match rings.inbound.get(w) {
                    Some(q) => match q.push(f) {
                        Ok(()) => self.stats.handed_off += 1,
                        Err(f) => {
                            self.stats.drop(DropReason::HandoffRingFull);
                            port.free(f);
                        }
                    },
                    None => {
                        self.stats.drop(DropReason::HandoffNoWorker);
                        port.free(f);
                    }
                },
                Verdict::Offload(s) => match &rings.offload {
                    Some(o) => match o.hand(s, self.id, f) {
                        Ok(()) => self.stats.offloaded += 1,
                        Err(f) => {
                            self.stats.drop(DropReason::OffloadRingFull);
                            port.free(f);
                        }
                    },
                    None => {
                        self.stats.drop(DropReason::OffloadUnavailable);
                        port.free(f);
                    }
                },
            }
        }
        self.parsed = parsed;
        self.stats.packets_out += b.tx.len() as u64;
        if self.id == 0
            && !snap.next_hops.is_empty()
            && (n > 0 || clock.is_some())
            && now >= self.neighbour_due
        {
            self.neighbour_due = now.saturating_add(crate::neighbour::TICK_NS);
            self.solicit_next_hops(port, &snap, now, &mut b.tx);
        }
        if !b.tx.is_empty() {
            port.tx_burst(&mut b.tx);
        }
        // Frames the offload shards produced for this queue: a second transmit burst, so a
        // full receive burst never starves them.
        if let Some(o) = &rings.offload {
            while b.tx.len() < BURST {
                match o.returned(self.id) {
                    Some(f) => b.tx.push(f),
                    None => break,
                }
            }
            if !b.tx.is_empty() {
                self.stats.offload_returned += b.tx.len() as u64;
                self.stats.packets_out += b.tx.len() as u64;
                port.tx_burst(&mut b.tx);
            }
        }
        if !b.host.is_empty() {
            port.to_host(&mut b.host);
        }
        // Idle live ports sweep too, so flows expire (and drained backends empty) without
        // traffic; replay has no time between frames and sweeps only with them.
        if n > 0 || clock.is_some() {
            self.last_now = now;
            let stats = &mut self.stats;
            self.ct
                .sweep(now, SWEEP_BUDGET, |k, f| flow_gone(stats, &snap, k, f));
        }
        n
    }

    /// Sends ARP requests / neighbour solicitations for the next hops that are due one (at
    /// most [`crate::neighbour::TICK_BUDGET`] looked at, and only while the transmit burst
    /// has room), in frames from the port's own buffers.
    fn solicit_next_hops<P: Port>(
        &mut self,
        port: &mut P,
        snap: &Snapshot,
        now: u64,
        tx: &mut Vec<P::Frame>,
    ) {
        use crate::neighbour::{write_arp_request, write_ns, ARP_REQUEST_LEN, NS_LEN};
        let hops = &snap.next_hops;
        for _ in 0..crate::neighbour::TICK_BUDGET.min(hops.len()) {
            if tx.len() >= BURST {
                break;
            }
            self.neighbour_cursor = (self.neighbour_cursor + 1) % hops.len();
            let (addr, slot) = hops[self.neighbour_cursor];
            if !snap.neighbours.request_due(slot, now) {
                continue;
            }
            let len = if addr.is_ipv4() {
                ARP_REQUEST_LEN
            } else {
                NS_LEN
            };
            let Some(mut f) = port.alloc(len) else {
                self.stats.neighbour_no_buffer += 1;
                break;
            };
            let me = snap.node.mac;
            let written = match (addr, snap.node.ipv4, snap.node.ipv6) {
                (IpAddr::V4(t), Some(src), _) => write_arp_request(f.data_mut(), me, src, t),
                (IpAddr::V6(t), _, Some(src)) => write_ns(f.data_mut(), me, src, t),
                _ => false,
            };
            if written {
                self.stats.neighbour_requests += 1;
                tx.push(f);
            } else {
                port.free(f);
            }
        }
    }

    /// Copies this worker's counters (and the flow sample `p.flow_query` asks for) into `p`.
    pub fn fill_probe(&self, p: &mut Probe) {
        p.worker = self.id;
        self.stats.copy_into(&mut p.stats);
        p.conntrack = self.ct.counters;
        p.active_flows = self.ct.len();
        p.generation = self.snap.generation;
        p.now_ns = self.last_now;
        p.flows.clear();
        if let Some(q) = p.flow_query {
            p.cursor = self.sample_flows(&q, self.last_now, &mut p.flows);
            p.scan_done = p.cursor >= self.ct.slab_len();
        }
    }

    /// Up to `out.capacity()` tracked flows (none past their timeout) to `q.vip` (if given)
    /// and `q.backend` (if given), examining at most `q.scan` conntrack slots from
    /// `q.cursor`: the control socket's `flows` sample. Returns where the next probe should
    /// start. Never allocates (`out` is the caller's).
    pub fn sample_flows(&self, q: &FlowQuery, now: u64, out: &mut Vec<(FlowKey, Flow)>) -> usize {
        self.ct.scan(q.cursor, q.scan, |k, f| {
            if out.len() == out.capacity() {
                return false;
            }
            let wanted = q
                .vip
                .is_none_or(|(v, p)| (k.dst, k.dst_port, k.proto) == (v.ip(), v.port(), p))
                && q.backend.is_none_or(|b| f.backend_addr == b)
                && !self.ct.is_expired(&f, now);
            if wanted {
                out.push((k, f));
            }
            out.len() < out.capacity()
        })
    }

    /// The shard a frame of an offloaded flow goes to.
    #[inline]
    fn offload_verdict(&self, flow_hash: u64) -> Verdict {
        match self.offload {
            Some(plan) => Verdict::Offload(plan.shard_of(flow_hash)),
            None => Verdict::Drop(DropReason::OffloadUnavailable),
        }
    }

    fn not_ours(&self) -> Verdict {
        if self.host_path {
            Verdict::ToHost
        } else {
            Verdict::Drop(DropReason::NotOurs)
        }
    }

    /// Classifies one frame and rewrites it in place for its verdict.
    pub fn process<F: Frame>(&mut self, f: &mut F, now: u64) -> Verdict {
        let snap = Arc::clone(&self.snap);
        let parsed = parse_frame(f.data());
        self.process_parsed(&snap, f, &parsed, 0, now)
    }

    /// [`Worker::process`] for a frame already parsed (as `parsed`, its flow key hashed by
    /// the conntrack as `hash`, or 0 if not), against a snapshot the caller holds: the poll
    /// loop takes one reference per burst, not per packet, so workers do not bounce the
    /// `Arc`'s counter between their cores.
    fn process_parsed<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        parsed: &Result<Parsed, packet::Malformed>,
        hash: u64,
        now: u64,
    ) -> Verdict {
        let p = match parsed {
            Ok(p) => p,
            Err(m) => return Verdict::Drop(DropReason::Malformed(*m)),
        };
        if !p.is_ip() {
            if p.network == Network::Arp
                && !snap.next_hops.is_empty()
                && crate::neighbour::learn_arp(f.data(), p, snap, now)
            {
                self.stats.neighbours_learned += 1;
            }
            if p.network == Network::Arp && crate::neighbour::answer_arp(f.data_mut(), p, snap) {
                self.stats.neighbour_answers += 1;
                return Verdict::Transmit;
            }
            return self.not_ours();
        }
        // The common case first: TCP/UDP to a service, found with one lookup.
        if !p.fragment && (p.proto == PROTO_TCP || p.proto == PROTO_UDP) {
            if let Some(s) = snap.service_for(p.dst, p.dst_port, p.proto) {
                if snap.services[s as usize].forwarding == Forwarding::Offload {
                    return self.offload_verdict(p.flow_key().stable_hash());
                }
                if self.steer_forward {
                    let owner = self.steering.owner_of(p.src, p.src_port, p.dst, p.dst_port);
                    if owner != self.id {
                        return Verdict::Handoff(owner);
                    }
                }
                return self.forward(f, p, snap, s as usize, hash, now);
            }
        }
        if p.proto == PROTO_ICMPV6
            && !snap.next_hops.is_empty()
            && matches!(
                p.icmp_type,
                packet::icmp::V6_NEIGHBOR_SOLICIT | packet::icmp::V6_NEIGHBOR_ADVERT
            )
            && crate::neighbour::learn_nd(f.data(), p, snap, now)
        {
            self.stats.neighbours_learned += 1;
        }
        // Neighbour solicitations come to a solicited-node multicast address, or (to confirm
        // reachability) to the VIP itself.
        if p.proto == PROTO_ICMPV6 && p.icmp_type == packet::icmp::V6_NEIGHBOR_SOLICIT {
            if let Some(len) = crate::neighbour::answer_ns(f.data_mut(), p, snap) {
                f.truncate(len);
                self.stats.neighbour_answers += 1;
                return Verdict::Transmit;
            }
            return self.not_ours();
        }
        if snap.is_vip_addr(p.dst) {
            if p.fragment {
                return Verdict::Drop(DropReason::Fragment);
            }
            if is_icmp_error(p) {
                return self.steer_icmp_error(f, p, snap);
            }
            return Verdict::Drop(DropReason::NoService);
        }
        if p.fragment || !(p.proto == PROTO_TCP || p.proto == PROTO_UDP) {
            return self.not_ours();
        }
        if snap.is_node_addr(p.dst) {
            if let Some(shard) = self.offload.and_then(|o| o.upstream_owner(p.dst_port)) {
                return Verdict::Offload(shard);
            }
            if let Some(owner) = self.steering.snat_owner(p.dst_port) {
                return self.snat_reply(f, p, snap, owner, now);
            }
        }
        if let Some(s) = snap.nat_service_of_backend(p.src, p.src_port, p.proto) {
            return self.nat_reply(f, p, &snap.services[s as usize], snap, now);
        }
        self.not_ours()
    }

    fn forward<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        hash: u64,
        now: u64,
    ) -> Verdict {
        let svc = &snap.services[s];
        let key = p.flow_key();
        let hash = if hash == 0 { self.ct.hash(&key) } else { hash };
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        // A tracked flow stays on its backend unless that backend is gone, disabled or past
        // its drain timeout, or its VIP now belongs to another service: then it is chosen
        // afresh.
        let kept = self
            .ct
            .lookup_hashed(&key, hash, tcp_flags, now)
            .and_then(|mut t| {
                resolve_tracked(snap, &key, &mut t);
                let keep = t.service as usize == s
                    && svc
                        .backends
                        .get(t.backend as usize)
                        .is_some_and(|b| b.keeps_flows);
                keep.then_some((t.backend, t.snat_port))
            });
        let (backend, snat_port) = match kept {
            Some(k) => k,
            None => match self.new_flow(&key, p, snap, s, tcp_flags, now) {
                Ok(fl) => (fl.backend, fl.snat_port),
                Err(r) => return Verdict::Drop(r),
            },
        };
        // The flow's backend index is resolved against this snapshot, whose entry carries
        // the same address the flow was given.
        let Some(be) = svc.backends.get(backend as usize) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let node = &snap.node;
        let Some(dst_mac) = snap.mac_of(be.next_hop) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        let result = match svc.forwarding {
            Forwarding::Nat => {
                translate(f.data_mut(), p, None, Some((be.addr.ip(), be.addr.port())))
            }
            Forwarding::Snat => match snap.node_addr(p.dst.is_ipv6()) {
                Some(src) => translate(
                    f.data_mut(),
                    p,
                    Some((src, snat_port)),
                    Some((be.addr.ip(), be.addr.port())),
                ),
                None => Err(DropReason::NoNodeAddress),
            },
            Forwarding::Dsr => Ok(()),
            Forwarding::Ipip | Forwarding::Gue => {
                encapsulate(f, p, svc, snap, be.addr, key.stable_hash())
            }
            // Classification hands these to the offload pool before they get here.
            Forwarding::Offload => Err(DropReason::OffloadUnavailable),
        };
        if let Err(r) = result {
            return Verdict::Drop(r);
        }
        set_macs(f.data_mut(), node.mac, dst_mac);
        if let Some(c) = self
            .stats
            .backends
            .get_mut(s)
            .and_then(|v| v.get_mut(backend as usize))
        {
            c.packets += 1;
            c.bytes += f.data().len() as u64;
        }
        Verdict::Transmit
    }

    /// Chooses a backend by Maglev and tracks the flow (allocating an SNAT port if needed).
    fn new_flow(
        &mut self,
        key: &FlowKey,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Result<Flow, DropReason> {
        let svc = &snap.services[s];
        let table = svc.table.as_ref().ok_or(DropReason::NoBackend)?;
        let b = table.lookup(key.stable_hash());
        let be = svc.backends.get(b as usize).ok_or(DropReason::NoBackend)?;
        let (snat_port, reply_key) = match svc.forwarding {
            Forwarding::Nat => (
                0,
                Some(FlowKey {
                    src: be.addr.ip(),
                    dst: p.src,
                    src_port: be.addr.port(),
                    dst_port: p.src_port,
                    proto: p.proto,
                }),
            ),
            Forwarding::Snat => {
                let node_ip = snap
                    .node_addr(p.dst.is_ipv6())
                    .ok_or(DropReason::NoNodeAddress)?;
                let port = self.alloc_snat_port(be.addr, node_ip, p.proto)?;
                (
                    port,
                    Some(FlowKey {
                        src: be.addr.ip(),
                        dst: node_ip,
                        src_port: be.addr.port(),
                        dst_port: port,
                        proto: p.proto,
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
            state: initial_state(tcp_flags),
            created_ns: now,
            last_seen_ns: now,
            reply_key,
        };
        let inserted = self.ct.insert(*key, flow, now);
        if let Some((k, f)) = inserted.gone {
            flow_gone(&mut self.stats, snap, &k, &f);
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
        Ok(flow)
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

    /// A reply from a `nat` backend: the source becomes the VIP again.
    fn nat_reply<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        svc: &ServiceEntry,
        snap: &Snapshot,
        now: u64,
    ) -> Verdict {
        let owner = self
            .steering
            .owner_of(p.dst, p.dst_port, svc.vip.ip(), svc.vip.port());
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        if self
            .ct
            .lookup_reply(&p.flow_key(), tcp_flags, now)
            .is_none()
        {
            return Verdict::Drop(DropReason::ReplyNoFlow);
        }
        let Some(gateway) = snap.mac_of(snap.gateway) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        if let Err(r) = translate(f.data_mut(), p, Some((svc.vip.ip(), svc.vip.port())), None) {
            return Verdict::Drop(r);
        }
        set_macs(f.data_mut(), snap.node.mac, gateway);
        self.stats.replies += 1;
        Verdict::Transmit
    }

    /// A reply to an SNAT port: back to the client, from the VIP. Untracked packets to the
    /// node's address go to the host, whose own connections use its address too.
    fn snat_reply<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        owner: usize,
        now: u64,
    ) -> Verdict {
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        let Some((fwd, flow)) = self.ct.lookup_reply(&p.flow_key(), tcp_flags, now) else {
            return self.not_ours();
        };
        // The forward key's destination is the VIP; indices in `flow` may be a generation old.
        let Some(svc) = snap
            .service_for(fwd.dst, fwd.dst_port, fwd.proto)
            .and_then(|s| snap.services.get(s as usize))
        else {
            return Verdict::Drop(DropReason::ReplyNoFlow);
        };
        let _ = flow;
        let Some(gateway) = snap.mac_of(snap.gateway) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        if let Err(r) = translate(
            f.data_mut(),
            p,
            Some((svc.vip.ip(), svc.vip.port())),
            Some((fwd.src, fwd.src_port)),
        ) {
            return Verdict::Drop(r);
        }
        set_macs(f.data_mut(), snap.node.mac, gateway);
        self.stats.replies += 1;
        Verdict::Transmit
    }

    /// An ICMP error sent to a VIP (a router on the way to the client could not deliver a
    /// packet the VIP sent: "fragmentation needed", "packet too big", …). It goes to the
    /// backend that owns the quoted flow, so path MTU discovery works through the balancer.
    fn steer_icmp_error<F: Frame>(&mut self, f: &mut F, p: &Parsed, snap: &Snapshot) -> Verdict {
        let Some(q) = parse_quoted(f.data(), p) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        // The quote is VIP -> client; the tracked flow is client -> VIP.
        let fwd = q.key.reversed();
        let Some(s) = snap.service_for(fwd.dst, fwd.dst_port, fwd.proto) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        // The shard that terminates the connection handles errors about it (path MTU).
        if snap.services[s as usize].forwarding == Forwarding::Offload {
            return self.offload_verdict(fwd.stable_hash());
        }
        let owner = self
            .steering
            .owner_of(fwd.src, fwd.src_port, fwd.dst, fwd.dst_port);
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let Some(mut flow) = self.ct.peek(&fwd) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        resolve(snap, &fwd, &mut flow);
        let svc = &snap.services[s as usize];
        let dst_mac = match backend_mac(snap, svc, flow.backend) {
            Ok(m) => m,
            Err(r) => return Verdict::Drop(r),
        };
        let be = (flow.backend_addr.ip(), flow.backend_addr.port());
        let result = match svc.forwarding {
            Forwarding::Dsr => Ok(()),
            Forwarding::Ipip | Forwarding::Gue => {
                encapsulate(f, p, svc, snap, flow.backend_addr, fwd.stable_hash())
            }
            Forwarding::Offload => Err(DropReason::OffloadUnavailable),
            Forwarding::Nat => translate_icmp_error(f.data_mut(), p, &q, be.0, be, None),
            Forwarding::Snat => match snap.node_addr(p.dst.is_ipv6()) {
                Some(node_ip) => translate_icmp_error(
                    f.data_mut(),
                    p,
                    &q,
                    be.0,
                    be,
                    Some((node_ip, flow.snat_port)),
                ),
                None => Err(DropReason::IcmpNoFlow),
            },
        };
        if let Err(r) = result {
            return Verdict::Drop(r);
        }
        set_macs(f.data_mut(), snap.node.mac, dst_mac);
        self.stats.icmp_steered += 1;
        Verdict::Transmit
    }
}

/// The MAC frames to backend `b` of `svc` go to; `unresolved_next_hop` while the data
/// path has not resolved it.
#[inline]
fn backend_mac(snap: &Snapshot, svc: &ServiceEntry, b: u16) -> Result<packet::MacAddr, DropReason> {
    svc.backends
        .get(b as usize)
        .and_then(|b| snap.mac_of(b.next_hop))
        .ok_or(DropReason::UnresolvedNextHop)
}

fn is_icmp_error(p: &Parsed) -> bool {
    match (p.network, p.proto) {
        (Network::Ipv4, PROTO_ICMP) => icmp::v4_is_error(p.icmp_type),
        (Network::Ipv6, PROTO_ICMPV6) => icmp::v6_is_error(p.icmp_type),
        _ => false,
    }
}

/// Wraps the datagram in IPIP or GUE from the node's address to the backend, in the frame's
/// headroom. Ethernet padding after the datagram is trimmed first.
fn encapsulate<F: Frame>(
    f: &mut F,
    p: &Parsed,
    svc: &ServiceEntry,
    snap: &Snapshot,
    backend: SocketAddr,
    flow_hash: u64,
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
        // Source port from the flow hash: entropy for ECMP and RSS between us and the backend.
        Forwarding::Gue => Tunnel::Gue {
            src_port: 49152 | (flow_hash as u16 & 0x3fff),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{MemPort, PacketBuf};
    use crate::setup::{AllDown, NodeSetup, ServiceSetup, Setup};

    fn cfg(backends: &[u8]) -> Setup {
        let mut node = NodeSetup::new(
            packet::MacAddr([2, 0, 0, 0, 0, 1]),
            packet::MacAddr([2, 0, 0, 0, 0, 0xfe]),
        );
        node.ipv4 = Some("192.0.2.1".parse().unwrap());
        let mut web = ServiceSetup::new(
            "web",
            "198.51.100.10:80".parse().unwrap(),
            packet::ipv4::PROTO_TCP,
            Forwarding::Nat,
        );
        for &b in backends {
            web = web.backend(
                format!("10.1.0.{b}:8080").parse().unwrap(),
                Some(packet::MacAddr([2, 0, 0, 0, 1, b])),
            );
        }
        Setup::new(node).service(web)
    }

    fn syn(i: u16, flags: u8) -> PacketBuf {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xfe, 0x08, 0x00];
        let mut ip = vec![
            0x45,
            0,
            0,
            40,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
            203,
            0,
            113,
            (i % 200) as u8 + 1,
            198,
            51,
            100,
            10,
        ];
        let c = packet::checksum::finish(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&(10000 + i).to_be_bytes());
        f.extend_from_slice(&[
            0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let mut b = PacketBuf::new();
        assert!(b.load(&f, 0, 0));
        b
    }

    fn dst_of(b: &PacketBuf) -> [u8; 4] {
        let d = b.data();
        [d[30], d[31], d[32], d[33]]
    }

    /// Established flows keep their backend across a change of the backend set, except
    /// those of the removed backend, which move; new flows use the new table; the removed
    /// backend gets nothing new.
    #[test]
    fn established_flows_keep_their_backend_across_snapshot_swaps() {
        let a = Arc::new(Snapshot::build(&cfg(&[1, 2, 3])).unwrap());
        let b = Arc::new(Snapshot::build(&cfg(&[1, 3, 4, 5])).unwrap());
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&a), false);
        let mut before = Vec::new();
        for i in 0..300 {
            let mut f = syn(i, packet::tcp::SYN);
            assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
            before.push(dst_of(&f));
        }
        w.set_snapshot(Arc::clone(&b));
        let mut moved_by_table = 0;
        for i in 0..300u16 {
            let mut f = syn(i, packet::tcp::ACK);
            assert_eq!(w.process(&mut f, 2), Verdict::Transmit);
            if before[i as usize] == [10, 1, 0, 2] {
                // Its backend was removed: the flow is chosen afresh.
                assert_ne!(
                    dst_of(&f),
                    [10, 1, 0, 2],
                    "flow {i} left the removed backend"
                );
                continue;
            }
            assert_eq!(dst_of(&f), before[i as usize], "flow {i} kept its backend");
            let key = packet::parse_frame(syn(i, 0).data()).unwrap().flow_key();
            let fresh = b.services[0]
                .table
                .as_ref()
                .unwrap()
                .lookup(key.stable_hash());
            if b.services[0].backends[fresh as usize].addr.ip().to_string()
                != format!(
                    "{}.{}.{}.{}",
                    before[i as usize][0],
                    before[i as usize][1],
                    before[i as usize][2],
                    before[i as usize][3]
                )
            {
                moved_by_table += 1;
            }
        }
        assert!(
            moved_by_table > 50,
            "the new table would move {moved_by_table} flows: the test must exercise that"
        );
        // New flows follow the new table and never reach the removed backend 10.1.0.2.
        for i in 1000..1300 {
            let mut f = syn(i, packet::tcp::SYN);
            w.process(&mut f, 3);
            assert_ne!(dst_of(&f), [10, 1, 0, 2]);
        }
        // Counters of the kept backends carried over, re-pointed at their new indices.
        let kept: u64 = w.stats.backends[0].iter().map(|c| c.new_flows).sum();
        assert!(kept > 300, "{kept}");
        // Active flows per backend: every flow counted once, under its current backend.
        let active: u64 = w.stats.backends[0].iter().map(|c| c.active_flows).sum();
        let tracked_to_kept =
            w.ct.iter()
                .filter(|(_, f)| f.backend_addr.ip().to_string() != "10.1.0.2")
                .count() as u64;
        assert_eq!(active, tracked_to_kept);
    }

    fn state_snapshot(
        backends: &[u8],
        all_down: &str,
        state: impl Fn(u8) -> (Admin, Health),
    ) -> Arc<Snapshot> {
        let mut c = cfg(backends);
        c.services[0].all_down = if all_down == "all" {
            AllDown::All
        } else {
            AllDown::Drop
        };
        for b in &mut c.services[0].backends {
            (b.admin, b.health) = state(b.address.ip().to_string()[7..].parse().unwrap());
        }
        Arc::new(Snapshot::build(&c).unwrap())
    }

    use crate::snapshot::{Admin, Health};

    /// Drained backends keep their flows and take no new ones; disabled and drain-expired
    /// ones lose their flows; down backends take no new flows; when all are down, the
    /// service's policy decides, and is counted.
    #[test]
    fn admin_and_health_states_steer_new_and_tracked_flows() {
        let up = state_snapshot(&[1, 2, 3], "drop", |_| (Admin::Ready, Health::Up));
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&up), false);
        let mut first = Vec::new();
        for i in 0..300 {
            let mut f = syn(i, packet::tcp::SYN);
            assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
            first.push(dst_of(&f));
        }
        let on2 = |v: &[[u8; 4]]| v.iter().filter(|d| **d == [10, 1, 0, 2]).count();
        assert!(on2(&first) > 50);
        let each = |w: &mut Worker, range: std::ops::Range<u16>, flags: u8| -> Vec<[u8; 4]> {
            range
                .map(|i| {
                    let mut f = syn(i, flags);
                    assert_eq!(w.process(&mut f, 2), Verdict::Transmit);
                    dst_of(&f)
                })
                .collect()
        };
        for (admin, health, keeps) in [
            (Admin::Drain, Health::Up, true),
            (Admin::Ready, Health::Down, true),
            (Admin::Disabled, Health::Up, false),
            (Admin::DrainExpired, Health::Up, false),
        ] {
            let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&up), false);
            each(&mut w, 0..300, packet::tcp::SYN);
            w.set_snapshot(state_snapshot(&[1, 2, 3], "drop", |b| {
                if b == 2 {
                    (admin, health)
                } else {
                    (Admin::Ready, Health::Up)
                }
            }));
            let again = each(&mut w, 0..300, packet::tcp::ACK);
            if keeps {
                assert_eq!(again, first, "{admin:?}/{health:?}: tracked flows stay");
            } else {
                assert_eq!(on2(&again), 0, "{admin:?}: tracked flows move");
            }
            let fresh = each(&mut w, 1000..1300, packet::tcp::SYN);
            assert_eq!(on2(&fresh), 0, "{admin:?}/{health:?}: no new flows");
            let s2 = &w.stats.backends[0][1];
            assert_eq!(s2.active_flows, if keeps { on2(&first) as u64 } else { 0 });
        }
        // Every backend down: "drop" drops new flows as no_backend, "all" uses them all.
        let down = |_| (Admin::Ready, Health::Down);
        let mut w = Worker::new(
            0,
            Steering::new(1, (1024, 32767)),
            state_snapshot(&[1, 2, 3], "drop", down),
            false,
        );
        let mut f = syn(5, packet::tcp::SYN);
        assert_eq!(w.process(&mut f, 1), Verdict::Drop(DropReason::NoBackend));
        let mut w = Worker::new(
            0,
            Steering::new(1, (1024, 32767)),
            state_snapshot(&[1, 2, 3], "all", down),
            false,
        );
        let got = each(&mut w, 0..300, packet::tcp::SYN);
        assert_eq!(got, first, "fail open: the same table as when all were up");
        assert_eq!(w.stats.services[0].all_down_flows, 300);
    }

    /// The snapshot of `cfg` with its service offloaded.
    fn offloaded(backends: &[u8]) -> Arc<Snapshot> {
        let mut c = cfg(backends);
        c.services[0].forwarding = Forwarding::Offload;
        Arc::new(Snapshot::build(&c).unwrap())
    }

    /// What a trivial shard does: swaps the frame's MACs, IP addresses and ports (the
    /// checksums stay valid: their sums do not depend on order) and returns it to the worker
    /// it came from.
    fn echo(f: &mut PacketBuf) {
        let d = f.data_mut();
        for i in 0..6 {
            d.swap(i, 6 + i);
        }
        for i in 0..4 {
            d.swap(26 + i, 30 + i);
        }
        for i in 0..2 {
            d.swap(34 + i, 36 + i);
        }
    }

    /// Frames of an offloaded service reach the shard their connection hashes to, whichever
    /// worker received them, unmodified and untracked; what the shard returns is transmitted
    /// by the worker it names, after that worker's own burst.
    #[test]
    fn offloaded_frames_reach_one_shard_per_connection_and_come_back_through_their_worker() {
        let snap = offloaded(&[1, 2]);
        let plan = OffloadPlan::new(3);
        let rings = Rings::new(2, 64).with_offload(OffloadRings::new(plan, 2, 1024));
        let mut workers: Vec<Worker> = (0..2)
            .map(|id| {
                Worker::new(
                    id,
                    Steering::new(2, (1024, 32767)),
                    Arc::clone(&snap),
                    false,
                )
                .offloading_to(plan)
            })
            .collect();
        let mut ports = [MemPort::new(false), MemPort::new(false)];
        let mut bursts = [Bursts::new(), Bursts::new()];
        // 60 connections, three frames each, alternating between the two workers' queues.
        let mut sent = Vec::new();
        for round in 0..3 {
            for i in 0..60u16 {
                let flags = if round == 0 {
                    packet::tcp::SYN
                } else {
                    packet::tcp::ACK
                };
                let f = syn(i, flags);
                let w = (i as usize + round) % 2;
                ports[w].inject(f.data(), 1, 0);
                sent.push((w, f.data().to_vec()));
            }
            for w in 0..2 {
                while !ports[w].rx.is_empty() {
                    workers[w].poll(&mut ports[w], &mut bursts[w], &rings);
                }
            }
        }
        assert_eq!(workers[0].stats.offloaded + workers[1].stats.offloaded, 180);
        assert!(
            workers.iter().all(|w| w.ct.is_empty()),
            "offloaded flows are not tracked"
        );
        assert!(
            ports.iter().all(|p| p.tx.is_empty()),
            "nothing is sent before a shard answers"
        );
        // Each shard takes its frames; every frame of a connection went to one shard.
        let mut shard_of_conn = std::collections::HashMap::new();
        let mut per_shard = [0; 3];
        let mut received = Vec::new();
        for (shard, taken) in per_shard.iter_mut().enumerate() {
            while let Some(mut h) = rings.offload().unwrap().take(shard) {
                let conn = (h.frame.data()[29], h.frame.data()[34..36].to_vec());
                assert_eq!(*shard_of_conn.entry(conn).or_insert(shard), shard);
                *taken += 1;
                received.push((h.worker, h.frame.data().to_vec()));
                echo(&mut h.frame);
                rings
                    .offload()
                    .unwrap()
                    .give_back(h.worker, h.frame)
                    .unwrap();
            }
        }
        assert!(per_shard.iter().all(|&n| n >= 30), "{per_shard:?}");
        received.sort();
        let mut expect = sent.clone();
        expect.sort();
        assert!(
            received == expect,
            "frames reach the shards unmodified, with their worker"
        );
        // Idle polls transmit what the shards returned, at most a burst each, on the worker
        // each frame came from.
        for w in 0..2 {
            for _ in 0..3 {
                let before = ports[w].tx.len();
                workers[w].poll(&mut ports[w], &mut bursts[w], &rings);
                assert!(ports[w].tx.len() - before <= BURST);
            }
            let mut got: Vec<Vec<u8>> = ports[w].tx.iter().map(|b| b.data().to_vec()).collect();
            let mut want: Vec<Vec<u8>> = sent
                .iter()
                .filter(|(sw, _)| *sw == w)
                .map(|(_, d)| {
                    let mut b = PacketBuf::new();
                    b.load(d, 0, 0);
                    echo(&mut b);
                    b.data().to_vec()
                })
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got.len(), want.len(), "worker {w}");
            assert!(got == want, "worker {w} sends the echoes of its own frames");
            assert_eq!(workers[w].stats.offload_returned, 90);
            assert_eq!(workers[w].stats.packets_out, 90);
        }
        assert!(rings.is_empty());
    }

    /// A full shard ring, or no pool at all, drops the frame by name and frees its buffer.
    #[test]
    fn offload_without_room_or_without_a_pool_is_dropped_and_counted() {
        let snap = offloaded(&[1]);
        let plan = OffloadPlan::new(1);
        let rings = Rings::new(1, 64).with_offload(OffloadRings::new(plan, 1, 4));
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&snap), false)
            .offloading_to(plan);
        let mut port = MemPort::new(false);
        let mut b = Bursts::new();
        for i in 0..10 {
            port.inject(syn(i, packet::tcp::SYN).data(), 1, 0);
        }
        w.poll(&mut port, &mut b, &rings);
        assert_eq!(w.stats.offloaded, 4);
        assert_eq!(w.stats.dropped(DropReason::OffloadRingFull), 6);
        assert_eq!(port.pool.len(), 6, "dropped frames go back to the port");
        // A worker that was given no plan, and rings that have no pool.
        let mut bare = Worker::new(0, Steering::new(1, (1024, 32767)), snap, false);
        let mut f = syn(1, packet::tcp::SYN);
        assert_eq!(
            bare.process(&mut f, 1),
            Verdict::Drop(DropReason::OffloadUnavailable)
        );
        let no_pool = Rings::new(1, 64);
        port.inject(syn(2, packet::tcp::SYN).data(), 1, 0);
        w.poll(&mut port, &mut b, &no_pool);
        assert_eq!(w.stats.dropped(DropReason::OffloadUnavailable), 1);
    }

    /// Replies to the node's address on a shard's upstream ports go to that shard; other
    /// ports of the node are not the pool's.
    #[test]
    fn replies_to_a_shards_upstream_ports_reach_that_shard() {
        let plan = OffloadPlan::new(4).with_upstream_ports(50000, 50999);
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), offloaded(&[1]), false)
            .offloading_to(plan);
        let reply = |port: u16| {
            // 10.1.0.1:8080 -> 192.0.2.1:port
            let mut f = syn(0, packet::tcp::SYN | packet::tcp::ACK);
            let d = f.data_mut();
            d[26..30].copy_from_slice(&[10, 1, 0, 1]);
            d[30..34].copy_from_slice(&[192, 0, 2, 1]);
            d[34..36].copy_from_slice(&8080u16.to_be_bytes());
            d[36..38].copy_from_slice(&port.to_be_bytes());
            d[24..26].copy_from_slice(&[0, 0]);
            let c = packet::checksum::finish(0, &d[14..34]);
            d[24..26].copy_from_slice(&c.to_be_bytes());
            f
        };
        for (port, shard) in [(50000, 0), (50249, 0), (50250, 1), (50750, 3), (50999, 3)] {
            assert_eq!(
                w.process(&mut reply(port), 1),
                Verdict::Offload(shard),
                "{port}"
            );
        }
        assert_eq!(
            w.process(&mut reply(51000), 1),
            Verdict::Drop(DropReason::NotOurs)
        );
    }
}
