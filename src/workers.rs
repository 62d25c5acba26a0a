//! What every driver of `sluice run` shares: its options, the stop flag SIGINT and SIGTERM
//! set, one pinned worker thread per port queue, and the daemon's main loop, which serves the
//! control plane until a stop and then collects the workers.
//!
//! Workers run on a thread scope (`std::thread::scope`), so they can borrow what outlives
//! them — the hand-off rings, and through their queues the ports, pools and UMEMs — and the
//! types, not a teardown order written by hand, keep every frame inside the lifetime of the
//! memory it lives in.

use controlplane::control::ControlPlane;
use controlplane::WorkerLink;
use dataplane::{Bursts, Port, Rings, Worker};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop once no packet has arrived for this long (after the first one, or from the start).
    pub idle_exit: Option<Duration>,
    /// Print a progress line this often.
    pub progress: Option<Duration>,
    /// Print nothing but errors.
    pub quiet: bool,
}

/// Set by SIGHUP: the main loop reloads the configuration file.
static RELOAD: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
/// Set by SIGINT and SIGTERM: the main loop stops the daemon (after withdrawing its routes
/// and a grace time, with `[bgp]`; at once on a second signal).
static TERM: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The flag that stops the workers, which the main loop sets once SIGINT or SIGTERM has
/// asked for a stop (and any grace time has passed). SIGHUP, from now on, asks the main
/// loop to reload the configuration file (as `sluicectl reload` does) instead of ending the
/// process.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    let term = TERM.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(term))
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    let reload = RELOAD.get_or_init(|| Arc::new(AtomicBool::new(false)));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(reload))
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    Ok(Arc::new(AtomicBool::new(false)))
}

/// Whether SIGHUP arrived since the last call.
fn reload_requested() -> bool {
    RELOAD
        .get()
        .is_some_and(|r| r.swap(false, Ordering::Relaxed))
}

/// Whether SIGINT or SIGTERM arrived since the last call.
fn stop_requested() -> bool {
    TERM.get().is_some_and(|r| r.swap(false, Ordering::Relaxed))
}

/// How long a stopping daemon waits for the ExaBGP feed to take the withdrawal before it
/// starts the grace time anyway.
const FEED_WAIT: Duration = Duration::from_secs(5);
/// A feed that has not asked for this long is not running: there is nothing to withdraw.
const FEED_ALIVE_S: u64 = 10;

/// A stop under way with `[bgp]`: routes withdrawn at `since`; forwarding continues until
/// the feed has passed the withdrawal on and `grace` has gone by.
struct GracefulStop {
    since: Instant,
    grace: Duration,
    withdrawn: Option<Instant>,
}

/// Empty polls in a row after which an idle worker yields (with `idle = "yield"`).
const IDLE_POLLS: u32 = 16;
/// Empty polls in a row after which an idle worker sleeps (with `idle = "sleep"`): about
/// 100 µs of polling, so a steady flow of packets is met by a polling worker.
const SLEEP_AFTER_POLLS: u32 = 1024;
/// The first and the longest sleep of an idle worker: the first is short so traffic that
/// pauses briefly is met soon; the longest bounds the wait of the first packet after an idle
/// spell (and of L7 timers and control-plane changes, served between polls).
const FIRST_SLEEP: Duration = Duration::from_micros(16);
const LONGEST_SLEEP: Duration = Duration::from_millis(1);

/// What the worker threads share, borrowed for the scope.
pub struct Shared<'env, F> {
    pub rings: &'env Rings<F>,
    /// The L7 pool, whose shards run beside the workers (its rings are in `rings`).
    pub l7: Option<&'env crate::l7::L7Pool>,
    /// `dataplane.idle`: what a worker does when it finds nothing to do.
    pub idle: config::IdlePolicy,
    pub stop: &'env AtomicBool,
    /// Frames each worker received so far (for `--idle-exit` and `--progress`).
    pub received: &'env [AtomicU64],
}

/// How a driver's worker threads start: `enter` runs first on the new thread (after pinning;
/// DPDK registers the thread with the EAL there), `leave` last; `worker(i, host_path)` makes
/// worker `i` for a queue that does (or does not) have a host path.
pub struct ThreadSetup<'env> {
    pub enter: &'env (dyn Fn(usize) -> Result<(), String> + Sync),
    pub leave: &'env (dyn Fn() + Sync),
    pub worker: &'env (dyn Fn(usize, bool) -> Worker + Sync),
}

/// A worker thread, which ends with its worker and its queue.
pub type WorkerThread<'scope, Q> = ScopedJoinHandle<'scope, Result<(Worker, Q), String>>;

