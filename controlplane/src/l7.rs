//! The configuration as the L7 pool sees it: every `forwarding = "l7"` service with its
//! routes, pools, limits and timeouts becomes an [`L7Setup`] for the shards, and each
//! `l7 = "tls"` service's certificates a rustls configuration, and each re-encrypting pool's
//! `[service.pool.tls]` a rustls client configuration ([`TlsConfigs`]).

use config::{Config, HeaderRules, L7Algorithm};
use l7_offload::setup::{
    Admin, Algorithm, ClientTls, HashOn, HeaderRule, Health, HostMatch, L7Backend, L7Service,
    L7Setup, Limits, PathMatch, Pool, Protocol, Route, ServerTls, TcpSetup, Timeouts,
};
use l7_offload::tls::{CertSpec, ClientTlsSpec, TlsSpec, TlsVersion};
use std::collections::HashMap;

/// The TLS configurations of a configuration, each with the spec it was made from: a
/// configuration change that leaves a service's certificates and settings as they were
/// keeps its rustls configuration, so its session cache and ticket keys live on (and a
/// pool's client configuration its cache of backend sessions).
#[derive(Debug, Default)]
pub struct TlsConfigs {
    /// Of each `l7 = "tls"` service, by service name.
    pub servers: HashMap<String, (TlsSpec, ServerTls)>,
    /// Of each pool with `[service.pool.tls]`, by service and pool name.
    pub clients: HashMap<(String, String), (ClientTlsSpec, ClientTls)>,
}

/// What `service` asks of TLS termination, if it terminates TLS.
fn tls_spec(service: &config::Service) -> Option<TlsSpec> {
    let l = service
        .l7
        .as_ref()
        .filter(|l| l.l7 == config::L7Protocol::Tls)?;
    let t = l.tls.clone().unwrap_or_default();
    Some(TlsSpec {
        certificates: l
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| CertSpec {
                names: c.names.clone(),
                chain_pem: c.chain_pem.clone(),
                key_pem: c.key_pem.clone(),
                default: c.default,
                origin: format!("service `{}` certificate[{i}] ({})", service.name, c.cert),
            })
            .collect(),
        versions: t
            .versions
            .iter()
            .map(|v| {
                if v == "1.2" {
                    TlsVersion::Tls12
                } else {
                    TlsVersion::Tls13
                }
            })
            .collect(),
        alpn: t.alpn,
        cipher_suites: t.cipher_suites,
        session_tickets: t.session_tickets,
        session_cache: t.session_cache as usize,
    })
}

/// The TLS configurations `cfg` needs, reusing those of `old` whose spec is unchanged; an
/// error (a key that is not its certificate's, an unsupported key type) names the
/// certificate.
pub fn tls_configs(cfg: &Config, old: &TlsConfigs) -> Result<TlsConfigs, String> {
    let mut out = TlsConfigs::default();
    for s in &cfg.services {
        if let Some(spec) = tls_spec(s) {
            let tls = match old.servers.get(&s.name) {
                Some((was, t)) if *was == spec => t.clone(),
                _ => ServerTls(l7_offload::tls::server_config(&spec)?),
            };
            out.servers.insert(s.name.clone(), (spec, tls));
        }
        for p in s.l7.iter().flat_map(|l| l.pools.iter()) {
            let Some(t) = &p.tls else { continue };
            let spec = ClientTlsSpec {
                ca_pem: t.ca_pem.clone(),
                verify: t.verify,
                client_cert: t
                    .client_cert
                    .as_ref()
                    .map(|_| (t.client_cert_pem.clone(), t.client_key_pem.clone())),
                origin: format!("service `{}` pool `{}` tls", s.name, p.name),
            };
            let key = (s.name.clone(), p.name.clone());
            let server_name = match &t.server_name {
                None => None,
                Some(n) => Some(
                    l7_offload::tls::server_name(n)
                        .map_err(|e| format!("{}: server_name: {e}", spec.origin))?,
                ),
            };
            let config = match old.clients.get(&key) {
                Some((was, c)) if *was == spec => std::sync::Arc::clone(&c.config),
                _ => l7_offload::tls::client_config(&spec)?,
            };
            out.clients.insert(
                key,
                (
                    spec,
                    ClientTls {
                        config,
                        server_name,
                    },
                ),
            );
        }
    }
    Ok(out)
}

