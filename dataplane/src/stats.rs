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
}

const OTHER: [DropReason; 20] = [
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
}

/// One worker's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub to_host: u64,
    /// Frames this worker passed to another worker that owns their flow.
    pub handed_off: u64,
    /// Replies reverse-translated back towards clients.
    pub replies: u64,
    /// ICMP errors steered to the backend of the quoted flow.
    pub icmp_steered: u64,
    /// ARP requests and neighbour solicitations for our addresses, answered.
    pub neighbour_answers: u64,
    /// ARP packets and neighbour advertisements / solicitations a next hop's MAC was
    /// learned (or confirmed) from.
    pub neighbours_learned: u64,
    /// ARP requests and neighbour solicitations sent to resolve next hops, and the times
    /// the port had no buffer to write one in.
    pub neighbour_requests: u64,
    pub neighbour_no_buffer: u64,
    /// Frames handed to an offload shard, and frames the shards returned that this worker
    /// transmitted.
    pub offloaded: u64,
    pub offload_returned: u64,
    pub drops: [u64; DropReason::COUNT],
    /// `[service][backend]`, sized from the snapshot before the worker starts.
    pub backends: Vec<Vec<BackendCounters>>,
    /// Per service, in snapshot order.
    pub services: Vec<ServiceCounters>,
}

impl WorkerStats {
    pub fn new(backends_per_service: &[usize]) -> Self {
        WorkerStats {
            packets_in: 0,
            packets_out: 0,
            bytes_in: 0,
            to_host: 0,
            handed_off: 0,
            replies: 0,
            icmp_steered: 0,
            neighbour_answers: 0,
            neighbours_learned: 0,
            neighbour_requests: 0,
            neighbour_no_buffer: 0,
            offloaded: 0,
            offload_returned: 0,
            drops: [0; DropReason::COUNT],
            backends: backends_per_service
                .iter()
                .map(|n| vec![BackendCounters::default(); *n])
                .collect(),
            services: vec![ServiceCounters::default(); backends_per_service.len()],
        }
    }

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
        out.packets_in = self.packets_in;
        out.packets_out = self.packets_out;
        out.bytes_in = self.bytes_in;
        out.to_host = self.to_host;
        out.handed_off = self.handed_off;
        out.replies = self.replies;
        out.icmp_steered = self.icmp_steered;
        out.neighbour_answers = self.neighbour_answers;
        out.neighbours_learned = self.neighbours_learned;
        out.neighbour_requests = self.neighbour_requests;
        out.neighbour_no_buffer = self.neighbour_no_buffer;
        out.offloaded = self.offloaded;
        out.offload_returned = self.offload_returned;
        out.drops = self.drops;
        out.backends.clone_from(&self.backends);
        out.services.clone_from(&self.services);
    }

    /// Adds another worker's counters into these.
    pub fn merge(&mut self, o: &WorkerStats) {
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.to_host += o.to_host;
        self.handed_off += o.handed_off;
        self.replies += o.replies;
        self.icmp_steered += o.icmp_steered;
        self.neighbour_answers += o.neighbour_answers;
        self.neighbours_learned += o.neighbours_learned;
        self.neighbour_requests += o.neighbour_requests;
        self.neighbour_no_buffer += o.neighbour_no_buffer;
        self.offloaded += o.offloaded;
        self.offload_returned += o.offload_returned;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
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
}