/// Starts one thread per queue, pinned to its core in `cores` (same order), each polling its
/// queue and serving its control-plane link between bursts until `shared.stop`.
pub fn spawn<'scope, 'env, Q>(
    scope: &'scope Scope<'scope, 'env>,
    cores: &[usize],
    queues: Vec<Q>,
    links: Vec<WorkerLink>,
    shared: &'env Shared<'env, Q::Frame>,
    setup: &'env ThreadSetup<'env>,
) -> Result<Vec<WorkerThread<'scope, Q>>, String>
where
    Q: Port + Send + 'scope,
    Q::Frame: Send,
{
    let mut threads = Vec::with_capacity(queues.len());
    for (((i, &core), mut link), mut queue) in cores.iter().enumerate().zip(links).zip(queues) {
        let t = std::thread::Builder::new()
            .name(format!("sluice-worker-{i}"))
            .spawn_scoped(scope, move || -> Result<(Worker, Q), String> {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    return Err(format!("cannot pin worker {i} to core {core}"));
                }
                (setup.enter)(i)?;
                let mut worker = (setup.worker)(i, queue.has_host_path());
                let mut bursts: Bursts<Q::Frame> = Bursts::new();
                // L7 shards pinned to this core run here, after each burst.
                let mut shards: Vec<l7_offload::Shard> = match (shared.l7, shared.rings.offload()) {
                    (Some(p), Some(o)) => p
                        .pinned_to(core)
                        .into_iter()
                        .map(|s| p.shard(s, o))
                        .collect(),
                    _ => Vec::new(),
                };
                // After a stop, the L7 shards reset their connections: their frames are sent
                // until every shard is done, and once more (within half a second at most).
                let mut stopping: Option<Instant> = None;
                let mut idle = 0u32;
                let mut nap = FIRST_SLEEP;
                loop {
                    if shared.stop.load(Ordering::Relaxed) {
                        if let Some(p) = shared.l7 {
                            for mut shard in shards.drain(..) {
                                // Its resets leave through this worker, which keeps
                                // transmitting while the shard waits for ring room.
                                shard.shutdown_with(shard.now_ms(), &mut || {
                                    worker.poll(&mut queue, &mut bursts, shared.rings);
                                });
                                p.shard_stopped();
                            }
                        }
                        let since = *stopping.get_or_insert_with(Instant::now);
                        let shards_done = shared.l7.is_none_or(|p| p.all_stopped())
                            && shared.rings.offload().is_none_or(|o| o.returns_empty());
                        if shards_done || since.elapsed() > Duration::from_millis(500) {
                            worker.poll(&mut queue, &mut bursts, shared.rings);
                            break;
                        }
                    }
                    let out = worker.stats.packets_out;
                    let mut worked = false;
                    for shard in &mut shards {
                        worked |= shard.poll_at(shard.now_ms());
                    }
                    if worker.poll(&mut queue, &mut bursts, shared.rings) > 0 {
                        shared.received[i].store(worker.stats.packets_in, Ordering::Relaxed);
                        idle = 0;
                        nap = FIRST_SLEEP;
                    } else if worker.stats.packets_out == out && !worked {
                        idle = idle.saturating_add(1);
                        match shared.idle {
                            // Idle: let a thread sharing the core (an L7 worker) run.
                            config::IdlePolicy::Yield if idle > IDLE_POLLS => {
                                std::thread::yield_now()
                            }
                            config::IdlePolicy::Sleep if idle > SLEEP_AFTER_POLLS => {
                                std::thread::sleep(nap);
                                nap = (nap * 2).min(LONGEST_SLEEP);
                            }
                            _ => {}
                        }
                    } else {
                        idle = 0;
                        nap = FIRST_SLEEP;
                    }
                    queue.after_poll();
                    link.between_bursts(&mut worker);
                }
                (setup.leave)();
                Ok((worker, queue))
            })
            .map_err(|e| format!("cannot start worker thread {i}: {e}"))?;
        threads.push(t);
    }
    Ok(threads)
}

/// Runs one worker thread per queue (as [`spawn`] does) on a thread scope, serves the
/// control plane until a stop, and returns what the workers left, with the frames still in
/// the hand-off rings dropped (each gives its buffer back) and counted as `stranded`.
#[allow(clippy::too_many_arguments)]
pub fn run_scoped<Q>(
    opts: &RunOptions,
    cores: &[usize],
    queues: Vec<Q>,
    links: Vec<WorkerLink>,
    shared: &Shared<'_, Q::Frame>,
    setup: &ThreadSetup<'_>,
    ctl: &mut ControlPlane,
    start: Instant,
) -> Result<Collected<Q>, String>
where
    Q: Port + Send,
    Q::Frame: Send,
{
    let mut c = std::thread::scope(|scope| {
        if let (Some(pool), Some(rings)) = (shared.l7, shared.rings.offload()) {
            pool.spawn(scope, rings, shared.stop, cores)?;
        }
        let threads = spawn(scope, cores, queues, links, shared, setup)?;
        Ok::<_, String>(serve_and_collect(
            opts,
            shared.stop,
            shared.received,
            threads,
            ctl,
            start,
        ))
    })?;
    for w in 0..cores.len() {
        while shared.rings.pop(w).is_some() {
            c.stranded += 1;
        }
    }
    // Frames in the offload rings that no shard took or no worker sent.
    c.stranded += shared.rings.drain_offload();
    Ok(c)
}

