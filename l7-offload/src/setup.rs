//! What the L7 pool is told of the configuration: its services with their routes, pools,
//! backends, limits and timeouts. The control plane builds it from the configuration file;
//! this crate depends on no configuration type.

use std::net::{IpAddr, SocketAddr};

pub use dataplane::setup::{Admin, Health};

/// The whole L7 setup: every `forwarding = "l7"` service, and how the shards run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L7Setup {
    pub services: Vec<L7Service>,
    /// The node's addresses, which upstream connections come from.
    pub node_ipv4: Option<std::net::Ipv4Addr>,
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    pub tcp: TcpSetup,
}

/// Socket buffer sizes (bytes) for client and upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSetup {
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    /// Idle pooled upstream connections kept per backend (per shard).
    pub max_idle: usize,
}

impl Default for TcpSetup {
    fn default() -> Self {
        TcpSetup {
            rx_buffer: 65536,
            tx_buffer: 65536,
            max_idle: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (over TLS when the service has `tls`).
    Http,
    /// TLS relayed untouched, to the pool the ClientHello's server name and ALPN choose.
    TlsPassthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Service {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    /// Index into `pools` for requests no route matches; `None` answers them 404.
    pub default_pool: Option<usize>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub routes: Vec<Route>,
    pub pools: Vec<Pool>,
    /// TLS termination (`l7 = "tls"`): clients speak TLS, HTTP runs inside it.
    pub tls: Option<ServerTls>,
}

/// A service's rustls configuration; two are equal when they are the same one (a new setup
/// that keeps the service's certificates keeps its configuration, tickets and cache).
#[derive(Debug, Clone)]
pub struct ServerTls(pub std::sync::Arc<rustls::ServerConfig>);

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ServerTls {}

/// A pool's re-encryption to its backends (`[service.pool.tls]`): the rustls client
/// configuration, and the name a backend's certificate must have (`None`: the backend's
/// own address, which its certificate must then name as an IP address).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// The name to verify backend `addr`'s certificate against.
    pub fn name_for(&self, addr: SocketAddr) -> rustls::pki_types::ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_bytes: usize,
    pub header_count: usize,
    pub body_bytes: u64,
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes: 16384,
            header_count: 100,
            body_bytes: 10 * 1024 * 1024,
            connections: 100_000,
        }
    }
}

/// Milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub client_header_ms: u64,
    pub client_idle_ms: u64,
    pub backend_connect_ms: u64,
    pub backend_response_ms: u64,
    pub pool_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header_ms: 10_000,
            client_idle_ms: 60_000,
            backend_connect_ms: 2_000,
            backend_response_ms: 30_000,
            pool_idle_ms: 30_000,
        }
    }
}

/// Host condition of a route: the name, lower case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example`: any name ending in `.example` (stored with the dot: `.example`).
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// A header rule applied to requests or responses on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRule {
    /// Replaces every header of this name with one.
    Set(String, String),
    /// Adds one more.
    Add(String, String),
    /// Removes every header of this name.
    Remove(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Header name (lower case) and value, compared exactly.
    pub header: Option<(String, String)>,
    pub method: Option<String>,
    /// tls-passthrough: the ClientHello's server name (lower case).
    pub sni: Option<HostMatch>,
    /// tls-passthrough: an ALPN protocol the ClientHello must offer.
    pub alpn: Option<String>,
    /// Index into the service's pools.
    pub pool: usize,
    pub request_headers: Vec<HeaderRule>,
    pub response_headers: Vec<HeaderRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastRequests,
    PowerOfTwo,
    Hash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// Lower-case header name.
    Header(String),
    Cookie(String),
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub sticky_cookie: Option<String>,
    pub sticky_max_age: Option<u64>,
    pub backends: Vec<L7Backend>,
    /// Passive health: after this many consecutive failed requests (0: never) a backend is
    /// ejected from the pool for `eject_for_ms`, as Envoy's outlier detection does.
    pub eject_after: u32,
    pub eject_for_ms: u64,
    /// Whether a 5xx response counts as a failure (connect failures, resets and timeouts
    /// always do).
    pub eject_on_5xx: bool,
    /// Re-encryption: requests reach the backends over TLS.
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Backend {
    pub address: SocketAddr,
    pub weight: u32,
    pub admin: Admin,
    pub health: Health,
}

impl L7Backend {
    /// Whether new requests may go here.
    pub fn takes_requests(&self) -> bool {
        self.admin == Admin::Ready && self.health != Health::Down && self.weight > 0
    }
}

impl L7Setup {
    /// The service listening on `vip`, if any.
    pub fn service_at(&self, ip: IpAddr, port: u16) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.vip.ip() == ip && s.vip.port() == port)
    }
}
