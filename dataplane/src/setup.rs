//! The data path's own description of what it forwards: the node's addresses, conntrack
//! sizing and timeouts, and each service with its backends and their admin and health state.
//! A [`Snapshot`](crate::Snapshot) is built from a [`Setup`]. The control plane makes one
//! from a validated configuration; the dataplane's tests and benches build one directly with
//! the small builder methods here, so this crate needs neither `config` nor serde.

use packet::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The Maglev table size a service gets unless it says otherwise: prime, and large enough for
/// ~650 backends at 1% balance.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// The IANA-assigned GUE port.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// How packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Handed to the offload pool ([`crate::offload`]), which terminates the connection (the
    /// L7 pool); the poll loop neither tracks nor rewrites these frames.
    Offload,
}

impl Forwarding {
    pub fn name(self) -> &'static str {
        match self {
            Forwarding::Nat => "nat",
            Forwarding::Snat => "snat",
            Forwarding::Dsr => "dsr",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue => "gue",
            Forwarding::Offload => "offload",
        }
    }
}

/// What new flows do when every backend that is not drained or disabled is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// Drop new flows (counted as `no_backend`); tracked flows continue.
    Drop,
    /// Ignore health and balance new flows over every eligible backend (fail open).
    All,
}

/// The operator's say over a backend (`sluicectl backend drain|enable|disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// Takes new flows.
    Ready,
    /// Takes no new flows; its tracked flows continue.
    Drain,
    /// Drained past the drain timeout (or removed with force): its tracked flows move to
    /// other backends on their next packet.
    DrainExpired,
    /// Takes no new flows and its tracked flows move at once.
    Disabled,
}

/// What health checks say of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// Not checked yet, or the service has no checks: treated as up.
    Unknown,
}

impl Admin {
    pub fn name(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::DrainExpired => "drain-expired",
            Admin::Disabled => "disabled",
        }
    }
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// The node sluice runs on, as the data path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSetup {
    pub mac: MacAddr,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Where replies to clients go: this MAC if given, else `gateway`'s, which the data
    /// path resolves by ARP / neighbour discovery.
    pub gateway_mac: Option<MacAddr>,
    pub gateway: Option<IpAddr>,
    /// Source ports SNAT allocates from (inclusive), split evenly between workers.
    pub snat_ports: (u16, u16),
    /// The node's source ports the offload pool opens connections from (inclusive), if it
    /// runs: frames to the node on these ports are its replies.
    pub offload_ports: Option<(u16, u16)>,
    /// The largest packet the path to the backends carries (`node.tunnel_mtu`): IPIP/GUE
    /// packets that would be larger once encapsulated are not sent.
    pub tunnel_mtu: Option<u16>,
    /// Too-big tunnel packets without DF leave as outer IPv4 fragments (else dropped).
    pub tunnel_fragment: bool,
    /// A standby instance (VRRP backup): it answers no ARP / neighbour solicitation for a
    /// VIP and forwards nothing for one.
    pub standby: bool,
    /// Raised each time the node becomes active from standby: worker 0 then sends a
    /// gratuitous ARP / unsolicited neighbour advertisement for every VIP, once per value.
    pub announce_epoch: u64,
    /// The 802.1Q VLAN id of sluice's traffic on a tagged link: frames tagged otherwise (or
    /// untagged) are not the balancer's, and frames it makes itself (ARP requests, neighbour
    /// solicitations, announcements, the offload pool's) carry the tag.
    pub vlan: Option<u16>,
}

impl NodeSetup {
    /// A node with this MAC and no addresses, replying to clients through `gateway_mac`, with
    /// the default SNAT port range.
    pub fn new(mac: MacAddr, gateway_mac: MacAddr) -> Self {
        NodeSetup {
            mac,
            ipv4: None,
            ipv6: None,
            gateway_mac: Some(gateway_mac),
            gateway: None,
            snat_ports: (32768, 60999),
            offload_ports: None,
            tunnel_mtu: None,
            tunnel_fragment: false,
            vlan: None,
            standby: false,
            announce_epoch: 0,
        }
    }
}

