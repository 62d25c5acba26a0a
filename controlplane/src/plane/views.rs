//! Answers to queries: status, services, backends, health, stats and flows, built as the
//! typed results of `ctl::views` and sent as their JSON.

use super::{not_found, CheckResult, Plane};
use crate::probe_each;
use config::{Backend, Config, Service};
use ctl::views::{
    BackendList, BackendView, CheckView, ConntrackView, EventView, FlowList, FlowView, HealthList,
    HealthView, LimitList, LimitedSourceView, NeighbourView, ServiceList, ServiceStatsView,
    ServiceView, Stats, Status, SynProxyView, WorkerStatsView,
};
use ctl::{ErrorBody, Op};
use dataplane::conntrack::Flow;
use dataplane::worker::FLOW_SCAN_PER_PROBE;
use dataplane::{FlowQuery, Probe};
use packet::FlowKey;
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A result as the JSON object the protocol carries (keys sorted, as `serde_json` writes
/// its maps).
pub(super) fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn neighbour_view(n: &dataplane::neighbour::NeighbourState) -> NeighbourView {
    NeighbourView {
        address: n.addr.to_string(),
        mac: n.mac.map(|m| m.to_string()),
        state: if n.mac.is_some() {
            "resolved"
        } else {
            "unresolved"
        }
        .into(),
        unanswered: n.probes,
        requests: n.requests,
        expiries: n.expiries,
        unresolved_drops: n.unresolved_drops,
    }
}

fn health_name(s: &Service, addr: std::net::SocketAddr, h: dataplane::snapshot::Health) -> String {
    if s.health_of(addr).is_some() {
        h.name()
    } else {
        "unchecked"
    }
    .into()
}

impl Plane {
    pub(super) fn query(&mut self, op: &Op) -> Result<Value, ErrorBody> {
        match op {
            Op::Status => Ok(to_json(&self.status())),
            Op::BgpRoutes { feed } => Ok(to_json(&if *feed {
                self.feed_poll()
            } else {
                self.bgp_routes()
            })),
            Op::ServiceList => Ok(to_json(&ServiceList {
                services: self
                    .cfg
                    .services
                    .iter()
                    .map(|s| self.service_view(s, false))
                    .collect(),
            })),
            Op::ServiceShow { service } => {
                let s = self.find_service(service)?;
                Ok(to_json(&self.service_view(s, true)))
            }
            Op::BackendList { service } => {
                let mut rows = Vec::new();
                for s in &self.cfg.services {
                    if service.as_ref().is_some_and(|n| n != &s.name) {
                        continue;
                    }
                    for b in s.unique_backends() {
                        rows.push(self.backend_view(s, b));
                    }
                }
                if let Some(n) = service {
                    self.find_service(n)?;
                }
                Ok(to_json(&BackendList { backends: rows }))
            }
            Op::RouteList { service } => {
                let svc = self.find_service(service)?;
                let Some(l7) = &svc.l7 else {
                    return Err(ErrorBody::new(
                        "refused",
                        format!("`{service}` is not an L7 service: it has no routes"),
                    ));
                };
                // The L7 setup numbers only the L7 services.
                let slot = self
                    .cfg
                    .services
                    .iter()
                    .filter(|s| s.l7.is_some())
                    .position(|s| s.name == *service);
                let totals = self.l7_totals();
                let counts = slot
                    .and_then(|i| totals.as_ref().and_then(|t| t.routes.get(i).cloned()))
                    .unwrap_or_default();
                let status = slot
                    .and_then(|i| totals.as_ref().and_then(|t| t.route_status.get(i).cloned()))
                    .unwrap_or_default();
                let classes = |k: usize| -> std::collections::BTreeMap<String, u64> {
                    let c = status.get(k).copied().unwrap_or([0; 5]);
                    (0..5).map(|i| (format!("{}xx", i + 1), c[i])).collect()
                };
                let routes = l7
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ctl::views::RouteView {
                        index: i,
                        host: r.host.clone(),
                        path: r
                            .path
                            .clone()
                            .or_else(|| r.path_prefix.as_ref().map(|p| format!("{p}*"))),
                        header: r.header.clone(),
                        method: r.method.clone(),
                        sni: r.sni.clone(),
                        alpn: r.alpn.clone(),
                        pool: r.pool.clone(),
                        requests: counts.get(i).copied().unwrap_or(0),
                        status: classes(i),
                    })
                    .collect();
                Ok(to_json(&ctl::views::RouteList {
                    service: service.clone(),
                    routes,
                    default_pool: l7.default_pool.clone(),
                    default_requests: counts.get(l7.routes.len()).copied().unwrap_or(0),
                    default_status: classes(l7.routes.len()),
                }))
            }
            Op::CertificateList { service } => {
                if let Some(n) = service {
                    self.find_service(n)?;
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let mut certificates = Vec::new();
                for s in &self.cfg.services {
                    if service.as_ref().is_some_and(|n| n != &s.name) {
                        continue;
                    }
                    let Some(l7) = &s.l7 else { continue };
                    for (i, c) in l7.certificates.iter().enumerate() {
                        certificates.push(ctl::views::CertificateView {
                            service: s.name.clone(),
                            role: "server".into(),
                            slot: format!("certificate[{i}]"),
                            names: c.names.clone(),
                            issuer: c.issuer.clone(),
                            expires: config::date(c.not_after),
                            seconds_left: c.not_after - now,
                            default: c.default || l7.certificates.len() == 1,
                            file: c.cert.clone(),
                        });
                    }
                    for p in &l7.pools {
                        let Some(t) = &p.tls else { continue };
                        let Some(file) = &t.client_cert else { continue };
                        certificates.push(ctl::views::CertificateView {
                            service: s.name.clone(),
                            role: "client".into(),
                            slot: format!("pool {}", p.name),
                            names: vec![],
                            issuer: t.client_issuer.clone(),
                            expires: config::date(t.client_not_after),
                            seconds_left: t.client_not_after - now,
                            default: false,
                            file: file.clone(),
                        });
                    }
                }
                Ok(to_json(&ctl::views::CertificateList { certificates }))
            }
            Op::HealthShow { service } => {
                if let Some(n) = service {
                    self.find_service(n)?;
                }
                let mut rows = Vec::new();
                for s in &self.cfg.services {
                    if service.as_ref().is_some_and(|n| n != &s.name) {
                        continue;
                    }
                    for b in s.unique_backends() {
                        let st = self
                            .backends
                            .get(&(s.name.clone(), b.address))
                            .cloned()
                            .unwrap_or_default();
                        rows.push(HealthView {
                            service: s.name.clone(),
                            address: b.address.to_string(),
                            check: s.health_of(b.address).map(check_desc),
                            health: health_name(s, b.address, st.health),
                            successes: st.successes,
                            failures: st.failures,
                            last: st.last_check.as_ref().map(check_view),
                        });
                    }
                }
                Ok(to_json(&HealthList { backends: rows }))
            }
            Op::Stats => {
                self.collect();
                Ok(to_json(&self.stats()))
            }
            Op::Flows {
                service,
                backend,
                limit,
            } => self.flows(service.as_deref(), backend.as_deref(), limit.unwrap_or(20)),
            Op::Limits { service } => self.limits(service.as_deref()),
            _ => Err(ErrorBody::new("bad_request", "not a query")),
        }
    }

    fn find_service(&self, name: &str) -> Result<&Service, ErrorBody> {
        self.cfg
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.services.iter().map(|s| s.name.as_str()).collect();
                not_found(format!(
                    "no service `{name}`; the services are: {}",
                    names.join(", ")
                ))
            })
    }

    pub(super) fn status(&self) -> Status {
        let file = match Config::load(&self.config_path) {
            Ok(f) if f == self.cfg => "same".to_string(),
            Ok(_) => "differs".to_string(),
            Err(e) => format!("unreadable: {}", e.to_string().replace('\n', " ")),
        };
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: ctl::PROTOCOL_VERSION,
            uptime_s: self
                .now()
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            driver: self.driver.clone(),
            workers: self.workers,
            config_file: self.config_path.display().to_string(),
            config_vs_file: file,
            generation: self.generation,
            services: self.cfg.services.len(),
            backends: self
                .cfg
                .services
                .iter()
                .map(|s| s.unique_backends().len())
                .sum(),
            last_build_ms: self.last_build.map(|d| d.as_secs_f64() * 1e3),
            recent_events: self
                .events
                .iter()
                .rev()
                .take(10)
                .map(|e| EventView {
                    at: unix(e.at),
                    event: e.text.clone(),
                })
                .collect(),
            node: self.node.name().into(),
            bgp: self.bgp_summary(),
        }
    }

    /// Workers whose SYN proxy answers service `s`'s SYNs now: all with `on`, none with
    /// `off`, those whose `auto` gate is on.
    pub(crate) fn syn_proxy_workers(&self, s: &Service) -> u64 {
        match s.syn_proxy {
            config::SynProxyMode::Off => 0,
            config::SynProxyMode::On => self.workers as u64,
            config::SynProxyMode::Auto => self.totals.syn_proxy.get(&s.name).map_or(0, |x| x.0),
        }
    }

    /// A service's SYN proxy as operators read it: `off`, `on`, or for `auto` whether the
    /// workers have it on now.
    fn syn_proxy_state(&self, s: &Service) -> String {
        match (s.syn_proxy, self.syn_proxy_workers(s)) {
            (config::SynProxyMode::Off, _) => "off".into(),
            (config::SynProxyMode::On, _) => "on".into(),
            (config::SynProxyMode::Auto, 0) => "auto (off)".into(),
            (config::SynProxyMode::Auto, n) if n as usize >= self.workers => "auto (on)".into(),
            (config::SynProxyMode::Auto, n) => {
                format!("auto (on: {n} of {} workers)", self.workers)
            }
        }
    }

    fn service_view(&self, s: &Service, with_backends: bool) -> ServiceView {
        let snap = self.cell.load();
        let entry = snap.services.iter().find(|e| e.name == s.name);
        let ready = entry.map_or(0, |e| {
            e.backends.iter().filter(|b| b.takes_new_flows).count()
        });
        let (packets, bytes, all_down_flows) = self
            .totals
            .services
            .get(&s.name)
            .copied()
            .unwrap_or_default();
        ServiceView {
            name: s.name.clone(),
            vip: s.vip.to_string(),
            protocol: s.protocol.name().into(),
            forwarding: s.forwarding.name().into(),
            table_size: s.table_size,
            backends: s.unique_backends().len(),
            taking_new_flows: ready,
            all_down: s.all_down.name().into(),
            all_down_active: entry.is_some_and(|e| e.all_down_fallback),
            all_down_flows,
            syn_proxy: self.syn_proxy_state(s),
            health_check: s.health.as_ref().map(check_desc),
            packets,
            bytes,
            backend_list: with_backends.then(|| {
                s.unique_backends()
                    .into_iter()
                    .map(|b| self.backend_view(s, b))
                    .collect()
            }),
        }
    }

    fn backend_view(&self, s: &Service, b: &Backend) -> BackendView {
        let st = self
            .backends
            .get(&(s.name.clone(), b.address))
            .cloned()
            .unwrap_or_default();
        let c = self
            .totals
            .backends
            .get(&(s.name.clone(), b.address))
            .copied()
            .unwrap_or_default();
        let snap = self.cell.load();
        let takes = snap
            .services
            .iter()
            .find(|e| e.name == s.name)
            .and_then(|e| e.backends.iter().find(|x| x.addr == b.address))
            .is_some_and(|x| x.takes_new_flows);
        BackendView {
            service: s.name.clone(),
            address: b.address.to_string(),
            mac: b.mac.map(|m| m.to_string()),
            weight: b.weight,
            admin: st.admin.name().into(),
            health: health_name(s, b.address, st.health),
            takes_new_flows: takes,
            remove_when_drained: st.remove_when_drained,
            drain_left_s: st
                .drain_deadline
                .map(|d| d.saturating_duration_since(self.now()).as_secs_f64()),
            active_flows: c.active_flows,
            new_flows: c.new_flows,
            packets: c.packets,
            bytes: c.bytes,
            last_check: st.last_check.as_ref().map(check_view),
        }
    }

    pub(super) fn stats(&self) -> Stats {
        let t = &self.totals;
        let p = &self.previous;
        let dt = match (t.at, p.at) {
            (Some(a), Some(b)) if a > b => (a - b).as_secs_f64(),
            _ => 0.0,
        };
        let rate = |now: u64, before: u64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let workers = t
            .workers
            .iter()
            .map(|w| {
                let before = p
                    .workers
                    .iter()
                    .find(|x| x.0 == w.0)
                    .copied()
                    .unwrap_or_default();
                let sw = t
                    .swaps
                    .iter()
                    .find(|x| x.0 == w.0)
                    .copied()
                    .unwrap_or_default();
                WorkerStatsView {
                    worker: w.0,
                    packets_in: w.1,
                    packets_out: w.2,
                    bytes_in: w.3,
                    drops: w.4,
                    packets_per_s: rate(w.1, before.1),
                    bits_per_s: rate(w.3, before.3) * 8.0,
                    snapshot_swaps: sw.1,
                    swaps_allocating: sw.3,
                    swap_max_us: sw.2 as f64 / 1e3,
                }
            })
            .collect();
        let services = self
            .cfg
            .services
            .iter()
            .map(|s| {
                let (pk, by, ad) = t.services.get(&s.name).copied().unwrap_or_default();
                let (pk0, by0, _) = p.services.get(&s.name).copied().unwrap_or_default();
                let activations = t.syn_proxy.get(&s.name).map_or(0, |x| x.1);
                ServiceStatsView {
                    service: s.name.clone(),
                    packets: pk,
                    bytes: by,
                    packets_per_s: rate(pk, pk0),
                    bits_per_s: rate(by, by0) * 8.0,
                    all_down_flows: ad,
                    syn_proxy: self.syn_proxy_state(s),
                    syn_proxy_activations: activations,
                }
            })
            .collect();
        let drops = t
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        let c = &t.conntrack;
        let capacity = self.cfg.conntrack.capacity * self.workers;
        Stats {
            interval_s: dt,
            packets_in: t.counters.packets_in,
            neighbour_answers: t.counters.neighbour_answers,
            neighbour_requests: t.counters.neighbour_requests,
            neighbours_learned: t.counters.neighbours_learned,
            vip_announcements: t.counters.vip_announcements,
            neighbours: self.neighbours().iter().map(neighbour_view).collect(),
            packets_out: t.counters.packets_out,
            bytes_in: t.counters.bytes_in,
            packets_per_s: rate(t.counters.packets_in, p.counters.packets_in),
            bits_per_s: rate(t.counters.bytes_in, p.counters.bytes_in) * 8.0,
            workers,
            services,
            drops,
            conntrack: ConntrackView {
                active: t.active_flows,
                capacity,
                occupancy: if capacity > 0 {
                    t.active_flows as f64 / capacity as f64
                } else {
                    0.0
                },
                hits: c.hits,
                misses: c.misses,
                inserts: c.inserts,
                evictions: c.evictions,
                expiries: c.expiries,
                refused: c.refused,
                half_open: t.half_open,
                half_open_capacity: dataplane::conntrack::half_open_capacity(
                    self.cfg.conntrack.capacity,
                    self.cfg.conntrack.half_open_percent,
                ) * self.workers,
                half_open_evictions: c.half_open_evictions,
            },
            syn_proxy: SynProxyView {
                cookies: t.counters.syn_proxy_cookies,
                accepted: t.counters.syn_proxy_accepted,
                opened: t.counters.syn_proxy_opened,
                refused: t.counters.syn_proxy_refused,
                held: t.counters.syn_proxy_held,
                held_sent: t.counters.syn_proxy_held_sent,
                hold_full: t.counters.syn_proxy_hold_full,
            },
            l7: self.l7_totals().map(|t| crate::l7::view(&self.cfg, &t)),
        }
    }

    fn flows(
        &mut self,
        service: Option<&str>,
        backend: Option<&str>,
        limit: u32,
    ) -> Result<Value, ErrorBody> {
        let limit = limit.clamp(1, 10_000) as usize;
        let vip = match service {
            Some(n) => {
                let s = self.find_service(n)?;
                Some((s.vip, s.protocol.number()))
            }
            None => None,
        };
        let backend = match backend {
            Some(b) => Some(b.parse::<SocketAddr>().map_err(|_| {
                ErrorBody::new(
                    "bad_request",
                    format!("`{b}` is not an address with a port (like 10.1.0.1:8080)"),
                )
            })?),
            None => None,
        };
        let shape = self.cell.load_full();
        // Each worker scans its conntrack a bounded slice per probe (between two bursts), and
        // is asked again from where it stopped until it has `limit` flows or has seen them
        // all, so no query holds up a worker for long, however many flows it tracks.
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        let mut scans: Vec<FlowScan> = (0..self.links.len()).map(|_| FlowScan::default()).collect();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let pending = |s: &FlowScan| !s.done && s.flows.len() < limit;
            if left.is_zero() || !scans.iter().any(pending) {
                break;
            }
            let replies = probe_each(
                &self.links,
                |i| {
                    let s = &scans[i];
                    pending(s).then(|| {
                        let mut p = Probe::new(&shape, limit - s.flows.len());
                        p.flow_query = Some(FlowQuery {
                            vip,
                            backend,
                            scan: FLOW_SCAN_PER_PROBE,
                            cursor: s.cursor,
                        });
                        p
                    })
                },
                left,
            );
            let answered: Vec<usize> = replies.iter().map(|(i, _)| *i).collect();
            for (i, s) in scans.iter_mut().enumerate() {
                if pending(s) && !answered.contains(&i) {
                    // Stopped or stuck: give up on this worker, keep what it gave.
                    s.done = true;
                }
            }
            for (i, mut p) in replies {
                let s = &mut scans[i];
                s.cursor = p.cursor;
                s.done = p.scan_done;
                s.flows.append(&mut p.flows);
                s.last = Some(p);
            }
        }
        let probes: Vec<(Probe, Vec<_>)> = scans
            .into_iter()
            .filter_map(|s| s.last.map(|p| (p, s.flows)))
            .collect();
        let mut rows = Vec::new();
        for (p, flows) in &probes {
            let snap = self
                .snapshot_of(p.generation)
                .cloned()
                .unwrap_or_else(|| Arc::clone(&shape));
            for (k, f) in flows {
                if rows.len() >= limit {
                    break;
                }
                let svc = snap
                    .service_for(k.dst, k.dst_port, k.proto)
                    .map(|i| snap.services[i as usize].name.clone());
                rows.push(FlowView {
                    worker: p.worker,
                    client: SocketAddr::new(k.src, k.src_port).to_string(),
                    vip: SocketAddr::new(k.dst, k.dst_port).to_string(),
                    protocol: if k.proto == packet::ipv4::PROTO_TCP {
                        "tcp"
                    } else {
                        "udp"
                    }
                    .into(),
                    service: svc,
                    backend: f.backend_addr.to_string(),
                    state: format!("{:?}", f.state),
                    age_s: p.now_ns.saturating_sub(f.created_ns) as f64 / 1e9,
                    idle_s: p.now_ns.saturating_sub(f.last_seen_ns) as f64 / 1e9,
                });
            }
        }
        let total: usize = probes.iter().map(|(p, _)| p.active_flows).sum();
        Ok(to_json(&FlowList {
            flows: rows,
            tracked: total,
            workers_answered: probes.len(),
        }))
    }
}

