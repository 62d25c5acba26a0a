//! The sluice data path: port drivers behind one [`port::Port`] trait, the per-core
//! [`worker::Worker`] poll loop, VIP classification, connection tracking
//! ([`conntrack::ConnTrack`]), Maglev steering ([`maglev::MaglevTable`]), the forwarding
//! rewrites ([`forward`]), flow ownership across workers ([`steering::Steering`]) and per-core
//! counters ([`stats`]). Configuration reaches it as an immutable [`snapshot::Snapshot`],
//! built from the data path's own [`setup::Setup`]: this crate depends on `packet` and
//! `maglev` only, never on the configuration file's types.

pub mod conntrack;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod endpoints;
pub mod fasthash;
pub mod flowindex;
pub mod forward;
pub mod neighbour;
pub mod offload;
pub mod port;
pub mod ratelimit;
pub mod setup;
pub mod snapshot;
pub mod stats;
pub mod steering;
pub mod synproxy;
pub mod worker;
#[cfg(feature = "xdp")]
pub mod xdp;

pub use maglev::{self, MaglevTable};
pub use offload::{HandError, OffloadFrame, OffloadPlan, OffloadRings, OFFLOAD_FRAME};
pub use port::{Frame, MemPort, PacketBuf, Port};
pub use setup::{Forwarding, Setup};
pub use snapshot::Snapshot;
pub use stats::{DropReason, WorkerStats};
pub use steering::Steering;
pub use worker::{Bursts, FlowQuery, Probe, Rings, Verdict, Worker};
