//! The sluice configuration: the TOML schema (serde), defaults, and validation whose errors
//! name the file, line and key, say what is wrong and how to fix it. A [`Config`] that
//! [`Config::from_toml`] returns is valid: the data path never re-checks it.

use packet::MacAddr;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use toml::Spanned;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
}

impl Forwarding {
    pub fn name(self) -> &'static str {
        match self {
            Forwarding::Nat => "nat",
            Forwarding::Snat => "snat",
            Forwarding::Dsr => "dsr",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue => "gue",
        }
    }
    /// Whether replies come back through the balancer.
    pub fn translates(self) -> bool {
        matches!(self, Forwarding::Nat | Forwarding::Snat)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mac: MacAddr,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Where replies to clients go: this MAC if given, else `gateway`'s, which the data
    /// path resolves by ARP / neighbour discovery. At least one of the two is set.
    pub gateway_mac: Option<MacAddr>,
    pub gateway: Option<IpAddr>,
    /// Source ports SNAT allocates from (inclusive), split evenly between workers.
    pub snat_ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: SocketAddr,
    /// The next hop's MAC; `None` has the data path resolve the (on-link) address itself.
    pub mac: Option<MacAddr>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: SocketAddr,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub table_size: u32,
    pub gue_port: u16,
    pub backends: Vec<Backend>,
    /// Health checking of the backends; `None` treats every backend as up.
    pub health: Option<HealthCheck>,
    /// What new flows do when every backend that is not drained or disabled is down.
    pub all_down: AllDown,
}

/// The policy when every eligible backend of a service is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub socket: std::path::PathBuf,
    /// A group whose members may also use the socket (mode 0660 instead of 0600).
    pub group: Option<String>,
    /// How long a drained backend's tracked flows may continue before they are moved, and
    /// how long `backend remove` (without --force) waits for them, in seconds.
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

/// The Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub listen: SocketAddr,
}

/// Connection tracking sizing and timeouts (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conntrack {
    /// Flows tracked per worker; the table is reserved at this size up front.
    pub capacity: usize,
    pub tcp_syn_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_closing_timeout: u64,
    pub udp_timeout: u64,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack {
            capacity: 262_144,
            tcp_syn_timeout: 30,
            tcp_established_timeout: 900,
            tcp_closing_timeout: 15,
            udp_timeout: 60,
        }
    }
}

/// The port driver `sluice run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpDriver {
    pub interface: String,
    pub mode: XdpMode,
    pub zerocopy: ZeroCopy,
    /// UMEM frames per queue (4 KiB each).
    pub frames: u32,
    /// Entries in each ring (a power of two).
    pub ring: u32,
}

/// Settings of the `pcap` driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapDriver {
    pub input: std::path::PathBuf,
    pub output: std::path::PathBuf,
    /// Play the input this many times faster than captured (1 = real time).
    pub speed: u32,
}

/// DPDK settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dpdk {
    /// Arguments for DPDK's EAL, e.g. `["-a", "0000:3b:00.1"]` or `["--vdev", "net_pcap0,..."]`.
    pub eal_args: Vec<String>,
    /// The ethdev to balance on: its DPDK name (`net_pcap0`) or PCI address (`0000:3b:00.1`).
    pub port: String,
    /// A second ethdev to transmit on (two-armed set-ups); `None` transmits on `port`.
    pub tx_port: Option<String>,
    /// The kernel exception path: a TAP interface of this name (with the node's MAC) gets
    /// every frame that is not the balancer's, and what the kernel sends on it goes out of
    /// the port, so the host's own traffic keeps working on a NIC DPDK owns.
    pub exception_interface: Option<String>,
    /// Packet buffers in the pool (a power of two minus one is most efficient).
    pub mbufs: u32,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
}

/// How `sluice run` drives packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    pub driver: Driver,
    /// CPU cores for workers, one worker (and one RX/TX queue pair) per core.
    pub cores: Vec<usize>,
    pub dpdk: Option<Dpdk>,
    pub pcap: Option<PcapDriver>,
    pub xdp: Option<XdpDriver>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: Node,
    pub conntrack: Conntrack,
    pub services: Vec<Service>,
    /// Present when the file has a `[dataplane]` section (needed by `sluice run`).
    pub dataplane: Option<Dataplane>,
    pub control: Control,
    pub metrics: Option<Metrics>,
}

/// A configuration error: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when read from one.
    pub file: Option<String>,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key path, like `service[0].backend[2].weight`.
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("config");
        match self.line {
            Some(l) => write!(f, "{file}:{l}: ")?,
            None => write!(f, "{file}: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---- the raw, spanned schema ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Spanned<RawNode>,
    #[serde(default)]
    conntrack: Option<Spanned<RawConntrack>>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
    dataplane: Option<Spanned<RawDataplane>>,
    control: Option<Spanned<RawControl>>,
    metrics: Option<Spanned<RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    interval: Option<Spanned<f64>>,
    timeout: Option<Spanned<f64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    jitter: Option<Spanned<f64>>,
    port: Option<Spanned<u16>>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    status: Option<Spanned<Vec<String>>>,
    body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPcapDriver {
    input: Spanned<String>,
    output: Spanned<String>,
    speed: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    driver: Spanned<Driver>,
    cores: Spanned<Vec<usize>>,
    dpdk: Option<Spanned<RawDpdk>>,
    pcap: Option<Spanned<RawPcapDriver>>,
    xdp: Option<Spanned<RawXdp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXdp {
    interface: Spanned<String>,
    mode: Option<Spanned<String>>,
    zerocopy: Option<Spanned<String>>,
    frames: Option<Spanned<u32>>,
    ring: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpdk {
    #[serde(default)]
    eal_args: Vec<String>,
    port: Spanned<String>,
    tx_port: Option<Spanned<String>>,
    exception_interface: Option<Spanned<String>>,
    mbufs: Option<Spanned<u32>>,
    rx_descriptors: Option<Spanned<u16>>,
    tx_descriptors: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    mac: Spanned<String>,
    ipv4: Option<Spanned<String>>,
    ipv6: Option<Spanned<String>>,
    gateway_mac: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    snat_ports: Option<Spanned<[u16; 2]>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    capacity: Option<Spanned<u64>>,
    tcp_syn_timeout: Option<Spanned<u64>>,
    tcp_established_timeout: Option<Spanned<u64>>,
    tcp_closing_timeout: Option<Spanned<u64>>,
    udp_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    vip: Spanned<String>,
    protocol: Spanned<Protocol>,
    forwarding: Spanned<Forwarding>,
    table_size: Option<Spanned<u64>>,
    gue_port: Option<Spanned<u16>>,
    health: Option<Spanned<RawHealth>>,
    all_down: Option<Spanned<AllDown>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<String>,
    mac: Option<Spanned<String>>,
    weight: Option<Spanned<u64>>,
}

/// Collects context (source text, file name) for error construction.
struct Ctx<'a> {
    src: &'a str,
    file: Option<&'a str>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.src
            .get(..offset)
            .map_or(1, |s| s.matches('\n').count() + 1)
    }
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.map(str::to_owned),
            line: Some(self.line_of(span.start)),
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        })
    }
}

