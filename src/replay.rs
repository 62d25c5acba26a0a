//! The `pcap` driver: deterministic replay of a capture through the real worker loop.
//!
//! Frames are read in order and delivered, as a NIC with RSS would, to the queue of the worker
//! the symmetric Toeplitz hash picks; each worker polls its queue with the same
//! [`dataplane::Worker::poll`] a live port uses. Time is the capture's: each frame is processed
//! at its own timestamp, so expiry is reproducible. Workers run in lock-step on one thread, so
//! a run is a pure function of its inputs; every transmitted frame is written in input order,
//! with the timestamp of the frame that caused it.

use crate::report::Report;
use config::Config;
use dataplane::conntrack::ConnTrackCounters;
use dataplane::port::BURST;
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Steering, Worker, WorkerStats};
use pcap::{PcapReader, PcapWriter};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Capacity of each inter-worker hand-off ring.
const RING_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub config: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub output_format: pcap::CaptureFormat,
    pub host_output: Option<PathBuf>,
    pub workers: usize,
}

fn open_writer(
    path: &PathBuf,
    what: &str,
    format: pcap::CaptureFormat,
    nanos: bool,
) -> Result<PcapWriter<BufWriter<File>>, String> {
    let f = File::create(path)
        .map_err(|e| format!("cannot create the {what} capture {}: {e}", path.display()))?;
    PcapWriter::with_format(BufWriter::with_capacity(1 << 20, f), format, nanos)
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
pub fn replay(opts: &ReplayOptions) -> Result<Report, String> {
    let cfg = Config::load(&opts.config).map_err(|e| e.to_string())?;
    let snap = Arc::new(
        controlplane::snapshot::build(&cfg)
            .map_err(|e| format!("{}: {e}", opts.config.display()))?,
    );
    let file = File::open(&opts.input).map_err(|e| {
        format!(
            "cannot open the input capture {}: {e}",
            opts.input.display()
        )
    })?;
    let mut reader = PcapReader::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("{}: {e}", opts.input.display()))?;
    let nanos = reader.is_nanosecond();
    let mut out = open_writer(&opts.output, "output", opts.output_format, nanos)?;
    let mut host_out = match &opts.host_output {
        Some(p) => Some(open_writer(p, "host output", opts.output_format, nanos)?),
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
    Ok(Report {
        snapshot: snap,
        workers: n,
        frames_read: seq,
        stats,
        conntrack,
        active_flows,
        conntrack_capacity: cfg.conntrack.capacity,
        elapsed,
        extra: serde_json::Map::new(),
        notes: Vec::new(),
        verb: "replayed",
    })
}