/// A route's `host` or `sni`: a name, or `*.suffix`.
fn host_match(h: &str) -> HostMatch {
    match h.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_string()),
        None => HostMatch::Exact(h.to_string()),
    }
}

fn rules(r: &HeaderRules) -> Vec<HeaderRule> {
    r.remove
        .iter()
        .map(|n| HeaderRule::Remove(n.clone()))
        .chain(
            r.set
                .iter()
                .map(|(n, v)| HeaderRule::Set(n.clone(), v.clone())),
        )
        .chain(
            r.add
                .iter()
                .map(|(n, v)| HeaderRule::Add(n.clone(), v.clone())),
        )
        .collect()
}

/// `sluice_l7_certificate_expiry_seconds`: how long each TLS certificate has left.
fn render_certificates(o: &mut String, cfg: &Config) {
    use std::fmt::Write;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let all: Vec<(&str, usize, &config::L7Certificate)> = cfg
        .services
        .iter()
        .flat_map(|s| {
            s.l7.iter()
                .flat_map(|l| l.certificates.iter().enumerate())
                .map(move |(i, c)| (s.name.as_str(), i, c))
        })
        .collect();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "# HELP sluice_l7_certificate_expiry_seconds Seconds until a TLS certificate expires (negative once it has).\n# TYPE sluice_l7_certificate_expiry_seconds gauge"
    );
    for (service, i, c) in all {
        let _ = writeln!(
            o,
            "sluice_l7_certificate_expiry_seconds{{service=\"{service}\",certificate=\"{i}\",names=\"{}\"}} {}",
            c.names.join(","),
            c.not_after - now
        );
    }
}

