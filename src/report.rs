//! What a run of the data path did: the counters summed over workers, as the `--stats` JSON
//! document and as a human summary. Shared by `sluice replay` and `sluice run`.

use dataplane::conntrack::ConnTrackCounters;
use dataplane::{Snapshot, WorkerStats};
use std::sync::Arc;
use std::time::Duration;

/// What a replay did.
pub struct Report {
    pub snapshot: Arc<Snapshot>,
    pub workers: usize,
    pub frames_read: u64,
    pub stats: WorkerStats,
    pub conntrack: ConnTrackCounters,
    pub active_flows: usize,
    pub conntrack_capacity: usize,
    pub elapsed: Duration,
    /// Driver-specific facts added to the JSON document (port counters, mempool, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Driver-specific lines added to the summary.
    pub notes: Vec<String>,
    /// What the run did to its frames, for the summary: "replayed" or "processed".
    pub verb: &'static str,
}

impl Report {
    /// The report of a daemon run, whatever the driver: the workers' counters on `snap`
    /// (which every worker must already use), with `driver` and the driver's own `figures`
    /// (top-level entries) in the JSON document and `note` in the summary. `adjust` adds
    /// what the ports counted (frames they refused or could not hold).
    #[allow(clippy::too_many_arguments)]
    pub fn of_workers(
        snap: Arc<Snapshot>,
        workers: &[dataplane::Worker],
        capacity: usize,
        elapsed: Duration,
        driver: &str,
        figures: serde_json::Map<String, serde_json::Value>,
        note: String,
        adjust: impl FnOnce(&mut WorkerStats),
    ) -> Report {
        let mut stats = WorkerStats::new(&snap.backend_counts());
        let mut conntrack = ConnTrackCounters::default();
        for w in workers {
            stats.merge(&w.stats);
            conntrack.merge(&w.ct.counters);
        }
        adjust(&mut stats);
        let mut extra = serde_json::Map::new();
        extra.insert("driver".into(), driver.into());
        extra.extend(figures);
        Report {
            snapshot: snap,
            workers: workers.len(),
            frames_read: stats.packets_in,
            stats,
            conntrack,
            active_flows: workers.iter().map(|w| w.ct.len()).sum(),
            conntrack_capacity: capacity,
            elapsed,
            extra,
            notes: vec![note],
            verb: "processed",
        }
    }

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
            services.push(json!({"name": svc.name, "vip": svc.vip.to_string(), "protocol": if svc.proto == packet::ipv4::PROTO_TCP {"tcp"} else {"udp"}, "forwarding": svc.forwarding.name(), "table_size": svc.table_size, "backends": list}));
        }
        let c = &self.conntrack;
        let mut doc = json!({
            "workers": self.workers,
            "frames_read": self.frames_read,
            "packets_in": s.packets_in,
            "packets_out": s.packets_out,
            "bytes_in": s.bytes_in,
            "to_host": s.to_host,
            "express_forwarded": s.express,
            "replies_translated": s.replies,
            "icmp_errors_steered": s.icmp_steered,
            "neighbour_answers": s.neighbour_answers,
            "handed_off": s.handed_off,
            "dropped": s.total_drops(),
            "drops": drops,
            "backends": backends,
            "services": services,
            "conntrack": {"hits": c.hits, "misses": c.misses, "inserts": c.inserts, "evictions": c.evictions, "half_open_evictions": c.half_open_evictions, "expiries": c.expiries, "restarts": c.restarts, "active": self.active_flows, "capacity_per_worker": self.conntrack_capacity},
            "syn_proxy": {"cookies": s.syn_proxy_cookies, "accepted": s.syn_proxy_accepted, "opened": s.syn_proxy_opened, "refused": s.syn_proxy_refused, "held": s.syn_proxy_held, "held_sent": s.syn_proxy_held_sent, "hold_full": s.syn_proxy_hold_full},
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "packets_per_second": self.packets_per_second(),
        });
        if let Some(obj) = doc.as_object_mut() {
            for (k, v) in &self.extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        doc
    }

    /// A human summary: totals, then traffic per backend, then drops.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let s = &self.stats;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} {} frames in {:.3} s ({:.0} packets/s, {} worker{}): {} forwarded, {} to host, {} dropped",
            self.verb,
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
            "\n{:<12} {:<8} {:<28} {:>6} {:>10} {:>10} {:>18} {:>12}",
            "SERVICE",
            "MODE",
            "BACKEND",
            "WEIGHT",
            "PACKETS",
            "NEW FLOWS",
            "SHARE OF NEW FLOWS",
            "WEIGHT SHARE"
        );
        for (si, svc) in self.snapshot.services.iter().enumerate() {
            let rows = s.backends.get(si).cloned().unwrap_or_default();
            let total: u64 = rows.iter().map(|c| c.new_flows).sum();
            let weights: u64 = svc.backends.iter().map(|b| u64::from(b.weight)).sum();
            for (bi, b) in svc.backends.iter().enumerate() {
                let c = rows.get(bi).copied().unwrap_or_default();
                let pct = |part: u64, whole: u64| {
                    if whole == 0 {
                        0.0
                    } else {
                        100.0 * part as f64 / whole as f64
                    }
                };
                let _ = writeln!(
                    o,
                    "{:<12} {:<8} {:<28} {:>6} {:>10} {:>10} {:>17.1}% {:>11.1}%",
                    svc.name,
                    svc.forwarding.name(),
                    b.addr.to_string(),
                    b.weight,
                    c.packets,
                    c.new_flows,
                    pct(c.new_flows, total),
                    pct(u64::from(b.weight), weights)
                );
            }
        }
        let _ = writeln!(
            o,
            "(SHARE OF NEW FLOWS: of the new flows of the backend's service; WEIGHT SHARE: what its weight asks for)"
        );
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
        for n in &self.notes {
            let _ = writeln!(o, "{n}");
        }
        let c = &self.conntrack;
        let _ = writeln!(
            o,
            "conntrack: {} flows active, {} hits, {} misses, {} inserts, {} evictions, {} expiries",
            self.active_flows, c.hits, c.misses, c.inserts, c.evictions, c.expiries
        );
        if s.syn_proxy_cookies + s.syn_proxy_accepted > 0 {
            let _ = writeln!(
                o,
                "SYN proxy: {} SYNs answered with a cookie, {} returned it (connections opened to backends: {}, refused: {})",
                s.syn_proxy_cookies, s.syn_proxy_accepted, s.syn_proxy_opened, s.syn_proxy_refused
            );
        }
        o
    }
}
