//! Per-worker counters: packets in and out, drops by named reason, per-backend traffic. Each
//! worker owns its counters (no sharing on the hot path); readers sum them.

use packet::Malformed;

/// Why a frame was dropped. Every drop in the data path has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The frame failed to parse; the inner reason names layer and fault.
    Malformed(Malformed),
    /// An IP fragment addressed to a VIP (fragments carry no ports to steer by).
    Fragment,
    /// Addressed to a VIP address, but no service listens on that protocol and port.
    NoService,
    /// Not the balancer's, and the port has no host path to give it to.
    NotOurs,
    /// TTL / hop limit would reach zero where we route (NAT modes).
    TtlExceeded,
    /// An ICMP error about a VIP flow this worker does not track.
    IcmpNoFlow,
    /// A reply from a NAT backend, or to an SNAT port, for a flow not (or no longer) tracked.
    ReplyNoFlow,
    /// No free SNAT source port for this backend in this worker's range.
    SnatPortsExhausted,
    /// The buffer had no headroom for encapsulation, or the result exceeds 64 KiB.
    NoHeadroom,
    /// The ring to the worker owning the flow was full.
    HandoffRingFull,
    /// The frame is larger than the port's buffers, or spans several of them.
    Oversize,
    /// The device did not take the frame for transmission (TX queue full).
    TxFull,
    /// Still in a hand-off ring when the daemon stopped.
    Shutdown,
    /// A new flow for a service with no backend to take it (every backend drained, disabled
    /// or down, under the `all_down = "drop"` policy).
    NoBackend,
    /// The next hop (a backend or the gateway configured without `mac`) has not answered
    /// ARP / neighbour solicitation yet, or stopped answering.
    UnresolvedNextHop,
    /// A frame of an offloaded service, on a worker with no offload pool to hand it to.
    OffloadUnavailable,
    /// The ring to the offload shard that owns the connection was full.
    OffloadRingFull,
    /// A hand-off to a worker the rings do not have (never chosen by steering; counted
    /// rather than leaked, should it happen).
    HandoffNoWorker,
    /// The node has no address of the packet's family to use as a source (SNAT, or the
    /// outer header of an IPIP/GUE tunnel).
    NoNodeAddress,
    /// A rewrite would put an address of one IP version into a packet of the other.
    FamilyMismatch,
    /// The datagram to encapsulate could not be read as an inner header.
    EncapInnerInvalid,
    /// Every frame of the offload pool was in use (the shards are behind).
    OffloadNoBuffer,
    /// The port had no buffer for a frame sluice makes: one an offload shard made, or an
    /// outer fragment.
    TxNoBuffer,
    /// Encapsulated, the packet would be larger than `node.tunnel_mtu`: not sent (its sender
    /// got ICMP "fragmentation needed" / "packet too big" if it forbade fragmentation).
    TunnelTooBig,
    /// For a VIP while this instance is a standby (VRRP): the active one forwards it.
    Standby,
    /// A new flow when every backend that takes new flows is at its `max_flows`.
    BackendFull,
    /// A new flow from a client source over its `new_flows_per_source` rate.
    SourceRateLimited,
    /// A packet to a service over its `packets` rate.
    ServiceRateLimited,
    /// SYN proxy: an ACK for no tracked flow whose acknowledgement is no valid cookie
    /// (forged, or older than two cookie periods).
    SynProxyBadCookie,
    /// SYN proxy: a packet for no tracked flow that is neither a SYN nor an ACK (a RST, a
    /// SYN-ACK to the VIP), or a flow the conntrack could not take.
    SynProxyNoFlow,
    /// SYN proxy: a segment of a flow whose backend has not answered sluice's SYN yet,
    /// other than the client's (which resend the SYN), or held data whose flow went.
    SynProxyOpening,
}

const OTHER: [DropReason; 30] = [
    DropReason::Fragment,
    DropReason::NoService,
    DropReason::NotOurs,
    DropReason::TtlExceeded,
    DropReason::IcmpNoFlow,
    DropReason::ReplyNoFlow,
    DropReason::SnatPortsExhausted,
    DropReason::NoHeadroom,
    DropReason::HandoffRingFull,
    DropReason::Oversize,
    DropReason::TxFull,
    DropReason::Shutdown,
    DropReason::NoBackend,
    DropReason::UnresolvedNextHop,
    DropReason::OffloadUnavailable,
    DropReason::OffloadRingFull,
    DropReason::HandoffNoWorker,
    DropReason::NoNodeAddress,
    DropReason::FamilyMismatch,
    DropReason::EncapInnerInvalid,
    DropReason::OffloadNoBuffer,
    DropReason::TxNoBuffer,
    DropReason::TunnelTooBig,
    DropReason::Standby,
    DropReason::BackendFull,
    DropReason::SourceRateLimited,
    DropReason::ServiceRateLimited,
    DropReason::SynProxyBadCookie,
    DropReason::SynProxyNoFlow,
    DropReason::SynProxyOpening,
];

