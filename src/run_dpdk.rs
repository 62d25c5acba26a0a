//! `sluice run` on DPDK: initialises the EAL and the ports from `[dataplane.dpdk]`, starts one
//! worker thread per configured core (pinned, each owning one RX/TX queue pair and its own
//! conntrack), serves the control plane from this thread until SIGINT/SIGTERM (or
//! `--duration` / `--idle-exit`), then stops the workers, drains the hand-off rings, stops the
//! port and reports.

use crate::report::Report;
use crate::workers::{self, RunOptions, Shared, ThreadSetup};
use config::{Config, Dataplane};
use controlplane::control;
use dataplane::dpdk::{DpdkQueue, Eal, EthPort, Mbuf, Mempool, QueueCounters};
use dataplane::{DropReason, Rings, Steering, Worker};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// Capacity of each inter-core hand-off ring.
const RING_CAPACITY: usize = 4096;

/// The EAL arguments: the configured ones, plus a main lcore if none is given (the lowest
/// core no worker uses, so control work stays off worker cores where the machine allows).
fn eal_args(user: &[String], cores: &[usize]) -> Vec<String> {
    let mut args = vec!["sluice".to_string()];
    args.extend(user.iter().cloned());
    let has_lcores = user
        .iter()
        .any(|a| a == "-l" || a == "-c" || a.starts_with("--lcores") || a.starts_with("-l"));
    if !has_lcores {
        let n = core_affinity::get_core_ids().map_or(1, |v| v.len()).max(1);
        let main = (0..n).find(|c| !cores.contains(c)).unwrap_or(0);
        args.push("-l".into());
        args.push(main.to_string());
    }
    args
}