impl Plane {
    /// `limits`: every worker scans its source table a bounded slice per probe (between two
    /// bursts) until it has seen it all, and the limited sources are added up by service and
    /// source over the workers.
    fn limits(&mut self, service: Option<&str>) -> Result<Value, ErrorBody> {
        let wanted = match service {
            Some(n) => Some(self.find_service(n)?.name.clone()),
            None => None,
        };
        let shape = self.cell.load_full();
        let most = 1000;
        let deadline = std::time::Instant::now() + Duration::from_millis(1000);
        let workers = self.links.len();
        let mut cursor = vec![0usize; workers];
        let mut done = vec![false; workers];
        let mut found: Vec<(u64, dataplane::ratelimit::SourceSlot)> = Vec::new();
        let mut last: Vec<Option<Probe>> = (0..workers).map(|_| None).collect();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || done.iter().all(|d| *d) || found.len() >= most * workers {
                break;
            }
            let replies = probe_each(
                &self.links,
                |i| {
                    (!done[i]).then(|| {
                        let mut p = Probe::new(&shape, 0);
                        p.limited = Vec::with_capacity(most);
                        p.limited_query =
                            Some((cursor[i], dataplane::worker::SOURCE_SCAN_PER_PROBE));
                        p
                    })
                },
                left,
            );
            let answered: Vec<usize> = replies.iter().map(|(i, _)| *i).collect();
            for (i, d) in done.iter_mut().enumerate() {
                if !*d && !answered.contains(&i) {
                    *d = true;
                }
            }
            for (i, mut p) in replies {
                cursor[i] = p.limited_cursor;
                done[i] = p.limited_done;
                found.extend(p.limited.drain(..).map(|s| (p.now_ns, s)));
                last[i] = Some(p);
            }
        }
        // Service keys back to names, by the snapshot the workers run.
        let names: std::collections::HashMap<u32, &str> = shape
            .services
            .iter()
            .map(|s| (s.limit_key, s.name.as_str()))
            .collect();
        let mut rows: std::collections::HashMap<(String, u128), (u64, f64)> = Default::default();
        for (now, s) in &found {
            let Some(name) = names.get(&s.service) else {
                continue;
            };
            if wanted.as_deref().is_some_and(|w| w != *name) {
                continue;
            }
            let ago = now.saturating_sub(s.last_refused_ns) as f64 / 1e9;
            let e = rows
                .entry((name.to_string(), s.source))
                .or_insert((0, f64::MAX));
            e.0 += u64::from(s.refused);
            e.1 = e.1.min(ago);
        }
        let mut sources: Vec<LimitedSourceView> = rows
            .into_iter()
            .map(|((service, source), (refused, ago))| LimitedSourceView {
                service,
                source: dataplane::ratelimit::source_of(source).to_string(),
                refused,
                last_refused_s: ago,
            })
            .collect();
        sources.sort_by(|a, b| b.refused.cmp(&a.refused).then(a.source.cmp(&b.source)));
        sources.truncate(most);
        let answered: Vec<&Probe> = last.iter().flatten().collect();
        Ok(to_json(&LimitList {
            sources,
            sources_recycled: answered.iter().map(|p| p.sources_recycled).sum(),
            table_capacity: answered
                .iter()
                .map(|p| p.sources_capacity)
                .max()
                .unwrap_or(0),
            workers_answered: answered.len(),
        }))
    }
}

/// One worker's part of a `flows` query: where its scan stands and what it found.
#[derive(Default)]
struct FlowScan {
    cursor: usize,
    done: bool,
    flows: Vec<(FlowKey, Flow)>,
    last: Option<Probe>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn check_view(c: &CheckResult) -> CheckView {
    CheckView {
        ok: c.ok,
        latency_ms: c.latency.as_secs_f64() * 1e3,
        message: c.message.clone(),
        at: unix(c.at),
    }
}

pub fn check_desc(h: &config::HealthCheck) -> String {
    let what = match &h.kind {
        config::CheckKind::Tcp => "tcp connect".to_string(),
        config::CheckKind::Http { path, .. } => format!("http GET {path}"),
    };
    format!(
        "{what} every {} ms, timeout {} ms, rise {}, fall {}",
        h.interval_ms, h.timeout_ms, h.rise, h.fall
    )
}
