//! The results the daemon answers with, as types: the daemon builds them, `sluicectl` reads
//! them. On the wire each is the `result` of a [`Response`](crate::Response), a JSON object
//! whose keys are these field names (written in sorted order, as `serde_json` writes its
//! maps), with `null` for an absent value unless a field says it is left out.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub protocol: u32,
    pub uptime_s: f64,
    pub driver: String,
    pub workers: usize,
    pub config_file: String,
    /// `same`, `differs`, or `unreadable: <why>`.
    pub config_vs_file: String,
    pub generation: u64,
    pub services: usize,
    pub backends: usize,
    pub last_build_ms: Option<f64>,
    /// Newest first, at most 10.
    pub recent_events: Vec<EventView>,
    /// `active`, `drained` (`node drain`: routes withdrawn, still forwarding), `standby`
    /// (VRRP backup: no answers and no forwarding for the VIPs) or `stopping` (SIGTERM: routes
    /// withdrawn, forwarding through the grace time).
    #[serde(default)]
    pub node: String,
    /// With `[bgp]`: what the ExaBGP feed was last told.
    #[serde(default)]
    pub bgp: Option<BgpSummary>,
}

/// `status`'s view of the route announcements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpSummary {
    /// Seconds since the feed last asked (`None`: no feed has asked since the start).
    pub feed_last_poll_s: Option<f64>,
    /// Prefixes the feed was last told to announce.
    pub announced: Vec<String>,
    /// Prefixes the feed was last told to withdraw (or never to announce).
    pub withdrawn: Vec<String>,
}

/// `bgp-routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpRoutes {
    /// As in [`Status::node`].
    pub node: String,
    /// One per VIP address (services sharing an address share its route).
    pub routes: Vec<BgpRoute>,
}

/// One VIP route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpRoute {
    /// `10.99.0.100/32` or `2001:db8::100/128`.
    pub prefix: String,
    /// As ExaBGP reads it: `self` or an address.
    pub next_hop: String,
    pub announce: bool,
    /// Why it is announced or withdrawn, in words.
    pub reason: String,
    /// The services on this address.
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Unix time in seconds.
    pub at: f64,
    pub event: String,
}

/// `service list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceView>,
}

/// One service (`service list` rows, and `service show` with `backend_list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub vip: String,
    pub protocol: String,
    pub forwarding: String,
    pub table_size: u32,
    pub backends: usize,
    pub taking_new_flows: usize,
    pub all_down: String,
    pub all_down_active: bool,
    pub all_down_flows: u64,
    /// `off`, `on`, `auto (on)`, `auto (on: 1 of 2 workers)` or `auto (off)`.
    #[serde(default)]
    pub syn_proxy: String,
    pub health_check: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Only in `service show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_list: Option<Vec<BackendView>>,
}

/// `route list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteList {
    pub service: String,
    pub routes: Vec<RouteView>,
    /// Where requests no route matches go (`None`: 404).
    pub default_pool: Option<String>,
    /// Requests that went to the default pool (or got 404 without one).
    pub default_requests: u64,
    #[serde(default)]
    pub default_status: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub index: usize,
    pub host: Option<String>,
    /// `/exact`, or `/prefix*` for a prefix.
    pub path: Option<String>,
    pub header: Option<String>,
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    pub pool: String,
    /// Requests it matched (summed over the L7 workers); connections for tls-passthrough.
    pub requests: u64,
    /// Their responses by class (`1xx` … `5xx`).
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
}

/// `backend list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendList {
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub service: String,
    pub address: String,
    pub mac: Option<String>,
    pub weight: u32,
    /// `ready`, `drain`, `drain-expired` or `disabled`.
    pub admin: String,
    /// `up`, `down`, `unknown`, or `unchecked` for a service without checks.
    pub health: String,
    pub takes_new_flows: bool,
    pub remove_when_drained: bool,
    pub drain_left_s: Option<f64>,
    pub active_flows: u64,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub last_check: Option<CheckView>,
}

/// The last health check of a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    pub ok: bool,
    pub latency_ms: f64,
    pub message: String,
    /// Unix time in seconds.
    pub at: f64,
}

/// `health show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthList {
    pub backends: Vec<HealthView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    pub service: String,
    pub address: String,
    pub check: Option<String>,
    pub health: String,
    pub successes: u32,
    pub failures: u32,
    pub last: Option<CheckView>,
}

