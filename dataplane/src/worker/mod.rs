//! The per-core worker: one poll loop over one port queue, with its own connection tracking
//! and counters. Per frame: parse; classify ([`classify`]: what the frame is, from its parse
//! summary and the snapshot alone); then act on the class: balance a flow to a backend
//! ([`balance`]: conntrack, then Maglev, then the rewrite), translate a reply or steer an
//! ICMP error ([`reply`]), answer or learn on the link, hand over, or drop. Counters and flow
//! samples go to the control plane through [`probe`]. No allocation, no locks, no panics on
//! any input.

mod balance;
mod classify;
mod express;
#[cfg(test)]
mod express_tests;
mod fragment;
mod probe;
mod reply;
mod synproxy;
#[cfg(test)]
mod synproxy_tests;
#[cfg(test)]
mod tests;
mod too_big;

use balance::flow_gone;
pub use balance::resolve;
pub use classify::Class;
pub use probe::{FlowQuery, Probe, FLOW_SCAN_PER_PROBE, SOURCE_SCAN_PER_PROBE};

use crate::conntrack::{Candidate, ConnTrack, PackedKey};
use crate::offload::{HandError, OffloadFrame, OffloadPlan, OffloadRings};
use crate::port::{Frame, Port, BURST};
use crate::setup::SynProxyMode;
use crate::snapshot::Snapshot;
use crate::stats::{DropReason, WorkerStats};
use crate::steering::Steering;
use crossbeam::queue::ArrayQueue;
use packet::ipv4::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use packet::parse::{parse_frame, parse_frame_into, Ipv4Flow, Parsed};
use std::net::IpAddr;
use std::sync::Arc;

/// Transmit bursts of frames from the offload shards one poll sends at most.
pub(crate) const RETURNED_BURSTS: usize = 8;

/// Conntrack ring entries examined for expiry per burst of up to 32 frames: at 1 Mpps that
/// walks a full 1M-flow table about every two seconds, while costing ~100 instructions per
/// packet rather than the ~345 a budget of 64 cost (measured with callgrind).
pub const SWEEP_BUDGET: usize = 16;

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
    /// Encapsulated and larger than this MTU, without DF: transmit as outer IPv4 fragments
    /// (`node.tunnel_fragment`).
    Fragment(u16),
}

/// Bounded inbound rings, one per worker, carrying frames to the worker that owns their flow;
/// and, when an offload pool runs, the rings to and from its shards.
pub struct Rings<F> {
    inbound: Vec<ArrayQueue<F>>,
    offload: Option<OffloadRings>,
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
    pub fn with_offload(mut self, o: OffloadRings) -> Self {
        self.offload = Some(o);
        self
    }

    pub fn offload(&self) -> Option<&OffloadRings> {
        self.offload.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.iter().all(|q| q.is_empty())
            && self.offload.as_ref().is_none_or(|o| o.is_empty())
    }

    /// Takes one frame left for worker `w`, handed over by another worker (shutdown drains
    /// them).
    pub fn pop(&self, w: usize) -> Option<F> {
        self.inbound.get(w).and_then(|q| q.pop())
    }