/// Table sizes are validated with Maglev's own prime helpers.
pub use maglev::{is_prime, next_prime};

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(name.clone()),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            fix: "check the path given to --config and that the file is readable".into(),
        })?;
        Config::from_toml(&src, Some(&name))
    }

    /// The configuration as TOML that [`Config::from_toml`] reads back to an equal `Config`.
    /// The control socket validates a changed configuration by writing it and reading it
    /// back, so operator changes pass exactly the checks a file does.
    pub fn to_toml(&self) -> String {
        use std::fmt::Write;
        let q = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut o = String::new();
        let n = &self.node;
        let _ = writeln!(o, "[node]\nmac = {}", q(&n.mac.to_string()));
        if let Some(m) = n.gateway_mac {
            let _ = writeln!(o, "gateway_mac = {}", q(&m.to_string()));
        }
        if let Some(a) = n.gateway {
            let _ = writeln!(o, "gateway = {}", q(&a.to_string()));
        }
        if let Some(a) = n.ipv4 {
            let _ = writeln!(o, "ipv4 = {}", q(&a.to_string()));
        }
        if let Some(a) = n.ipv6 {
            let _ = writeln!(o, "ipv6 = {}", q(&a.to_string()));
        }
        let _ = writeln!(o, "snat_ports = [{}, {}]", n.snat_ports.0, n.snat_ports.1);
        let c = &self.conntrack;
        let _ = writeln!(o, "\n[conntrack]\ncapacity = {}\ntcp_syn_timeout = {}\ntcp_established_timeout = {}\ntcp_closing_timeout = {}\nudp_timeout = {}",
            c.capacity, c.tcp_syn_timeout, c.tcp_established_timeout, c.tcp_closing_timeout, c.udp_timeout);
        let ctl = &self.control;
        let _ = writeln!(
            o,
            "\n[control]\nsocket = {}\ndrain_timeout = {}",
            q(&ctl.socket.to_string_lossy()),
            ctl.drain_timeout_s
        );
        if let Some(g) = &ctl.group {
            let _ = writeln!(o, "group = {}", q(g));
        }
        if let Some(m) = &self.metrics {
            let _ = writeln!(o, "\n[metrics]\nlisten = {}", q(&m.listen.to_string()));
        }
        if let Some(d) = &self.dataplane {
            let cores: Vec<String> = d.cores.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(
                o,
                "\n[dataplane]\ndriver = {}\ncores = [{}]",
                q(d.driver.name()),
                cores.join(", ")
            );
            if let Some(x) = &d.dpdk {
                let args: Vec<String> = x.eal_args.iter().map(|a| q(a)).collect();
                let _ = writeln!(o, "\n[dataplane.dpdk]\neal_args = [{}]\nport = {}\nmbufs = {}\nrx_descriptors = {}\ntx_descriptors = {}",
                    args.join(", "), q(&x.port), x.mbufs, x.rx_descriptors, x.tx_descriptors);
                if let Some(t) = &x.tx_port {
                    let _ = writeln!(o, "tx_port = {}", q(t));
                }
                if let Some(t) = &x.exception_interface {
                    let _ = writeln!(o, "exception_interface = {}", q(t));
                }
            }
            if let Some(x) = &d.xdp {
                let _ = writeln!(o, "\n[dataplane.xdp]\ninterface = {}\nmode = {}\nzerocopy = {}\nframes = {}\nring = {}",
                    q(&x.interface), q(x.mode.name()), q(x.zerocopy.name()), x.frames, x.ring);
            }
            if let Some(x) = &d.pcap {
                let _ = writeln!(
                    o,
                    "\n[dataplane.pcap]\ninput = {}\noutput = {}\nspeed = {}",
                    q(&x.input.to_string_lossy()),
                    q(&x.output.to_string_lossy()),
                    x.speed
                );
            }
        }
        for s in &self.services {
            let _ = writeln!(o, "\n[[service]]\nname = {}\nvip = {}\nprotocol = {}\nforwarding = {}\ntable_size = {}\ngue_port = {}\nall_down = {}",
                q(&s.name), q(&s.vip.to_string()), q(s.protocol.name()), q(s.forwarding.name()), s.table_size, s.gue_port, q(s.all_down.name()));
            if let Some(h) = &s.health {
                let secs = |ms: u64| format!("{:?}", ms as f64 / 1000.0);
                let _ = writeln!(o, "\n[service.health]\ntype = {}\ninterval = {}\ntimeout = {}\nrise = {}\nfall = {}\njitter = {}",
                    q(match h.kind { CheckKind::Tcp => "tcp", CheckKind::Http { .. } => "http" }),
                    secs(h.interval_ms), secs(h.timeout_ms), h.rise, h.fall, secs(h.jitter_ms));
                if let Some(p) = h.port {
                    let _ = writeln!(o, "port = {p}");
                }
                if let CheckKind::Http {
                    path,
                    status,
                    body,
                    host,
                } = &h.kind
                {
                    let st: Vec<String> =
                        status.iter().map(|(a, b)| q(&format!("{a}-{b}"))).collect();
                    let _ = writeln!(o, "path = {}\nstatus = [{}]", q(path), st.join(", "));
                    if let Some(b) = body {
                        let _ = writeln!(o, "body = {}", q(b));
                    }
                    if let Some(hv) = host {
                        let _ = writeln!(o, "host = {}", q(hv));
                    }
                }
            }
            for b in &s.backends {
                let _ = writeln!(
                    o,
                    "\n[[service.backend]]\naddress = {}\nweight = {}",
                    q(&b.address.to_string()),
                    b.weight
                );
                if let Some(m) = b.mac {
                    let _ = writeln!(o, "mac = {}", q(&m.to_string()));
                }
            }
        }
        o
    }

    /// Parses and validates TOML text. `file` names the source in errors.
    pub fn from_toml(src: &str, file: Option<&str>) -> Result<Config, ConfigError> {
        let ctx = Ctx { src, file };
        let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigError {
            file: file.map(str::to_owned),
            line: e.span().map(|s| ctx.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
            fix: "see the configuration reference in README.md".into(),
        })?;
        let node = validate_node(&ctx, raw.node.get_ref())?;
        let conntrack = match &raw.conntrack {
            Some(c) => validate_conntrack(&ctx, c.get_ref())?,
            None => Conntrack::default(),
        };
        let mut services: Vec<Service> = Vec::with_capacity(raw.service.len());
        for (i, s) in raw.service.iter().enumerate() {
            let svc = validate_service(&ctx, i, s, &node)?;
            let key = format!("service[{i}]");
            if let Some(o) = services.iter().find(|o| o.name == svc.name) {
                return ctx.err(
                    s.get_ref().name.span(),
                    format!("{key}.name"),
                    format!("service name `{}` is used twice", o.name),
                    "give every [[service]] a distinct name",
                );
            }
            if let Some(o) = services
                .iter()
                .find(|o| o.vip == svc.vip && o.protocol == svc.protocol)
            {
                return ctx.err(
                    s.get_ref().vip.span(),
                    format!("{key}.vip"),
                    format!(
                        "{} {} is already the VIP of service `{}`",
                        svc.protocol.name(),
                        svc.vip,
                        o.name
                    ),
                    "use a different address or port, or merge the two services",
                );
            }
            services.push(svc);
        }
        let resolved: std::collections::HashSet<IpAddr> = services
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter(|b| b.mac.is_none())
            .map(|b| b.address.ip())
            .chain(node.gateway.filter(|_| node.gateway_mac.is_none()))
            .collect();
        if resolved.len() > MAX_RESOLVED_NEXT_HOPS {
            return ctx.err(
                0..0,
                "service",
                format!(
                    "{} backend addresses have no `mac`: sluice resolves at most {MAX_RESOLVED_NEXT_HOPS}",
                    resolved.len()
                ),
                "give the other backends' `mac` in the configuration",
            );
        }
        let dataplane = match &raw.dataplane {
            Some(d) => Some(validate_dataplane(&ctx, d)?),
            None => None,
        };
        let control = match &raw.control {
            Some(c) => validate_control(&ctx, c.get_ref())?,
            None => Control::default(),
        };
        let metrics = match &raw.metrics {
            Some(m) => {
                let l = &m.get_ref().listen;
                let listen = l.get_ref().parse().or_else(|_| {
                    ctx.err(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not an address with a port", l.get_ref()),
                        "write \"127.0.0.1:9100\" (or leave [metrics] out to serve no metrics)",
                    )
                })?;
                Some(Metrics { listen })
            }
            None => None,
        };
        Ok(Config {
            node,
            conntrack,
            services,
            dataplane,
            control,
            metrics,
        })
    }
}