impl DropReason {
    pub const COUNT: usize = Malformed::ALL.len() + OTHER.len();

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        Malformed::ALL
            .iter()
            .map(|m| DropReason::Malformed(*m))
            .chain(OTHER)
    }

    /// Position in the counter array: [`Malformed`]'s reasons first, then [`OTHER`]'s order
    /// (a unit test checks the two agree).
    pub fn index(self) -> usize {
        let other = match self {
            DropReason::Malformed(m) => return m as usize,
            DropReason::Fragment => 0,
            DropReason::NoService => 1,
            DropReason::NotOurs => 2,
            DropReason::TtlExceeded => 3,
            DropReason::IcmpNoFlow => 4,
            DropReason::ReplyNoFlow => 5,
            DropReason::SnatPortsExhausted => 6,
            DropReason::NoHeadroom => 7,
            DropReason::HandoffRingFull => 8,
            DropReason::Oversize => 9,
            DropReason::TxFull => 10,
            DropReason::Shutdown => 11,
            DropReason::NoBackend => 12,
            DropReason::UnresolvedNextHop => 13,
            DropReason::OffloadUnavailable => 14,
            DropReason::OffloadRingFull => 15,
            DropReason::HandoffNoWorker => 16,
            DropReason::NoNodeAddress => 17,
            DropReason::FamilyMismatch => 18,
            DropReason::EncapInnerInvalid => 19,
            DropReason::OffloadNoBuffer => 20,
            DropReason::TxNoBuffer => 21,
            DropReason::TunnelTooBig => 22,
            DropReason::Standby => 23,
            DropReason::BackendFull => 24,
            DropReason::SourceRateLimited => 25,
            DropReason::ServiceRateLimited => 26,
            DropReason::SynProxyBadCookie => 27,
            DropReason::SynProxyNoFlow => 28,
            DropReason::SynProxyOpening => 29,
        };
        Malformed::ALL.len() + other
    }

    /// Stable snake_case name (stats JSON keys).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(m) => m.name(),
            DropReason::Fragment => "fragment",
            DropReason::NoService => "no_service",
            DropReason::NotOurs => "not_ours",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::IcmpNoFlow => "icmp_no_flow",
            DropReason::ReplyNoFlow => "reply_no_flow",
            DropReason::SnatPortsExhausted => "snat_ports_exhausted",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::HandoffRingFull => "handoff_ring_full",
            DropReason::Oversize => "oversize",
            DropReason::TxFull => "tx_full",
            DropReason::Shutdown => "shutdown",
            DropReason::NoBackend => "no_backend",
            DropReason::UnresolvedNextHop => "unresolved_next_hop",
            DropReason::OffloadUnavailable => "offload_unavailable",
            DropReason::OffloadRingFull => "offload_ring_full",
            DropReason::HandoffNoWorker => "handoff_no_worker",
            DropReason::NoNodeAddress => "no_node_address",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::EncapInnerInvalid => "encap_inner_invalid",
            DropReason::OffloadNoBuffer => "offload_no_buffer",
            DropReason::TxNoBuffer => "tx_no_buffer",
            DropReason::TunnelTooBig => "tunnel_too_big",
            DropReason::Standby => "standby",
            DropReason::BackendFull => "backend_full",
            DropReason::SourceRateLimited => "source_rate_limited",
            DropReason::ServiceRateLimited => "service_rate_limited",
            DropReason::SynProxyBadCookie => "syn_proxy_bad_cookie",
            DropReason::SynProxyNoFlow => "syn_proxy_no_flow",
            DropReason::SynProxyOpening => "syn_proxy_opening",
        }
    }
}

/// Traffic one backend received from one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flows tracked to this backend now (a gauge: insertions less removals).
    pub active_flows: u64,
}

/// Per-service counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// New flows balanced over every eligible backend because all were down
    /// (`all_down = "all"`).
    pub all_down_flows: u64,
    /// `syn_proxy = "auto"`: 1 while this worker's proxy is on for the service (a gauge,
    /// summed over workers), and the times it switched on.
    pub syn_proxy_on: u64,
    pub syn_proxy_activations: u64,
}

/// Declares [`WorkerStats`] from one list of its scalar counters, so that creating, copying,
/// adding and listing them cannot forget one.
macro_rules! worker_stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One worker's counters.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct WorkerStats {
            $( $(#[$doc])* pub $name: u64, )*
            pub drops: [u64; DropReason::COUNT],
            /// `[service][backend]`, sized from the snapshot before the worker starts.
            pub backends: Vec<Vec<BackendCounters>>,
            /// Per service, in snapshot order.
            pub services: Vec<ServiceCounters>,
        }

        impl WorkerStats {
            /// The names of the scalar counters, in order.
            pub const SCALARS: &'static [&'static str] = &[$(stringify!($name)),*];

            pub fn new(backends_per_service: &[usize]) -> Self {
                WorkerStats {
                    $( $name: 0, )*
                    drops: [0; DropReason::COUNT],
                    backends: backends_per_service
                        .iter()
                        .map(|n| vec![BackendCounters::default(); *n])
                        .collect(),
                    services: vec![ServiceCounters::default(); backends_per_service.len()],
                }
            }

            /// Every scalar counter with its name, in [`WorkerStats::SCALARS`] order.
            pub fn scalars(&self) -> impl Iterator<Item = (&'static str, u64)> {
                Self::SCALARS.iter().copied().zip([$(self.$name),*])
            }

            /// Adds another worker's scalar counters and drops (not the per-backend ones,
            /// whose shape follows a snapshot) into these.
            pub fn add_counters(&mut self, o: &WorkerStats) {
                $( self.$name += o.$name; )*
                for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
                    *a += b;
                }
            }

            fn copy_counters(&mut self, o: &WorkerStats) {
                $( self.$name = o.$name; )*
                self.drops = o.drops;
            }
        }
    };
}

