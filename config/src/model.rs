//! The validated configuration: what `Config::from_toml` returns and the rest of sluice
//! reads. Every value here has passed validation.

use packet::MacAddr;
use serde::{Deserialize, Serialize, Serializer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Default Maglev table size: prime, and large enough for ~650 backends at 1% balance.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// Largest Maglev table size accepted.
pub const MAX_TABLE_SIZE: u32 = 16_777_213;
/// Backends per service the data path can index (u16).
pub const MAX_BACKENDS: usize = 65535;
/// Next hops (backend addresses and the gateway) a configuration may leave to the data path
/// to resolve, i.e. give without a MAC.
pub const MAX_RESOLVED_NEXT_HOPS: usize = 4096;
/// The IANA-assigned GUE port.
pub const DEFAULT_GUE_PORT: u16 = 6080;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Destination NAT; replies come back through the balancer and are reverse-translated.
    Nat,
    /// Full NAT: the source is rewritten too, so backends need no route back to clients.
    Snat,
    /// L2 direct server return: only the destination MAC changes.
    Dsr,
    /// IP-in-IP encapsulation from the node to the backend.
    Ipip,
    /// Generic UDP encapsulation.
    Gue,
    /// TCP terminated in sluice's L7 pool, requests proxied to the service's pools.
    L7,
}

impl Forwarding {
    pub fn name(self) -> &'static str {
        match self {
            Forwarding::Nat => "nat",
            Forwarding::Snat => "snat",
            Forwarding::Dsr => "dsr",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue => "gue",
            Forwarding::L7 => "l7",
        }
    }
    /// Whether replies come back through the balancer.
    pub fn translates(self) -> bool {
        matches!(self, Forwarding::Nat | Forwarding::Snat | Forwarding::L7)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    #[serde(serialize_with = "as_text")]
    pub mac: MacAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// Where replies to clients go: this MAC if given, else `gateway`'s, which the data
    /// path resolves by ARP / neighbour discovery. At least one of the two is set.
    #[serde(serialize_with = "opt_text", skip_serializing_if = "Option::is_none")]
    pub gateway_mac: Option<MacAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Source ports SNAT allocates from (inclusive), split evenly between workers.
    pub snat_ports: (u16, u16),
    /// The largest packet the path to the backends carries: IPIP/GUE packets that would be
    /// larger once encapsulated are answered with ICMP "fragmentation needed" / "packet too
    /// big" (or dropped), never sent. `None`: not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_mtu: Option<u16>,
    /// With `tunnel_mtu`: a packet without DF that is too big once encapsulated leaves as
    /// fragments of the outer IPv4 packet instead of being dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tunnel_fragment: bool,
    /// `standby`: start answering for no VIP and forwarding nothing for one until `sluicectl
    /// node activate` (keepalived's notify hook, for VRRP); `active` (the default) serves at
    /// once.
    #[serde(
        rename = "start_as",
        skip_serializing_if = "std::ops::Not::not",
        serialize_with = "standby_text"
    )]
    pub start_standby: bool,
    /// The 802.1Q VLAN sluice's link carries its traffic on: only frames tagged with it are
    /// the balancer's, and the frames sluice makes itself carry the tag. `None`: untagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

fn standby_text<S: Serializer>(_: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("standby")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub address: SocketAddr,
    /// The next hop's MAC; `None` has the data path resolve the (on-link) address itself.
    #[serde(serialize_with = "opt_text", skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub weight: u32,
    /// The most flows tracked to this backend at once (split evenly between the workers);
    /// at it, new flows go to Maglev's next choice. L4 services only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub table_size: u32,
    pub gue_port: u16,
    /// Whether sluice answers the service's SYNs itself with SYN cookies and opens the
    /// connection to the backend only once the client's ACK proves its address (`nat` and
    /// `snat` TCP services).
    #[serde(skip_serializing_if = "SynProxyMode::is_off")]
    pub syn_proxy: SynProxyMode,
    /// `syn_proxy = "auto"`: SYNs per second to the service (all workers) at which the
    /// proxy turns on; `None` is [`DEFAULT_SYN_PROXY_AUTO_ON`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_proxy_auto_on: Option<u32>,
    /// `syn_proxy = "auto"`: SYNs per second under which, for 10 s, it turns off again;
    /// `None` is half of `syn_proxy_auto_on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_proxy_auto_off: Option<u32>,
    /// The MSS the proxy's SYN-ACK offers clients; `None` is 1460 (IPv4) or 1440 (IPv6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_proxy_mss: Option<u16>,
    #[serde(rename = "backend", skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Health checking of the backends; `None` treats every backend as up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// What new flows do when every backend that is not drained or disabled is down.
    pub all_down: AllDown,
    /// What the L7 pool does with a `forwarding = "l7"` service; `None` for the others.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Service>,
    /// Token-bucket limits on new flows per client source and packets to the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// `[service.rate_limit]`: token buckets, each worker holding its share of every rate (the
/// NIC's hash spreads a source's flows, and the service's packets, over the workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// New flows per second one client source may open (an IPv4 /32, an IPv6 /64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_flows_per_source: Option<u32>,
    /// New flows a source may open at once before the rate applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_burst: Option<u32>,
    /// Packets per second to the service in all (new and established flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Packets the service may take at once before the rate applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_burst: Option<u64>,
}

