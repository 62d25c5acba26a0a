//! The immutable view of the configuration that workers read: services with their built
//! Maglev tables and the lookup indexes classification needs. Built off the data path from a
//! [`Setup`]; a change builds a new snapshot and swaps it in whole.

use crate::endpoints::{EndpointKey, EndpointMap};
use crate::fasthash::FastMap;
use crate::neighbour::{NeighbourTable, NeighbourTableFull};
pub use crate::setup::{Admin, Health};
use crate::setup::{AllDown, ConntrackSetup, Forwarding, NodeSetup, ServiceSetup, Setup};
use maglev::{MaglevBackend, MaglevError, MaglevTable};
use packet::MacAddr;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Where frames to a backend (or to clients, through the gateway) go on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// The MAC the configuration gives.
    Mac(MacAddr),
    /// Resolved by the data path: the slot in the [`NeighbourTable`].
    Resolved(u16),
}

/// An Ethernet header's destination and source addresses, as they lie in the header.
pub fn link_addresses(dst: MacAddr, src: MacAddr) -> [u8; 12] {
    let mut a = [0; 12];
    a[..6].copy_from_slice(&dst.0);
    a[6..].copy_from_slice(&src.0);
    a
}

/// Why a snapshot could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    Maglev(MaglevError),
    Neighbours(NeighbourTableFull),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Maglev(e) => e.fmt(f),
            SnapshotError::Neighbours(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<MaglevError> for SnapshotError {
    fn from(e: MaglevError) -> Self {
        SnapshotError::Maglev(e)
    }
}

#[derive(Debug, Clone)]
pub struct BackendEntry {
    pub addr: SocketAddr,
    pub next_hop: NextHop,
    pub weight: u32,
    /// The most flows tracked to it at once, all workers (0: no limit).
    pub max_flows: u32,
    pub admin: Admin,
    pub health: Health,
    /// In the Maglev table: new flows may go here.
    pub takes_new_flows: bool,
    /// Flows already tracked to it stay.
    pub keeps_flows: bool,
    /// The destination rewrite from the service's VIP to this backend, when both are IPv4
    /// (`nat` and `snat` use it).
    pub rewrite_v4: Option<crate::forward::BackendRewrite>,
    /// The Ethernet header's addresses of frames sent to it — its MAC then the node's — when
    /// the configuration gives its MAC (a resolved next hop's MAC changes under the
    /// snapshot, so is read per frame): the express lane writes them as 12 bytes at once.
    pub link: Option<[u8; 12]>,
}

#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub name: String,
    pub vip: SocketAddr,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    pub forwarding: Forwarding,
    pub gue_port: u16,
    pub backends: Vec<BackendEntry>,
    /// Over the backends that take new flows; `None` when none does (new flows are dropped
    /// as `no_backend`).
    pub table: Option<MaglevTable>,
    /// Every eligible backend is down and `all_down = "all"` put them all in the table.
    pub all_down_fallback: bool,
    pub table_size: u32,
    /// `[service.rate_limit]`, rates for all workers together.
    pub rate_limit: Option<crate::setup::RateLimitSetup>,
    /// `syn_proxy`, its MSS resolved for the VIP's family.
    pub syn_proxy: crate::setup::SynProxySetup,
    /// The service's key in the per-source rate-limit table: a nonzero hash of its VIP, so a
    /// source's bucket stays with the service across configuration changes.
    pub limit_key: u32,
    /// What the express lane does with a kept flow's frames to this service, worked out
    /// once here so the lane reads one field instead of the forwarding mode, the rate limit
    /// and the VIP's family.
    pub express: ExpressService,
}

/// A service as the express lane ([`crate::worker`]) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpressService {
    /// Not for the lane: IPv6, offloaded, or with a packet rate limit (whose bucket every
    /// packet takes from).
    Declined,
    Nat,
    /// `snat` from the node's IPv4 address (as big-endian words).
    Snat(u32),
    Dsr,
    /// `ipip` or `gue`.
    Tunnel,
}

