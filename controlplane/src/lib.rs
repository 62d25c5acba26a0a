//! The control plane, a library the daemon wires to its port drivers: the snapshot workers read (an
//! `ArcSwap`, swapped whole; workers pick a new one up between bursts), the probe mailboxes
//! through which workers hand the control plane copies of their counters, the backend state
//! machine ([`plane`]), the control socket ([`control`]), health checks ([`health`]) and the
//! Prometheus endpoint ([`metrics`]). Nothing here runs on a worker core except
//! [`WorkerLink::between_bursts`], which never blocks, locks or allocates.

pub mod control;
pub mod health;
pub mod l7;
pub mod metrics;
pub mod plane;
pub mod snapshot;

use arc_swap::ArcSwap;
use crossbeam::channel::{bounded, Receiver, Sender, TryRecvError};
use dataplane::{Probe, Snapshot, Worker, WorkerStats};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters shaped for one snapshot generation, made by the control plane so that a worker
/// swapping snapshots allocates nothing; the worker sends it back holding the old shape.
pub struct Spare {
    pub generation: u64,
    pub stats: WorkerStats,
}

/// A worker's side of the control plane.
pub struct WorkerLink {
    snapshot: Arc<ArcSwap<Snapshot>>,
    requests: Receiver<Box<Probe>>,
    replies: Sender<Box<Probe>>,
    spares: Receiver<Box<Spare>>,
    used: Sender<Box<Spare>>,
    swaps: u64,
    swap_max_ns: u64,
    /// Swaps for which no spare of the right shape had arrived, so the worker allocated.
    swaps_allocating: u64,
}

impl WorkerLink {
    /// Called between bursts: takes a newer snapshot if one was published, and fills a probe
    /// if the control plane sent one. An atomic load and a non-blocking channel poll.
    #[inline]
    pub fn between_bursts(&mut self, w: &mut Worker) {
        let cur = self.snapshot.load();
        if cur.generation != w.snapshot().generation {
            // Timed only when it happens: the time the swap holds up the next burst.
            let t = Instant::now();
            let snap = arc_swap::Guard::into_inner(cur);
            // Spares of older generations go back unused; the one for this one is used.
            let mut spare = None;
            while let Ok(s) = self.spares.try_recv() {
                if s.generation == snap.generation {
                    spare = Some(s);
                    break;
                }
                let _ = self.used.try_send(s);
            }
            match spare {
                Some(mut s) => {
                    w.set_snapshot_with(snap, &mut s.stats);
                    let _ = self.used.try_send(s);
                }
                None => {
                    self.swaps_allocating += 1;
                    w.set_snapshot(snap);
                }
            }
            self.swaps += 1;
            self.swap_max_ns = self.swap_max_ns.max(t.elapsed().as_nanos() as u64);
        }
        match self.requests.try_recv() {
            Ok(mut p) => {
                w.fill_probe(&mut p);
                p.swaps = self.swaps;
                p.swap_max_ns = self.swap_max_ns;
                p.swaps_allocating = self.swaps_allocating;
                let _ = self.replies.try_send(p);
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
    }
}

/// The control plane's side of one worker's mailbox.
pub struct ProbeLink {
    requests: Sender<Box<Probe>>,
    replies: Receiver<Box<Probe>>,
    spares: Sender<Box<Spare>>,
    used: Receiver<Box<Spare>>,
}

impl ProbeLink {
    /// Before `snap` is published: frees what the worker sent back, and gives it counters
    /// shaped for `snap` (dropped if the worker has not taken the last ones yet).
    pub fn prepare(&self, snap: &Snapshot) {
        while self.used.try_recv().is_ok() {}
        let _ = self.spares.try_send(Box::new(Spare {
            generation: snap.generation,
            stats: WorkerStats::new(&snap.backend_counts()),
        }));
    }
}

/// Makes the shared snapshot cell and one mailbox pair per worker.
pub fn links(
    snap: Arc<Snapshot>,
    workers: usize,
) -> (Arc<ArcSwap<Snapshot>>, Vec<ProbeLink>, Vec<WorkerLink>) {
    let cell = Arc::new(ArcSwap::new(snap));
    let mut ctl = Vec::with_capacity(workers);
    let mut wl = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (rq_tx, rq_rx) = bounded(1);
        let (rp_tx, rp_rx) = bounded(1);
        // Room for the spares of several publishes the worker has not caught up with, and
        // for as many coming back.
        let (sp_tx, sp_rx) = bounded(8);
        let (us_tx, us_rx) = bounded(16);
        ctl.push(ProbeLink {
            requests: rq_tx,
            replies: rp_rx,
            spares: sp_tx,
            used: us_rx,
        });
        wl.push(WorkerLink {
            snapshot: Arc::clone(&cell),
            requests: rq_rx,
            replies: rp_tx,
            spares: sp_rx,
            used: us_tx,
            swaps: 0,
            swap_max_ns: 0,
            swaps_allocating: 0,
        });
    }
    (cell, ctl, wl)
}

/// Sends each worker a probe and collects the filled ones; a worker that does not answer
/// within `wait` (stopped, or stuck) is left out.
pub fn probe_all(links: &[ProbeLink], make: impl Fn() -> Probe, wait: Duration) -> Vec<Probe> {
    probe_each(links, |_| Some(make()), wait)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Sends the workers `make` gives a probe for (by link index) and collects the filled ones
/// with their link index; a worker that does not answer within `wait` is left out.
pub fn probe_each(
    links: &[ProbeLink],
    make: impl Fn(usize) -> Option<Probe>,
    wait: Duration,
) -> Vec<(usize, Probe)> {
    // Drop stale replies left by an earlier probe that timed out.
    for l in links {
        while l.replies.try_recv().is_ok() {}
    }
    let sent: Vec<bool> = links
        .iter()
        .enumerate()
        .map(|(i, l)| make(i).is_some_and(|p| l.requests.try_send(Box::new(p)).is_ok()))
        .collect();
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::with_capacity(links.len());
    for (i, (l, s)) in links.iter().zip(sent).enumerate() {
        if !s {
            continue;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Ok(p) = l.replies.recv_timeout(left) {
            out.push((i, *p));
        }
    }
    out
}
