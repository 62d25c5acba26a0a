//! The L7 pool beside the poll loops: when the configuration has a `forwarding = "l7"`
//! service, the rings of the offload seam, one shard per `[l7] workers` (a thread of its
//! own, pinned to `[l7] cores` when given, or run inside the poll loop of the same core),
//! the setup they share (rebuilt by the control plane on every
//! configuration change), and their published counters.

use config::Config;
use controlplane::control::ControlPlane;
use dataplane::{OffloadPlan, OffloadRings};
use l7_offload::{L7Setup, Shard, ShardStats, SharedSetup};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

/// Everything the L7 pool needs, made before the workers start.
pub struct L7Pool {
    pub plan: OffloadPlan,
    pub shared: Arc<SharedSetup>,
    pub stats: Arc<Vec<Mutex<ShardStats>>>,
    cores: Vec<usize>,
    ring: usize,
    /// Shards that have stopped (and reset their connections).
    stopped: AtomicUsize,
}

fn l7_setup(cfg: &Config, tls: &controlplane::l7::TlsConfigs) -> L7Setup {
    controlplane::l7::setup(cfg, tls, |_, _, _| {
        (
            l7_offload::setup::Admin::Ready,
            l7_offload::setup::Health::Unknown,
        )
    })
}

impl L7Pool {
    /// The pool `cfg` asks for, if any of its services is an L7 one; an error if a TLS
    /// service's certificates do not load.
    pub fn of(cfg: &Config) -> Result<Option<L7Pool>, String> {
        if !controlplane::l7::wanted(cfg) {
            return Ok(None);
        }
        let tls = controlplane::l7::tls_configs(cfg, &Default::default())?;
        let w = &cfg.l7;
        let (lo, hi) = w.upstream_ports;
        Ok(Some(L7Pool {
            plan: OffloadPlan::new(w.workers).with_upstream_ports(lo, hi),
            shared: Arc::new(SharedSetup::new(l7_setup(cfg, &tls))),
            stats: Arc::new((0..w.workers).map(|_| Mutex::default()).collect()),
            cores: w.cores.clone(),
            ring: w.ring as usize,
            stopped: AtomicUsize::new(0),
        }))
    }

    /// The rings between `workers` poll loops and the shards.
    pub fn rings(&self, workers: usize) -> OffloadRings {
        OffloadRings::new(self.plan, workers, self.ring)
    }

    /// Keeps the shards' setup in step with the running configuration.
    pub fn follow(&self, ctl: &ControlPlane) {
        let shared = Arc::clone(&self.shared);
        ctl.on_l7(move |setup| shared.store(setup));
        ctl.set_l7_stats(Arc::clone(&self.stats));
    }

    /// The shards pinned (by `[l7] cores`) to `core`. When a poll loop runs on that core too,
    /// they run inside its thread, polled after each of its bursts: two threads on one core
    /// would leave the scheduler to share it, and while the poll loop held the core the
    /// shard's ring overflowed (at 10,000 connections, thousands of segments dropped and
    /// retransmitted after a timeout).
    pub fn pinned_to(&self, core: usize) -> Vec<usize> {
        (0..self.plan.shards())
            .filter(|&i| self.cores.get(i) == Some(&core))
            .collect()
    }

    /// Shard `i`, publishing its counters; made on the thread that runs it.
    pub fn shard<'a>(&'a self, i: usize, rings: &'a OffloadRings) -> Shard<'a> {
        let ports = self.plan.upstream_range(i).unwrap_or((0, 0));
        Shard::new(i, rings, &self.shared, ports).publishing_to(&self.stats[i])
    }

    /// Counts shard `i` as stopped, after its `shutdown`.
    pub fn shard_stopped(&self) {
        self.stopped.fetch_add(1, Ordering::Release);
    }

    /// Starts one thread per shard on `scope`, each running until `stop`, except the shards
    /// pinned to one of `worker_cores` (the poll loops run those).
    pub fn spawn<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        rings: &'env OffloadRings,
        stop: &'env AtomicBool,
        worker_cores: &[usize],
    ) -> Result<Vec<ScopedJoinHandle<'scope, ()>>, String> {
        let mut threads = Vec::new();
        for i in 0..self.plan.shards() {
            let core = self.cores.get(i).copied();
            if core.is_some_and(|c| worker_cores.contains(&c)) {
                continue;
            }
            let t = std::thread::Builder::new()
                .name(format!("sluice-l7-{i}"))
                .spawn_scoped(scope, move || {
                    if let Some(c) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                            log::warn!("cannot pin L7 worker {i} to core {c}; it runs unpinned");
                        }
                    }
                    self.shard(i, rings).run(stop);
                    self.shard_stopped();
                })
                .map_err(|e| format!("cannot start L7 worker {i}: {e}"))?;
            threads.push(t);
        }
        Ok(threads)
    }

    /// Whether every shard has stopped (the workers keep transmitting until then, so the
    /// shards' last frames, the resets of their connections, leave).
    pub fn all_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire) >= self.plan.shards()
    }

    /// The shards' counters summed.
    pub fn totals(&self) -> ShardStats {
        ShardStats::sum_published(&self.stats)
    }
}

/// `extra` with the L7 pool's counters under `l7`, when it ran.
pub fn with_report(
    pool: Option<&L7Pool>,
    cfg: &Config,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    if let Some(p) = pool {
        let v = controlplane::l7::view(cfg, &p.totals());
        if let Ok(j) = serde_json::to_value(v) {
            extra.insert("l7".into(), j);
        }
    }
    extra
}

/// A clause for the run's summary line about the L7 pool, when it ran.
pub fn summary(pool: Option<&L7Pool>) -> String {
    let Some(p) = pool else {
        return String::new();
    };
    let t = p.totals();
    format!(
        "; L7 pool: {} requests ({} 2xx, {} 4xx, {} 5xx), {} client connections, upstream reuse {:.1}%, {} frames in and {} out ({} lost for want of a frame, {} for a full ring), {} connections reset at stop",
        t.requests,
        t.status[1],
        t.status[3],
        t.status[4],
        t.clients_accepted,
        100.0 * t.reuse_ratio(),
        t.frames_in,
        t.frames_out,
        t.frames_no_buffer,
        t.frames_ring_full,
        t.reset_at_stop
    )
}