impl ExpressService {
    fn of(s: &crate::setup::ServiceSetup, node_ipv4: Option<std::net::Ipv4Addr>) -> Self {
        if !s.vip.is_ipv4() || s.rate_limit.is_some_and(|r| r.packets.is_some()) {
            return ExpressService::Declined;
        }
        match (s.forwarding, node_ipv4) {
            (Forwarding::Nat, _) => ExpressService::Nat,
            (Forwarding::Snat, Some(a)) => ExpressService::Snat(u32::from(a)),
            (Forwarding::Dsr, _) => ExpressService::Dsr,
            (Forwarding::Ipip | Forwarding::Gue, _) => ExpressService::Tunnel,
            _ => ExpressService::Declined,
        }
    }
}

/// A nonzero 32-bit key for the service at `vip` (`proto`).
pub fn limit_key(vip: SocketAddr, proto: u8) -> u32 {
    let a = match vip.ip() {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let h = packet::flow::mix64(
        (a as u64)
            ^ ((a >> 64) as u64).rotate_left(17)
            ^ (u64::from(vip.port()) << 8 | u64::from(proto)),
    );
    (h as u32).max(1)
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every snapshot the daemon publishes; flows remember the generation
    /// their service and backend indices refer to, and are re-resolved lazily when it moves.
    pub generation: u64,
    pub node: NodeSetup,
    pub conntrack: ConntrackSetup,
    pub services: Vec<ServiceEntry>,
    /// (VIP address, port, protocol) -> service index.
    vips: EndpointMap<u16>,
    /// Every address that is some service's VIP.
    vip_addrs: EndpointMap<()>,
    /// The same, each once, in the order services name them (for announcing them).
    pub vip_list: Vec<IpAddr>,
    /// Some service has its SYN proxy on or `auto`: the burst does not hash or look up bare
    /// SYNs, and the express lane answers those to `on` services itself (a flood of them
    /// would otherwise pay a lookup each).
    pub syn_proxied: bool,
    /// (backend address, port, protocol) -> index of the `nat` service it serves, to recognise
    /// replies that need reverse translation.
    nat_backends: EndpointMap<u16>,
    /// (service index, backend address) -> backend index, for re-resolving flows.
    backend_index: FastMap<(u16, SocketAddr), u16>,
    /// Where replies to clients go.
    pub gateway: NextHop,
    /// Learned MACs of next hops without one in the configuration, shared by every
    /// snapshot of the process that built them with it.
    pub neighbours: Arc<NeighbourTable>,
    /// The next hops this snapshot resolves, with their slots (worker 0 sends requests for
    /// them), and the same by address (any worker learns from their ARP / ND).
    pub next_hops: Vec<(IpAddr, u16)>,
    next_hop_slots: FastMap<IpAddr, u16>,
    /// Backend address -> next hop, for the backends of offloaded services (frames the
    /// offload shards make carry no Ethernet addresses).
    offload_hops: FastMap<IpAddr, NextHop>,
}

/// Builds one service's Maglev table over the backends that take new flows, labelled by
/// their place in the full list. Cost: O(table size).
fn service_table(
    s: &ServiceSetup,
    entries: &[BackendEntry],
) -> Result<(Option<MaglevTable>, bool), MaglevError> {
    let admitted: Vec<u16> = (0..entries.len() as u16)
        .filter(|&i| entries[i as usize].admin == Admin::Ready)
        .collect();
    let up: Vec<u16> = admitted
        .iter()
        .copied()
        .filter(|&i| entries[i as usize].health != Health::Down)
        .collect();
    let (chosen, fallback) = if up.is_empty() && s.all_down == AllDown::All {
        (admitted, true)
    } else {
        (up, false)
    };
    if chosen.is_empty() {
        return Ok((None, false));
    }
    let ids: Vec<String> = chosen
        .iter()
        .map(|&i| entries[i as usize].addr.to_string())
        .collect();
    let mb: Vec<MaglevBackend> = ids
        .iter()
        .zip(&chosen)
        .map(|(id, &i)| MaglevBackend {
            identity: id.as_bytes(),
            weight: entries[i as usize].weight,
        })
        .collect();
    let mut table = MaglevTable::build(&mb, s.table_size)?;
    table.relabel(&chosen);
    Ok((Some(table), fallback && !chosen.is_empty()))
}

impl Snapshot {
    /// Builds every service's Maglev table, with a neighbour table of its own.
    pub fn build(setup: &Setup) -> Result<Snapshot, SnapshotError> {
        Snapshot::build_with(setup, &Arc::new(NeighbourTable::new()))
    }

    /// Builds a snapshot, resolving next hops without a MAC in `neighbours` (pass the running
    /// snapshot's, so learned MACs carry over). Cost: O(table size) per service. Every
    /// snapshot built in a process gets a generation of its own (increasing), so a worker can
    /// never mistake one for another.
    pub fn build_with(
        cfg: &Setup,
        neighbours: &Arc<NeighbourTable>,
    ) -> Result<Snapshot, SnapshotError> {
        static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut services = Vec::with_capacity(cfg.services.len());
        let mut vips = EndpointMap::default();
        let mut vip_addrs = EndpointMap::default();
        let mut vip_list = Vec::new();
        let mut nat_backends = EndpointMap::default();
        let mut backend_index = FastMap::default();
        let mut offload_hops = FastMap::default();
        let mut resolve: Vec<IpAddr> = cfg
            .services
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter(|b| b.mac.is_none())
            .map(|b| b.address.ip())
            .chain(cfg.node.gateway.filter(|_| cfg.node.gateway_mac.is_none()))
            .collect();
        resolve.sort();
        resolve.dedup();
        let slots = neighbours
            .assign(&resolve)
            .map_err(SnapshotError::Neighbours)?;
        let next_hops: Vec<(IpAddr, u16)> = resolve.into_iter().zip(slots).collect();
        let next_hop_slots: FastMap<IpAddr, u16> = next_hops.iter().copied().collect();
        // Every address without a MAC has a slot (assigned above); were one missing, its
        // packets would be dropped as unresolved (no slot u16::MAX), never sent to a made-up MAC.
        let next_hop = |mac: Option<MacAddr>, addr: Option<IpAddr>| match mac {
            Some(m) => NextHop::Mac(m),
            None => NextHop::Resolved(
                addr.and_then(|a| next_hop_slots.get(&a).copied())
                    .unwrap_or(u16::MAX),
            ),
        };
        for (i, s) in cfg.services.iter().enumerate() {
            let backends: Vec<BackendEntry> = s
                .backends
                .iter()
                .map(|b| BackendEntry {
                    addr: b.address,
                    next_hop: next_hop(b.mac, Some(b.address.ip())),
                    weight: b.weight,
                    max_flows: b.max_flows,
                    admin: b.admin,
                    health: b.health,
                    takes_new_flows: false,
                    keeps_flows: matches!(b.admin, Admin::Ready | Admin::Drain),
                    rewrite_v4: crate::forward::BackendRewrite::v4(s.vip, b.address),
                    link: b.mac.map(|m| link_addresses(m, cfg.node.mac)),
                })
                .collect();
            let (table, all_down_fallback) = service_table(s, &backends)?;
            let mut backends = backends;
            if let Some(t) = &table {
                for &e in t.entries() {
                    if let Some(b) = backends.get_mut(e as usize) {
                        b.takes_new_flows = true;
                    }
                }
            }
            let proto = s.proto;
            vips.insert(EndpointKey::new(s.vip.ip(), s.vip.port(), proto), i as u16);
            vip_addrs.insert(EndpointKey::new(s.vip.ip(), 0, 0), ());
            if !vip_list.contains(&s.vip.ip()) {
                vip_list.push(s.vip.ip());
            }
            for (j, b) in s.backends.iter().enumerate() {
                backend_index.insert((i as u16, b.address), j as u16);
                if s.forwarding == Forwarding::Offload {
                    offload_hops.insert(b.address.ip(), next_hop(b.mac, Some(b.address.ip())));
                }
                if s.forwarding == Forwarding::Nat {
                    nat_backends.insert(
                        EndpointKey::new(b.address.ip(), b.address.port(), proto),
                        i as u16,
                    );
                }
            }
            services.push(ServiceEntry {
                name: s.name.clone(),
                vip: s.vip,
                proto,
                forwarding: s.forwarding,
                gue_port: s.gue_port,
                backends,
                table,
                all_down_fallback,
                table_size: s.table_size,
                rate_limit: s.rate_limit,
                syn_proxy: crate::setup::SynProxySetup {
                    mss: match s.syn_proxy.mss {
                        0 if s.vip.is_ipv6() => 1440,
                        0 => 1460,
                        m => m,
                    },
                    ..s.syn_proxy
                },
                limit_key: limit_key(s.vip, proto),
                express: ExpressService::of(s, cfg.node.ipv4),
            });
        }
        let syn_proxied = services
            .iter()
            .any(|s| s.syn_proxy.mode != crate::setup::SynProxyMode::Off);
        Ok(Snapshot {
            generation,
            node: cfg.node.clone(),
            conntrack: cfg.conntrack.clone(),
            services,
            vips,
            vip_addrs,
            vip_list,
            syn_proxied,
            nat_backends,
            backend_index,
            gateway: next_hop(cfg.node.gateway_mac, cfg.node.gateway),
            neighbours: Arc::clone(neighbours),
            next_hops,
            next_hop_slots,
            offload_hops,
        })
    }

    /// [`Snapshot::mac_of`] without counting an unresolved next hop: for a caller that, on
    /// `None`, leaves the frame to a path that asks (and counts) again.
    #[inline(always)]
    pub fn mac_if_resolved(&self, nh: NextHop) -> Option<MacAddr> {
        match nh {
            NextHop::Mac(m) => Some(m),
            NextHop::Resolved(i) => self.neighbours.mac(i),
        }
    }

    /// The MAC frames to `nh` go to, if known. A next hop still unresolved is counted
    /// against its slot.
    #[inline]
    pub fn mac_of(&self, nh: NextHop) -> Option<MacAddr> {
        match nh {
            NextHop::Mac(m) => Some(m),
            NextHop::Resolved(i) => {
                let m = self.neighbours.mac(i);
                if m.is_none() {
                    self.neighbours.count_unresolved(i);
                }
                m
            }
        }
    }

    /// Where a frame an offload shard made for `dst` goes: a backend of an offloaded
    /// service's own next hop, anyone else (a client) through the gateway.
    #[inline]
    pub fn offload_next_hop(&self, dst: IpAddr) -> NextHop {
        self.offload_hops.get(&dst).copied().unwrap_or(self.gateway)
    }

    /// The neighbour slot of next hop `a`, if this snapshot resolves it.
    #[inline]
    pub fn next_hop_slot(&self, a: IpAddr) -> Option<u16> {
        if self.next_hops.is_empty() {
            return None;
        }
        self.next_hop_slots.get(&a).copied()
    }

    /// The index of backend `addr` in service `service`, if it is there.
    #[inline]
    pub fn backend_of(&self, service: u16, addr: SocketAddr) -> Option<u16> {
        self.backend_index.get(&(service, addr)).copied()
    }

    #[inline(always)]
    pub fn service_for(&self, dst: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.vips.get(EndpointKey::new(dst, port, proto))
    }

    #[inline]
    pub fn is_vip_addr(&self, a: IpAddr) -> bool {
        self.vip_addrs.get(EndpointKey::new(a, 0, 0)).is_some()
    }

    /// The `nat` service whose backend sent from `src:port`, if any.
    #[inline]
    pub fn nat_service_of_backend(&self, src: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.nat_backends.get(EndpointKey::new(src, port, proto))
    }

    /// True when `a` is one of the node's own addresses.
    #[inline]
    pub fn is_node_addr(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(v4) => self.node.ipv4 == Some(v4),
            IpAddr::V6(v6) => self.node.ipv6 == Some(v6),
        }
    }

    /// The node address of the given family.
    pub fn node_addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.node.ipv6.map(IpAddr::V6)
        } else {
            self.node.ipv4.map(IpAddr::V4)
        }
    }

    pub fn backend_counts(&self) -> Vec<usize> {
        self.services.iter().map(|s| s.backends.len()).collect()
    }
}

impl crate::neighbour::LinkView for Snapshot {
    #[inline]
    fn node_mac(&self) -> MacAddr {
        self.node.mac
    }
    #[inline]
    fn answers_for(&self, a: IpAddr) -> bool {
        (!self.node.standby && self.is_vip_addr(a)) || self.is_node_addr(a)
    }
    #[inline]
    fn next_hop_slot(&self, a: IpAddr) -> Option<u16> {
        Snapshot::next_hop_slot(self, a)
    }
    #[inline]
    fn neighbours(&self) -> &NeighbourTable {
        &self.neighbours
    }
}