impl Service {
    /// The health check that applies to backend `addr`: the service's, or (L7) that of the
    /// first pool listing it that has one (a backend's health is one state, whichever pools
    /// list it).
    pub fn health_of(&self, addr: SocketAddr) -> Option<&HealthCheck> {
        self.health.as_ref().or_else(|| {
            self.l7
                .iter()
                .flat_map(|l| l.pools.iter())
                .filter(|p| p.backends.iter().any(|b| b.address == addr))
                .find_map(|p| p.health.as_ref())
        })
    }

    /// Every backend address the service sends to, each once, with its first entry.
    pub fn unique_backends(&self) -> Vec<&Backend> {
        let mut seen = std::collections::HashSet::new();
        self.all_backends()
            .filter(|b| seen.insert(b.address))
            .collect()
    }

    /// Every backend the service sends to: its own, or those of its L7 pools.
    pub fn all_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().chain(
            self.l7
                .iter()
                .flat_map(|l| l.pools.iter())
                .flat_map(|p| p.backends.iter()),
        )
    }
}

/// The application protocol of an L7 service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L7Protocol {
    Http,
    /// TLS terminated in the L7 pool, then HTTP as with `http`.
    Tls,
    /// TLS relayed untouched to a pool chosen by the ClientHello's server name.
    #[serde(rename = "tls-passthrough")]
    TlsPassthrough,
}

impl L7Protocol {
    pub fn name(self) -> &'static str {
        match self {
            L7Protocol::Http => "http",
            L7Protocol::Tls => "tls",
            L7Protocol::TlsPassthrough => "tls-passthrough",
        }
    }
}

/// `[service.tls]`: what TLS termination offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Tls {
    /// "1.2", "1.3".
    pub versions: Vec<String>,
    pub alpn: Vec<String>,
    /// By IANA name ([`TLS_CIPHER_SUITES`]); empty: all of them, in rustls's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Whether resumption tickets are issued (their keys rotate every six hours).
    pub session_tickets: bool,
    /// Sessions the server-side cache remembers for resumption; 0 turns the cache off.
    pub session_cache: u32,
}

/// Sessions a TLS service's cache remembers by default.
pub const DEFAULT_SESSION_CACHE: u32 = 16384;

impl Default for L7Tls {
    fn default() -> Self {
        L7Tls {
            versions: vec!["1.2".into(), "1.3".into()],
            alpn: vec!["http/1.1".into()],
            cipher_suites: Vec::new(),
            session_tickets: true,
            session_cache: DEFAULT_SESSION_CACHE,
        }
    }
}

/// The cipher suites `[service.tls] cipher_suites` may name: those the TLS library offers
/// (TLS 1.3 ones first; the TLS 1.2 ones are ECDHE with AEAD only).
pub const TLS_CIPHER_SUITES: [&str; 9] = [
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// `[[service.certificate]]`: a chain and key, read when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Certificate {
    pub names: Vec<String>,
    pub cert: String,
    pub key: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// The files' contents as read (a changed file makes a changed configuration).
    #[serde(skip)]
    pub chain_pem: Vec<u8>,
    #[serde(skip)]
    pub key_pem: Vec<u8>,
    /// When the leaf certificate expires, seconds since 1970.
    #[serde(skip)]
    pub not_after: i64,
    /// The leaf's issuer (`CN=…, O=…`).
    #[serde(skip)]
    pub issuer: String,
}

