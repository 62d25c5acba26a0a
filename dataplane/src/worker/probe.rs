//! What the control plane asks a worker between bursts: a copy of its counters and, for
//! `sluicectl flows`, a bounded slice of its tracked flows.

use super::Worker;
use crate::conntrack::Flow;
use crate::snapshot::Snapshot;
use crate::stats::WorkerStats;
use packet::FlowKey;
use std::net::SocketAddr;

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
    /// Entries on the half-open ring now.
    pub half_open: usize,
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
    /// Swaps for which no counters shaped beforehand had arrived, so the worker allocated.
    pub swaps_allocating: u64,
    /// For `sluicectl limits`: the source-table slot to scan from (and at most how many);
    /// the sources limited now go in `limited` (its capacity is the most to return).
    pub limited_query: Option<(usize, usize)>,
    pub limited: Vec<crate::ratelimit::SourceSlot>,
    pub limited_cursor: usize,
    pub limited_done: bool,
    pub sources_recycled: u64,
    /// Slots of this worker's source table.
    pub sources_capacity: usize,
}

/// Source-table slots a `limits` probe examines per burst (~20 µs of a worker's time).
pub const SOURCE_SCAN_PER_PROBE: usize = 16_384;

impl Probe {
    /// A probe shaped for `snap` (so filling it copies without allocating), sampling up to
    /// `flows` flows when `flow_query` is set.
    pub fn new(snap: &Snapshot, flows: usize) -> Self {
        Probe {
            worker: 0,
            stats: WorkerStats::new(&snap.backend_counts()),
            conntrack: Default::default(),
            active_flows: 0,
            half_open: 0,
            generation: 0,
            now_ns: 0,
            flow_query: None,
            flows: Vec::with_capacity(flows),
            cursor: 0,
            scan_done: false,
            swaps: 0,
            swap_max_ns: 0,
            swaps_allocating: 0,
            limited_query: None,
            limited: Vec::new(),
            limited_cursor: 0,
            limited_done: false,
            sources_recycled: 0,
            sources_capacity: 0,
        }
    }
}

impl Worker {
    /// Copies this worker's counters (and the flow sample `p.flow_query` asks for) into `p`.
    pub fn fill_probe(&self, p: &mut Probe) {
        p.worker = self.id;
        self.stats.copy_into(&mut p.stats);
        p.conntrack = self.ct.counters;
        p.active_flows = self.ct.len();
        p.half_open = self.ct.half_open().0;
        p.generation = self.snap.generation;
        p.now_ns = self.last_now;
        p.flows.clear();
        if let Some(q) = p.flow_query {
            p.cursor = self.sample_flows(&q, self.last_now, &mut p.flows);
            p.scan_done = p.cursor >= self.ct.slab_len();
        }
        p.sources_recycled = self.sources.counters.recycled;
        p.sources_capacity = self.sources.capacity();
        p.limited.clear();
        if let Some((from, count)) = p.limited_query {
            p.limited_cursor =
                self.sources
                    .scan_limited(from, count, self.last_now, &mut p.limited);
            p.limited_done = p.limited_cursor >= self.sources.capacity();
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
}
