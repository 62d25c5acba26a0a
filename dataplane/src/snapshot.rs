//! The immutable view of the configuration that workers read: services with their built
//! Maglev tables and the lookup indexes classification needs. Built off the data path from a
//! validated [`config::Config`]; a change builds a new snapshot and swaps it in whole.

use crate::fasthash::FastMap;
use crate::maglev::{MaglevBackend, MaglevError, MaglevTable};
use config::{Config, Forwarding, Node};
use packet::MacAddr;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone)]
pub struct BackendEntry {
    pub addr: SocketAddr,
    pub mac: MacAddr,
    pub weight: u32,
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
    pub table: MaglevTable,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub node: Node,
    pub conntrack: config::Conntrack,
    pub services: Vec<ServiceEntry>,
    /// (VIP address, port, protocol) -> service index.
    vips: FastMap<(IpAddr, u16, u8), u16>,
    /// Every address that is some service's VIP.
    vip_addrs: FastMap<IpAddr, ()>,
    /// (backend address, port, protocol) -> index of the `nat` service it serves, to recognise
    /// replies that need reverse translation.
    nat_backends: FastMap<(IpAddr, u16, u8), u16>,
}

impl Snapshot {
    /// Builds every service's Maglev table. Cost: O(table size) per service.
    pub fn build(cfg: &Config) -> Result<Snapshot, MaglevError> {
        let mut services = Vec::with_capacity(cfg.services.len());
        let mut vips = FastMap::default();
        let mut vip_addrs = FastMap::default();
        let mut nat_backends = FastMap::default();
        for (i, s) in cfg.services.iter().enumerate() {
            let ids: Vec<String> = s.backends.iter().map(|b| b.address.to_string()).collect();
            let mb: Vec<MaglevBackend> = ids
                .iter()
                .zip(&s.backends)
                .map(|(id, b)| MaglevBackend {
                    identity: id.as_bytes(),
                    weight: b.weight,
                })
                .collect();
            let table = MaglevTable::build(&mb, s.table_size)?;
            let proto = s.protocol.number();
            vips.insert((s.vip.ip(), s.vip.port(), proto), i as u16);
            vip_addrs.insert(s.vip.ip(), ());
            if s.forwarding == Forwarding::Nat {
                for b in &s.backends {
                    nat_backends.insert((b.address.ip(), b.address.port(), proto), i as u16);
                }
            }
            services.push(ServiceEntry {
                name: s.name.clone(),
                vip: s.vip,
                proto,
                forwarding: s.forwarding,
                gue_port: s.gue_port,
                backends: s
                    .backends
                    .iter()
                    .map(|b| BackendEntry {
                        addr: b.address,
                        mac: b.mac,
                        weight: b.weight,
                    })
                    .collect(),
                table,
            });
        }
        Ok(Snapshot {
            node: cfg.node.clone(),
            conntrack: cfg.conntrack.clone(),
            services,
            vips,
            vip_addrs,
            nat_backends,
        })
    }

    #[inline]
    pub fn service_for(&self, dst: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.vips.get(&(dst, port, proto)).copied()
    }

    #[inline]
    pub fn is_vip_addr(&self, a: IpAddr) -> bool {
        self.vip_addrs.contains_key(&a)
    }

    /// The `nat` service whose backend sent from `src:port`, if any.
    #[inline]
    pub fn nat_service_of_backend(&self, src: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.nat_backends.get(&(src, port, proto)).copied()
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
