//! The file as written: every value with its span (`toml::Spanned`), so an error can name
//! its line. Nothing here is checked yet; `validate` turns these into the model.

use crate::model::{AllDown, Driver, Forwarding, L7Algorithm, L7Protocol, Protocol, SynProxyMode};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) node: Spanned<RawNode>,
    #[serde(default)]
    pub(crate) conntrack: Option<Spanned<RawConntrack>>,
    #[serde(default)]
    pub(crate) service: Vec<Spanned<RawService>>,
    pub(crate) dataplane: Option<Spanned<RawDataplane>>,
    pub(crate) control: Option<Spanned<RawControl>>,
    pub(crate) metrics: Option<Spanned<RawMetrics>>,
    pub(crate) l7: Option<Spanned<RawL7Workers>>,
    pub(crate) bgp: Option<Spanned<RawBgp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    pub(crate) next_hop: Option<Spanned<String>>,
    pub(crate) shutdown_grace_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub(crate) socket: Option<Spanned<String>>,
    pub(crate) group: Option<Spanned<String>>,
    pub(crate) drain_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    #[serde(rename = "type")]
    pub(crate) kind: Spanned<String>,
    pub(crate) interval: Option<Spanned<f64>>,
    pub(crate) timeout: Option<Spanned<f64>>,
    pub(crate) rise: Option<Spanned<u32>>,
    pub(crate) fall: Option<Spanned<u32>>,
    pub(crate) jitter: Option<Spanned<f64>>,
    pub(crate) port: Option<Spanned<u16>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) status: Option<Spanned<Vec<String>>>,
    pub(crate) body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPcapDriver {
    pub(crate) input: Spanned<String>,
    pub(crate) output: Spanned<String>,
    pub(crate) speed: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDataplane {
    pub(crate) driver: Spanned<Driver>,
    pub(crate) cores: Spanned<Vec<usize>>,
    pub(crate) idle: Option<Spanned<String>>,
    pub(crate) dpdk: Option<Spanned<RawDpdk>>,
    pub(crate) pcap: Option<Spanned<RawPcapDriver>>,
    pub(crate) xdp: Option<Spanned<RawXdp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawXdp {
    pub(crate) interface: Spanned<String>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) zerocopy: Option<Spanned<String>>,
    pub(crate) frames: Option<Spanned<u32>>,
    pub(crate) ring: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDpdk {
    #[serde(default)]
    pub(crate) eal_args: Vec<String>,
    pub(crate) port: Spanned<String>,
    pub(crate) tx_port: Option<Spanned<String>>,
    pub(crate) exception_interface: Option<Spanned<String>>,
    pub(crate) mbufs: Option<Spanned<u32>>,
    pub(crate) rx_descriptors: Option<Spanned<u16>>,
    pub(crate) tx_descriptors: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) mac: Spanned<String>,
    pub(crate) ipv4: Option<Spanned<String>>,
    pub(crate) ipv6: Option<Spanned<String>>,
    pub(crate) gateway_mac: Option<Spanned<String>>,
    pub(crate) gateway: Option<Spanned<String>>,
    pub(crate) snat_ports: Option<Spanned<[u16; 2]>>,
    pub(crate) tunnel_mtu: Option<Spanned<u16>>,
    pub(crate) start_as: Option<Spanned<String>>,
    pub(crate) tunnel_fragment: Option<Spanned<bool>>,
    pub(crate) vlan: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConntrack {
    pub(crate) capacity: Option<Spanned<u64>>,
    pub(crate) tcp_syn_timeout: Option<Spanned<u64>>,
    pub(crate) tcp_established_timeout: Option<Spanned<u64>>,
    pub(crate) tcp_closing_timeout: Option<Spanned<u64>>,
    pub(crate) udp_timeout: Option<Spanned<u64>>,
    pub(crate) half_open_percent: Option<Spanned<u64>>,
    pub(crate) rate_limit_sources: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: Spanned<String>,
    pub(crate) vip: Spanned<String>,
    pub(crate) protocol: Spanned<Protocol>,
    pub(crate) forwarding: Spanned<Forwarding>,
    pub(crate) table_size: Option<Spanned<u64>>,
    pub(crate) gue_port: Option<Spanned<u16>>,
    pub(crate) health: Option<Spanned<RawHealth>>,
    pub(crate) all_down: Option<Spanned<AllDown>>,
    #[serde(default)]
    pub(crate) backend: Vec<Spanned<RawBackend>>,
    pub(crate) l7: Option<Spanned<L7Protocol>>,
    pub(crate) default_pool: Option<Spanned<String>>,
    pub(crate) limits: Option<Spanned<RawLimits>>,
    pub(crate) timeouts: Option<Spanned<RawTimeouts>>,
    #[serde(default)]
    pub(crate) route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(crate) pool: Vec<Spanned<RawPool>>,
    pub(crate) tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pub(crate) certificate: Vec<Spanned<RawCertificate>>,
    pub(crate) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(crate) syn_proxy: Option<Spanned<SynProxyMode>>,
    pub(crate) syn_proxy_auto_on: Option<Spanned<u64>>,
    pub(crate) syn_proxy_auto_off: Option<Spanned<u64>>,
    pub(crate) syn_proxy_mss: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) new_flows_per_source: Option<Spanned<u64>>,
    pub(crate) source_burst: Option<Spanned<u64>>,
    pub(crate) packets: Option<Spanned<u64>>,
    pub(crate) packets_burst: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) versions: Option<Spanned<Vec<String>>>,
    pub(crate) alpn: Option<Spanned<Vec<String>>>,
    pub(crate) cipher_suites: Option<Spanned<Vec<String>>>,
    pub(crate) session_tickets: Option<Spanned<bool>>,
    pub(crate) session_cache: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    pub(crate) names: Spanned<Vec<String>>,
    pub(crate) cert: Spanned<String>,
    pub(crate) key: Spanned<String>,
    pub(crate) default: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) header_bytes: Option<Spanned<u64>>,
    pub(crate) header_count: Option<Spanned<u64>>,
    pub(crate) body_bytes: Option<Spanned<u64>>,
    pub(crate) connections: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) client_header_ms: Option<Spanned<u64>>,
    pub(crate) client_idle_ms: Option<Spanned<u64>>,
    pub(crate) backend_connect_ms: Option<Spanned<u64>>,
    pub(crate) backend_response_ms: Option<Spanned<u64>>,
    pub(crate) pool_idle_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    #[serde(default)]
    pub(crate) set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) path_prefix: Option<Spanned<String>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) header: Option<Spanned<String>>,
    pub(crate) method: Option<Spanned<String>>,
    pub(crate) sni: Option<Spanned<String>>,
    pub(crate) alpn: Option<Spanned<String>>,
    pub(crate) pool: Spanned<String>,
    // Not `Spanned`: toml cannot span a table holding tables; errors point at the route.
    pub(crate) request_headers: Option<RawHeaderRules>,
    pub(crate) response_headers: Option<RawHeaderRules>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub(crate) name: Spanned<String>,
    pub(crate) algorithm: Option<Spanned<L7Algorithm>>,
    pub(crate) hash_on: Option<Spanned<String>>,
    pub(crate) sticky_cookie: Option<Spanned<String>>,
    pub(crate) sticky_max_age: Option<Spanned<u64>>,
    pub(crate) eject_after: Option<Spanned<u32>>,
    pub(crate) eject_for_ms: Option<Spanned<u64>>,
    pub(crate) eject_on_5xx: Option<Spanned<bool>>,
    pub(crate) health: Option<Spanned<RawHealth>>,
    pub(crate) tls: Option<Spanned<RawPoolTls>>,
    #[serde(default)]
    pub(crate) backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoolTls {
    pub(crate) ca: Option<Spanned<String>>,
    pub(crate) server_name: Option<Spanned<String>>,
    pub(crate) verify: Option<Spanned<bool>>,
    pub(crate) client_cert: Option<Spanned<String>>,
    pub(crate) client_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawL7Workers {
    pub(crate) workers: Option<Spanned<u64>>,
    pub(crate) cores: Option<Spanned<Vec<usize>>>,
    pub(crate) upstream_ports: Option<Spanned<[u16; 2]>>,
    pub(crate) tcp_rx_buffer: Option<Spanned<u64>>,
    pub(crate) tcp_tx_buffer: Option<Spanned<u64>>,
    pub(crate) ring: Option<Spanned<u64>>,
    pub(crate) max_idle_per_backend: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) address: Spanned<String>,
    pub(crate) mac: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<u64>>,
    pub(crate) max_flows: Option<Spanned<u64>>,
}