/// The L7 part of a service: `l7`, `default_pool`, `[service.limits]`,
/// `[service.timeouts]`, `[[service.route]]` and `[[service.pool]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Service {
    pub l7: L7Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool: Option<String>,
    pub limits: L7Limits,
    pub timeouts: L7Timeouts,
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<L7Route>,
    #[serde(rename = "pool")]
    pub pools: Vec<L7Pool>,
    /// With `l7 = "tls"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<L7Tls>,
    #[serde(rename = "certificate", skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<L7Certificate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct L7Limits {
    pub header_bytes: u32,
    pub header_count: u32,
    pub body_bytes: u64,
    pub connections: u32,
}

impl Default for L7Limits {
    fn default() -> Self {
        L7Limits {
            header_bytes: 16384,
            header_count: 100,
            body_bytes: 10_485_760,
            connections: 100_000,
        }
    }
}

/// Milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct L7Timeouts {
    pub client_header_ms: u64,
    pub client_idle_ms: u64,
    pub backend_connect_ms: u64,
    pub backend_response_ms: u64,
    pub pool_idle_ms: u64,
}

impl Default for L7Timeouts {
    fn default() -> Self {
        L7Timeouts {
            client_header_ms: 10_000,
            client_idle_ms: 60_000,
            backend_connect_ms: 2_000,
            backend_response_ms: 30_000,
            pool_idle_ms: 30_000,
        }
    }
}

/// Header rules of a route: `set` replaces, `add` appends, `remove` drops (names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeaderRules {
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "pairs")]
    pub set: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "pairs")]
    pub add: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct L7Route {
    /// Exact, or `*.example` for any subdomain; lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `name: value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// With `l7 = "tls-passthrough"`: the ClientHello's server name, exact or `*.example`;
    /// lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// With `l7 = "tls-passthrough"`: an ALPN protocol the ClientHello offers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    pub pool: String,
    #[serde(skip_serializing_if = "HeaderRules::is_empty")]
    pub request_headers: HeaderRules,
    #[serde(skip_serializing_if = "HeaderRules::is_empty")]
    pub response_headers: HeaderRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum L7Algorithm {
    RoundRobin,
    LeastRequests,
    P2c,
    Hash,
}

impl L7Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            L7Algorithm::RoundRobin => "round-robin",
            L7Algorithm::LeastRequests => "least-requests",
            L7Algorithm::P2c => "p2c",
            L7Algorithm::Hash => "hash",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Pool {
    pub name: String,
    pub algorithm: L7Algorithm,
    /// With `hash`: `header:NAME`, `cookie:NAME` or `source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_max_age: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Passive health: consecutive failed requests that eject a backend (0: never).
    pub eject_after: u32,
    /// How long an ejected backend stays out, milliseconds.
    pub eject_for_ms: u64,
    /// Whether 5xx responses count as failures.
    pub eject_on_5xx: bool,
    /// `[service.pool.tls]`: requests re-encrypted to the backends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<L7PoolTls>,
    #[serde(rename = "backend")]
    pub backends: Vec<Backend>,
}

/// `[service.pool.tls]`: the pool's backends are reached over TLS, sluice the client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct L7PoolTls {
    /// PEM bundle of the CAs a backend's certificate must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The name a backend's certificate must carry; left out, the backend's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub verify: bool,
    /// mTLS: a client certificate chain and its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// The files' contents as read.
    #[serde(skip)]
    pub ca_pem: Vec<u8>,
    #[serde(skip)]
    pub client_cert_pem: Vec<u8>,
    #[serde(skip)]
    pub client_key_pem: Vec<u8>,
    /// The client certificate's expiry (seconds since 1970) and issuer.
    #[serde(skip)]
    pub client_not_after: i64,
    #[serde(skip)]
    pub client_issuer: String,
}

/// Passive health defaults: five failures in a row eject for 30 s (Envoy's outlier detection
/// ejects after five consecutive 5xx for a base of 30 s).
pub const DEFAULT_EJECT_AFTER: u32 = 5;
pub const DEFAULT_EJECT_FOR_MS: u64 = 30_000;

/// Where and how the L7 pool runs: `[l7]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Workers {
    /// L7 worker threads (shards); connections are spread over them by flow hash.
    pub workers: usize,
    /// Cores to pin them to (one per worker, in order); empty leaves them to the scheduler.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<usize>,
    /// The node's source ports for upstream connections (inclusive), split between workers;
    /// must not overlap `node.snat_ports`.
    pub upstream_ports: (u16, u16),
    /// Socket buffer sizes per connection, bytes.
    pub tcp_rx_buffer: u32,
    pub tcp_tx_buffer: u32,
    /// Frames each ring between the poll loops and the L7 workers holds.
    pub ring: u32,
    /// Idle pooled connections kept per backend and L7 worker; more are closed.
    pub max_idle_per_backend: u32,
}

