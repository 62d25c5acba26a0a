//! sluice's L7 worker pool. Each shard owns a userspace TCP stack (smoltcp) fed with the
//! frames the data path's poll loops hand it through the offload seam
//! ([`dataplane::offload`]), terminates the client connections of `forwarding = "l7"`
//! services, proxies HTTP/1.1 requests by route to a pool's backends over connections it
//! opens itself from the node's address, and returns the frames it makes to the poll loops
//! for transmission.
//!
//! The pipeline per connection is TCP ([`tcp`]) → TLS for `l7 = "tls"` services ([`tls`])
//! → HTTP ([`http`], [`proxy`]): each stage reads and writes a byte stream of the one below
//! (the proxy's `Stream`: a socket, or the TLS layer over one). A `tls-passthrough` service
//! reads only the ClientHello ([`hello`]) to choose a pool, then relays the bytes untouched.

pub mod balance;
pub mod hello;
pub mod http;
pub mod proxy;
pub mod route;
pub mod setup;
pub mod shard;
pub mod stats;
pub mod tcp;
pub mod tls;

pub use setup::L7Setup;
pub use shard::{Shard, SharedSetup};
pub use stats::ShardStats;