worker_stats! {
    packets_in,
    packets_out,
    bytes_in,
    to_host,
    /// Frames of tracked flows forwarded by the express lane (the rest of `packets_out`
    /// took the general path: new flows, replies, and what the lane declines).
    express,
    /// Frames this worker passed to another worker that owns their flow.
    handed_off,
    /// Replies reverse-translated back towards clients.
    replies,
    /// ICMP errors steered to the backend of the quoted flow.
    icmp_steered,
    /// ARP requests and neighbour solicitations for our addresses, answered.
    neighbour_answers,
    /// ARP packets and neighbour advertisements / solicitations a next hop's MAC was
    /// learned (or confirmed) from.
    neighbours_learned,
    /// ARP requests and neighbour solicitations sent to resolve next hops, and the times
    /// the port had no buffer to write one in.
    neighbour_requests,
    neighbour_no_buffer,
    /// Gratuitous ARPs and unsolicited neighbour advertisements sent for the VIPs on
    /// becoming active (VRRP).
    vip_announcements,
    /// Tunnel packets too big for `node.tunnel_mtu`, without DF, sent as outer fragments
    /// (`node.tunnel_fragment`), and the fragments they made.
    tunnel_fragmented,
    tunnel_fragments,
    /// Frames handed to an offload shard, and frames the shards returned that this worker
    /// transmitted.
    offloaded,
    offload_returned,
    /// SYN proxy: SYN-ACKs sent with a cookie; ACKs that returned a valid one (a flow
    /// opened toward its backend); backends that answered with a SYN-ACK, and with a RST.
    syn_proxy_cookies,
    syn_proxy_accepted,
    syn_proxy_opened,
    syn_proxy_refused,
    /// SYN proxy: clients' first data held while their backend answered, sent after its
    /// handshake, and not held because every slot was taken (the client retransmits it).
    syn_proxy_held,
    syn_proxy_held_sent,
    syn_proxy_hold_full,
}

impl Default for WorkerStats {
    /// Counters of no service.
    fn default() -> Self {
        WorkerStats::new(&[])
    }
}

impl WorkerStats {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Makes `out` a copy of these counters, reusing its buffers: no allocation when `out`
    /// already has this shape (a worker copies into a buffer the control plane made).
    pub fn copy_into(&self, out: &mut WorkerStats) {
        out.copy_counters(self);
        out.backends.clone_from(&self.backends);
        out.services.clone_from(&self.services);
    }

    /// Adds another worker's counters into these (per-backend ones by position: both must
    /// have the shape of one snapshot).
    pub fn merge(&mut self, o: &WorkerStats) {
        self.add_counters(o);
        for (sa, sb) in self.backends.iter_mut().zip(&o.backends) {
            for (a, b) in sa.iter_mut().zip(sb) {
                a.packets += b.packets;
                a.bytes += b.bytes;
                a.new_flows += b.new_flows;
                a.active_flows += b.active_flows;
            }
        }
        for (a, b) in self.services.iter_mut().zip(&o.services) {
            a.all_down_flows += b.all_down_flows;
            a.syn_proxy_on += b.syn_proxy_on;
            a.syn_proxy_activations += b.syn_proxy_activations;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_indices_and_names() {
        let all: Vec<DropReason> = DropReason::all().collect();
        assert_eq!(all.len(), DropReason::COUNT);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            for o in &all[i + 1..] {
                assert_ne!(r.name(), o.name());
            }
        }
    }

    /// One list declares the counters: copying and adding carry each of them.
    #[test]
    fn every_scalar_counter_is_copied_and_added() {
        let mut one = WorkerStats::new(&[1]);
        one.packets_in = 3;
        one.offload_returned = 5;
        one.neighbour_no_buffer = 7;
        one.drop(DropReason::OffloadRingFull);
        let mut sum = WorkerStats::new(&[1]);
        sum.merge(&one);
        sum.merge(&one);
        let names: Vec<&str> = sum.scalars().map(|(n, _)| n).collect();
        assert_eq!(names, WorkerStats::SCALARS);
        let v = |s: &WorkerStats, k: &str| s.scalars().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(
            (
                v(&sum, "packets_in"),
                v(&sum, "offload_returned"),
                v(&sum, "neighbour_no_buffer")
            ),
            (6, 10, 14)
        );
        assert_eq!(sum.dropped(DropReason::OffloadRingFull), 2);
        let mut copy = WorkerStats::new(&[1]);
        sum.copy_into(&mut copy);
        assert_eq!(copy, sum);
    }
}