impl Default for L7Workers {
    fn default() -> Self {
        L7Workers {
            workers: 1,
            cores: Vec::new(),
            upstream_ports: (61000, 65535),
            tcp_rx_buffer: 65536,
            tcp_tx_buffer: 65536,
            ring: 4096,
            max_idle_per_backend: 1024,
        }
    }
}

/// `syn_proxy`: off (the default), on, or on only while SYNs arrive faster than
/// `syn_proxy_auto_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SynProxyMode {
    #[default]
    Off,
    On,
    Auto,
}

impl SynProxyMode {
    pub fn is_off(&self) -> bool {
        *self == SynProxyMode::Off
    }
    pub fn name(self) -> &'static str {
        match self {
            SynProxyMode::Off => "off",
            SynProxyMode::On => "on",
            SynProxyMode::Auto => "auto",
        }
    }
}

/// SYNs per second (all workers) at which `syn_proxy = "auto"` turns the proxy on.
pub const DEFAULT_SYN_PROXY_AUTO_ON: u32 = 10_000;

/// The policy when every eligible backend of a service is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllDown {
    /// Drop new flows (counted as `no_backend`); tracked flows continue.
    Drop,
    /// Ignore health and balance new flows over every eligible backend (fail open).
    All,
}

impl AllDown {
    pub fn name(self) -> &'static str {
        match self {
            AllDown::Drop => "drop",
            AllDown::All => "all",
        }
    }
}

/// How a backend's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect to the backend address.
    Tcp,
    /// An HTTP/1.1 GET of `path`; healthy when the status is in one of `status` (inclusive
    /// ranges) and, if given, the body contains `body`.
    Http {
        path: String,
        status: Vec<(u16, u16)>,
        body: Option<String>,
        host: Option<String>,
    },
}

/// A service's health check (times in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes that bring a backend up.
    pub rise: u32,
    /// Consecutive failures that take it down.
    pub fall: u32,
    /// Up to this many milliseconds added at random to each interval, so checks of many
    /// backends do not fire together.
    pub jitter_ms: u64,
    /// Where checks connect; the backend address when `None` (a different port is common for
    /// DSR backends whose service port answers only on the VIP).
    pub port: Option<u16>,
}

/// The control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    pub socket: std::path::PathBuf,
    /// A group whose members may also use the socket (mode 0660 instead of 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// How long a drained backend's tracked flows may continue before they are moved, and
    /// how long `backend remove` (without --force) waits for them, in seconds.
    #[serde(rename = "drain_timeout")]
    pub drain_timeout_s: u64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: "/run/sluice/control.sock".into(),
            group: None,
            drain_timeout_s: 300,
        }
    }
}

/// `[bgp]`: the VIPs announced to routers through ExaBGP's process API (`sluicectl bgp feed`
/// is the program ExaBGP runs), each while this instance serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bgp {
    /// The next hop the announcements carry.
    #[serde(serialize_with = "as_text")]
    pub next_hop: NextHop,
    /// On SIGTERM: withdraw every route, keep forwarding this long (established flows
    /// continue while routers move new ones), then stop.
    pub shutdown_grace_ms: u64,
}

impl Default for Bgp {
    fn default() -> Self {
        Bgp {
            next_hop: NextHop::SessionAddress,
            shutdown_grace_ms: 5000,
        }
    }
}

/// Where routers are told to send a VIP's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// ExaBGP's `next-hop self`: the BGP session's own local address (the session runs on
    /// the interface sluice serves, whose MAC the traffic then reaches).
    SessionAddress,
    /// This address (the node's, say, when the session runs on a management link). It
    /// applies to VIPs of its family; the other family's take `self`.
    Address(IpAddr),
}

impl NextHop {
    /// The next hop for a prefix of `v6`'s family, as ExaBGP reads it.
    pub fn for_family(self, v6: bool) -> String {
        match self {
            NextHop::Address(a) if a.is_ipv6() == v6 => a.to_string(),
            _ => "self".into(),
        }
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::SessionAddress => f.write_str("self"),
            NextHop::Address(a) => write!(f, "{a}"),
        }
    }
}

/// The Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub listen: SocketAddr,
}

