//! The optional Prometheus text endpoint (`[metrics] listen`): any GET is answered with the
//! counters last collected from the workers and each backend's admin and health state.

use crate::plane::Plane;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Binds `listen` and serves from a thread until `stop`.
pub fn serve(
    listen: SocketAddr,
    plane: Arc<Mutex<Plane>>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let l = TcpListener::bind(listen)
        .map_err(|e| format!("[metrics] listen = \"{listen}\": cannot listen: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut req = [0u8; 4096];
                        let _ = s.read(&mut req);
                        let body = match plane.lock() {
                            Ok(p) => render(&p),
                            Err(_) => String::new(),
                        };
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(body.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics document.
pub fn render(p: &Plane) -> String {
    let t = &p.totals;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    metric(
        "sluice_packets_received_total",
        "counter",
        "Frames received from the ports.",
    );
    metric(
        "sluice_packets_sent_total",
        "counter",
        "Frames transmitted.",
    );
    metric(
        "sluice_bytes_received_total",
        "counter",
        "Bytes received from the ports.",
    );
    metric(
        "sluice_drops_total",
        "counter",
        "Frames dropped, by reason.",
    );
    metric(
        "sluice_conntrack_flows",
        "gauge",
        "Flows tracked, all workers.",
    );
    metric(
        "sluice_backend_packets_total",
        "counter",
        "Frames forwarded to a backend.",
    );
    metric(
        "sluice_backend_bytes_total",
        "counter",
        "Bytes forwarded to a backend.",
    );
    metric(
        "sluice_backend_flows",
        "gauge",
        "Flows tracked to a backend.",
    );
    metric(
        "sluice_backend_admin_state",
        "gauge",
        "1 for the backend's admin state (ready, drain, drain-expired, disabled).",
    );
    metric(
        "sluice_backend_health_state",
        "gauge",
        "1 for the backend's health state (up, down, unknown, unchecked).",
    );
    metric(
        "sluice_backend_check_latency_seconds",
        "gauge",
        "Duration of the backend's last health check.",
    );
    metric(
        "sluice_service_all_down_flows_total",
        "counter",
        "New flows balanced over all backends because every one was down.",
    );
    metric(
        "sluice_neighbour_resolved",
        "gauge",
        "1 when sluice knows the MAC of a next hop configured without one, else 0.",
    );
    metric(
        "sluice_neighbour_unresolved_drops_total",
        "counter",
        "Packets dropped because their next hop's MAC was not known.",
    );
    let _ = writeln!(o, "sluice_packets_received_total {}", t.counters.packets_in);
    let _ = writeln!(o, "sluice_packets_sent_total {}", t.counters.packets_out);
    let _ = writeln!(o, "sluice_bytes_received_total {}", t.counters.bytes_in);
    for (r, n) in &t.drops {
        let _ = writeln!(o, "sluice_drops_total{{reason=\"{r}\"}} {n}");
    }
    let _ = writeln!(o, "sluice_conntrack_flows {}", t.active_flows);
    let _ = writeln!(
        o,
        "# HELP sluice_conntrack_capacity Flows the connection tables hold at most, all workers.\n# TYPE sluice_conntrack_capacity gauge\nsluice_conntrack_capacity {}",
        p.cfg.conntrack.capacity * p.workers
    );
    let _ = writeln!(
        o,
        "# HELP sluice_rate_limit_sources_recycled_total Per-source rate-limit slots given to a new source in place of another (a flood of sources).\n# TYPE sluice_rate_limit_sources_recycled_total counter\nsluice_rate_limit_sources_recycled_total {}",
        t.sources_recycled
    );
    let c = &t.counters;
    let _ = writeln!(o, "# HELP sluice_syn_proxy_events_total SYN proxy: cookies sent (SYN-ACKs), valid cookies returned (accepted), backend handshakes opened and refused, first data held, sent after the handshake, and not held (pool full).\n# TYPE sluice_syn_proxy_events_total counter");
    for (event, n) in [
        ("cookie", c.syn_proxy_cookies),
        ("accepted", c.syn_proxy_accepted),
        ("opened", c.syn_proxy_opened),
        ("refused", c.syn_proxy_refused),
        ("held", c.syn_proxy_held),
        ("held_sent", c.syn_proxy_held_sent),
        ("hold_full", c.syn_proxy_hold_full),
    ] {
        let _ = writeln!(o, "sluice_syn_proxy_events_total{{event=\"{event}\"}} {n}");
    }
    let _ = writeln!(o, "# HELP sluice_syn_proxy_active_workers Workers whose SYN proxy answers a service's SYNs now (syn_proxy = \"on\": every worker; \"off\": none).\n# TYPE sluice_syn_proxy_active_workers gauge");
    for s in &p.cfg.services {
        let n = p.syn_proxy_workers(s);
        let _ = writeln!(
            o,
            "sluice_syn_proxy_active_workers{{service=\"{}\"}} {n}",
            esc(&s.name)
        );
    }
    // Per worker: where a hot queue or an unbalanced RSS shows.
    let _ = writeln!(o, "# HELP sluice_worker_packets_received_total Frames received, by worker.\n# TYPE sluice_worker_packets_received_total counter");
    for (w, pin, _, _, _) in &t.workers {
        let _ = writeln!(
            o,
            "sluice_worker_packets_received_total{{worker=\"{w}\"}} {pin}"
        );
    }
    let _ = writeln!(o, "# HELP sluice_worker_packets_sent_total Frames transmitted, by worker.\n# TYPE sluice_worker_packets_sent_total counter");
    for (w, _, pout, _, _) in &t.workers {
        let _ = writeln!(
            o,
            "sluice_worker_packets_sent_total{{worker=\"{w}\"}} {pout}"
        );
    }
    let _ = writeln!(o, "# HELP sluice_worker_bytes_received_total Bytes received, by worker.\n# TYPE sluice_worker_bytes_received_total counter");
    for (w, _, _, bytes, _) in &t.workers {
        let _ = writeln!(
            o,
            "sluice_worker_bytes_received_total{{worker=\"{w}\"}} {bytes}"
        );
    }
    let _ = writeln!(o, "# HELP sluice_worker_drops_total Frames dropped, by worker and reason.\n# TYPE sluice_worker_drops_total counter");
    for (w, drops) in &t.worker_drops {
        for (r, n) in dataplane::DropReason::all().zip(drops) {
            let _ = writeln!(
                o,
                "sluice_worker_drops_total{{worker=\"{w}\",reason=\"{}\"}} {n}",
                r.name()
            );
        }
    }
    // Per service (its backends' traffic added up).
    let mut services: Vec<_> = t.services.iter().collect();
    services.sort();
    let _ = writeln!(o, "# HELP sluice_service_packets_total Packets forwarded to a service's backends.\n# TYPE sluice_service_packets_total counter");
    for (name, (packets, _, _)) in &services {
        let _ = writeln!(
            o,
            "sluice_service_packets_total{{service=\"{}\"}} {packets}",
            esc(name)
        );
    }
    let _ = writeln!(o, "# HELP sluice_service_bytes_total Bytes forwarded to a service's backends.\n# TYPE sluice_service_bytes_total counter");
    for (name, (_, bytes, _)) in &services {
        let _ = writeln!(
            o,
            "sluice_service_bytes_total{{service=\"{}\"}} {bytes}",
            esc(name)
        );
    }
    let _ = writeln!(
        o,
        "# HELP sluice_conntrack_half_open_flows Half-open flows (only a SYN seen) tracked, all workers.\n# TYPE sluice_conntrack_half_open_flows gauge\nsluice_conntrack_half_open_flows {}",
        t.half_open
    );
    let _ = writeln!(
        o,
        "# HELP sluice_conntrack_evictions_total Flows evicted to make room: half_open (only a SYN seen) or other.\n# TYPE sluice_conntrack_evictions_total counter\nsluice_conntrack_evictions_total{{kind=\"half_open\"}} {}\nsluice_conntrack_evictions_total{{kind=\"other\"}} {}",
        t.conntrack.half_open_evictions, t.conntrack.evictions
    );
    for n in p.neighbours() {
        let l = format!("address=\"{}\"", n.addr);
        let _ = writeln!(
            o,
            "sluice_neighbour_resolved{{{l}}} {}",
            n.mac.is_some() as u8
        );
        let _ = writeln!(
            o,
            "sluice_neighbour_unresolved_drops_total{{{l}}} {}",
            n.unresolved_drops
        );
    }
    for s in &p.cfg.services {
        let ad = t.services.get(&s.name).map_or(0, |x| x.2);
        let _ = writeln!(
            o,
            "sluice_service_all_down_flows_total{{service=\"{}\"}} {ad}",
            esc(&s.name)
        );
        for b in &s.backends {
            let l = format!("service=\"{}\",backend=\"{}\"", esc(&s.name), b.address);
            let c = t
                .backends
                .get(&(s.name.clone(), b.address))
                .copied()
                .unwrap_or_default();
            let st = p
                .backends
                .get(&(s.name.clone(), b.address))
                .cloned()
                .unwrap_or_default();
            let _ = writeln!(o, "sluice_backend_packets_total{{{l}}} {}", c.packets);
            let _ = writeln!(o, "sluice_backend_bytes_total{{{l}}} {}", c.bytes);
            let _ = writeln!(o, "sluice_backend_flows{{{l}}} {}", c.active_flows);
            let _ = writeln!(
                o,
                "sluice_backend_admin_state{{{l},state=\"{}\"}} 1",
                st.admin.name()
            );
            let health = if s.health_of(b.address).is_some() {
                st.health.name()
            } else {
                "unchecked"
            };
            let _ = writeln!(o, "sluice_backend_health_state{{{l},state=\"{health}\"}} 1");
            if let Some(c) = &st.last_check {
                let _ = writeln!(
                    o,
                    "sluice_backend_check_latency_seconds{{{l}}} {}",
                    c.latency.as_secs_f64()
                );
            }
        }
    }
    if let Some(t) = p.l7_totals() {
        crate::l7::render(&mut o, &p.cfg, &t);
    }
    render_bgp(&mut o, p);
    o
}

/// The node's state and, with `[bgp]`, each VIP route as the ExaBGP feed was last told it.
fn render_bgp(o: &mut String, p: &Plane) {
    let _ = writeln!(
        o,
        "# HELP sluice_node_state 1 for the node's state (active, drained, stopping).\n# TYPE sluice_node_state gauge\nsluice_node_state{{state=\"{}\"}} 1",
        p.node.name()
    );
    let Some(summary) = p.bgp_summary() else {
        return;
    };
    let _ = writeln!(
        o,
        "# HELP sluice_bgp_route_announced 1 if the ExaBGP feed was last told to announce the VIP route, else 0.\n# TYPE sluice_bgp_route_announced gauge"
    );
    for (list, v) in [(&summary.announced, 1), (&summary.withdrawn, 0)] {
        for prefix in list {
            let _ = writeln!(o, "sluice_bgp_route_announced{{prefix=\"{prefix}\"}} {v}");
        }
    }
    if let Some(s) = summary.feed_last_poll_s {
        let _ = writeln!(
            o,
            "# HELP sluice_bgp_feed_last_poll_seconds Seconds since the ExaBGP feed last asked for the routes.\n# TYPE sluice_bgp_feed_last_poll_seconds gauge\nsluice_bgp_feed_last_poll_seconds {s:.3}"
        );
    }
}
