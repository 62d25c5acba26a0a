//! The `pcap` driver: deterministic replay of a capture through the real worker loop.
//!
//! Frames are read in order and delivered, as a NIC with RSS would, to the queue of the worker
//! the symmetric Toeplitz hash picks; each worker polls its queue with the same
//! [`dataplane::Worker::poll`] a live port uses. Time is the capture's: each frame is processed
//! at its own timestamp, so expiry is reproducible. Workers run in lock-step on one thread, so
//! a run is a pure function of its inputs; every transmitted frame is written in input order,
//! with the timestamp of the frame that caused it.

use config::Config;
use dataplane::conntrack::ConnTrackCounters;
use dataplane::port::BURST;
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Snapshot, Steering, Worker, WorkerStats};
use pcap::{PcapReader, PcapWriter};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Capacity of each inter-worker hand-off ring.
const RING_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub config: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub host_output: Option<PathBuf>,
    pub workers: usize,
}

/// What a replay did.
pub struct ReplayReport {
    pub snapshot: Arc<Snapshot>,
    pub workers: usize,
    pub frames_read: u64,
    pub stats: WorkerStats,
    pub conntrack: ConnTrackCounters,
    pub active_flows: usize,
    pub conntrack_capacity: usize,
    pub elapsed: Duration,
}