/// Connection tracking sizing and timeouts (seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    /// Flows tracked per worker; the table is reserved at this size up front.
    pub capacity: usize,
    pub tcp_syn_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_closing_timeout: u64,
    pub udp_timeout: u64,
    /// The percentage of `capacity` that half-open flows (TCP, only a SYN seen) may hold;
    /// past it a new one evicts the oldest half-open flow, never an established one.
    pub half_open_percent: u32,
    /// Entries per worker in the table of client sources that per-source rate limits
    /// (`[service.rate_limit] new_flows_per_source`) keep buckets in; reserved up front, so
    /// a flood of spoofed sources recycles the idlest entries instead of growing it.
    pub rate_limit_sources: usize,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack {
            capacity: 262_144,
            tcp_syn_timeout: 10,
            tcp_established_timeout: 900,
            tcp_closing_timeout: 15,
            udp_timeout: 60,
            half_open_percent: 25,
            rate_limit_sources: 65_536,
        }
    }
}

/// The port driver `sluice run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Any DPDK ethdev: a NIC or SR-IOV VF bound to vfio-pci, or a virtual device.
    Dpdk,
    /// A capture file played in real time (each frame at its timestamp's offset from the
    /// first), output written to a capture at exit: a daemon without privileges or NICs, for
    /// trying the control plane and for tests.
    Pcap,
    /// AF_XDP sockets on any Linux interface, with an XDP program that passes everything
    /// that is not the balancer's to the kernel.
    Xdp,
    /// DPDK when its configured device initialises, AF_XDP on `[dataplane.xdp] interface`
    /// otherwise.
    Auto,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Dpdk => "dpdk",
            Driver::Pcap => "pcap",
            Driver::Xdp => "xdp",
            Driver::Auto => "auto",
        }
    }
}

/// What a worker does when its queue is empty (`dataplane.idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// After about 100 µs of empty polls, sleep between polls, from 16 µs doubling to 1 ms
    /// while nothing comes (the default): an idle worker then uses next to no CPU.
    Sleep,
    /// After 16 empty polls in a row, yield the core to any other runnable thread (the L7
    /// workers, on a shared core) before polling again; returns at once when there is none.
    Yield,
    /// Poll without pause.
    Spin,
}

impl IdlePolicy {
    /// The first is the default.
    pub const ALL: [IdlePolicy; 3] = [IdlePolicy::Sleep, IdlePolicy::Yield, IdlePolicy::Spin];
    pub fn name(self) -> &'static str {
        match self {
            IdlePolicy::Sleep => "sleep",
            IdlePolicy::Yield => "yield",
            IdlePolicy::Spin => "spin",
        }
    }
}

impl Named for IdlePolicy {
    fn file_name(self) -> &'static str {
        self.name()
    }
}

/// How the XDP program attaches (`dataplane.xdp.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver has it, else generic.
    Auto,
    Native,
    Generic,
}

/// Whether AF_XDP sockets bind zero-copy (`dataplane.xdp.zerocopy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy where the driver supports it, else copy.
    Auto,
    On,
    Off,
}

impl XdpMode {
    pub const ALL: [XdpMode; 3] = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic];
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl ZeroCopy {
    pub const ALL: [ZeroCopy; 3] = [ZeroCopy::Auto, ZeroCopy::On, ZeroCopy::Off];
    pub fn name(self) -> &'static str {
        match self {
            ZeroCopy::Auto => "auto",
            ZeroCopy::On => "on",
            ZeroCopy::Off => "off",
        }
    }
}

/// Settings of the `xdp` driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XdpDriver {
    pub interface: String,
    #[serde(serialize_with = "named")]
    pub mode: XdpMode,
    #[serde(serialize_with = "named")]
    pub zerocopy: ZeroCopy,
    /// UMEM frames per queue (4 KiB each).
    pub frames: u32,
    /// Entries in each ring (a power of two).
    pub ring: u32,
}

/// Settings of the `pcap` driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PcapDriver {
    pub input: std::path::PathBuf,
    pub output: std::path::PathBuf,
    /// Play the input this many times faster than captured (1 = real time).
    pub speed: u32,
}