/// `started` turns true once the workers run: errors before that mean DPDK could not set up
/// (the `auto` driver then falls back to AF_XDP).
pub fn run(
    opts: &RunOptions,
    cfg: Config,
    dp: Dataplane,
    started: &mut bool,
) -> Result<Report, String> {
    let dpdk = dp.dpdk.clone().ok_or("[dataplane.dpdk] is missing")?;
    let available = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(c) = dp
        .cores
        .iter()
        .find(|c| !available.iter().any(|a| a.id == **c))
    {
        return Err(format!(
            "{}: dataplane.cores names core {c}, but this machine has cores 0 to {}",
            opts.config.display(),
            available.len().saturating_sub(1)
        ));
    }
    let snap = Arc::new(
        controlplane::snapshot::build(&cfg)
            .map_err(|e| format!("{}: {e}", opts.config.display()))?,
    );
    // Before the EAL starts: certificates that do not load stop the start here.
    let l7 = crate::l7::L7Pool::of(&cfg).map_err(|e| format!("cannot start the L7 pool: {e}"))?;
    let stop = crate::workers::stop_on_signals()?;

    // The exception path: a TAP device DPDK creates, carrying the node's MAC so the kernel's
    // answers look like the port's own.
    const HOST_PORT: &str = "net_tap_sluice";
    let mut user_args = dpdk.eal_args.clone();
    if let Some(name) = &dpdk.exception_interface {
        user_args.push("--vdev".into());
        user_args.push(format!("{HOST_PORT},iface={name},mac={}", cfg.node.mac));
    }
    let eal = Eal::init(&eal_args(&user_args, &dp.cores))?;
    let port_id = EthPort::find(&dpdk.port)?;
    let n = dp.cores.len();
    // One pool per NUMA socket that has a worker; each RX queue fills from its worker's.
    let sockets: Vec<i32> = dp
        .cores
        .iter()
        .map(|c| Mempool::socket_of_core(*c))
        .collect();
    let mut pools: Vec<(i32, Mempool)> = Vec::new();
    for &s in &sockets {
        if !pools.iter().any(|(ps, _)| *ps == s) {
            pools.push((
                s,
                Mempool::create(&format!("sluice_mbufs_s{s}"), dpdk.mbufs, s)?,
            ));
        }
    }
    let queue_pools: Vec<&Mempool> = sockets
        .iter()
        .map(|s| pools.iter().find(|(ps, _)| ps == s).map(|(_, p)| p))
        .collect::<Option<_>>()
        .ok_or("no mbuf pool for a worker's socket")?;
    let in_use = |pools: &[(i32, Mempool)]| pools.iter().map(|(_, p)| p.in_use()).sum::<u32>();
    let setup = |id: u16| {
        EthPort::setup(
            id,
            dpdk.rx_descriptors,
            dpdk.tx_descriptors,
            &queue_pools,
            &packet::rss::SYMMETRIC_KEY,
        )
    };
    let port = setup(port_id)?;
    let tx_port = match &dpdk.tx_port {
        Some(name) => Some(setup(EthPort::find(name)?)?),
        None => None,
    };
    let host_port = match &dpdk.exception_interface {
        Some(_) => Some(setup(EthPort::find(HOST_PORT)?)?),
        None => None,
    };
    let (link_up, speed) = port.link();
    if !opts.quiet {
        let (tx_cksum, rx_cksum) = port.checksum_offloads();
        let offered = |v: Vec<&str>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join("/")
            }
        };
        log::info!(
            "driver dpdk, port {} ({}, {}), {} worker(s) on cores {:?}, RSS {}, checksum offloads offered: TX {}, RX {} (sluice computes its own), link {}{}",
            dpdk.port,
            port.driver(),
            port.mac(),
            n,
            dp.cores,
            if port.info.rss_hf != 0 {
                format!("on, redirection table of {}", port.info.reta_size)
            } else {
                "off (one queue, or a device without RSS)".into()
            },
            offered(tx_cksum),
            offered(rx_cksum),
            if link_up { "up" } else { "down" },
            if speed > 0 {
                format!(" at {speed} Mb/s")
            } else {
                String::new()
            },
        );
    }
    let baseline_in_use = in_use(&pools);
    let steering =
        Steering::new(n, cfg.node.snat_ports).with_reta_size(port.info.reta_size as usize);
    let mut rings: Rings<Mbuf> = Rings::new(n, RING_CAPACITY);
    let received: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let (mut ctl, links) =
        control::start(&cfg, &opts.config, "dpdk", (*snap).clone(), n, opts.quiet)?;
    *started = true;
    if let Some(pool) = &l7 {
        rings = rings.with_offload(pool.rings(n));
        pool.follow(&ctl);
    }
    let plan = l7.as_ref().map(|p| p.plan);
    let shared = Shared {
        rings: &rings,
        l7: l7.as_ref(),
        idle: dp.idle,
        stop: &stop,
        received: &received,
    };
    let make = |i: usize, host: bool| {
        let w = Worker::new(i, steering, Arc::clone(&snap), host);
        match plan {
            Some(p) => w.offloading_to(p),
            None => w,
        }
    };
    // Registered, each worker thread gets an lcore id, so the pool's per-core cache serves it.
    let enter = |_: usize| eal.register_thread().map(|_| ());
    let leave = || eal.unregister_thread();
    let setup = ThreadSetup {
        enter: &enter,
        leave: &leave,
        worker: &make,
    };
    let start = Instant::now();
    let queues: Vec<DpdkQueue> = (0..n)
        .map(|i| {
            port.queue(
                i as u16,
                queue_pools[i],
                tx_port.as_ref(),
                host_port.as_ref(),
            )
        })
        .collect();
    let workers::Collected {
        elapsed,
        mut workers,
        queues,
        failure,
        stranded,
    } = workers::run_scoped(
        opts, &dp.cores, queues, links, &shared, &setup, &mut ctl, start,
    )?;
    let queues: Vec<QueueCounters> = queues.iter().map(DpdkQueue::counters).collect();
    drop(rings);
    let port_counters = port.counters();
    let tx_counters = tx_port.as_ref().map(|t| t.counters());
    let (driver, mac, info) = (port.driver(), port.mac(), port.info);
    let (tx_cksum, rx_cksum) = port.checksum_offloads();
    let tx_driver = tx_port.as_ref().map(|t| t.driver());
    // Stopping takes each port by value: no queue or mbuf can still be using it.
    let stopped = (
        port.stop(),
        tx_port.map(EthPort::stop),
        host_port.map(EthPort::stop),
    );
    let end_in_use = in_use(&pools);
    // Closing gives back the buffers the devices held; the pools are freed when they drop.
    drop(stopped);
    let after_close = in_use(&pools);
    if let Some(e) = failure {
        return Err(e);
    }

    // Every worker on the latest snapshot, so all counters have one shape.
    let snap = ctl.latest();
    for w in workers.iter_mut() {
        w.set_snapshot(Arc::clone(&snap));
    }
    ctl.shutdown();
    let tx_full: u64 = queues.iter().map(|q| q.tx_full).sum();
    let oversize: u64 = queues.iter().map(|q| q.oversize).sum();
    let mut extra = serde_json::Map::new();
    extra.insert(
        "port".into(),
        serde_json::json!({
            "name": dpdk.port, "driver": driver, "mac": mac.to_string(), "queues": n,
            "rss": info.rss_hf != 0, "reta_size": info.reta_size,
            "tx_checksum_offloads": tx_cksum, "rx_checksum_offloads": rx_cksum,
            "rx_packets": port_counters.rx_packets, "tx_packets": port_counters.tx_packets,
            "rx_missed": port_counters.rx_missed, "rx_errors": port_counters.rx_errors,
            "tx_errors": port_counters.tx_errors, "rx_no_mbuf": port_counters.rx_no_mbuf,
        }),
    );
    if let (Some(name), Some(t), Some(c)) = (&dpdk.tx_port, &tx_driver, tx_counters) {
        extra.insert("tx_port".into(), serde_json::json!({"name": name, "driver": t, "tx_packets": c.tx_packets, "tx_errors": c.tx_errors}));
    }
    extra.insert("mempool".into(), serde_json::json!({"pools": pools.iter().map(|(s, _)| *s).collect::<Vec<_>>(), "size_per_pool": dpdk.mbufs, "in_use_at_start": baseline_in_use, "in_use_at_end": end_in_use, "in_use_after_close": after_close}));
    extra.insert("cores".into(), serde_json::json!(dp.cores));
    if let Some(name) = &dpdk.exception_interface {
        extra.insert(
            "exception".into(),
            serde_json::json!({"interface": name,
                "to_host": queues.iter().map(|q| q.to_host).sum::<u64>(),
                "from_host": queues.iter().map(|q| q.from_host).sum::<u64>(),
                "dropped": queues.iter().map(|q| q.host_dropped).sum::<u64>()}),
        );
    }
    let sent_by_device = tx_counters.map_or(port_counters.tx_packets, |c| c.tx_packets);
    let note = format!(
        "port {}: {} received; {} sent by {}; packet buffers in use {} at start, {} at end{}",
        dpdk.port,
        port_counters.rx_packets,
        sent_by_device,
        dpdk.tx_port.as_deref().unwrap_or(&dpdk.port),
        baseline_in_use,
        end_in_use,
        crate::l7::summary(l7.as_ref())
    );
    Ok(Report::of_workers(
        snap,
        &workers,
        cfg.conntrack.capacity,
        elapsed,
        "dpdk",
        crate::l7::with_report(l7.as_ref(), &cfg, extra),
        note,
        |stats| {
            stats.drops[DropReason::TxFull.index()] += tx_full;
            stats.drops[DropReason::Oversize.index()] += oversize;
            stats.drops[DropReason::Shutdown.index()] += stranded;
            stats.packets_in += oversize;
            // Frames counted out by the workers that the device refused are not out.
            stats.packets_out -= tx_full.min(stats.packets_out);
        },
    ))
}
