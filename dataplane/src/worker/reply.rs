//! Traffic back through the balancer: replies from `nat` backends and to SNAT ports,
//! translated back towards their clients, and ICMP errors about a VIP flow, steered to the
//! backend that owns it.

use super::balance::{backend_mac, encapsulate, resolve};
use super::synproxy::{backend_answer, toward_client};
use super::{Verdict, Worker};
use crate::forward::{set_macs, translate, translate_icmp_error};
use crate::port::Frame;
use crate::setup::Forwarding;
use crate::snapshot::{ServiceEntry, Snapshot};
use crate::stats::DropReason;
use packet::ipv4::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP};
use packet::parse::{parse_quoted, Network, Parsed};
use packet::{icmp, tcp};

impl Worker {
    /// A reply from a `nat` backend: the source becomes the VIP again.
    pub(super) fn nat_reply<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        svc: &ServiceEntry,
        snap: &Snapshot,
        now: u64,
    ) -> Verdict {
        let owner = self
            .steering
            .owner_of(p.dst, p.dst_port, svc.vip.ip(), svc.vip.port());
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        let Some((_, t)) = self.ct.lookup_reply(&p.flow_key(), tcp_flags, now) else {
            return Verdict::Drop(DropReason::ReplyNoFlow);
        };
        let (shift, delta) = (t.proxy, t.seq_delta);
        let vip = (svc.vip.ip(), svc.vip.port());
        if shift.is_proxied() && (!shift.is_open() || p.tcp_flags & tcp::SYN != 0) {
            let answer = backend_answer(t, f.data(), p);
            return self.proxy_backend_answer(f, p, snap, answer, vip, (p.dst, p.dst_port));
        }
        let Some(gateway) = snap.mac_of(snap.gateway) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        if let Err(r) = translate(f.data_mut(), p, Some(vip), None) {
            return Verdict::Drop(r);
        }
        if shift.is_proxied() {
            toward_client(f.data_mut(), p, delta, shift);
        }
        set_macs(f.data_mut(), snap.node.mac, gateway);
        self.stats.replies += 1;
        Verdict::Transmit
    }

    /// A reply to an SNAT port: back to the client, from the VIP. Untracked packets to the
    /// node's address go to the host, whose own connections use its address too.
    pub(super) fn snat_reply<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        owner: usize,
        now: u64,
    ) -> Verdict {
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let tcp_flags = (p.proto == PROTO_TCP).then_some(p.tcp_flags);
        let Some((fwd, t)) = self.ct.lookup_reply(&p.flow_key(), tcp_flags, now) else {
            return self.not_ours();
        };
        let (shift, delta) = (t.proxy, t.seq_delta);
        let client = (fwd.src, fwd.src_port);
        let vip = (fwd.dst, fwd.dst_port);
        if shift.is_proxied() && (!shift.is_open() || p.tcp_flags & tcp::SYN != 0) {
            let answer = backend_answer(t, f.data(), p);
            return self.proxy_backend_answer(f, p, snap, answer, vip, client);
        }
        // The forward key's destination is the VIP; indices in `flow` may be a generation old.
        let Some(svc) = snap
            .service_for(fwd.dst, fwd.dst_port, fwd.proto)
            .and_then(|s| snap.services.get(s as usize))
        else {
            return Verdict::Drop(DropReason::ReplyNoFlow);
        };
        let Some(gateway) = snap.mac_of(snap.gateway) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        if let Err(r) = translate(
            f.data_mut(),
            p,
            Some((svc.vip.ip(), svc.vip.port())),
            Some(client),
        ) {
            return Verdict::Drop(r);
        }
        if shift.is_proxied() {
            toward_client(f.data_mut(), p, delta, shift);
        }
        set_macs(f.data_mut(), snap.node.mac, gateway);
        self.stats.replies += 1;
        Verdict::Transmit
    }

    /// An ICMP error sent to a VIP (a router on the way to the client could not deliver a
    /// packet the VIP sent: "fragmentation needed", "packet too big", …). It goes to the
    /// backend that owns the quoted flow, so path MTU discovery works through the balancer.
    pub(super) fn steer_icmp_error<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
    ) -> Verdict {
        let Some(q) = parse_quoted(f.data(), p) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        // The quote is VIP -> client; the tracked flow is client -> VIP.
        let fwd = q.key.reversed();
        let Some(s) = snap.service_for(fwd.dst, fwd.dst_port, fwd.proto) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        // The shard that terminates the connection handles errors about it (path MTU).
        if snap.services[s as usize].forwarding == Forwarding::Offload {
            return self
                .offload_shard(fwd.stable_hash())
                .map_or_else(Verdict::Drop, Verdict::Offload);
        }
        let owner = self
            .steering
            .owner_of(fwd.src, fwd.src_port, fwd.dst, fwd.dst_port);
        if owner != self.id {
            return Verdict::Handoff(owner);
        }
        let Some(mut flow) = self.ct.peek(&fwd) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        resolve(snap, &fwd, &mut flow);
        let svc = &snap.services[s as usize];
        let dst_mac = match backend_mac(snap, svc, flow.backend) {
            Ok(m) => m,
            Err(r) => return Verdict::Drop(r),
        };
        let be = (flow.backend_addr.ip(), flow.backend_addr.port());
        let result = match svc.forwarding {
            Forwarding::Dsr => Ok(()),
            Forwarding::Ipip | Forwarding::Gue => {
                encapsulate(f, p, svc, snap, flow.backend_addr, &fwd)
            }
            Forwarding::Offload => Err(DropReason::OffloadUnavailable),
            Forwarding::Nat => {
                translate_icmp_error(f.data_mut(), p, &q, be.0, be, None, flow.seq_delta)
            }
            Forwarding::Snat => match snap.node_addr(p.dst.is_ipv6()) {
                Some(node_ip) => translate_icmp_error(
                    f.data_mut(),
                    p,
                    &q,
                    be.0,
                    be,
                    Some((node_ip, flow.snat_port)),
                    flow.seq_delta,
                ),
                None => Err(DropReason::IcmpNoFlow),
            },
        };
        if let Err(r) = result {
            return Verdict::Drop(r);
        }
        set_macs(f.data_mut(), snap.node.mac, dst_mac);
        self.stats.icmp_steered += 1;
        Verdict::Transmit
    }
}

pub(super) fn is_icmp_error(p: &Parsed) -> bool {
    match (p.network, p.proto) {
        (Network::Ipv4, PROTO_ICMP) => icmp::v4_is_error(p.icmp_type),
        (Network::Ipv6, PROTO_ICMPV6) => icmp::v6_is_error(p.icmp_type),
        _ => false,
    }
}
