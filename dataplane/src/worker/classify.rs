//! What a frame is, decided from its parse summary, the snapshot and the worker's place among
//! the others (which flows it owns, where offloaded services go), without changing anything:
//! the poll loop then acts on the [`Class`].

use super::reply::is_icmp_error;
use super::Worker;
use crate::snapshot::Snapshot;
use crate::stats::DropReason;
use packet::ipv4::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use packet::parse::{Network, Parsed};

/// What a parsed frame is to this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// TCP or UDP to service `s`: a tracked flow keeps its backend, a new one gets one; a
    /// frame of an offloaded service goes to its shard (decided with the service entry the
    /// balancing step reads anyway).
    ToService(u16),
    /// For offload shard `s`: a frame of an offloaded service, an ICMP error about one, or a
    /// reply to a shard's upstream port.
    Offload(usize),
    /// Another worker owns the flow.
    Handoff(usize),
    /// A reply to an SNAT port, owned by worker `owner`.
    SnatReply {
        owner: usize,
    },
    /// A reply from a backend of `nat` service `s`.
    NatReply(u16),
    /// An ICMP error sent to a VIP address (about a flow the quoted header names).
    IcmpError,
    /// ARP: maybe from a next hop to learn, maybe asking for one of our addresses.
    Arp,
    /// An IPv6 neighbour solicitation: maybe for one of our addresses.
    NeighbourSolicitation,
    /// Not the balancer's: the host's, if the port has a host path.
    NotOurs,
    Drop(DropReason),
}

impl Worker {
    /// The class of frame `p` against `snap`. The common case — TCP or UDP to a service —
    /// costs one lookup.
    #[inline(always)]
    pub fn classify(&self, snap: &Snapshot, p: &Parsed) -> Class {
        // On a tagged link, only sluice's VLAN is the balancer's (other VLANs, and untagged
        // frames, belong to the host).
        if let Some(v) = snap.node.vlan {
            if p.vlan_tci.map(|t| t & 0x0fff) != Some(v) {
                return Class::NotOurs;
            }
        }
        if !p.is_ip() {
            return if p.network == Network::Arp {
                Class::Arp
            } else {
                Class::NotOurs
            };
        }
        if snap.node.standby && snap.is_vip_addr(p.dst) {
            return Class::Drop(DropReason::Standby);
        }
        let l4 = p.proto == PROTO_TCP || p.proto == PROTO_UDP;
        if !p.fragment && l4 {
            if let Some(s) = snap.service_for(p.dst, p.dst_port, p.proto) {
                if self.steer_forward {
                    let owner = self.steering.owner_of(p.src, p.src_port, p.dst, p.dst_port);
                    if owner != self.id {
                        return Class::Handoff(owner);
                    }
                }
                return Class::ToService(s);
            }
        }
        // Neighbour solicitations come to a solicited-node multicast address, or (to confirm
        // reachability) to the VIP itself.
        if p.proto == PROTO_ICMPV6 && p.icmp_type == packet::icmp::V6_NEIGHBOR_SOLICIT {
            return Class::NeighbourSolicitation;
        }
        if snap.is_vip_addr(p.dst) {
            if p.fragment {
                return Class::Drop(DropReason::Fragment);
            }
            if is_icmp_error(p) {
                return Class::IcmpError;
            }
            return Class::Drop(DropReason::NoService);
        }
        if p.fragment || !l4 {
            return Class::NotOurs;
        }
        if snap.is_node_addr(p.dst) {
            if let Some(shard) = self.offload.and_then(|o| o.upstream_owner(p.dst_port)) {
                return Class::Offload(shard);
            }
            if let Some(owner) = self.steering.snat_owner(p.dst_port) {
                return Class::SnatReply { owner };
            }
        }
        if let Some(s) = snap.nat_service_of_backend(p.src, p.src_port, p.proto) {
            if snap.node.standby {
                return Class::Drop(DropReason::Standby);
            }
            return Class::NatReply(s);
        }
        Class::NotOurs
    }

    /// Where a frame of an offloaded flow goes: its shard, or nowhere without a pool.
    #[inline]
    pub(super) fn offload_shard(&self, flow_hash: u64) -> Result<usize, DropReason> {
        self.offload
            .map(|plan| plan.shard_of(flow_hash))
            .ok_or(DropReason::OffloadUnavailable)
    }
}
