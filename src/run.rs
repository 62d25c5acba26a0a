//! `sluice run`: the daemon. Reads the configuration and starts the port driver `[dataplane]`
//! names — `dpdk` (src/run_dpdk.rs), `xdp` (src/run_xdp.rs), `auto` (DPDK, falling back to
//! AF_XDP), or `pcap` (here: a capture played in real time, for trying the control plane
//! without NICs or privileges). Each serves the control plane from the main thread until
//! SIGINT/SIGTERM, `--duration` or `--idle-exit` (src/workers.rs); control work never runs on
//! a worker core.

use crate::report::Report;
use crate::workers::{main_loop, stop_on_signals, RunOptions};
use config::{Config, Dataplane, Driver};
use controlplane::control;
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Steering, Worker};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(opts: &RunOptions) -> Result<Report, String> {
    let cfg = Config::load(&opts.config).map_err(|e| e.to_string())?;
    let dp = cfg.dataplane.clone().ok_or_else(|| format!("{}: `sluice run` needs a [dataplane] section (driver, cores, and [dataplane.dpdk] or [dataplane.pcap]); see README.md", opts.config.display()))?;
    match dp.driver {
        Driver::Dpdk => run_dpdk(opts, cfg, dp, &mut false),
        Driver::Xdp => run_xdp(opts, cfg, dp, None),
        Driver::Auto => {
            // DPDK first; if its device does not initialise (before any worker started),
            // AF_XDP on the configured interface.
            let mut started = false;
            match run_dpdk(opts, cfg.clone(), dp.clone(), &mut started) {
                Err(e) if !started => {
                    let why = format!(
                        "DPDK did not start ({}); using AF_XDP",
                        e.lines().next().unwrap_or(&e)
                    );
                    run_xdp(opts, cfg, dp, Some(why))
                }
                other => other,
            }
        }
        Driver::Pcap => run_pcap(opts, cfg, dp),
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(
    opts: &RunOptions,
    cfg: Config,
    dp: Dataplane,
    started: &mut bool,
) -> Result<Report, String> {
    crate::run_dpdk::run(opts, cfg, dp, started)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &RunOptions, _: Config, _: Dataplane, _: &mut bool) -> Result<Report, String> {
    Err("this sluice was built without DPDK support (the `dpdk` feature); rebuild with default features and libdpdk-dev installed".into())
}

#[cfg(feature = "xdp")]
fn run_xdp(
    opts: &RunOptions,
    cfg: Config,
    dp: Dataplane,
    why: Option<String>,
) -> Result<Report, String> {
    crate::run_xdp::run(opts, cfg, dp, why)
}

#[cfg(not(feature = "xdp"))]
fn run_xdp(_: &RunOptions, _: Config, _: Dataplane, _: Option<String>) -> Result<Report, String> {
    Err("this sluice was built without AF_XDP support (the `xdp` feature); rebuild with default features and libxdp-dev, libbpf-dev and clang installed".into())
}

/// The `pcap` driver: one worker plays the input capture in real time (scaled by `speed`)
/// through the `mem` port; what it transmits is written to the output capture at exit, with
/// the time it was sent. Reading and writing files allocate, so this driver is for trying
/// sluice and for tests, not for forwarding at speed.
fn run_pcap(opts: &RunOptions, cfg: Config, dp: Dataplane) -> Result<Report, String> {
    let pc = dp.pcap.clone().ok_or("[dataplane.pcap] is missing")?;
    let file = std::fs::File::open(&pc.input).map_err(|e| {
        format!(
            "dataplane.pcap.input: cannot open {}: {e}",
            pc.input.display()
        )
    })?;
    let frames = pcap::read_all(std::io::BufReader::new(file))
        .map_err(|e| format!("dataplane.pcap.input: {}: {e}", pc.input.display()))?;
    let out_file = std::fs::File::create(&pc.output).map_err(|e| {
        format!(
            "dataplane.pcap.output: cannot create {}: {e}",
            pc.output.display()
        )
    })?;
    let snap = controlplane::snapshot::build(&cfg)
        .map_err(|e| format!("{}: {e}", opts.config.display()))?;
    let stop = stop_on_signals()?;
    let (mut ctl, mut links) =
        control::start(&cfg, &opts.config, "pcap", snap.clone(), 1, opts.quiet)?;
    let mut link = links.pop().ok_or("no worker link")?;
    if !opts.quiet {
        log::info!(
            "driver pcap, {} frames from {} at {}x real time, 1 worker on core {}",
            frames.len(),
            pc.input.display(),
            pc.speed,
            dp.cores[0]
        );
    }
    let received: Arc<Vec<AtomicU64>> = Arc::new(vec![AtomicU64::new(0)]);
    let start = Instant::now();
    let core = dp.cores[0];
    let speed = pc.speed as u64;
    let handle = {
        let (stop, received, snap) = (Arc::clone(&stop), Arc::clone(&received), Arc::new(snap));
        std::thread::Builder::new()
            .name("sluice-worker-0".into())
            .spawn(move || -> (Worker, Vec<(u64, Vec<u8>)>, u64) {
                // Pinning is best effort here: the driver is not for speed.
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                let steering = Steering::new(1, snap.node.snat_ports);
                let mut worker = Worker::new(0, steering, snap, false);
                let mut port = MemPort::new(false);
                let mut bursts: Bursts<PacketBuf> = Bursts::new();
                let rings: Rings<PacketBuf> = Rings::new(1, 64);
                let t0 = frames.first().map_or(0, |f| f.0);
                let mut next = 0;
                let mut out = Vec::new();
                let mut oversize = 0;
                let began = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let real = began.elapsed().as_nanos() as u64;
                    let due = real * speed;
                    // The data path runs on the real clock, so flows expire in real time.
                    port.clock = Some(real);
                    let mut fed = 0;
                    while next < frames.len()
                        && frames[next].0.saturating_sub(t0) <= due
                        && fed < 32
                    {
                        if !port.inject(&frames[next].1, real, next as u64) {
                            oversize += 1;
                        }
                        next += 1;
                        fed += 1;
                    }
                    let n = worker.poll(&mut port, &mut bursts, &rings);
                    for f in port.tx.drain(..) {
                        out.push((
                            began.elapsed().as_nanos() as u64,
                            dataplane::Frame::data(&f).to_vec(),
                        ));
                        port.pool.push(f);
                    }
                    received[0].store(worker.stats.packets_in, Ordering::Relaxed);
                    link.between_bursts(&mut worker);
                    if n == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                (worker, out, oversize)
            })
            .map_err(|e| format!("cannot start the worker thread: {e}"))?
    };
    main_loop(
        opts,
        &stop,
        &received,
        || handle.is_finished(),
        &mut ctl,
        start,
    );
    let (mut worker, out, oversize) = handle.join().map_err(|_| "the worker thread panicked")?;
    let elapsed = start.elapsed();
    let snap = ctl.latest();
    worker.set_snapshot(Arc::clone(&snap));
    ctl.shutdown();
    let mut w = pcap::PcapWriter::new(std::io::BufWriter::new(out_file), true)
        .map_err(|e| format!("dataplane.pcap.output: {e}"))?;
    for (ts, f) in &out {
        w.write(*ts, f)
            .map_err(|e| format!("dataplane.pcap.output: {e}"))?;
    }
    w.flush()
        .map_err(|e| format!("dataplane.pcap.output: {e}"))?;
    Ok(Report::of_workers(
        snap,
        std::slice::from_ref(&worker),
        cfg.conntrack.capacity,
        elapsed,
        "pcap",
        serde_json::Map::new(),
        format!("{} frames written to {}", out.len(), pc.output.display()),
        |stats| {
            stats.drops[dataplane::DropReason::Oversize.index()] += oversize;
            stats.packets_in += oversize;
        },
    ))
}