/// The L7 setup of `cfg`, with each pool backend's admin and health state from `state`
/// (service name, pool name, backend address).
pub fn setup(
    cfg: &Config,
    tls: &TlsConfigs,
    state: impl Fn(&str, &str, std::net::SocketAddr) -> (Admin, Health),
) -> L7Setup {
    let services = cfg
        .services
        .iter()
        .filter_map(|s| s.l7.as_ref().map(|l| (s, l)))
        // A TLS service without its TLS configuration is left out (its clients get resets),
        // never served in clear text.
        .filter(|(s, l)| l.l7 != config::L7Protocol::Tls || tls.servers.contains_key(&s.name))
        // Nor is a service whose pool should re-encrypt without its client configuration.
        .filter(|(s, l)| {
            l.pools.iter().all(|p| {
                p.tls.is_none() || tls.clients.contains_key(&(s.name.clone(), p.name.clone()))
            })
        })
        .map(|(s, l)| {
            let pool_index = |name: &str| l.pools.iter().position(|p| p.name == name);
            L7Service {
                name: s.name.clone(),
                vip: s.vip,
                protocol: match l.l7 {
                    config::L7Protocol::Http | config::L7Protocol::Tls => Protocol::Http,
                    config::L7Protocol::TlsPassthrough => Protocol::TlsPassthrough,
                },
                default_pool: l.default_pool.as_deref().and_then(pool_index),
                limits: Limits {
                    header_bytes: l.limits.header_bytes as usize,
                    header_count: l.limits.header_count as usize,
                    body_bytes: l.limits.body_bytes,
                    connections: l.limits.connections as usize,
                },
                timeouts: Timeouts {
                    client_header_ms: l.timeouts.client_header_ms,
                    client_idle_ms: l.timeouts.client_idle_ms,
                    backend_connect_ms: l.timeouts.backend_connect_ms,
                    backend_response_ms: l.timeouts.backend_response_ms,
                    pool_idle_ms: l.timeouts.pool_idle_ms,
                },
                routes: l
                    .routes
                    .iter()
                    .filter_map(|r| {
                        Some(Route {
                            host: r.host.as_deref().map(host_match),
                            sni: r.sni.as_deref().map(host_match),
                            alpn: r.alpn.clone(),
                            path: match (&r.path, &r.path_prefix) {
                                (Some(p), _) => Some(PathMatch::Exact(p.clone())),
                                (None, Some(p)) => Some(PathMatch::Prefix(p.clone())),
                                (None, None) => None,
                            },
                            header: r.header.as_ref().and_then(|h| {
                                let (n, v) = h.split_once(':')?;
                                Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
                            }),
                            method: r.method.clone(),
                            pool: pool_index(&r.pool)?,
                            request_headers: rules(&r.request_headers),
                            response_headers: rules(&r.response_headers),
                        })
                    })
                    .collect(),
                pools: l
                    .pools
                    .iter()
                    .map(|p| Pool {
                        name: p.name.clone(),
                        algorithm: match p.algorithm {
                            L7Algorithm::RoundRobin => Algorithm::RoundRobin,
                            L7Algorithm::LeastRequests => Algorithm::LeastRequests,
                            L7Algorithm::P2c => Algorithm::PowerOfTwo,
                            L7Algorithm::Hash => Algorithm::Hash(
                                match p.hash_on.as_deref().and_then(config::parse_hash_on) {
                                    Some(("header", n)) => HashOn::Header(n.to_ascii_lowercase()),
                                    Some(("cookie", n)) => HashOn::Cookie(n.to_string()),
                                    _ => HashOn::Source,
                                },
                            ),
                        },
                        sticky_cookie: p.sticky_cookie.clone(),
                        sticky_max_age: p.sticky_max_age,
                        eject_after: p.eject_after,
                        eject_for_ms: p.eject_for_ms,
                        eject_on_5xx: p.eject_on_5xx,
                        tls: tls
                            .clients
                            .get(&(s.name.clone(), p.name.clone()))
                            .map(|(_, c)| c.clone()),
                        backends: p
                            .backends
                            .iter()
                            .map(|b| {
                                let (admin, health) = state(&s.name, &p.name, b.address);
                                L7Backend {
                                    address: b.address,
                                    weight: b.weight,
                                    admin,
                                    health,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
                tls: tls.servers.get(&s.name).map(|(_, t)| t.clone()),
            }
        })
        .collect();
    L7Setup {
        services,
        node_ipv4: cfg.node.ipv4,
        node_ipv6: cfg.node.ipv6,
        tcp: TcpSetup {
            rx_buffer: cfg.l7.tcp_rx_buffer as usize,
            tx_buffer: cfg.l7.tcp_tx_buffer as usize,
            max_idle: cfg.l7.max_idle_per_backend as usize,
        },
    }
}

fn classes(s: &[u64; 5]) -> std::collections::BTreeMap<String, u64> {
    s.iter()
        .enumerate()
        .map(|(i, n)| (format!("{}xx", i + 1), *n))
        .collect()
}

/// The view of the L7 pool's summed counters, with backends named from `cfg`.
pub fn view(cfg: &Config, t: &l7_offload::ShardStats) -> ctl::views::L7StatsView {
    use l7_offload::stats::L7Error;
    let l7_services: Vec<&config::Service> =
        cfg.services.iter().filter(|s| s.l7.is_some()).collect();
    let mut backends = Vec::new();
    for (si, per_pool) in t.backends.iter().enumerate() {
        let Some(svc) = l7_services.get(si) else {
            continue;
        };
        let Some(l) = &svc.l7 else { continue };
        for (pi, per_backend) in per_pool.iter().enumerate() {
            let Some(pool) = l.pools.get(pi) else {
                continue;
            };
            for (bi, c) in per_backend.iter().enumerate() {
                let Some(b) = pool.backends.get(bi) else {
                    continue;
                };
                backends.push(ctl::views::L7BackendView {
                    service: svc.name.clone(),
                    pool: pool.name.clone(),
                    backend: b.address.to_string(),
                    requests: c.requests,
                    in_flight: c.in_flight,
                    failures: c.failures,
                    ejections: c.ejections,
                    status: classes(&c.status),
                });
            }
        }
    }
    ctl::views::L7StatsView {
        client_connections: t.client_connections,
        clients_accepted: t.clients_accepted,
        upstream_connections: t.upstream_connections,
        upstream_opened: t.upstream_opened,
        upstream_reused: t.upstream_reused,
        reuse_ratio: t.reuse_ratio(),
        requests: t.requests,
        retries: t.retries,
        ejections: t.ejections,
        tls_handshakes: [("1.2", t.tls_handshakes[0]), ("1.3", t.tls_handshakes[1])]
            .into_iter()
            .map(|(v, n)| (v.to_string(), n))
            .collect(),
        tls_resumed: t.tls_resumed,
        tls_passthrough: t.tls_passthrough,
        upstream_tls_handshakes: t.upstream_tls_handshakes,
        upstream_tls_resumed: t.upstream_tls_resumed,
        status: classes(&t.status),
        errors: L7Error::ALL
            .iter()
            .map(|e| (e.name().to_string(), t.errors_of(*e)))
            .collect(),
        frames_in: t.frames_in,
        frames_out: t.frames_out,
        frames_lost: t.frames_no_buffer + t.frames_ring_full,
        segments_no_connection: t.segments_no_connection,
        latency_ms: [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
            .into_iter()
            .map(|(k, q)| (k.to_string(), percentile(t, q)))
            .collect(),
        backends,
    }
}

/// The duration at quantile `q` (0–1), in ms, as the upper bound of its histogram bucket.
fn percentile(t: &l7_offload::ShardStats, q: f64) -> Option<f64> {
    let total: u64 = t.duration_buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in t.duration_buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return l7_offload::stats::DURATION_BUCKETS
                .get(i)
                .map(|s| s * 1000.0);
        }
    }
    None
}

/// The L7 pool's Prometheus metrics.
pub fn render(o: &mut String, cfg: &Config, t: &l7_offload::ShardStats) {
    render_certificates(o, cfg);
    use std::fmt::Write as _;
    let v = view(cfg, t);
    let metric = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let l7: Vec<&config::Service> = cfg.services.iter().filter(|s| s.l7.is_some()).collect();
    metric(
        o,
        "sluice_l7_requests_total",
        "counter",
        "Requests the L7 pool answered, by service and status class.",
    );
    for (si, sv) in t.services.iter().enumerate() {
        let Some(svc) = l7.get(si) else { continue };
        for (i, n) in sv.status.iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_l7_requests_total{{service=\"{}\",status_class=\"{}xx\"}} {n}",
                svc.name,
                i + 1
            );
        }
    }
    metric(
        o,
        "sluice_l7_errors_total",
        "counter",
        "Requests the L7 pool failed or refused, by reason.",
    );
    for (r, n) in &v.errors {
        let _ = writeln!(o, "sluice_l7_errors_total{{reason=\"{r}\"}} {n}");
    }
    metric(
        o,
        "sluice_l7_client_connections",
        "gauge",
        "Client connections open in the L7 pool.",
    );
    let _ = writeln!(o, "sluice_l7_client_connections {}", v.client_connections);
    metric(
        o,
        "sluice_l7_upstream_connections",
        "gauge",
        "Connections to backends open in the L7 pool.",
    );
    let _ = writeln!(
        o,
        "sluice_l7_upstream_connections {}",
        v.upstream_connections
    );
    metric(
        o,
        "sluice_l7_upstream_requests_total",
        "counter",
        "Requests sent upstream, by whether the connection was new or reused.",
    );
    let _ = writeln!(
        o,
        "sluice_l7_upstream_requests_total{{connection=\"opened\"}} {}",
        v.upstream_opened
    );
    let _ = writeln!(
        o,
        "sluice_l7_upstream_requests_total{{connection=\"reused\"}} {}",
        v.upstream_reused
    );
    metric(
        o,
        "sluice_l7_ejections_total",
        "counter",
        "Backends ejected by passive health.",
    );
    let _ = writeln!(o, "sluice_l7_ejections_total {}", v.ejections);
    metric(
        o,
        "sluice_l7_tls_handshakes_total",
        "counter",
        "Completed TLS handshakes of l7 = \"tls\" services, by version and whether resumed.",
    );
    for (version, n) in &v.tls_handshakes {
        let _ = writeln!(
            o,
            "sluice_l7_tls_handshakes_total{{version=\"{version}\"}} {n}"
        );
    }
    metric(
        o,
        "sluice_l7_tls_resumed_total",
        "counter",
        "TLS handshakes that resumed a session (a ticket or the session cache).",
    );
    let _ = writeln!(o, "sluice_l7_tls_resumed_total {}", v.tls_resumed);
    metric(
        o,
        "sluice_l7_tls_passthrough_total",
        "counter",
        "Connections of l7 = \"tls-passthrough\" services relayed to a backend after their ClientHello.",
    );
    let _ = writeln!(o, "sluice_l7_tls_passthrough_total {}", v.tls_passthrough);
    metric(
        o,
        "sluice_l7_upstream_tls_handshakes_total",
        "counter",
        "TLS handshakes with backends of pools that re-encrypt ([service.pool.tls]), by whether resumed.",
    );
    let _ = writeln!(
        o,
        "sluice_l7_upstream_tls_handshakes_total{{resumed=\"false\"}} {}\nsluice_l7_upstream_tls_handshakes_total{{resumed=\"true\"}} {}",
        v.upstream_tls_handshakes - v.upstream_tls_resumed.min(v.upstream_tls_handshakes),
        v.upstream_tls_resumed
    );
    metric(
        o,
        "sluice_l7_route_requests_total",
        "counter",
        "Requests per route (route=\"default\": no route matched, to the default pool).",
    );
    for (si, counts) in t.routes.iter().enumerate() {
        let Some(svc) = l7.get(si) else { continue };
        let n_routes = svc.l7.as_ref().map_or(0, |l| l.routes.len());
        for (ri, n) in counts.iter().enumerate() {
            let route = if ri == n_routes {
                "default".to_string()
            } else {
                ri.to_string()
            };
            let _ = writeln!(
                o,
                "sluice_l7_route_requests_total{{service=\"{}\",route=\"{route}\"}} {n}",
                svc.name
            );
        }
    }
    metric(
        o,
        "sluice_l7_route_responses_total",
        "counter",
        "Responses per route, by status class (route=\"default\" as above).",
    );
    for (si, per_route) in t.route_status.iter().enumerate() {
        let Some(svc) = l7.get(si) else { continue };
        let n_routes = svc.l7.as_ref().map_or(0, |l| l.routes.len());
        for (ri, c) in per_route.iter().enumerate() {
            let route = if ri == n_routes {
                "default".to_string()
            } else {
                ri.to_string()
            };
            for (i, n) in c.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "sluice_l7_route_responses_total{{service=\"{}\",route=\"{route}\",status_class=\"{}xx\"}} {n}",
                    svc.name,
                    i + 1
                );
            }
        }
    }
    metric(
        o,
        "sluice_l7_backend_requests_total",
        "counter",
        "Requests per backend, by status class.",
    );
    for b in &v.backends {
        for (c, n) in &b.status {
            let _ = writeln!(o, "sluice_l7_backend_requests_total{{service=\"{}\",pool=\"{}\",backend=\"{}\",status_class=\"{c}\"}} {n}", b.service, b.pool, b.backend);
        }
    }
    metric(
        o,
        "sluice_l7_request_duration_seconds",
        "histogram",
        "Time from a request head to the last byte of its response, by service.",
    );
    let buckets = l7_offload::stats::DURATION_BUCKETS;
    for (si, sv) in t.services.iter().enumerate() {
        let Some(svc) = l7.get(si) else { continue };
        let name = &svc.name;
        let mut cum = 0;
        for (i, le) in buckets.iter().enumerate() {
            cum += sv.duration_buckets[i];
            let _ = writeln!(
                o,
                "sluice_l7_request_duration_seconds_bucket{{service=\"{name}\",le=\"{le}\"}} {cum}"
            );
        }
        cum += sv.duration_buckets[buckets.len()];
        let _ = writeln!(
            o,
            "sluice_l7_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            o,
            "sluice_l7_request_duration_seconds_sum{{service=\"{name}\"}} {}",
            sv.duration_sum
        );
        let _ = writeln!(
            o,
            "sluice_l7_request_duration_seconds_count{{service=\"{name}\"}} {cum}"
        );
    }
}

/// Whether `cfg` has any service for the L7 pool.
pub fn wanted(cfg: &Config) -> bool {
    cfg.services.iter().any(|s| s.l7.is_some())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn routes_pools_and_wildcards_carry_over() {
        let src = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
[[service]]
name = "site"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"
[[service.route]]
host = "*.Example"
path = "/x"
header = "X-Canary: 1"
pool = "api"
[service.route.request_headers]
remove = ["x-debug"]
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.11:8080"
[[service.pool]]
name = "api"
algorithm = "hash"
hash_on = "header:X-User"
[[service.pool.backend]]
address = "10.99.0.12:8080"
weight = 5
"#;
        let cfg = Config::from_toml(src, None).unwrap();
        assert!(wanted(&cfg));
        let s = setup(&cfg, &TlsConfigs::default(), |_, _, _| {
            (Admin::Ready, Health::Unknown)
        });
        let svc = &s.services[0];
        assert_eq!(svc.default_pool, Some(0));
        assert_eq!(svc.routes[0].pool, 1);
        assert_eq!(
            svc.routes[0].host,
            Some(HostMatch::Suffix(".example".into()))
        );
        assert_eq!(svc.routes[0].path, Some(PathMatch::Exact("/x".into())));
        assert_eq!(svc.routes[0].header, Some(("x-canary".into(), "1".into())));
        assert_eq!(
            svc.routes[0].request_headers,
            vec![HeaderRule::Remove("x-debug".into())]
        );
        assert_eq!(
            svc.pools[1].algorithm,
            Algorithm::Hash(HashOn::Header("x-user".into()))
        );
        assert_eq!(svc.pools[1].backends[0].weight, 5);
        assert_eq!(s.node_ipv4, Some("10.99.0.1".parse().unwrap()));
        // The data path gets the service as offloaded, with the pools' backends to resolve.
        let snap = crate::snapshot::build(&cfg).unwrap();
        assert_eq!(snap.services[0].forwarding, dataplane::Forwarding::Offload);
        assert_eq!(snap.services[0].backends.len(), 2);
    }

    /// A TLS service with one certificate (`cert`, `key`: paths as written in the file).
    pub(crate) fn secure_toml(cert: &str, key: &str) -> String {
        format!(
            r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
[[service]]
name = "secure"
vip = "10.99.0.100:443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls"
default_pool = "www"
[[service.certificate]]
names = ["www.example"]
cert = "{cert}"
key = "{key}"
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.12:8080"
"#
        )
    }

    fn secure(key: &str) -> Config {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../l7-offload/tests/tls");
        Config::from_toml(
            &secure_toml(&format!("{dir}/www.pem"), &format!("{dir}/{key}")),
            None,
        )
        .unwrap()
    }

    #[test]
    fn tls_services_get_their_configuration_kept_while_it_is_unchanged() {
        let cfg = secure("www.key");
        let first = tls_configs(&cfg, &TlsConfigs::default()).unwrap();
        let s = setup(&cfg, &first, |_, _, _| (Admin::Ready, Health::Unknown));
        let tls = s.services[0]
            .tls
            .clone()
            .expect("a TLS service has its configuration");
        // The same certificates again (a backend change, a reload of the same file): the same
        // rustls configuration, so sessions resume across it.
        let again = tls_configs(&cfg, &first).unwrap();
        assert_eq!(again.servers["secure"].1, tls);
        assert_ne!(
            tls_configs(&cfg, &TlsConfigs::default()).unwrap().servers["secure"].1,
            tls
        );
        // A key that parses but is not the certificate's is refused by name, and a TLS
        // service without its configuration is left out rather than served in clear text.
        let bad = secure("img.key");
        let e = tls_configs(&bad, &first).unwrap_err();
        assert!(
            e.contains("service `secure` certificate[0]") && e.contains("not the certificate's"),
            "{e}"
        );
        assert!(setup(&bad, &TlsConfigs::default(), |_, _, _| (
            Admin::Ready,
            Health::Unknown
        ))
        .services
        .is_empty());
    }
}
