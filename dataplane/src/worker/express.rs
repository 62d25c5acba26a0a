//! The express lane: a frame of a flow this worker already tracks, to an IPv4 `nat`, `snat`
//! or `dsr` service, forwarded from its raw words ([`Ipv4Flow`]) without the general path's
//! parse summary, classification or VIP lookup. That is most frames a balancer sees, and
//! the general path is several times the work.
//!
//! The lane is an exact shortcut, not a second policy: it takes a frame only when the general
//! path would forward it to the same backend with the same rewrite, and it changes nothing
//! (no counter, no flow) for a frame it declines, which then takes the general path as if the
//! lane did not exist (`tests` compare the two frame by frame). A tracked flow whose record
//! refers to this snapshot's generation names the service its VIP classifies to — the
//! record was resolved against this very snapshot — so the classification is the record's.
//! Declined: new, expired or reopened flows, records of an older generation, backends that
//! no longer keep flows, proxied flows and SYNs to proxied services, services with a packet
//! rate limit, unresolved next hops, TTLs that expire, and every frame on a VLAN, on a
//! standby node or on a port that must steer forward frames.

use super::{Verdict, Worker};
use crate::conntrack::Candidate;
use crate::forward::{set_macs, translate_express_to_backend};
use crate::port::Frame;
use crate::setup::SynProxyMode;
use crate::snapshot::{ExpressService, Snapshot};
use packet::ipv4::PROTO_TCP;
use packet::tcp;
use packet::Ipv4Flow;

impl Worker {
    /// Whether frames of this burst may take the express lane at all: settings of the node
    /// and the port that the general path checks on every frame, checked once.
    #[inline(always)]
    pub(super) fn express_open(&self, snap: &Snapshot) -> bool {
        self.express_lane && snap.node.vlan.is_none() && !snap.node.standby && !self.steer_forward
    }

    /// Forwards frame `f` (read as `e`, its key hashed as `hash`, its slot likely `candidate`) if it is a kept flow's the
    /// lane takes; `None`, with nothing changed, if not.
    #[inline(always)]
    pub(super) fn express<F: Frame>(
        &mut self,
        snap: &Snapshot,
        f: &mut F,
        e: &Ipv4Flow,
        hash: u64,
        candidate: Candidate,
        now: u64,
    ) -> Option<Verdict> {
        let tcp_flags = (e.proto == PROTO_TCP).then_some(e.tcp_flags);
        let key = crate::conntrack::PackedKey::v4(e.src, e.dst, e.src_port, e.dst_port, e.proto);
        let live = self
            .ct
            .find_live_from(candidate, &key, hash, tcp_flags, now)
            .ok()?;
        let hot = self.ct.hot(live)?;
        if hot.generation != snap.generation as u32 || hot.proxy.is_proxied() {
            return None;
        }
        let (s, b, snat_port) = (hot.service as usize, hot.backend, hot.snat_port);
        let svc = snap.services.get(s)?;
        if svc.syn_proxy.mode != SynProxyMode::Off
            && e.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN
        {
            return None;
        }
        let be = svc.backends.get(b as usize)?;
        if !be.keeps_flows {
            return None;
        }
        let dst_mac = snap.mac_if_resolved(be.next_hop)?;
        let d = f.data_mut();
        match svc.express {
            ExpressService::Nat | ExpressService::Snat(_) => {
                let new_src = match svc.express {
                    ExpressService::Snat(a) => Some((a, snat_port)),
                    _ => None,
                };
                let rewrite = be.rewrite_v4.as_ref()?;
                if e.ttl <= 1 {
                    return None;
                }
                translate_express_to_backend(d, e, new_src, rewrite).ok()?;
            }
            ExpressService::Dsr => {}
            ExpressService::Declined => return None,
        }
        self.ct.refresh(live, tcp_flags, now)?;
        set_macs(d, snap.node.mac, dst_mac);
        self.count_backend_packet(s, b, d.len());
        self.stats.express += 1;
        Some(Verdict::Transmit)
    }
}