fn open_writer(
    path: &PathBuf,
    what: &str,
    nanos: bool,
) -> Result<PcapWriter<BufWriter<File>>, String> {
    let f = File::create(path)
        .map_err(|e| format!("cannot create the {what} capture {}: {e}", path.display()))?;
    PcapWriter::new(BufWriter::with_capacity(1 << 20, f), nanos)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_frames(
    w: &mut PcapWriter<BufWriter<File>>,
    path: &Path,
    frames: &mut [PacketBuf],
    sort: bool,
) -> Result<(), String> {
    use dataplane::Frame;
    if sort {
        frames.sort_by_key(|f| f.seq);
    }
    for f in frames.iter() {
        w.write(f.ts_ns, f.data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Replays `opts.input` through the data path configured by `opts.config`.
pub fn replay(opts: &ReplayOptions) -> Result<ReplayReport, String> {
    let cfg = Config::load(&opts.config).map_err(|e| e.to_string())?;
    let snap =
        Arc::new(Snapshot::build(&cfg).map_err(|e| format!("{}: {e}", opts.config.display()))?);
    let file = File::open(&opts.input).map_err(|e| {
        format!(
            "cannot open the input capture {}: {e}",
            opts.input.display()
        )
    })?;
    let mut reader = PcapReader::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("{}: {e}", opts.input.display()))?;
    let nanos = reader.is_nanosecond();
    let mut out = open_writer(&opts.output, "output", nanos)?;
    let mut host_out = match &opts.host_output {
        Some(p) => Some(open_writer(p, "host output", nanos)?),
        None => None,
    };
    let n = opts.workers.max(1);
    let steering = Steering::new(n, cfg.node.snat_ports);
    let mut workers: Vec<Worker> = (0..n)
        .map(|i| Worker::new(i, steering, Arc::clone(&snap), host_out.is_some()))
        .collect();
    let mut ports: Vec<MemPort> = (0..n).map(|_| MemPort::new(host_out.is_some())).collect();
    let mut bursts: Vec<Bursts<PacketBuf>> = (0..n).map(|_| Bursts::new()).collect();
    let rings: Rings<PacketBuf> = Rings::new(n, RING_CAPACITY);
    let mut sent: Vec<PacketBuf> = Vec::with_capacity(BURST * 2);
    let mut hosted: Vec<PacketBuf> = Vec::with_capacity(BURST * 2);
    let mut buf = Vec::with_capacity(2048);
    let mut seq = 0u64;
    let mut oversize = 0u64;
    let start = Instant::now();
    loop {
        // Read one burst's worth of frames and steer each to its worker's queue.
        let mut read = 0;
        while read < BURST {
            match reader
                .next_into(&mut buf)
                .map_err(|e| format!("{}: {e}", opts.input.display()))?
            {
                Some(info) => {
                    let q = steering.queue_for_frame(&buf);
                    if !ports[q].inject(&buf, info.ts_ns, seq) {
                        oversize += 1;
                    }
                    seq += 1;
                    read += 1;
                }
                None => break,
            }
        }
        if read == 0 {
            break;
        }
        // Poll every worker until all queues and hand-off rings are empty.
        loop {
            for w in 0..n {
                workers[w].poll(&mut ports[w], &mut bursts[w], &rings);
            }
            if rings.is_empty() && ports.iter().all(|p| p.rx.is_empty()) {
                break;
            }
        }
        for p in ports.iter_mut() {
            sent.append(&mut p.tx);
            hosted.append(&mut p.host);
        }
        write_frames(&mut out, &opts.output, &mut sent, n > 1)?;
        if let (Some(w), Some(path)) = (host_out.as_mut(), opts.host_output.as_ref()) {
            write_frames(w, path, &mut hosted, n > 1)?;
        }
        ports[0].recycle(sent.drain(..));
        ports[0].recycle(hosted.drain(..));
    }
    let elapsed = start.elapsed();
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", opts.output.display()))?;
    if let (Some(w), Some(path)) = (host_out.as_mut(), opts.host_output.as_ref()) {
        w.flush()
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let mut stats = WorkerStats::new(&snap.backend_counts());
    let mut conntrack = ConnTrackCounters::default();
    let mut active_flows = 0;
    for w in &workers {
        stats.merge(&w.stats);
        conntrack.merge(&w.ct.counters);
        active_flows += w.ct.len();
    }
    stats.packets_in += oversize;
    stats.drops[dataplane::DropReason::Oversize.index()] += oversize;
    Ok(ReplayReport {
        snapshot: snap,
        workers: n,
        frames_read: seq,
        stats,
        conntrack,
        active_flows,
        conntrack_capacity: cfg.conntrack.capacity,
        elapsed,
    })
}

impl ReplayReport {
    pub fn packets_per_second(&self) -> f64 {
        self.frames_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The stats document written by `--stats`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let s = &self.stats;
        let mut drops = Map::new();
        for r in dataplane::DropReason::all() {
            drops.insert(r.name().to_string(), Value::from(s.dropped(r)));
        }
        let mut backends = Vec::new();
        let mut services = Vec::new();
        for (si, svc) in self.snapshot.services.iter().enumerate() {
            let mut list = Vec::new();
            for (bi, b) in svc.backends.iter().enumerate() {
                let c = s
                    .backends
                    .get(si)
                    .and_then(|v| v.get(bi))
                    .copied()
                    .unwrap_or_default();
                let row = json!({"service": svc.name, "address": b.addr.to_string(), "weight": b.weight, "packets": c.packets, "bytes": c.bytes, "new_flows": c.new_flows});
                backends.push(row.clone());
                list.push(row);
            }
            services.push(json!({"name": svc.name, "vip": svc.vip.to_string(), "protocol": if svc.proto == 6 {"tcp"} else {"udp"}, "forwarding": svc.forwarding.name(), "table_size": svc.table.size(), "backends": list}));
        }
        let c = &self.conntrack;
        json!({
            "workers": self.workers,
            "frames_read": self.frames_read,
            "packets_in": s.packets_in,
            "packets_out": s.packets_out,
            "bytes_in": s.bytes_in,
            "to_host": s.to_host,
            "replies_translated": s.replies,
            "icmp_errors_steered": s.icmp_steered,
            "handed_off": s.handed_off,
            "dropped": s.total_drops(),
            "drops": drops,
            "backends": backends,
            "services": services,
            "conntrack": {"hits": c.hits, "misses": c.misses, "inserts": c.inserts, "evictions": c.evictions, "expiries": c.expiries, "restarts": c.restarts, "active": self.active_flows, "capacity_per_worker": self.conntrack_capacity},
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "packets_per_second": self.packets_per_second(),
        })
    }

    /// A human summary: totals, then traffic per backend, then drops.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let s = &self.stats;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "replayed {} frames in {:.3} s ({:.0} packets/s, {} worker{}): {} forwarded, {} to host, {} dropped",
            self.frames_read,
            self.elapsed.as_secs_f64(),
            self.packets_per_second(),
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            s.packets_out,
            s.to_host,
            s.total_drops()
        );
        let _ = writeln!(
            o,
            "\n{:<12} {:<8} {:<28} {:>6} {:>10} {:>7} {:>10}",
            "SERVICE", "MODE", "BACKEND", "WEIGHT", "PACKETS", "SHARE", "NEW FLOWS"
        );
        for (si, svc) in self.snapshot.services.iter().enumerate() {
            let rows = s.backends.get(si).cloned().unwrap_or_default();
            let total: u64 = rows.iter().map(|c| c.new_flows).sum();
            for (bi, b) in svc.backends.iter().enumerate() {
                let c = rows.get(bi).copied().unwrap_or_default();
                let share = if total == 0 {
                    0.0
                } else {
                    100.0 * c.new_flows as f64 / total as f64
                };
                let _ = writeln!(
                    o,
                    "{:<12} {:<8} {:<28} {:>6} {:>10} {:>6.1}% {:>10}",
                    svc.name,
                    svc.forwarding.name(),
                    b.addr.to_string(),
                    b.weight,
                    c.packets,
                    share,
                    c.new_flows
                );
            }
        }
        if s.replies > 0 || s.icmp_steered > 0 {
            let _ = writeln!(
                o,
                "\nreplies translated back to clients: {}; ICMP errors steered to backends: {}",
                s.replies, s.icmp_steered
            );
        }
        let drops: Vec<String> = dataplane::DropReason::all()
            .filter(|r| s.dropped(*r) > 0)
            .map(|r| format!("{} {}", r.name(), s.dropped(r)))
            .collect();
        if !drops.is_empty() {
            let _ = writeln!(o, "\ndrops by reason: {}", drops.join(", "));
        }
        let c = &self.conntrack;
        let _ = writeln!(
            o,
            "conntrack: {} flows active, {} hits, {} misses, {} inserts, {} evictions, {} expiries",
            self.active_flows, c.hits, c.misses, c.inserts, c.evictions, c.expiries
        );
        o
    }
}