/// DPDK settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dpdk {
    /// Arguments for DPDK's EAL, e.g. `["-a", "0000:3b:00.1"]` or `["--vdev", "net_pcap0,..."]`.
    pub eal_args: Vec<String>,
    /// The ethdev to balance on: its DPDK name (`net_pcap0`) or PCI address (`0000:3b:00.1`).
    pub port: String,
    /// A second ethdev to transmit on (two-armed set-ups); `None` transmits on `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_port: Option<String>,
    /// The kernel exception path: a TAP interface of this name (with the node's MAC) gets
    /// every frame that is not the balancer's, and what the kernel sends on it goes out of
    /// the port, so the host's own traffic keeps working on a NIC DPDK owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_interface: Option<String>,
    /// Packet buffers in the pool (a power of two minus one is most efficient).
    pub mbufs: u32,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
}

/// How `sluice run` drives packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    pub driver: Driver,
    /// CPU cores for workers, one worker (and one RX/TX queue pair) per core.
    pub cores: Vec<usize>,
    #[serde(serialize_with = "named")]
    pub idle: IdlePolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<Dpdk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap: Option<PcapDriver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpDriver>,
}

/// A whole configuration. `Serialize` writes it with the file's keys (`Config::to_toml`):
/// the writer is derived from this model, so no key can be left out of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub node: Node,
    pub conntrack: Conntrack,
    pub control: Control,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Present when the file has a `[dataplane]` section (needed by `sluice run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<Dataplane>,
    /// The L7 pool's workers (used when a service has `forwarding = "l7"`).
    pub l7: L7Workers,
    /// Present when the file has a `[bgp]` section: VIPs are announced through ExaBGP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Bgp>,
    #[serde(rename = "service")]
    pub services: Vec<Service>,
}

/// Reads one of `all` by its name, or says which names there are.
fn by_name<T: Copy>(
    what: &str,
    s: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|t| name(*t) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
        format!("`{s}` is not a {what}; use one of {}", names.join(", "))
    })
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(
            "protocol",
            s,
            &[Protocol::Tcp, Protocol::Udp],
            Protocol::name,
        )
    }
}

impl std::str::FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use Forwarding::*;
        by_name(
            "forwarding mode",
            s,
            &[Nat, Snat, Dsr, Ipip, Gue, L7],
            Forwarding::name,
        )
    }
}

impl std::str::FromStr for L7Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use L7Algorithm::*;
        by_name(
            "pool algorithm",
            s,
            &[RoundRobin, LeastRequests, P2c, Hash],
            L7Algorithm::name,
        )
    }
}

impl std::str::FromStr for AllDown {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(
            "all_down policy",
            s,
            &[AllDown::Drop, AllDown::All],
            AllDown::name,
        )
    }
}

impl std::str::FromStr for SynProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(
            "syn_proxy mode",
            s,
            &[SynProxyMode::Off, SynProxyMode::On, SynProxyMode::Auto],
            SynProxyMode::name,
        )
    }
}

fn pairs<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        m.serialize_entry(k, val)?;
    }
    m.end()
}

/// A value written as its text (MAC addresses).
fn as_text<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_text<T: std::fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// A setting written by its name in the file.
trait Named: Copy {
    fn file_name(self) -> &'static str;
}

impl Named for XdpMode {
    fn file_name(self) -> &'static str {
        self.name()
    }
}

impl Named for ZeroCopy {
    fn file_name(self) -> &'static str {
        self.name()
    }
}

fn named<T: Named, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.file_name())
}

impl Serialize for HealthCheck {
    /// As the `[service.health]` table: times in seconds, the kind as `type` with its own
    /// keys, status ranges as "200-299".
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let secs = |ms: u64| ms as f64 / 1000.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry(
            "type",
            match self.kind {
                CheckKind::Tcp => "tcp",
                CheckKind::Http { .. } => "http",
            },
        )?;
        m.serialize_entry("interval", &secs(self.interval_ms))?;
        m.serialize_entry("timeout", &secs(self.timeout_ms))?;
        m.serialize_entry("rise", &self.rise)?;
        m.serialize_entry("fall", &self.fall)?;
        m.serialize_entry("jitter", &secs(self.jitter_ms))?;
        if let Some(p) = self.port {
            m.serialize_entry("port", &p)?;
        }
        if let CheckKind::Http {
            path,
            status,
            body,
            host,
        } = &self.kind
        {
            m.serialize_entry("path", path)?;
            let ranges: Vec<String> = status.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            m.serialize_entry("status", &ranges)?;
            if let Some(b) = body {
                m.serialize_entry("body", b)?;
            }
            if let Some(h) = host {
                m.serialize_entry("host", h)?;
            }
        }
        m.end()
    }
}