    /// Empties the offload rings into their pool once the shards have stopped, and returns
    /// how many frames were still in them.
    pub fn drain_offload(&self) -> u64 {
        self.offload.as_ref().map_or(0, |o| o.drain())
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
    /// A second reference to the current snapshot, swapped into `snap` for the length of a
    /// burst while the burst owns the first: so a burst borrows its snapshot without an
    /// atomic reference-count update, and workers do not bounce the count's cache line
    /// between their cores. Nothing a burst calls reads `snap` itself: everything takes the
    /// burst's snapshot as an argument.
    snap_spare: Option<Arc<Snapshot>>,
    pub ct: ConnTrack,
    pub stats: WorkerStats,
    snat_range: (u16, u16),
    snat_next: u16,
    host_path: bool,
    /// Per-burst scratch: each frame's parse result (always BURST entries, parsed into in
    /// place; stale for a frame the express lane reads), and what stages one and two found
    /// for it.
    parsed: Vec<Result<Parsed, packet::Malformed>>,
    ahead: Box<[Lookahead]>,
    /// Per-burst scratch: each frame's verdict, acted on once the whole burst is processed.
    verdicts: Box<[Verdict]>,
    /// Kept flows' frames take the express lane (on unless a test or a comparison turns it
    /// off with [`Worker::without_express_lane`]).
    express_lane: bool,
    /// The time of the last frame processed (control-plane samples judge expiry by it).
    last_now: u64,
    /// Worker 0 solicits next hops: when it looks next, and where it left off.
    neighbour_due: u64,
    neighbour_cursor: usize,
    /// Worker 0 announces the VIPs once per [`NodeSetup::announce_epoch`]: the epoch it has
    /// announced, and how many VIPs of the current one it has sent.
    ///
    /// [`NodeSetup::announce_epoch`]: crate::setup::NodeSetup::announce_epoch
    announced_epoch: u64,
    announced_vips: usize,
    /// The identification of this worker's last outer fragments (its own sequence: the
    /// workers' encapsulated packets come from one address, so they could collide, but only
    /// in the unlikely case two workers fragment within a reassembly timeout of each other
    /// with the same value).
    fragment_id: u16,
    /// The port does not deliver each flow to its owner (the kernel picks AF_XDP queues, not
    /// our RSS key): forward frames are checked against [`Steering`] too, and handed over.
    steer_forward: bool,
    /// Where frames of offloaded services go; `None` drops them as `offload_unavailable`.
    offload: Option<OffloadPlan>,
    /// Per-source buckets of `[service.rate_limit] new_flows_per_source`.
    pub sources: crate::ratelimit::SourceTable,
    /// Per service of the current snapshot (same index): its limits as this worker's share,
    /// and its packet bucket. `limits_spare` is the next shape, so a swap allocates nothing.
    limits: Vec<ServiceLimit>,
    limits_spare: Vec<ServiceLimit>,
    /// The SYN proxy's cookie key (the process's), the first data of flows it is opening,
    /// and the held segments whose backend has answered, to send after the burst.
    cookies: &'static crate::synproxy::CookieKey,
    held: crate::synproxy::HeldSegments,
    held_due: Vec<u16>,
}

/// Where a frame's flow is likely filed, from the burst's first two stages: its key's hash
/// (0: not computed) and the slot its lookup tries first.
#[derive(Debug, Clone, Copy)]
struct FlowHint {
    hash: u64,
    candidate: Candidate,
}

impl FlowHint {
    const NONE: FlowHint = FlowHint {
        hash: 0,
        candidate: Candidate::NONE,
    };
}

/// What the first two stages of a burst found for one of its frames.
#[derive(Debug, Clone, Copy)]
struct Lookahead {
    /// The conntrack hash of its flow key: 0 for a frame that is not a TCP/UDP flow's, and
    /// for a bare SYN while some service proxies (not looked up; see `express_syn`).
    hash: u64,
    /// The slot its lookup tries first.
    candidate: Candidate,
    /// The frame read for the express lane; `None` for one that takes the general path,
    /// whose `parsed` entry is then its summary.
    express: Option<Ipv4Flow>,
    /// The express read's packed flow key (packed once, for the hash and the lookup).
    key: PackedKey,
}

impl Lookahead {
    const NONE: Lookahead = Lookahead {
        hash: 0,
        candidate: Candidate::NONE,
        express: None,
        key: PackedKey::FREE,
    };
}

/// Segments each worker's SYN proxy can hold while backends answer (2 KiB each).
pub const HELD_SEGMENTS: usize = 1024;

/// One service's rate limits, and its SYN proxy's `auto` gate, on one worker.
#[derive(Debug, Clone, Copy, Default)]
struct ServiceLimit {
    key: u32,
    per_source: Option<crate::ratelimit::Rate>,
    packets: Option<crate::ratelimit::Rate>,
    bucket: crate::ratelimit::Bucket,
    gate: crate::synproxy::ProxyGate,
}

/// Services a worker's limit table holds without allocating on a swap.
const LIMITS_RESERVED: usize = 1024;

impl Worker {
    pub fn new(id: usize, steering: Steering, snap: Arc<Snapshot>, host_path: bool) -> Self {
        let snat_range = steering.snat_range(id);
        let sources = crate::ratelimit::SourceTable::new(snap_sources(&snap));
        let reserved = LIMITS_RESERVED.max(snap.services.len());
        Worker {
            id,
            steering,
            ct: ConnTrack::new(&snap.conntrack),
            stats: WorkerStats::new(&snap.backend_counts()),
            snap_spare: Some(Arc::clone(&snap)),
            snap,
            snat_range,
            snat_next: snat_range.0,
            host_path,
            parsed: vec![Ok(Parsed::EMPTY); BURST],
            ahead: vec![Lookahead::NONE; BURST].into_boxed_slice(),
            verdicts: vec![Verdict::Transmit; BURST].into_boxed_slice(),
            express_lane: true,
            last_now: 0,
            neighbour_due: 0,
            neighbour_cursor: 0,
            announced_epoch: 0,
            announced_vips: 0,
            fragment_id: (id as u16).wrapping_mul(0x2000),
            steer_forward: false,
            offload: None,
            sources,
            limits: Vec::with_capacity(reserved),
            limits_spare: Vec::with_capacity(reserved),
            cookies: crate::synproxy::CookieKey::process(),
            held: crate::synproxy::HeldSegments::new(HELD_SEGMENTS),
            held_due: Vec::with_capacity(HELD_SEGMENTS),
        }
        .with_limits_shaped()
    }