fn parse_mac(ctx: &Ctx, v: &Spanned<String>, key: &str) -> Result<MacAddr, ConfigError> {
    v.get_ref().parse().or_else(|e| {
        ctx.err(
            v.span(),
            key,
            format!("`{}` is not a MAC address: {e}", v.get_ref()),
            "write it as six hex octets, like \"02:00:00:00:00:01\"",
        )
    })
}

/// The [node] key whose address the data path needs to resolve `a` (ARP / neighbour
/// solicitations come from it), if that address is not set.
fn resolver_missing(a: IpAddr, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Option<&'static str> {
    match a {
        IpAddr::V4(_) => v4.is_none().then_some("node.ipv4"),
        IpAddr::V6(_) => v6.is_none().then_some("node.ipv6"),
    }
}

fn validate_node(ctx: &Ctx, n: &RawNode) -> Result<Node, ConfigError> {
    let mac = parse_mac(ctx, &n.mac, "node.mac")?;
    let gateway_mac = match &n.gateway_mac {
        Some(m) => Some(parse_mac(ctx, m, "node.gateway_mac")?),
        None => None,
    };
    let ipv4 = match &n.ipv4 {
        Some(v) => Some(v.get_ref().parse::<Ipv4Addr>().or_else(|_| {
            ctx.err(
                v.span(),
                "node.ipv4",
                format!("`{}` is not an IPv4 address", v.get_ref()),
                "write a dotted quad such as \"192.0.2.1\"",
            )
        })?),
        None => None,
    };
    let ipv6 = match &n.ipv6 {
        Some(v) => Some(v.get_ref().parse::<Ipv6Addr>().or_else(|_| {
            ctx.err(
                v.span(),
                "node.ipv6",
                format!("`{}` is not an IPv6 address", v.get_ref()),
                "write it without brackets, such as \"2001:db8::1\"",
            )
        })?),
        None => None,
    };
    let snat_ports = match &n.snat_ports {
        Some(r) => {
            let [lo, hi] = *r.get_ref();
            if lo == 0 || lo >= hi || (hi - lo) < 63 {
                return ctx.err(
                    r.span(),
                    "node.snat_ports",
                    format!("[{lo}, {hi}] is not a usable port range"),
                    "give [low, high] with 0 < low and at least 64 ports, such as [1024, 65535]",
                );
            }
            (lo, hi)
        }
        None => (1024, 32767),
    };
    let gateway = match &n.gateway {
        Some(v) => {
            let a: IpAddr = v.get_ref().parse().or_else(|_| {
                ctx.err(
                    v.span(),
                    "node.gateway",
                    format!("`{}` is not an IP address", v.get_ref()),
                    "give the router's address, such as \"192.0.2.254\" or \"2001:db8::fe\"",
                )
            })?;
            if let Some(k) = resolver_missing(a, ipv4, ipv6) {
                return ctx.err(
                    v.span(),
                    "node.gateway",
                    format!("resolving the gateway {a} needs the node's own {} address, and `{k}` is not set", family(a)),
                    format!("set `{k}` in [node] (sluice's requests come from it), or give `gateway_mac` instead"),
                );
            }
            Some(a)
        }
        None => None,
    };
    if gateway.is_none() && gateway_mac.is_none() {
        return ctx.err(
            n.mac.span(),
            "node.gateway",
            "[node] names no next hop for replies to clients",
            "set `gateway` to the router's address (sluice resolves its MAC by ARP / neighbour discovery), or `gateway_mac` to its MAC",
        );
    }
    Ok(Node {
        mac,
        ipv4,
        ipv6,
        gateway_mac,
        gateway,
        snat_ports,
    })
}

fn validate_conntrack(ctx: &Ctx, c: &RawConntrack) -> Result<Conntrack, ConfigError> {
    let d = Conntrack::default();
    let capacity = match &c.capacity {
        Some(v) if *v.get_ref() == 0 || *v.get_ref() > 100_000_000 => {
            return ctx.err(
                v.span(),
                "conntrack.capacity",
                format!("{} flows per worker is out of range", v.get_ref()),
                "give between 1 and 100000000 flows per worker (each costs about 100 bytes)",
            );
        }
        Some(v) => *v.get_ref() as usize,
        None => d.capacity,
    };
    let secs = |v: &Option<Spanned<u64>>, key: &str, default: u64| -> Result<u64, ConfigError> {
        match v {
            Some(s) if *s.get_ref() == 0 || *s.get_ref() > 604_800 => ctx.err(
                s.span(),
                format!("conntrack.{key}"),
                format!("timeout {} s is out of range", s.get_ref()),
                "give whole seconds between 1 and 604800 (a week)",
            ),
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        }
    };
    Ok(Conntrack {
        capacity,
        tcp_syn_timeout: secs(&c.tcp_syn_timeout, "tcp_syn_timeout", d.tcp_syn_timeout)?,
        tcp_established_timeout: secs(
            &c.tcp_established_timeout,
            "tcp_established_timeout",
            d.tcp_established_timeout,
        )?,
        tcp_closing_timeout: secs(
            &c.tcp_closing_timeout,
            "tcp_closing_timeout",
            d.tcp_closing_timeout,
        )?,
        udp_timeout: secs(&c.udp_timeout, "udp_timeout", d.udp_timeout)?,
    })
}