/// What the workers left when they stopped.
pub struct Collected<Q> {
    pub elapsed: Duration,
    pub workers: Vec<Worker>,
    pub queues: Vec<Q>,
    /// The first worker that failed, if any.
    pub failure: Option<String>,
    /// Frames left in hand-off rings at the stop (dropped: each returned its buffer).
    pub stranded: u64,
}

/// Serves the control plane until a stop (signal, `--duration`, idleness, or a worker
/// ending), stops the workers and collects them.
pub fn serve_and_collect<Q>(
    opts: &RunOptions,
    stop: &AtomicBool,
    received: &[AtomicU64],
    threads: Vec<WorkerThread<'_, Q>>,
    ctl: &mut ControlPlane,
    start: Instant,
) -> Collected<Q> {
    main_loop(
        opts,
        stop,
        received,
        || threads.iter().any(|h| h.is_finished()),
        ctl,
        start,
    );
    let elapsed = start.elapsed();
    let mut c = Collected {
        elapsed,
        workers: Vec::with_capacity(threads.len()),
        queues: Vec::with_capacity(threads.len()),
        failure: None,
        stranded: 0,
    };
    for h in threads {
        match h.join() {
            Ok(Ok((w, q))) => {
                c.workers.push(w);
                c.queues.push(q);
            }
            Ok(Err(e)) => c.failure = Some(e),
            Err(_) => c.failure = Some("a worker thread panicked".into()),
        }
    }
    c
}

/// The daemon's main thread: serves the control plane every 50 ms and returns (with `stop`
/// set) on a signal, the duration, idleness, or when `finished` says a worker ended.
pub fn main_loop(
    opts: &RunOptions,
    stop: &AtomicBool,
    received: &[AtomicU64],
    finished: impl Fn() -> bool,
    ctl: &mut ControlPlane,
    start: Instant,
) {
    let mut last_total = 0u64;
    let mut last_change = Instant::now();
    let mut last_progress = Instant::now();
    let mut graceful: Option<GracefulStop> = None;
    let notify = crate::notify::get();
    let status = format!("forwarding with {} worker(s)", received.len());
    notify.ready(&status);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if reload_requested() {
            // The outcome is in the log and `sluicectl status` either way.
            notify.reloading();
            let _ = ctl.reload();
            notify.ready(&status);
        }
        if stop_requested() {
            match (&graceful, ctl.shutdown_grace()) {
                (None, Some(grace)) if ctl.feed_alive(FEED_ALIVE_S) => {
                    notify.stopping();
                    ctl.begin_stop();
                    graceful = Some(GracefulStop {
                        since: Instant::now(),
                        grace,
                        withdrawn: None,
                    });
                }
                (None, Some(_)) => {
                    ctl.log("stopping: no ExaBGP feed has asked for routes in 10 s, so there is nothing to withdraw".into());
                    break;
                }
                // No [bgp], or a second signal: stop now.
                _ => break,
            }
        }
        if let Some(g) = &mut graceful {
            if g.withdrawn.is_none()
                && (ctl.feed_polled_since(g.since) || g.since.elapsed() >= FEED_WAIT)
            {
                g.withdrawn = Some(Instant::now());
                ctl.log(format!(
                    "stopping: the feed has the withdrawal; forwarding for {} ms more (a second SIGTERM stops at once)",
                    g.grace.as_millis()
                ));
            }
            if g.withdrawn.is_some_and(|t| t.elapsed() >= g.grace) {
                ctl.log("stopping: grace time over".into());
                break;
            }
        }
        ctl.tick();
        let total: u64 = received.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        }
        if opts.duration.is_some_and(|d| start.elapsed() >= d)
            || opts.idle_exit.is_some_and(|d| last_change.elapsed() >= d)
            || finished()
        {
            break;
        }
        if let Some(p) = opts.progress {
            if last_progress.elapsed() >= p {
                last_progress = Instant::now();
                log::info!(
                    "{:.0} s, {} packets received ({:.0} packets/s)",
                    start.elapsed().as_secs_f64(),
                    total,
                    total as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
    }
    if graceful.is_none() {
        notify.stopping();
    }
    stop.store(true, Ordering::Relaxed);
}