/// `certificate list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateList {
    pub certificates: Vec<CertificateView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    pub service: String,
    /// `server` (`[[service.certificate]]`, presented to clients) or `client` (a pool's
    /// `client_cert`, presented to its backends).
    pub role: String,
    /// `certificate[N]`, or `pool NAME`.
    pub slot: String,
    /// The SNI names it serves (server certificates).
    pub names: Vec<String>,
    pub issuer: String,
    /// Expiry as `YYYY-MM-DD`, and the seconds left (negative once expired).
    pub expires: String,
    pub seconds_left: i64,
    pub default: bool,
    pub file: String,
}

/// `stats`: totals, rates over the interval since the previous collection, per worker and
/// per service, drops by reason (only the reasons that counted any), conntrack, next hops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub interval_s: f64,
    pub packets_in: u64,
    pub neighbour_answers: u64,
    pub neighbour_requests: u64,
    pub neighbours_learned: u64,
    /// Gratuitous ARPs / unsolicited neighbour advertisements sent for the VIPs on becoming
    /// active from standby.
    #[serde(default)]
    pub vip_announcements: u64,
    pub neighbours: Vec<NeighbourView>,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub packets_per_s: f64,
    pub bits_per_s: f64,
    pub workers: Vec<WorkerStatsView>,
    pub services: Vec<ServiceStatsView>,
    pub drops: BTreeMap<String, u64>,
    pub conntrack: ConntrackView,
    #[serde(default)]
    pub syn_proxy: SynProxyView,
    /// The L7 pool, when the daemon runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7StatsView>,
}