fn validate_dataplane(ctx: &Ctx, d: &Spanned<RawDataplane>) -> Result<Dataplane, ConfigError> {
    let r = d.get_ref();
    let cores = r.cores.get_ref().clone();
    if cores.is_empty() || cores.len() > 64 {
        return ctx.err(
            r.cores.span(),
            "dataplane.cores",
            format!("{} worker cores given", cores.len()),
            "list 1 to 64 CPU core numbers, one worker each, such as [1, 2]",
        );
    }
    for (i, c) in cores.iter().enumerate() {
        if cores[..i].contains(c) {
            return ctx.err(
                r.cores.span(),
                "dataplane.cores",
                format!("core {c} is listed twice"),
                "list each core once: every worker owns its core",
            );
        }
    }
    let pcap = match (&r.pcap, *r.driver.get_ref()) {
        (None, Driver::Pcap) => {
            return ctx.err(
                r.driver.span(),
                "dataplane.driver",
                "driver \"pcap\" needs a [dataplane.pcap] section",
                "add [dataplane.pcap] with `input` (a capture to play) and `output` (where to write what is sent)",
            )
        }
        (Some(x), _) => {
            let x = x.get_ref();
            for (v, k) in [(&x.input, "input"), (&x.output, "output")] {
                if v.get_ref().trim().is_empty() {
                    return ctx.err(v.span(), format!("dataplane.pcap.{k}"), "the path is empty", "give a capture file path");
                }
            }
            let speed = match &x.speed {
                Some(v) if *v.get_ref() == 0 || *v.get_ref() > 1000 => return ctx.err(v.span(), "dataplane.pcap.speed", format!("speed {} is out of range", v.get_ref()), "give 1 (real time) to 1000"),
                Some(v) => *v.get_ref(),
                None => 1,
            };
            Some(PcapDriver { input: x.input.get_ref().into(), output: x.output.get_ref().into(), speed })
        }
        (None, _) => None,
    };
    if *r.driver.get_ref() == Driver::Pcap && cores.len() != 1 {
        return ctx.err(
            r.cores.span(),
            "dataplane.cores",
            format!(
                "driver \"pcap\" plays one capture on one worker, and {} cores are listed",
                cores.len()
            ),
            "list exactly one core, such as [0]",
        );
    }
    let xdp = match (&r.xdp, *r.driver.get_ref()) {
        (None, d @ (Driver::Xdp | Driver::Auto)) => {
            return ctx.err(
                r.driver.span(),
                "dataplane.driver",
                format!("driver \"{}\" needs a [dataplane.xdp] section", d.name()),
                "add [dataplane.xdp] with `interface`, the Linux interface to balance on",
            )
        }
        (Some(x), _) => {
            let x = x.get_ref();
            let i = x.interface.get_ref();
            if i.is_empty()
                || i.len() > 15
                || i.contains('/')
                || i.chars().any(|c| c.is_whitespace())
            {
                return ctx.err(
                    x.interface.span(),
                    "dataplane.xdp.interface",
                    format!("`{i}` is not an interface name"),
                    "give the Linux interface name, such as \"eth0\" (see `ip link`)",
                );
            }
            /// The setting of `key` named by `v` among `all` (by name), "auto" when absent.
            fn pick<T: Copy>(
                ctx: &Ctx,
                v: &Option<Spanned<String>>,
                key: &str,
                all: &[T],
                name: fn(T) -> &'static str,
            ) -> Result<T, ConfigError> {
                let Some(m) = v else {
                    return Ok(all[0]);
                };
                match all.iter().find(|t| name(**t) == m.get_ref().as_str()) {
                    Some(t) => Ok(*t),
                    None => ctx.err(
                        m.span(),
                        format!("dataplane.xdp.{key}"),
                        format!("`{}` is not a {key} setting", m.get_ref()),
                        format!(
                            "use one of: {}",
                            all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", ")
                        ),
                    ),
                }
            }
            let frames = match &x.frames {
                Some(f) if *f.get_ref() < 1024 || *f.get_ref() > 1 << 20 => {
                    return ctx.err(
                        f.span(),
                        "dataplane.xdp.frames",
                        format!("{} UMEM frames is out of range", f.get_ref()),
                        "give 1024 to 1048576 frames per queue (4 KiB each)",
                    )
                }
                Some(f) => *f.get_ref(),
                None => 8192,
            };
            let ring = match &x.ring {
                Some(f)
                    if *f.get_ref() < 64
                        || *f.get_ref() > 16384
                        || !f.get_ref().is_power_of_two()
                        || *f.get_ref() * 2 > frames =>
                {
                    return ctx.err(
                        f.span(),
                        "dataplane.xdp.ring",
                        format!("{} ring entries is not usable", f.get_ref()),
                        "give a power of two from 64 to 16384, at most half the frames",
                    )
                }
                Some(f) => *f.get_ref(),
                None => 2048,
            };
            Some(XdpDriver {
                interface: i.clone(),
                mode: pick(ctx, &x.mode, "mode", &XdpMode::ALL, XdpMode::name)?,
                zerocopy: pick(ctx, &x.zerocopy, "zerocopy", &ZeroCopy::ALL, ZeroCopy::name)?,
                frames,
                ring,
            })
        }
        (None, _) => None,
    };
    let dpdk = match (&r.dpdk, *r.driver.get_ref()) {
        (None, Driver::Dpdk | Driver::Auto) => {
            return ctx.err(
                r.driver.span(),
                "dataplane.driver",
                "drivers \"dpdk\" and \"auto\" need a [dataplane.dpdk] section",
                "add [dataplane.dpdk] with at least `port`, the ethdev name or PCI address",
            )
        }
        (None, _) => None,
        (Some(x), _) => {
            let x = x.get_ref();
            if x.port.get_ref().trim().is_empty() {
                return ctx.err(x.port.span(), "dataplane.dpdk.port", "the port name is empty", "give the ethdev name (like \"net_pcap0\") or PCI address (like \"0000:3b:00.1\")");
            }
            let mbufs = match &x.mbufs {
                Some(m) if *m.get_ref() < 1023 => return ctx.err(
                    m.span(),
                    "dataplane.dpdk.mbufs",
                    format!("{} packet buffers is too few", m.get_ref()),
                    "give at least 1023; descriptors of every queue plus bursts in flight must fit",
                ),
                Some(m) => *m.get_ref(),
                None => 16383,
            };
            let desc = |v: &Option<Spanned<u16>>, key: &str| -> Result<u16, ConfigError> {
                match v {
                    Some(n) if *n.get_ref() < 64 || !n.get_ref().is_power_of_two() => ctx.err(
                        n.span(),
                        format!("dataplane.dpdk.{key}"),
                        format!("{} descriptors is not usable", n.get_ref()),
                        "give a power of two from 64 to 32768, such as 1024",
                    ),
                    Some(n) => Ok(*n.get_ref()),
                    None => Ok(1024),
                }
            };
            if let Some(t) = &x.tx_port {
                if t.get_ref().trim().is_empty() || t.get_ref() == x.port.get_ref() {
                    return ctx.err(
                        t.span(),
                        "dataplane.dpdk.tx_port",
                        format!("`{}` is not a second port", t.get_ref()),
                        "name another ethdev to transmit on, or leave tx_port out to transmit on `port`",
                    );
                }
            }
            if let Some(e) = &x.exception_interface {
                let i = e.get_ref();
                if i.is_empty()
                    || i.len() > 15
                    || i.contains('/')
                    || i.chars().any(|c| c.is_whitespace())
                {
                    return ctx.err(e.span(), "dataplane.dpdk.exception_interface", format!("`{i}` is not a usable interface name"), "give a name of 1 to 15 characters for the TAP interface, such as \"sluice0\"");
                }
            }
            Some(Dpdk {
                eal_args: x.eal_args.clone(),
                port: x.port.get_ref().clone(),
                tx_port: x.tx_port.as_ref().map(|t| t.get_ref().clone()),
                exception_interface: x.exception_interface.as_ref().map(|t| t.get_ref().clone()),
                mbufs,
                rx_descriptors: desc(&x.rx_descriptors, "rx_descriptors")?,
                tx_descriptors: desc(&x.tx_descriptors, "tx_descriptors")?,
            })
        }
    };
    Ok(Dataplane {
        driver: *r.driver.get_ref(),
        cores,
        dpdk,
        pcap,
        xdp,
    })
}