    /// Shapes the limit table for the current snapshot, carrying each service's packet bucket
    /// over from `old` (matched by VIP key).
    fn shape_limits(&mut self) {
        let workers = self.steering.workers;
        let spare = &mut self.limits_spare;
        spare.clear();
        for svc in &self.snap.services {
            let (per_source, packets) = svc.rate_limit.map_or((None, None), |rl| {
                (
                    rl.new_flows_per_source
                        .map(|(r, b)| crate::ratelimit::Rate::new(r, b, workers)),
                    rl.packets
                        .map(|(r, b)| crate::ratelimit::Rate::new(r, b, workers)),
                )
            });
            // Only a limited or proxied service has state worth carrying over.
            let carried = if packets.is_some() || svc.syn_proxy.mode != SynProxyMode::Off {
                self.limits
                    .iter()
                    .find(|l| l.key == svc.limit_key)
                    .copied()
                    .unwrap_or_default()
            } else {
                Default::default()
            };
            spare.push(ServiceLimit {
                key: svc.limit_key,
                per_source,
                packets,
                bucket: carried.bucket,
                gate: carried.gate,
            });
        }
        std::mem::swap(&mut self.limits, &mut self.limits_spare);
    }

    fn with_limits_shaped(mut self) -> Self {
        self.shape_limits();
        self
    }

    /// Hands frames of services with [`Forwarding::Offload`], and replies to the shards'
    /// upstream ports, to the shards of `plan` (the plan of the [`OffloadRings`] given to
    /// [`Rings::with_offload`]).
    pub fn offloading_to(mut self, plan: OffloadPlan) -> Self {
        self.offload = Some(plan);
        self
    }

    /// Every frame takes the general path (parse summary, classification, balancing step),
    /// kept flows' too: what the express lane is compared against, in tests and benchmarks.
    pub fn without_express_lane(mut self) -> Self {
        self.express_lane = false;
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
        let mut spare = WorkerStats::new(&snap.backend_counts());
        self.set_snapshot_with(snap, &mut spare);
    }

