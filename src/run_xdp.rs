//! `sluice run` on AF_XDP: loads sluice's XDP program onto `[dataplane.xdp] interface`
//! (native mode where the driver has it, generic otherwise, or as configured), keeps its maps
//! in step with every published snapshot, opens an AF_XDP socket on queue 0 (zero-copy where
//! supported, copy otherwise), and runs one pinned worker on it while this thread serves the
//! control plane. Everything the program does not redirect (SSH, the host's own traffic,
//! ARP for its addresses) stays with the kernel.

use crate::daemon::control;
use crate::report::Report;
use crate::run::{main_loop, stop_on_signals, RunOptions};
use config::{Config, Dataplane};
use dataplane::xdp::{AttachMode, CopyMode, XdpProgram, XskQueue};
use dataplane::{Bursts, DropReason, Rings, Snapshot, Steering, Worker};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub fn run(
    opts: &RunOptions,
    cfg: Config,
    dp: Dataplane,
    why: Option<String>,
) -> Result<Report, String> {
    let x = dp.xdp.clone().ok_or("[dataplane.xdp] is missing")?;
    let core = dp.cores[0];
    // Counted from the system, not this thread's affinity (which a failed DPDK start under
    // the `auto` driver leaves narrowed to one core).
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    if core >= online {
        return Err(format!(
            "{}: dataplane.cores names core {core}, which this machine does not have",
            opts.config.display()
        ));
    }
    let snap = Snapshot::build(&cfg).map_err(|e| format!("{}: {e}", opts.config.display()))?;
    let mode = match x.mode.as_str() {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        _ => AttachMode::Auto,
    };
    let copy = match x.zerocopy.as_str() {
        "on" => CopyMode::ZeroCopy,
        "off" => CopyMode::Copy,
        _ => CopyMode::Auto,
    };
    let mut prog = XdpProgram::attach(&x.interface, mode).map_err(|e| {
        format!("{e}\n  fix: check that dataplane.xdp.interface names an interface that is up (`ip link`), that no other XDP program is attached (`ip link set dev {} xdp off`), and run as root", x.interface)
    })?;
    prog.sync(&snap)?;
    let queue = XskQueue::open(&prog, 0, x.frames, x.ring, copy)?;
    let stop = stop_on_signals()?;
    let (mut ctl, mut links) =
        control::start(&cfg, &opts.config, "xdp", snap.clone(), 1, opts.quiet)?;
    let mut link = links.pop().ok_or("no worker link")?;
    let native = prog.native;
    let zerocopy = queue.zerocopy;
    let prog = Arc::new(Mutex::new(prog));
    {
        let prog = Arc::clone(&prog);
        ctl.on_publish(move |s| match prog.lock() {
            Ok(mut p) => p.sync(s),
            Err(_) => Err("the XDP program handle is unavailable".into()),
        });
    }
    if !opts.quiet {
        if let Some(w) = &why {
            eprintln!("sluice: {w}");
        }
        eprintln!(
            "sluice: driver xdp on {} ({} mode, {}), 1 worker on core {core}",
            x.interface,
            if native { "native" } else { "generic" },
            if zerocopy { "zero-copy" } else { "copy" },
        );
    }
    let received: Arc<Vec<AtomicU64>> = Arc::new(vec![AtomicU64::new(0)]);
    let start = Instant::now();
    let handle = {
        let (stop, received, snap) = (Arc::clone(&stop), Arc::clone(&received), Arc::new(snap));
        let mut queue = queue;
        std::thread::Builder::new()
            .name("sluice-worker-0".into())
            .spawn(move || -> Result<(Worker, XskQueue), String> {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    return Err(format!("cannot pin the worker to core {core}"));
                }
                let steering = Steering::new(1, snap.node.snat_ports);
                let mut worker = Worker::new(0, steering, snap, false);
                let mut bursts = Bursts::new();
                let rings: Rings<dataplane::xdp::XskFrame> = Rings::new(1, 64);
                while !stop.load(Ordering::Relaxed) {
                    if worker.poll(&mut queue, &mut bursts, &rings) > 0 {
                        received[0].store(worker.stats.packets_in, Ordering::Relaxed);
                    }
                    link.between_bursts(&mut worker);
                }
                Ok((worker, queue))
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
    let (mut worker, queue) = handle.join().map_err(|_| "the worker thread panicked")??;
    let elapsed = start.elapsed();
    let snap = ctl.latest();
    worker.set_snapshot(Arc::clone(&snap));
    ctl.shutdown();
    let xs = queue.stats();
    let tx_full = queue.tx_full;
    drop(queue);
    // Explicitly: the control plane's publish hook holds the program too, and an XDP program
    // stays attached after the process exits.
    if let Ok(mut p) = prog.lock() {
        p.detach();
    }
    Ok(Report::one_worker(
        snap,
        &worker,
        cfg.conntrack.capacity,
        elapsed,
        "xdp",
        Some(
            serde_json::json!({"interface": x.interface, "native": native, "zerocopy": zerocopy,
            "kernel_rx_dropped": xs.rx_dropped, "rx_invalid": xs.rx_invalid, "tx_invalid": xs.tx_invalid, "rx_ring_full": xs.rx_ring_full}),
        ),
        format!(
            "AF_XDP on {}: kernel dropped {} frames for want of fill buffers",
            x.interface, xs.rx_dropped
        ),
        |stats| {
            stats.drops[DropReason::TxFull.index()] += tx_full;
            stats.packets_out -= tx_full.min(stats.packets_out);
        },
    ))
}