fn validate_control(ctx: &Ctx, c: &RawControl) -> Result<Control, ConfigError> {
    let d = Control::default();
    let socket =
        match &c.socket {
            Some(p) if !p.get_ref().starts_with('/') || p.get_ref().len() > 100 => return ctx.err(
                p.span(),
                "control.socket",
                format!("`{}` is not a usable socket path", p.get_ref()),
                "give an absolute path of at most 100 bytes, such as \"/run/sluice/control.sock\"",
            ),
            Some(p) => p.get_ref().into(),
            None => d.socket,
        };
    let group = match &c.group {
        Some(g) if g.get_ref().is_empty() => {
            return ctx.err(
                g.span(),
                "control.group",
                "the group name is empty",
                "name a group, or leave `group` out for mode 0600 (root only)",
            )
        }
        Some(g) => Some(g.get_ref().clone()),
        None => None,
    };
    let drain_timeout_s = match &c.drain_timeout {
        Some(v) if *v.get_ref() > 86_400 => {
            return ctx.err(
                v.span(),
                "control.drain_timeout",
                format!("{} s is out of range", v.get_ref()),
                "give whole seconds from 0 to 86400 (a day)",
            )
        }
        Some(v) => *v.get_ref(),
        None => d.drain_timeout_s,
    };
    Ok(Control {
        socket,
        group,
        drain_timeout_s,
    })
}

/// Parses a status range such as "200", "200-299" or "2xx".
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let ok = |v: u16| (100..=599).contains(&v);
    if let Some(c) = s.strip_suffix("xx") {
        let d: u16 = c.parse().ok()?;
        return ok(d * 100).then_some((d * 100, d * 100 + 99));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (ok(a) && ok(b) && a <= b).then_some((a, b))
        }
        None => {
            let v: u16 = s.parse().ok()?;
            ok(v).then_some((v, v))
        }
    }
}