    /// [`Worker::set_snapshot`] into counters the caller shaped for `snap` beforehand
    /// (`WorkerStats::new(&snap.backend_counts())`), so the worker allocates nothing: `spare`
    /// receives the counters of the old shape, for the caller to free off the worker.
    pub fn set_snapshot_with(&mut self, snap: Arc<Snapshot>, spare: &mut WorkerStats) {
        let old = std::mem::replace(&mut self.snap, snap);
        self.snap_spare = Some(Arc::clone(&self.snap));
        let new = &self.snap;
        let stats = spare;
        for s in stats.services.iter_mut() {
            *s = Default::default();
        }
        for v in stats.backends.iter_mut() {
            for c in v.iter_mut() {
                *c = Default::default();
            }
        }
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
        std::mem::swap(&mut self.stats.backends, &mut stats.backends);
        std::mem::swap(&mut self.stats.services, &mut stats.services);
        self.shape_limits();
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
        let snap = match self.snap_spare.take() {
            Some(spare) => std::mem::replace(&mut self.snap, spare),
            None => Arc::clone(&self.snap),
        };
        // Stage one: parse every frame, hash its flow key, and start loading the index bucket
        // its lookup will read. Stage two: probe those buckets and start loading the flows'
        // slots. By stage three, the per-frame work, both are in cache: the memory latency of
        // 32 lookups overlaps instead of adding up.
        // Each frame's summary is parsed into its place in the burst array (always BURST
        // long), not built and pushed: a copy of ~100 bytes per frame saved.
        // A frame the express lane can read is not parsed in full here: only if the lane
        // declines it (stage three).
        self.stats.bytes_in += if snap.syn_proxied {
            self.look_ahead::<_, true>(&snap, &b.rx, handed_in)
        } else {
            self.look_ahead::<_, false>(&snap, &b.rx, handed_in)
        };
        self.probe_ahead(n);
        if n > 0 || clock.is_some() {
            self.ct.prefetch_sweep(SWEEP_BUDGET);
        }
        let mut now = clock.unwrap_or(0);
        // Borrowed by value for the burst (a move, not an allocation), so each frame's
        // summary is read in place rather than copied out past `&mut self`.
        let mut parsed = std::mem::take(&mut self.parsed);
        let ahead = std::mem::take(&mut self.ahead);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        // Every frame is processed in place first, its verdict noted; then, when all of the
        // burst is to be sent (the usual burst) and nothing waits to be sent before it, the
        // receive vector becomes the transmit vector whole, instead of each frame being
        // moved out of one and pushed onto the other.
        let mut all_sent = true;
        'frames: for (i, f) in b.rx.iter_mut().enumerate() {
            now = clock.unwrap_or_else(|| f.timestamp_ns());
            let a = ahead.get(i).unwrap_or(&Lookahead::NONE);
            let (hash, candidate) = (a.hash, a.candidate);
            let verdict = 'frame: {
                if let Some(e) = &a.express {
                    let v = if a.hash == 0 {
                        self.express_syn(&snap, f, e, now)
                    } else {
                        self.express(&snap, f, e, a, now)
                    };
                    match v {
                        // The lane's usual outcome, noted without the general bookkeeping
                        // below.
                        Some(Verdict::Transmit) => {
                            if let Some(v) = verdicts.get_mut(i) {
                                *v = Verdict::Transmit;
                            }
                            continue 'frames;
                        }
                        Some(v) => break 'frame v,
                        None => {}
                    }
                    // Declined, with nothing changed: the general path, from the summary
                    // the express read makes (what parsing the frame in full would give).
                    if let Some(slot) = parsed.get_mut(i) {
                        *slot = Ok(e.parsed());
                    }
                }
                match parsed.get(i) {
                    Some(r) => self.process_parsed(&snap, f, r, FlowHint { hash, candidate }, now),
                    None => Verdict::Drop(DropReason::NotOurs),
                }
            };
            all_sent &= verdict == Verdict::Transmit;
            if let Some(v) = verdicts.get_mut(i) {
                *v = verdict;
            }
        }
        if all_sent && b.tx.is_empty() {
            std::mem::swap(&mut b.rx, &mut b.tx);
        }
        for (i, f) in b.rx.drain(..).enumerate() {
            // (A frame beyond the verdicts, which a burst never has, is dropped, not lost.)
            let verdict = verdicts
                .get(i)
                .copied()
                .unwrap_or(Verdict::Drop(DropReason::NotOurs));
            match verdict {
                Verdict::Transmit => b.tx.push(f),
                Verdict::Fragment(mtu) => {
                    // Room for every fragment in the burst: send what is there first.
                    if b.tx.len() + fragment::MOST_FRAGMENTS > BURST {
                        self.stats.packets_out += b.tx.len() as u64;
                        port.tx_burst(&mut b.tx);
                    }
                    self.fragment_id = self.fragment_id.wrapping_add(1);
                    match fragment::fragment_into(port, f, mtu, self.fragment_id, &mut b.tx) {
                        Ok(n) => {
                            self.stats.tunnel_fragmented += 1;
                            self.stats.tunnel_fragments += n as u64;
                        }
                        Err((f, r)) => {
                            self.stats.drop(r);
                            port.free(f);
                        }
                    }
                }
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
                Verdict::Offload(s) => {
                    match &rings.offload {
                        Some(o) => match o.hand(s, self.id, f.data()) {
                            Ok(()) => self.stats.offloaded += 1,
                            Err(HandError::RingFull) => {
                                self.stats.drop(DropReason::OffloadRingFull)
                            }
                            Err(HandError::NoBuffer) => {
                                self.stats.drop(DropReason::OffloadNoBuffer)
                            }
                            Err(HandError::Oversize) => self.stats.drop(DropReason::Oversize),
                        },
                        None => self.stats.drop(DropReason::OffloadUnavailable),
                    }
                    // The shard has its own copy.
                    port.free(f);
                }
            }
        }
        self.parsed = parsed;
        self.ahead = ahead;
        self.verdicts = verdicts;
        if !self.held_due.is_empty() {
            self.send_held(port, &snap, now, &mut b.tx);
        }
        self.stats.packets_out += b.tx.len() as u64;
        if self.id == 0
            && !snap.next_hops.is_empty()
            && (n > 0 || clock.is_some())
            && now >= self.neighbour_due
        {
            self.neighbour_due = now.saturating_add(crate::neighbour::TICK_NS);
            self.solicit_next_hops(port, &snap, now, &mut b.tx);
        }
        if self.id == 0 && snap.node.announce_epoch != self.announced_epoch {
            self.announce_vips(port, &snap, &mut b.tx);
        }
        if !b.tx.is_empty() {
            port.tx_burst(&mut b.tx);
        }
        // Frames the offload shards produced for this queue: transmit bursts of their own, so
        // a full receive burst never starves them, and several of them, because one client
        // segment can make a shard send more than one frame (an ACK, data, the upstream's).
        if let Some(o) = &rings.offload {
            for _ in 0..RETURNED_BURSTS {
                while b.tx.len() < BURST {
                    let Some(mut of) = o.returned(self.id) else {
                        break;
                    };
                    self.stats.offload_returned += 1;
                    match self.address_returned(&snap, &mut of) {
                        Ok(()) => {
                            let len = of.data().len();
                            match own_frame(port, snap.node.vlan, len, |d| {
                                d.copy_from_slice(of.data());
                                true
                            }) {
                                Made::Frame(f) => b.tx.push(f),
                                Made::NoBuffer => self.stats.drop(DropReason::TxNoBuffer),
                                Made::NotWritten => {}
                            }
                        }
                        Err(r) => self.stats.drop(r),
                    }
                    o.recycle(of);
                }
                if b.tx.is_empty() {
                    break;
                }
                self.stats.packets_out += b.tx.len() as u64;
                let full = b.tx.len() == BURST;
                port.tx_burst(&mut b.tx);
                if !full {
                    break;
                }
            }
        }
        if !b.host.is_empty() {
            port.to_host(&mut b.host);
        }
        // Idle live ports sweep too, so flows expire (and drained backends empty) without
        // traffic; replay has no time between frames and sweeps only with them.
        if n > 0 || clock.is_some() {
            self.last_now = now;
            let (stats, held) = (&mut self.stats, &mut self.held);
            self.ct.sweep(now, SWEEP_BUDGET, |k, f| {
                flow_gone(stats, held, &snap, k, f)
            });
        }
        self.snap_spare = Some(std::mem::replace(&mut self.snap, snap));
        n
    }

    /// Burst stage one: reads every frame — for the express lane where it can, in full
    /// otherwise — hashes its flow key and starts loading the index bucket its lookup will
    /// read. Returns the bytes of the frames from the port (the first `handed_in` came from
    /// other workers). Once per burst, so out of line: its loop is what matters.
    /// (`SYN_PROXIED`: some service proxies SYNs, so bare SYNs are not hashed; a loop of
    /// its own, so the common configuration's loop has no such test.)
    #[inline(never)]
    fn look_ahead<F: Frame, const SYN_PROXIED: bool>(
        &mut self,
        snap: &Snapshot,
        rx: &[F],
        handed_in: usize,
    ) -> u64 {
        let lane = self.express_open(snap);
        // Every frame's bytes are added in the loop, those handed in (rarely any) taken off
        // here: one test fewer per frame.
        let handed_bytes: u64 = rx
            .iter()
            .take(handed_in)
            .map(|f| f.data().len() as u64)
            .sum();
        let mut bytes_in = 0;
        let frames = rx
            .iter()
            .zip(self.ahead.iter_mut())
            .zip(self.parsed.iter_mut());
        for ((f, a), slot) in frames {
            let data = f.data();
            bytes_in += data.len() as u64;
            if lane {
                if let Some(e) = packet::parse_ipv4_flow(data) {
                    // A bare SYN while some service proxies is answered without a lookup
                    // (or, declined, hashed by the general path): nothing to prefetch.
                    if SYN_PROXIED && e.is_bare_syn() {
                        a.hash = 0;
                        a.express = Some(e);
                        continue;
                    }
                    a.key = PackedKey::v4(e.src, e.dst, e.src_port, e.dst_port, e.proto);
                    a.hash = self.ct.hash_packed(&a.key);
                    a.express = Some(e);
                    self.ct.prefetch_index(a.hash);
                    continue;
                }
            }
            a.express = None;
            if slot.is_err() {
                *slot = Ok(Parsed::EMPTY);
            }
            a.hash = match slot {
                Ok(p) => match parse_frame_into(data, p) {
                    Ok(()) if !p.fragment && (p.proto == PROTO_TCP || p.proto == PROTO_UDP) => {
                        let h = self.ct.hash(&p.flow_key());
                        self.ct.prefetch_index(h);
                        h
                    }
                    Ok(()) => 0,
                    Err(m) => {
                        *slot = Err(m);
                        0
                    }
                },
                Err(_) => 0,
            };
        }
        bytes_in - handed_bytes
    }

    /// Burst stage two: for the first `n` frames, finds the slot their lookup will try first
    /// and starts loading it.
    #[inline(never)]
    fn probe_ahead(&mut self, n: usize) {
        for a in self.ahead.iter_mut().take(n) {
            a.candidate = if a.hash != 0 {
                self.ct.prefetch_flow(a.hash)
            } else {
                Candidate::NONE
            };
        }
    }

    /// Sends the data the SYN proxy held for flows whose backends answered in this burst,
    /// each after the ACK that completed its handshake (already in `tx`): copied into a
    /// frame of the port's and processed as the client's segment it is, now that its flow is
    /// open. Without a buffer (or room) it is dropped; the client retransmits it.
    #[cold]
    #[inline(never)]
    fn send_held<P: Port>(
        &mut self,
        port: &mut P,
        snap: &Snapshot,
        now: u64,
        tx: &mut Vec<P::Frame>,
    ) {
        let mut due = std::mem::take(&mut self.held_due);
        for &h in &due {
            if tx.len() >= BURST {
                self.stats.packets_out += tx.len() as u64;
                port.tx_burst(tx);
            }
            let len = self.held.get(h).len();
            match port.alloc(len) {
                Some(mut f) if f.data().len() == len => {
                    f.data_mut().copy_from_slice(self.held.get(h));
                    self.held.release(h);
                    let parsed = parse_frame(f.data());
                    match self.process_parsed(snap, &mut f, &parsed, FlowHint::NONE, now) {
                        Verdict::Transmit => {
                            self.stats.syn_proxy_held_sent += 1;
                            tx.push(f);
                        }
                        Verdict::Drop(r) => {
                            self.stats.drop(r);
                            port.free(f);
                        }
                        _ => {
                            self.stats.drop(DropReason::SynProxyOpening);
                            port.free(f);
                        }
                    }
                }
                Some(f) => {
                    self.held.release(h);
                    self.stats.drop(DropReason::TxNoBuffer);
                    port.free(f);
                }
                None => {
                    self.held.release(h);
                    self.stats.drop(DropReason::TxNoBuffer);
                }
            }
        }
        due.clear();
        self.held_due = due;
    }

    /// Fills in the Ethernet addresses of a frame a shard made (shards know IP, not the
    /// link): to a backend of an offloaded service, that backend's next hop; to anyone
    /// else (a client), the gateway, as replies to clients always go.
    fn address_returned(&self, snap: &Snapshot, f: &mut OffloadFrame) -> Result<(), DropReason> {
        let d = f.data_mut();
        let dst = match d.get(12..14) {
            Some([0x08, 0x00]) => d
                .get(30..34)
                .map(|a| IpAddr::from(<[u8; 4]>::try_from(a).unwrap_or_default())),
            Some([0x86, 0xdd]) => d
                .get(38..54)
                .map(|a| IpAddr::from(<[u8; 16]>::try_from(a).unwrap_or_default())),
            _ => None,
        }
        .ok_or(DropReason::Malformed(packet::Malformed::EthernetTruncated))?;
        let mac = snap
            .mac_of(snap.offload_next_hop(dst))
            .ok_or(DropReason::UnresolvedNextHop)?;
        d[..6].copy_from_slice(&mac.0);
        d[6..12].copy_from_slice(&snap.node.mac.0);
        Ok(())
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
            let me = snap.node.mac;
            let made = own_frame(port, snap.node.vlan, len, |d| {
                match (addr, snap.node.ipv4, snap.node.ipv6) {
                    (IpAddr::V4(t), Some(src), _) => write_arp_request(d, me, src, t),
                    (IpAddr::V6(t), _, Some(src)) => write_ns(d, me, src, t),
                    _ => false,
                }
            });
            match made {
                Made::Frame(f) => {
                    self.stats.neighbour_requests += 1;
                    tx.push(f);
                }
                Made::NoBuffer => {
                    self.stats.neighbour_no_buffer += 1;
                    break;
                }
                Made::NotWritten => {}
            }
        }
    }

    /// Sends a gratuitous ARP / unsolicited neighbour advertisement for each VIP of a node
    /// that has just become active, as far as the transmit burst has room (the rest on the
    /// next polls), so that neighbours and switches move the VIPs to this node's MAC now
    /// rather than when their caches expire. Nothing while standby.
    fn announce_vips<P: Port>(&mut self, port: &mut P, snap: &Snapshot, tx: &mut Vec<P::Frame>) {
        use crate::neighbour::{
            write_gratuitous_arp, write_unsolicited_na, ARP_REQUEST_LEN, NA_LEN,
        };
        if snap.node.standby {
            return;
        }
        while let Some(&vip) = snap.vip_list.get(self.announced_vips) {
            if tx.len() >= BURST {
                return;
            }
            let len = if vip.is_ipv4() {
                ARP_REQUEST_LEN
            } else {
                NA_LEN
            };
            let me = snap.node.mac;
            let made = own_frame(port, snap.node.vlan, len, |d| match vip {
                IpAddr::V4(a) => write_gratuitous_arp(d, me, a),
                IpAddr::V6(a) => write_unsolicited_na(d, me, a),
            });
            match made {
                Made::Frame(f) => {
                    self.stats.vip_announcements += 1;
                    tx.push(f);
                }
                Made::NoBuffer => {
                    self.stats.neighbour_no_buffer += 1;
                    return;
                }
                Made::NotWritten => {}
            }
            self.announced_vips += 1;
        }
        self.announced_epoch = snap.node.announce_epoch;
        self.announced_vips = 0;
    }

    /// Learns a next hop's MAC from its neighbour solicitation or advertisement, if `p` is
    /// one and the snapshot resolves next hops.
    #[inline]
    fn learn_nd<F: Frame>(&mut self, f: &F, p: &Parsed, snap: &Snapshot, now: u64) {
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
        self.process_parsed(&snap, f, &parsed, FlowHint::NONE, now)
    }

    /// [`Worker::process`] for a frame already parsed (as `parsed`, its flow key hashed by
    /// the conntrack as `hint.hash`, or 0 if not, likely filed at `hint.candidate`), against
    /// a snapshot the caller holds: the poll loop borrows its snapshot for the whole burst
    /// (through `snap_spare`, without touching the `Arc`'s counter), so workers do not bounce
    /// that counter between their cores. Always inlined: the poll loop's per-frame work
    /// is this function, and a call (it has a second caller, [`Worker::send_held`]) costs
    /// the loop 65 instructions a packet (callgrind).
    #[inline(always)]
    fn process_parsed<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        parsed: &Result<Parsed, packet::Malformed>,
        hint: FlowHint,
        now: u64,
    ) -> Verdict {
        let p = match parsed {
            Ok(p) => p,
            Err(m) => return Verdict::Drop(DropReason::Malformed(*m)),
        };
        let class = self.classify(snap, p);
        self.act(class, snap, f, p, hint, now)
    }

    /// Does what `class` calls for with frame `f` (parsed as `p`), rewriting it in place.
    #[inline(always)]
    fn act<F: Frame>(
        &mut self,
        class: Class,
        snap: &Snapshot,
        f: &mut F,
        p: &Parsed,
        hint: FlowHint,
        now: u64,
    ) -> Verdict {
        match class {
            Class::ToService(s) => self.forward(f, p, snap, s as usize, hint, now),
            Class::Offload(shard) => Verdict::Offload(shard),
            Class::Handoff(owner) => Verdict::Handoff(owner),
            Class::SnatReply { owner } => self.snat_reply(f, p, snap, owner, now),
            Class::NatReply(s) => self.nat_reply(f, p, &snap.services[s as usize], snap, now),
            Class::IcmpError => self.steer_icmp_error(f, p, snap),
            Class::Arp => {
                if !snap.next_hops.is_empty() && crate::neighbour::learn_arp(f.data(), p, snap, now)
                {
                    self.stats.neighbours_learned += 1;
                }
                if crate::neighbour::answer_arp(f.data_mut(), p, snap) {
                    self.stats.neighbour_answers += 1;
                    return Verdict::Transmit;
                }
                self.not_ours()
            }
            Class::NeighbourSolicitation => {
                self.learn_nd(f, p, snap, now);
                match crate::neighbour::answer_ns(f.data_mut(), p, snap) {
                    Some(len) => {
                        f.truncate(len);
                        self.stats.neighbour_answers += 1;
                        Verdict::Transmit
                    }
                    None => self.not_ours(),
                }
            }
            // A neighbour advertisement is one of these two (to a VIP: no service; else not
            // ours), and teaches a next hop's MAC either way.
            Class::NotOurs => {
                self.learn_nd(f, p, snap, now);
                self.not_ours()
            }
            Class::Drop(r) => {
                self.learn_nd(f, p, snap, now);
                Verdict::Drop(r)
            }
        }
    }
}

/// What [`own_frame`] made.
enum Made<F> {
    Frame(F),
    NoBuffer,
    NotWritten,
}

/// A frame sluice makes itself (not a rewrite of one it received): `write` fills its first
/// `len` bytes untagged, and on a tagged link (`vlan`) the 802.1Q tag goes in after the
/// addresses, so requests and announcements reach the neighbours on sluice's VLAN.
#[inline]
fn own_frame<P: Port>(
    port: &mut P,
    vlan: Option<u16>,
    len: usize,
    write: impl FnOnce(&mut [u8]) -> bool,
) -> Made<P::Frame> {
    let tag = if vlan.is_some() { 4 } else { 0 };
    let Some(mut f) = port.alloc(len + tag) else {
        return Made::NoBuffer;
    };
    let d = f.data_mut();
    let ok = d.len() == len + tag
        && write(&mut d[..len])
        && vlan.is_none_or(|v| packet::ethernet::insert_vlan_tag(d, len, v));
    if ok {
        Made::Frame(f)
    } else {
        port.free(f);
        Made::NotWritten
    }
}

/// The size of the per-source table `snap` asks for.
fn snap_sources(snap: &Snapshot) -> usize {
    snap.conntrack.rate_limit_sources
}