/// Conntrack sizing and timeouts (seconds), per worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSetup {
    /// Flows tracked per worker; the table is reserved at this size up front.
    pub capacity: usize,
    pub tcp_syn_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_closing_timeout: u64,
    pub udp_timeout: u64,
    /// The percentage of `capacity` half-open flows (TCP, only a SYN seen) may hold.
    pub half_open_percent: u32,
    /// Slots per worker in the table of per-source rate-limit buckets.
    pub rate_limit_sources: usize,
}

impl Default for ConntrackSetup {
    fn default() -> Self {
        ConntrackSetup {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSetup {
    pub address: SocketAddr,
    /// The next hop's MAC; `None` has the data path resolve the (on-link) address itself.
    pub mac: Option<MacAddr>,
    pub weight: u32,
    /// The most flows tracked to it at once, all workers (0: no limit).
    pub max_flows: u32,
    pub admin: Admin,
    pub health: Health,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSetup {
    pub name: String,
    pub vip: SocketAddr,
    /// IP protocol number ([`packet::ipv4::PROTO_TCP`] or [`packet::ipv4::PROTO_UDP`]).
    pub proto: u8,
    pub forwarding: Forwarding,
    /// A prime (the control plane validates it; [`crate::Snapshot::build`] refuses others).
    pub table_size: u32,
    pub gue_port: u16,
    pub all_down: AllDown,
    pub backends: Vec<BackendSetup>,
    /// Token-bucket limits (`[service.rate_limit]`), rates for all workers together.
    pub rate_limit: Option<RateLimitSetup>,
    /// The SYN proxy (`syn_proxy`): `nat` and `snat` TCP services only.
    pub syn_proxy: SynProxySetup,
}

/// When the SYN proxy answers a service's SYNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynProxyMode {
    #[default]
    Off,
    On,
    /// On while SYNs arrive at `on_rate` or faster; off again after [`AUTO_OFF_HOLD_S`]
    /// seconds below `off_rate`.
    ///
    /// [`AUTO_OFF_HOLD_S`]: crate::synproxy::AUTO_OFF_HOLD_S
    Auto {
        on_rate: u32,
        off_rate: u32,
    },
}

/// `syn_proxy` and its keys, as the data path applies them (rates for all workers together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynProxySetup {
    pub mode: SynProxyMode,
    /// The MSS the proxy's SYN-ACKs offer; 0 takes 1460 (IPv4) or 1440 (IPv6).
    pub mss: u16,
}

/// `[service.rate_limit]` as the data path applies it: (rate per second, burst) pairs for
/// all workers together; each worker takes its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitSetup {
    pub new_flows_per_source: Option<(u64, u64)>,
    pub packets: Option<(u64, u64)>,
}

impl ServiceSetup {
    /// A service with no backends yet, the default table size and GUE port, and new flows
    /// dropped when every backend is down.
    pub fn new(name: &str, vip: SocketAddr, proto: u8, forwarding: Forwarding) -> Self {
        ServiceSetup {
            name: name.to_string(),
            vip,
            proto,
            forwarding,
            table_size: DEFAULT_TABLE_SIZE,
            gue_port: DEFAULT_GUE_PORT,
            all_down: AllDown::Drop,
            backends: Vec::new(),
            rate_limit: None,
            syn_proxy: SynProxySetup::default(),
        }
    }

    /// Adds a ready, unchecked backend of weight 1.
    pub fn backend(mut self, address: SocketAddr, mac: Option<MacAddr>) -> Self {
        self.backends.push(BackendSetup {
            address,
            mac,
            weight: 1,
            max_flows: 0,
            admin: Admin::Ready,
            health: Health::Unknown,
        });
        self
    }
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub node: NodeSetup,
    pub conntrack: ConntrackSetup,
    pub services: Vec<ServiceSetup>,
}

impl Setup {
    /// A node with no services and default conntrack sizing.
    pub fn new(node: NodeSetup) -> Self {
        Setup {
            node,
            conntrack: ConntrackSetup::default(),
            services: Vec::new(),
        }
    }

    pub fn service(mut self, s: ServiceSetup) -> Self {
        self.services.push(s);
        self
    }
}