fn validate_health(ctx: &Ctx, key: &str, h: &RawHealth) -> Result<HealthCheck, ConfigError> {
    let key = format!("{key}.health");
    let ms =
        |v: &Option<Spanned<f64>>, k: &str, default: u64, min: f64| -> Result<u64, ConfigError> {
            match v {
                Some(x)
                    if !(x.get_ref().is_finite()
                        && *x.get_ref() >= min
                        && *x.get_ref() <= 3600.0) =>
                {
                    ctx.err(
                        x.span(),
                        format!("{key}.{k}"),
                        format!("{} s is out of range", x.get_ref()),
                        format!("give seconds from {min} to 3600, such as 2 or 0.5"),
                    )
                }
                Some(x) => Ok((x.get_ref() * 1000.0).round() as u64),
                None => Ok(default),
            }
        };
    let interval_ms = ms(&h.interval, "interval", 2000, 0.05)?;
    let timeout_ms = ms(&h.timeout, "timeout", 1000, 0.01)?;
    let jitter_ms = ms(&h.jitter, "jitter", 0, 0.0)?;
    if timeout_ms > interval_ms {
        return ctx.err(
            h.timeout.as_ref().map_or(h.kind.span(), |t| t.span()),
            format!("{key}.timeout"),
            format!("the timeout ({timeout_ms} ms) is longer than the interval ({interval_ms} ms)"),
            "make the timeout at most the interval",
        );
    }
    let count = |v: &Option<Spanned<u32>>, k: &str, default: u32| -> Result<u32, ConfigError> {
        match v {
            Some(x) if *x.get_ref() == 0 || *x.get_ref() > 100 => ctx.err(
                x.span(),
                format!("{key}.{k}"),
                format!("{} is out of range", x.get_ref()),
                "give a count of consecutive results from 1 to 100",
            ),
            Some(x) => Ok(*x.get_ref()),
            None => Ok(default),
        }
    };
    let rise = count(&h.rise, "rise", 2)?;
    let fall = count(&h.fall, "fall", 3)?;
    let port = match &h.port {
        Some(p) if *p.get_ref() == 0 => {
            return ctx.err(
                p.span(),
                format!("{key}.port"),
                "port 0 cannot be checked",
                "give the port the check connects to, or leave it out to use the backend's",
            )
        }
        Some(p) => Some(*p.get_ref()),
        None => None,
    };
    let http_only = [
        (h.path.as_ref().map(|v| v.span()), "path"),
        (h.status.as_ref().map(|v| v.span()), "status"),
        (h.body.as_ref().map(|v| v.span()), "body"),
        (h.host.as_ref().map(|v| v.span()), "host"),
    ];
    let kind = match h.kind.get_ref().as_str() {
        "tcp" => {
            if let Some((Some(span), k)) = http_only.into_iter().find(|(s, _)| s.is_some()) {
                return ctx.err(
                    span,
                    format!("{key}.{k}"),
                    format!("`{k}` applies to type = \"http\" checks only"),
                    "remove it, or set type = \"http\"",
                );
            }
            CheckKind::Tcp
        }
        "http" => {
            let path = match &h.path {
                Some(p)
                    if !p.get_ref().starts_with('/')
                        || p.get_ref()
                            .chars()
                            .any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    return ctx.err(
                        p.span(),
                        format!("{key}.path"),
                        format!("`{}` is not a request path", p.get_ref()),
                        "give a path starting with '/', without spaces, such as \"/healthz\"",
                    )
                }
                Some(p) => p.get_ref().clone(),
                None => "/".into(),
            };
            let status = match &h.status {
                Some(v) => {
                    let mut out = Vec::new();
                    for r in v.get_ref() {
                        match parse_status_range(r) {
                            Some(x) => out.push(x),
                            None => {
                                return ctx.err(
                                    v.span(),
                                    format!("{key}.status"),
                                    format!("`{r}` is not a status or status range"),
                                    "write statuses as \"200\", \"200-299\" or \"2xx\"",
                                )
                            }
                        }
                    }
                    if out.is_empty() {
                        return ctx.err(
                            v.span(),
                            format!("{key}.status"),
                            "no statuses given",
                            "list at least one, such as [\"200-399\"]",
                        );
                    }
                    out
                }
                None => vec![(200, 399)],
            };
            if let Some(hv) = &h.host {
                if hv.get_ref().is_empty()
                    || hv
                        .get_ref()
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return ctx.err(
                        hv.span(),
                        format!("{key}.host"),
                        format!("`{}` is not a Host header value", hv.get_ref()),
                        "give a host name such as \"www.example.com\"",
                    );
                }
            }
            CheckKind::Http {
                path,
                status,
                body: h.body.as_ref().map(|b| b.get_ref().clone()),
                host: h.host.as_ref().map(|b| b.get_ref().clone()),
            }
        }
        other => {
            return ctx.err(
                h.kind.span(),
                format!("{key}.type"),
                format!("`{other}` is not a health check type"),
                "use \"tcp\" (connect) or \"http\" (GET with expected status)",
            )
        }
    };
    Ok(HealthCheck {
        kind,
        interval_ms,
        timeout_ms,
        rise,
        fall,
        jitter_ms,
        port,
    })
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn validate_service(
    ctx: &Ctx,
    i: usize,
    s: &Spanned<RawService>,
    node: &Node,
) -> Result<Service, ConfigError> {
    let key = format!("service[{i}]");
    let r = s.get_ref();
    let name = r.name.get_ref().clone();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return ctx.err(
            r.name.span(),
            format!("{key}.name"),
            format!("`{name}` is not a valid service name"),
            "use 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    let key = format!("service[{i}] (\"{name}\")");
    let vip: SocketAddr = r.vip.get_ref().parse().or_else(|_| {
        ctx.err(
            r.vip.span(),
            format!("{key}.vip"),
            format!("`{}` is not an address with a port", r.vip.get_ref()),
            "write \"198.51.100.10:80\" or \"[2001:db8:100::10]:80\"",
        )
    })?;
    if vip.port() == 0 {
        return ctx.err(
            r.vip.span(),
            format!("{key}.vip"),
            "port 0 cannot be a service port",
            "give the port clients connect to, such as \":80\"",
        );
    }
    let protocol = *r.protocol.get_ref();
    let forwarding = *r.forwarding.get_ref();
    let table_size = match &r.table_size {
        Some(t) => {
            let n = *t.get_ref();
            if !is_prime(n) || n > MAX_TABLE_SIZE as u64 || n < 7 {
                let hint = if n <= MAX_TABLE_SIZE as u64 {
                    format!(
                        "the nearest prime at or above is {}; ",
                        next_prime(n.max(7))
                    )
                } else {
                    String::new()
                };
                return ctx.err(
                    t.span(),
                    format!("{key}.table_size"),
                    format!("Maglev table size {n} must be a prime between 7 and {MAX_TABLE_SIZE}"),
                    format!("{hint}common choices are 65537 (default) and 655373"),
                );
            }
            n as u32
        }
        None => DEFAULT_TABLE_SIZE,
    };
    let gue_port = match &r.gue_port {
        Some(p) if *p.get_ref() == 0 => return ctx.err(p.span(), format!("{key}.gue_port"), "port 0 cannot carry GUE", format!("use the GUE port your backends' `ip fou add port` listens on (IANA's is {DEFAULT_GUE_PORT})")),
        Some(p) => *p.get_ref(),
        None => DEFAULT_GUE_PORT,
    };
    let node_addr_needed = matches!(
        forwarding,
        Forwarding::Snat | Forwarding::Ipip | Forwarding::Gue
    );
    if node_addr_needed {
        let missing = match vip {
            SocketAddr::V4(_) => node.ipv4.is_none().then_some("node.ipv4"),
            SocketAddr::V6(_) => node.ipv6.is_none().then_some("node.ipv6"),
        };
        if let Some(k) = missing {
            return ctx.err(
                r.forwarding.span(),
                format!("{key}.forwarding"),
                format!(
                    "forwarding `{}` sends from the node's own {} address, and `{k}` is not set",
                    forwarding.name(),
                    family(vip.ip())
                ),
                format!("set `{k}` in [node]"),
            );
        }
    }
    if r.backend.is_empty() {
        return ctx.err(
            s.span(),
            key,
            format!("service `{name}` has no backends"),
            "add at least one [[service.backend]] table after the service",
        );
    }
    if r.backend.len() > MAX_BACKENDS {
        return ctx.err(
            s.span(),
            key,
            format!(
                "{} backends is more than the {MAX_BACKENDS} a service can have",
                r.backend.len()
            ),
            "split the backends over several services",
        );
    }
    let mut backends: Vec<Backend> = Vec::with_capacity(r.backend.len());
    for (j, b) in r.backend.iter().enumerate() {
        let bkey = format!("{key}.backend[{j}]");
        let b = b.get_ref();
        let address: SocketAddr = b.address.get_ref().parse().or_else(|_| {
            ctx.err(
                b.address.span(),
                format!("{bkey}.address"),
                format!("`{}` is not an address with a port", b.address.get_ref()),
                "write \"10.1.0.1:8080\" or \"[2001:db8:1::1]:8080\"",
            )
        })?;
        if address.is_ipv4() != vip.is_ipv4() {
            return ctx.err(b.address.span(), format!("{bkey}.address"), format!("backend {address} is {} but the VIP {vip} is {}", family(address.ip()), family(vip.ip())), "give backends of the VIP's address family, or make a separate service for the other family");
        }
        if address.port() == 0 {
            return ctx.err(
                b.address.span(),
                format!("{bkey}.address"),
                "port 0 cannot be a backend port",
                "give the port the backend listens on",
            );
        }
        if !forwarding.translates() && address.port() != vip.port() {
            return ctx.err(
                b.address.span(),
                format!("{bkey}.address"),
                format!("forwarding `{}` delivers packets with the VIP's port unchanged, so the backend port must be {} (got {})", forwarding.name(), vip.port(), address.port()),
                format!("use port {} here, or forwarding = \"nat\" to translate ports", vip.port()),
            );
        }
        if backends.iter().any(|o| o.address == address) {
            return ctx.err(
                b.address.span(),
                format!("{bkey}.address"),
                format!("backend {address} is listed twice in service `{name}`"),
                "list each backend once; use `weight` to give it a larger share",
            );
        }
        let mac = match &b.mac {
            Some(m) => Some(parse_mac(ctx, m, &format!("{bkey}.mac"))?),
            None => {
                if let Some(k) = resolver_missing(address.ip(), node.ipv4, node.ipv6) {
                    return ctx.err(
                        b.address.span(),
                        format!("{bkey}.mac"),
                        format!("backend {address} has no `mac`, and resolving it needs the node's own {} address, but `{k}` is not set", family(address.ip())),
                        format!("set `{k}` in [node] (sluice's ARP / neighbour requests come from it), or give the backend's `mac`"),
                    );
                }
                None
            }
        };
        let weight = match &b.weight {
            Some(w) if *w.get_ref() == 0 || *w.get_ref() > 65535 => {
                return ctx.err(
                    w.span(),
                    format!("{bkey}.weight"),
                    format!("weight {} is out of range", w.get_ref()),
                    "give a weight from 1 to 65535; to stop new flows to a backend, drain it (sluicectl backend drain) or remove it",
                );
            }
            Some(w) => *w.get_ref() as u32,
            None => 1,
        };
        backends.push(Backend {
            address,
            mac,
            weight,
        });
    }
    if (table_size as usize) < backends.len() * 100 {
        return ctx.err(
            r.table_size.as_ref().map_or(s.span(), |t| t.span()),
            format!("{key}.table_size"),
            format!("a Maglev table of {table_size} entries is too small for {} backends (it needs at least 100 entries per backend to balance)", backends.len()),
            format!("set table_size to a prime of at least {}", next_prime(backends.len() as u64 * 100)),
        );
    }
    let health = match &r.health {
        Some(h) => Some(validate_health(ctx, &key, h.get_ref())?),
        None => None,
    };
    Ok(Service {
        name,
        vip,
        protocol,
        forwarding,
        table_size,
        gue_port,
        backends,
        health,
        all_down: r.all_down.as_ref().map_or(AllDown::Drop, |a| *a.get_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
ipv6 = "2001:db8::1"
gateway_mac = "02:00:00:00:00:fe"

[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = 65537

[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
weight = 1

[[service.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
weight = 3

[[service]]
name = "web6"
vip = "[2001:db8:100::10]:80"
protocol = "tcp"
forwarding = "dsr"

[[service.backend]]
address = "[2001:db8:1::1]:80"
mac = "02:00:00:00:01:01"
"#;

    fn err(src: &str) -> ConfigError {
        Config::from_toml(src, Some("t.toml")).unwrap_err()
    }

    /// `mac` may be left out (sluice resolves the next hop), given the node's address of the
    /// family to ask from; the gateway likewise by address.
    #[test]
    fn next_hops_without_mac_need_the_nodes_address() {
        let no_mac = GOOD.replace("mac = \"02:00:00:00:01:01\"\n", "").replace(
            "gateway_mac = \"02:00:00:00:00:fe\"",
            "gateway = \"2001:db8::fe\"",
        );
        let c = Config::from_toml(&no_mac, None).unwrap();
        assert_eq!(c.services[0].backends[0].mac, None);
        assert_eq!(c.services[1].backends[0].mac, None);
        assert!(c.services[0].backends[1].mac.is_some());
        assert_eq!(c.node.gateway, Some("2001:db8::fe".parse().unwrap()));
        assert_eq!(Config::from_toml(&c.to_toml(), None).unwrap(), c);
        let e = err(&no_mac.replace("ipv6 = \"2001:db8::1\"\n", ""));
        assert!(
            e.key.ends_with("node.gateway") && e.fix.contains("node.ipv6"),
            "{e}"
        );
        let e = err(&no_mac.replace("ipv6 = \"2001:db8::1\"\n", "").replace(
            "gateway = \"2001:db8::fe\"",
            "gateway_mac = \"02:00:00:00:00:fe\"",
        ));
        assert!(
            e.key.starts_with("service[1]") && e.key.ends_with("backend[0].mac"),
            "{e}"
        );
        assert!(
            e.message.contains("[2001:db8:1::1]:80") && e.fix.contains("node.ipv6"),
            "{e}"
        );
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::from_toml(GOOD, None).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].backends[1].weight, 3);
        assert_eq!(c.services[1].table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(c.services[1].backends[0].weight, 1);
        assert_eq!(c.conntrack, Conntrack::default());
        assert_eq!(c.node.snat_ports, (1024, 32767));
    }

    #[test]
    fn non_prime_table_size_names_key_line_and_fix() {
        let e = err(&GOOD.replace("table_size = 65537", "table_size = 65536"));
        assert_eq!(e.line, Some(13));
        assert_eq!(e.key, "service[0] (\"web\").table_size");
        assert!(e.to_string().contains("65537"), "{e}");
        assert!(e.to_string().starts_with("t.toml:13: "), "{e}");
    }

    #[test]
    fn large_primes_are_accepted() {
        let c = Config::from_toml(
            &GOOD.replace("table_size = 65537", "table_size = 655373"),
            None,
        )
        .unwrap();
        assert_eq!(c.services[0].table_size, 655373);
    }

    #[test]
    fn each_bad_value_is_reported_at_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("weight = 3", "weight = 0", "backend[1].weight"),
            (
                "\"10.1.0.2:8080\"",
                "\"10.1.0.1:8080\"",
                "backend[1].address",
            ),
            (
                "\"10.1.0.2:8080\"",
                "\"[2001:db8::5]:8080\"",
                "backend[1].address",
            ),
            (
                "\"02:00:00:00:01:02\"",
                "\"02:00:00:01:02\"",
                "backend[1].mac",
            ),
            (
                "vip = \"198.51.100.10:80\"",
                "vip = \"198.51.100.10\"",
                "vip",
            ),
            (
                "\"[2001:db8:1::1]:80\"",
                "\"[2001:db8:1::1]:8080\"",
                "backend[0].address",
            ),
            ("name = \"web6\"", "name = \"web\"", "service[1].name"),
            (
                "gateway_mac = \"02:00:00:00:00:fe\"",
                "gateway_mac = \"nope\"",
                "node.gateway_mac",
            ),
            // No next hop for replies at all.
            ("gateway_mac = \"02:00:00:00:00:fe\"", "", "node.gateway"),
            (
                "gateway_mac = \"02:00:00:00:00:fe\"",
                "gateway = \"router\"",
                "node.gateway",
            ),
        ];
        for (from, to, key) in cases {
            let e = err(&GOOD.replacen(from, to, 1));
            assert!(e.key.ends_with(key), "{from} -> {to}: key {} in {e}", e.key);
            assert!(e.line.is_some() && !e.fix.is_empty(), "{e}");
        }
    }

    #[test]
    fn syntax_unknown_keys_and_enums_report_lines() {
        let e = err(&GOOD.replace("table_size = 65537", "tabel_size = 65537"));
        assert_eq!(e.line, Some(13));
        assert!(e.message.contains("tabel_size"), "{e}");
        let e = err(&GOOD.replace("forwarding = \"nat\"", "forwarding = \"tunnel\""));
        assert!(
            e.message.contains("tunnel") && e.message.contains("snat"),
            "{e}"
        );
        assert_eq!(e.line, Some(12));
        let e = err("[node\nmac=1");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn snat_without_node_address_is_refused() {
        let src = GOOD
            .replace("ipv4 = \"192.0.2.1\"\n", "")
            .replace("forwarding = \"nat\"", "forwarding = \"snat\"");
        let e = err(&src);
        assert!(
            e.message.contains("node.ipv4") && e.fix.contains("node.ipv4"),
            "{e}"
        );
    }

    #[test]
    fn service_without_backends_and_too_small_table() {
        let e = err(&GOOD[..GOOD.find("[[service.backend]]").unwrap()]);
        assert!(e.message.contains("no backends"), "{e}");
        let e = err(&GOOD.replace("table_size = 65537", "table_size = 101"));
        assert!(e.message.contains("too small"), "{e}");
    }

    #[test]
    fn dataplane_section() {
        let dp = "\n[dataplane]\ndriver = \"dpdk\"\ncores = [1, 2]\n[dataplane.dpdk]\neal_args = [\"--in-memory\"]\nport = \"net_null0\"\n";
        let c = Config::from_toml(&format!("{GOOD}{dp}"), None).unwrap();
        let d = c.dataplane.unwrap();
        assert_eq!(
            (
                d.cores,
                d.dpdk.as_ref().unwrap().mbufs,
                d.dpdk.unwrap().rx_descriptors
            ),
            (vec![1, 2], 16383, 1024)
        );
        assert!(Config::from_toml(GOOD, None).unwrap().dataplane.is_none());
        let e = err(&format!("{GOOD}{}", dp.replace("[1, 2]", "[1, 1]")));
        assert!(
            e.key == "dataplane.cores" && e.message.contains("twice"),
            "{e}"
        );
        let e = err(&format!(
            "{GOOD}{}",
            dp.replace(
                "port = \"net_null0\"",
                "port = \"net_null0\"\nrx_descriptors = 1000"
            )
        ));
        assert!(e.key.ends_with("rx_descriptors"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"dpdk\"\ncores = [1]\n"
        ));
        assert!(e.message.contains("[dataplane.dpdk]"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"netmap\"\ncores = [1]\n"
        ));
        assert!(
            e.message.contains("netmap") && e.message.contains("dpdk"),
            "{e}"
        );
    }

    #[test]
    fn to_toml_reads_back_equal() {
        let src = format!("{GOOD}\n[control]\nsocket = \"/tmp/x.sock\"\ndrain_timeout = 5\ngroup = \"adm\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n[dataplane]\ndriver = \"pcap\"\ncores = [0]\n[dataplane.pcap]\ninput = \"in \\\"q\\\".pcap\"\noutput = \"o.pcap\"\n[dataplane.xdp]\ninterface = \"eth0\"\nmode = \"generic\"\n");
        let mut c = Config::from_toml(&src, None).unwrap();
        c.services[0].health = Some(HealthCheck {
            kind: CheckKind::Http {
                path: "/h".into(),
                status: vec![(200, 299), (404, 404)],
                body: Some("o\"k".into()),
                host: Some("a.example".into()),
            },
            interval_ms: 1500,
            timeout_ms: 250,
            rise: 3,
            fall: 4,
            jitter_ms: 100,
            port: Some(9000),
        });
        c.services[1].health = Some(HealthCheck {
            kind: CheckKind::Tcp,
            interval_ms: 50,
            timeout_ms: 10,
            rise: 1,
            fall: 1,
            jitter_ms: 0,
            port: None,
        });
        c.services[1].all_down = AllDown::All;
        let text = c.to_toml();
        let back = Config::from_toml(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, c);
    }

    #[test]
    fn health_and_control_errors_name_the_key() {
        let svc = GOOD.replace(
            "table_size = 65537\n",
            "table_size = 65537\n[service.health]\nTYPE\n",
        );
        let e = err(&svc.replace("TYPE", "type = \"icmp\""));
        assert_eq!(e.key, "service[0] (\"web\").health.type", "{e}");
        let e = err(&svc.replace("TYPE", "type = \"http\"\nstatus = [\"200-99\"]"));
        assert!(
            e.key.ends_with("health.status") && e.message.contains("200-99"),
            "{e}"
        );
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\npath = \"/x\""));
        assert!(
            e.key.ends_with("health.path") && e.message.contains("http"),
            "{e}"
        );
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\ninterval = 1\ntimeout = 2"));
        assert!(e.key.ends_with("health.timeout"), "{e}");
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\nrise = 0"));
        assert!(e.key.ends_with("health.rise"), "{e}");
        let ok = Config::from_toml(
            &svc.replace("TYPE", "type = \"http\"\nstatus = [\"2xx\", \"301\"]"),
            None,
        )
        .unwrap();
        assert_eq!(
            ok.services[0].health.as_ref().unwrap().kind,
            CheckKind::Http {
                path: "/".into(),
                status: vec![(200, 299), (301, 301)],
                body: None,
                host: None
            }
        );
        let e = err(&format!("{GOOD}\n[control]\nsocket = \"relative.sock\"\n"));
        assert_eq!(e.key, "control.socket", "{e}");
        let e = err(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
        assert_eq!(e.key, "metrics.listen", "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"pcap\"\ncores = [0]\n"
        ));
        assert!(e.message.contains("[dataplane.pcap]"), "{e}");
    }
}
