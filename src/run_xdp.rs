//! `sluice run` on AF_XDP: loads sluice's XDP program onto `[dataplane.xdp] interface`
//! (native mode where the driver has it, generic otherwise, or as configured), keeps its maps
//! in step with every published snapshot, opens one AF_XDP socket per worker on queues 0..n
//! (zero-copy where supported, copy otherwise), and runs one pinned worker on each while this
//! thread serves the control plane. Frames reach whichever queue the kernel chose; a worker
//! hands a frame whose flow another worker owns to it (copied into that worker's UMEM when
//! sent). Everything the program does not redirect (SSH, the host's own traffic,
//! ARP for its addresses) stays with the kernel.

use crate::report::Report;
use crate::workers::{self, stop_on_signals, RunOptions, Shared, ThreadSetup};
use config::{Config, Dataplane, XdpMode, ZeroCopy};
use controlplane::control;
use dataplane::xdp::{AttachMode, CopyMode, Umem, XdpProgram, XskFrame, XskQueue};
use dataplane::{DropReason, Rings, Steering, Worker};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub fn run(
    opts: &RunOptions,
    cfg: Config,
    dp: Dataplane,
    why: Option<String>,
) -> Result<Report, String> {
    let x = dp.xdp.clone().ok_or("[dataplane.xdp] is missing")?;
    let n = dp.cores.len();
    // Counted from the system, not this thread's affinity (which a failed DPDK start under
    // the `auto` driver leaves narrowed to one core).
    let online = online_cpus();
    if let Some(core) = dp.cores.iter().find(|&&c| c >= online) {
        return Err(format!(
            "{}: dataplane.cores names core {core}, which this machine does not have",
            opts.config.display()
        ));
    }
    let queues = rx_queues(&x.interface);
    if queues.is_some_and(|q| q < n) {
        return Err(format!(
            "{}: dataplane.cores lists {n} cores, one per queue of {}, which has {} receive queue(s)\n  fix: list at most {} cores, or give the interface more queues (`ethtool -L {} combined {n}`)",
            opts.config.display(), x.interface, queues.unwrap_or(0), queues.unwrap_or(0), x.interface
        ));
    }
    let snap = controlplane::snapshot::build(&cfg)
        .map_err(|e| format!("{}: {e}", opts.config.display()))?;
    // Before anything is attached: certificates that do not load stop the start here.
    let l7 = crate::l7::L7Pool::of(&cfg).map_err(|e| format!("cannot start the L7 pool: {e}"))?;
    let mode = match x.mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
        XdpMode::Auto => AttachMode::Auto,
    };
    let copy = match x.zerocopy {
        ZeroCopy::On => CopyMode::ZeroCopy,
        ZeroCopy::Off => CopyMode::Copy,
        ZeroCopy::Auto => CopyMode::Auto,
    };
    let mut prog = XdpProgram::attach(&x.interface, mode).map_err(|e| {
        format!("{e}\n  fix: check that dataplane.xdp.interface names an interface that is up (`ip link`), that no other XDP program is attached (`ip link set dev {} xdp off`), and run as root", x.interface)
    })?;
    prog.sync(&snap)?;
    // Every queue and frame borrows its UMEM, so the UMEMs outlive the workers' scope.
    let umems = (0..n)
        .map(|q| Umem::open(&prog, q as u32, x.frames, x.ring, copy))
        .collect::<Result<Vec<Umem>, String>>()?;
    let stop = stop_on_signals()?;
    let (mut ctl, links) = control::start(&cfg, &opts.config, "xdp", snap.clone(), n, opts.quiet)?;
    let native = prog.native;
    let zerocopy = umems.iter().all(|u| u.zerocopy);
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
            log::info!("{w}");
        }
        log::info!(
            "driver xdp on {} ({} mode, {}), {n} worker(s) on queues 0..{} (cores {:?})",
            x.interface,
            if native { "native" } else { "generic" },
            if zerocopy { "zero-copy" } else { "copy" },
            n - 1,
            dp.cores,
        );
    }
    let steering = Steering::new(n, snap.node.snat_ports);
    let mut rings: Rings<XskFrame> = Rings::new(n, RING_CAPACITY);
    if let Some(pool) = &l7 {
        rings = rings.with_offload(pool.rings(n));
        pool.follow(&ctl);
    }
    let plan = l7.as_ref().map(|p| p.plan);
    let received: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let snap = Arc::new(snap);
    let shared = Shared {
        rings: &rings,
        l7: l7.as_ref(),
        idle: dp.idle,
        stop: &stop,
        received: &received,
    };
    let make = |i: usize, _host: bool| {
        let mut w = Worker::new(i, steering, Arc::clone(&snap), false);
        if let Some(p) = plan {
            w = w.offloading_to(p);
        }
        // The kernel, not our RSS key, picks each frame's queue.
        if n > 1 {
            w.steering_forward_frames()
        } else {
            w
        }
    };
    let setup = ThreadSetup {
        enter: &|_| Ok(()),
        leave: &|| {},
        worker: &make,
    };
    let start = Instant::now();
    let queues: Vec<XskQueue> = umems.iter().map(XskQueue::new).collect();
    let workers::Collected {
        elapsed,
        mut workers,
        queues,
        failure,
        stranded,
    } = workers::run_scoped(
        opts, &dp.cores, queues, links, &shared, &setup, &mut ctl, start,
    )?;
    let snap = ctl.latest();
    for w in workers.iter_mut() {
        w.set_snapshot(Arc::clone(&snap));
    }
    ctl.shutdown();
    let xs: Vec<_> = queues.iter().map(|q| q.stats()).collect();
    let tx_full: u64 = queues.iter().map(|q| q.tx_full).sum();
    let copied_in: u64 = queues.iter().map(|q| q.copied_in).sum();
    let kernel_rx_dropped: u64 = xs.iter().map(|s| s.rx_dropped).sum();
    let rx_ring_full: u64 = xs.iter().map(|s| s.rx_ring_full).sum();
    drop(queues);
    drop(rings);
    drop(umems);
    // Explicitly: the control plane's publish hook holds the program too, and an XDP program
    // stays attached after the process exits.
    if let Ok(mut p) = prog.lock() {
        p.detach();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Report::of_workers(
        snap,
        &workers,
        cfg.conntrack.capacity,
        elapsed,
        "xdp",
        crate::l7::with_report(l7.as_ref(), &cfg, serde_json::Map::from_iter([("xdp".to_string(), serde_json::json!({"interface": x.interface, "native": native, "zerocopy": zerocopy,
            "queues": n, "copied_in": copied_in,
            "kernel_rx_dropped": kernel_rx_dropped,
            "rx_invalid": xs.iter().map(|s| s.rx_invalid).sum::<u64>(),
            "tx_invalid": xs.iter().map(|s| s.tx_invalid).sum::<u64>(),
            "rx_ring_full": rx_ring_full}))])),
        format!(
            "AF_XDP on {} ({n} queue(s)): kernel dropped {kernel_rx_dropped} frames for want of fill buffers and {rx_ring_full} for a full receive ring; {copied_in} handed-off frames copied between queues{}",
            x.interface,
            crate::l7::summary(l7.as_ref())
        ),
        |stats| {
            stats.drops[DropReason::TxFull.index()] += tx_full;
            stats.drops[DropReason::Shutdown.index()] += stranded;
            stats.packets_out -= tx_full.min(stats.packets_out);
        },
    ))
}

/// One more than the highest online CPU, from `/sys/devices/system/cpu/online` (a list such
/// as `0-3,6`); 1 where it cannot be read.
fn online_cpus() -> usize {
    let Ok(list) = std::fs::read_to_string("/sys/devices/system/cpu/online") else {
        return 1;
    };
    list.trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.trim().parse::<usize>().ok())
        .max()
        .map_or(1, |m| m + 1)
}

/// Frames a hand-off ring between two workers holds.
const RING_CAPACITY: usize = 1024;

/// The interface's receive queues, from sysfs (`None` where sysfs does not say).
fn rx_queues(interface: &str) -> Option<usize> {
    let d = std::fs::read_dir(format!("/sys/class/net/{interface}/queues")).ok()?;
    Some(
        d.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count(),
    )
}
