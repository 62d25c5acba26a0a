//! Worker counters folded into totals keyed by identity (service name, backend address), so
//! they survive configuration changes; rates are differences between two collections.

use super::{BackendId, Plane};
use crate::probe_all;
use dataplane::conntrack::ConnTrackCounters;
use dataplane::stats::BackendCounters;
use dataplane::{DropReason, Probe, Snapshot, WorkerStats};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters summed over workers, keyed by identity so they survive configuration changes.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub at: Option<Instant>,
    /// Every worker's scalar counters and drops, added up (its per-backend part is empty:
    /// those are summed by identity in `backends` and `services`).
    pub counters: WorkerStats,
    /// Drops by reason name, every reason listed.
    pub drops: Vec<(&'static str, u64)>,
    pub conntrack: ConnTrackCounters,
    pub active_flows: usize,
    pub half_open: usize,
    pub backends: HashMap<BackendId, BackendCounters>,
    pub services: HashMap<String, (u64, u64, u64)>,
    /// Per service: (workers whose `auto` SYN proxy is on, times it switched on).
    pub syn_proxy: HashMap<String, (u64, u64)>,
    /// Per worker: (packets in, packets out, bytes in, drops).
    pub workers: Vec<(usize, u64, u64, u64, u64)>,
    /// Per worker: (snapshots swapped in, longest swap in ns, swaps that allocated).
    pub swaps: Vec<(usize, u64, u64, u64)>,
    /// Per worker: its drops by reason, in `DropReason::all()` order.
    pub worker_drops: Vec<(usize, Vec<u64>)>,
    /// Source-table slots given to a new source in place of another, all workers.
    pub sources_recycled: u64,
}

impl Plane {
    pub(super) fn snapshot_of(&self, generation: u64) -> Option<&Arc<Snapshot>> {
        self.history
            .iter()
            .rev()
            .find(|s| s.generation == generation)
    }

    /// Asks every worker for its counters and sums them by identity.
    pub fn collect(&mut self) {
        let shape = self.cell.load_full();
        let probes = probe_all(
            &self.links,
            || Probe::new(&shape, 0),
            Duration::from_millis(200),
        );
        self.fold(probes);
    }

    pub(super) fn fold(&mut self, probes: Vec<Probe>) {
        let mut t = Totals {
            at: Some(self.now()),
            ..Default::default()
        };
        for p in &probes {
            let s = &p.stats;
            t.counters.add_counters(s);
            t.conntrack.merge(&p.conntrack);
            t.active_flows += p.active_flows;
            t.half_open += p.half_open;
            t.workers.push((
                p.worker,
                s.packets_in,
                s.packets_out,
                s.bytes_in,
                s.total_drops(),
            ));
            t.swaps
                .push((p.worker, p.swaps, p.swap_max_ns, p.swaps_allocating));
            t.worker_drops
                .push((p.worker, DropReason::all().map(|r| s.dropped(r)).collect()));
            t.sources_recycled += p.sources_recycled;
            let Some(snap) = self.snapshot_of(p.generation) else {
                continue;
            };
            for (si, svc) in snap.services.iter().enumerate() {
                let e = t.services.entry(svc.name.clone()).or_default();
                for (bi, b) in svc.backends.iter().enumerate() {
                    let c = s
                        .backends
                        .get(si)
                        .and_then(|v| v.get(bi))
                        .copied()
                        .unwrap_or_default();
                    e.0 += c.packets;
                    e.1 += c.bytes;
                    let k = t.backends.entry((svc.name.clone(), b.addr)).or_default();
                    k.packets += c.packets;
                    k.bytes += c.bytes;
                    k.new_flows += c.new_flows;
                    k.active_flows += c.active_flows;
                }
                let sc = s.services.get(si).copied().unwrap_or_default();
                e.2 += sc.all_down_flows;
                let e = t.syn_proxy.entry(svc.name.clone()).or_default();
                e.0 += sc.syn_proxy_on;
                e.1 += sc.syn_proxy_activations;
            }
        }
        t.drops = DropReason::all()
            .map(|r| (r.name(), t.counters.dropped(r)))
            .collect();
        t.workers.sort();
        t.worker_drops.sort();
        self.previous = std::mem::replace(&mut self.totals, t);
    }
}