/// The L7 pool's counters, summed over its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct L7StatsView {
    pub client_connections: u64,
    pub clients_accepted: u64,
    pub upstream_connections: u64,
    pub upstream_opened: u64,
    pub upstream_reused: u64,
    /// Requests that reused a pooled upstream connection, of all that needed one.
    pub reuse_ratio: f64,
    pub requests: u64,
    pub retries: u64,
    /// Backends ejected by passive health (consecutive failures).
    #[serde(default)]
    pub ejections: u64,
    /// Completed TLS handshakes by version (`1.2`, `1.3`), of `l7 = "tls"` services.
    #[serde(default)]
    pub tls_handshakes: BTreeMap<String, u64>,
    /// Of those, resumed sessions.
    #[serde(default)]
    pub tls_resumed: u64,
    /// Connections of `l7 = "tls-passthrough"` services relayed to a backend.
    #[serde(default)]
    pub tls_passthrough: u64,
    /// Re-encryption (`[service.pool.tls]`): TLS handshakes completed with backends, and of
    /// those resumed.
    #[serde(default)]
    pub upstream_tls_handshakes: u64,
    #[serde(default)]
    pub upstream_tls_resumed: u64,
    /// Responses by class (`1xx` … `5xx`), sluice's own errors included.
    pub status: BTreeMap<String, u64>,
    /// Errors by reason (`no_route`, `backend_timeout`, …).
    pub errors: BTreeMap<String, u64>,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Segments lost for want of a buffer or ring room (TCP sends them again).
    pub frames_lost: u64,
    /// Segments of no connection the pool knows (answered with a RST).
    #[serde(default)]
    pub segments_no_connection: u64,
    /// Request duration percentiles (50, 90, 99), milliseconds: the upper bound of the
    /// histogram bucket each falls in (`None` before any request, or past the last bucket).
    #[serde(default)]
    pub latency_ms: BTreeMap<String, Option<f64>>,
    pub backends: Vec<L7BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L7BackendView {
    pub service: String,
    pub pool: String,
    pub backend: String,
    pub requests: u64,
    pub in_flight: u64,
    pub failures: u64,
    #[serde(default)]
    pub ejections: u64,
    pub status: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourView {
    pub address: String,
    pub mac: Option<String>,
    /// `resolved` or `unresolved`.
    pub state: String,
    pub unanswered: u32,
    pub requests: u64,
    pub expiries: u64,
    pub unresolved_drops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatsView {
    pub worker: usize,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub drops: u64,
    pub packets_per_s: f64,
    pub bits_per_s: f64,
    pub snapshot_swaps: u64,
    /// Swaps in which the worker had to allocate counters (none is expected: the control
    /// plane shapes them beforehand).
    #[serde(default)]
    pub swaps_allocating: u64,
    pub swap_max_us: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatsView {
    pub service: String,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_s: f64,
    pub bits_per_s: f64,
    pub all_down_flows: u64,
    /// `off`, `on`, or for `auto` whether it is on now: `auto (on)` on every worker,
    /// `auto (on: 1 of 2 workers)`, `auto (off)`.
    #[serde(default)]
    pub syn_proxy: String,
    /// `auto`: the times a worker's proxy switched on.
    #[serde(default)]
    pub syn_proxy_activations: u64,
}

/// The SYN proxy's counters, all services and workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SynProxyView {
    /// SYN-ACKs sent with a cookie.
    pub cookies: u64,
    /// ACKs that returned a valid cookie: connections opened toward a backend.
    pub accepted: u64,
    /// Backends that completed the handshake (SYN-ACK), and that refused it (RST).
    pub opened: u64,
    pub refused: u64,
    /// Clients' first data held while the backend answered, sent after, and not held
    /// because every slot was taken.
    pub held: u64,
    pub held_sent: u64,
    pub hold_full: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConntrackView {
    pub active: usize,
    pub capacity: usize,
    pub occupancy: f64,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub expiries: u64,
    /// New flows not tracked because their index probe was full.
    #[serde(default)]
    pub refused: u64,
    /// Half-open flows (TCP, only a SYN seen) tracked now, all workers, and the most they
    /// may hold (`half_open_percent` of the capacity).
    #[serde(default)]
    pub half_open: usize,
    #[serde(default)]
    pub half_open_capacity: usize,
    /// Half-open flows evicted to make room (`evictions` counts the others).
    #[serde(default)]
    pub half_open_evictions: u64,
}

/// `limits`: the sources being limited now, busiest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitList {
    pub sources: Vec<LimitedSourceView>,
    /// Source-table slots given to a new source in place of another, all workers (a flood of
    /// sources shows here; the table never grows).
    pub sources_recycled: u64,
    /// Source-table slots per worker.
    pub table_capacity: usize,
    pub workers_answered: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitedSourceView {
    pub service: String,
    /// The client address (an IPv6 source is its /64, written as its first address).
    pub source: String,
    /// New flows refused since the source was last given its slot, all workers.
    pub refused: u64,
    /// Seconds since the last refusal.
    pub last_refused_s: f64,
}

/// `flows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowList {
    pub flows: Vec<FlowView>,
    /// Flows tracked by the workers that answered, whatever the filter.
    pub tracked: usize,
    pub workers_answered: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    pub worker: usize,
    pub client: String,
    pub vip: String,
    pub protocol: String,
    pub service: Option<String>,
    pub backend: String,
    pub state: String,
    pub age_s: f64,
    pub idle_s: f64,
}

/// Every change (and `reload`, `batch`): what changed, the generation it was published as,
/// and how long validating and building took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    pub changed: Vec<String>,
    pub generation: u64,
    pub build_ms: f64,
    /// Only for `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadDiff>,
}

/// What a `reload` found between the file and the running configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub draining: Vec<String>,
    /// Sections that differ but cannot change live (`dataplane`, `control`, `metrics`,
    /// `node`, `conntrack`): the running values are kept.
    pub needs_restart: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form: sorted keys, `null` for an absent value, and the optional parts of
    /// `service show` and `reload` left out when absent.
    #[test]
    fn results_encode_with_sorted_keys_and_explicit_nulls() {
        let c = Changed {
            changed: vec!["x".into()],
            generation: 3,
            build_ms: 1.5,
            reload: None,
        };
        let line = serde_json::to_value(&c).unwrap().to_string();
        assert_eq!(line, r#"{"build_ms":1.5,"changed":["x"],"generation":3}"#);
        let e = EventView {
            at: 1.0,
            event: "e".into(),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap().to_string(),
            r#"{"at":1.0,"event":"e"}"#
        );
        let h = HealthView {
            service: "web".into(),
            address: "10.1.0.1:80".into(),
            check: None,
            health: "unchecked".into(),
            successes: 0,
            failures: 0,
            last: None,
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["check"], serde_json::Value::Null);
        assert!(v.as_object().unwrap().contains_key("last"));
        assert_eq!(serde_json::from_value::<HealthView>(v).unwrap(), h);
    }
}
