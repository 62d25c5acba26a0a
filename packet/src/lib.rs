//! Zero-copy packet views and in-place rewrites.
//!
//! Every header type is a view over a byte slice (`T: AsRef<[u8]>`) built by a checked
//! constructor that validates the lengths the accessors rely on, in the manner of smoltcp's
//! `wire` module. Parsing returns `Result`; no function in this crate allocates, and none panics
//! on any byte string (the corpus and random-frame tests in `tests/` hold it to that).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod arp;
pub mod checksum;
pub mod encap;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod rss;
pub mod tcp;
pub mod udp;

pub use ethernet::MacAddr;
pub use flow::FlowKey;
pub use parse::{parse_frame, parse_ipv4_flow, Ipv4Flow, Malformed, Parsed};

/// Why a view could not be built over a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The slice is shorter than the header (or than a length field says).
    Truncated,
    /// The version field is not the one this view is for.
    BadVersion,
    /// A header-length field is below the minimum or past the slice.
    BadHeaderLength,
    /// A total/payload length field is inconsistent with the header or the slice.
    BadLength,
    /// A chain of extension headers is too long or runs past the datagram.
    BadExtensionHeader,
    /// Not enough room in front of the frame for what was to be written there.
    NoHeadroom,
}

pub type Result<T> = core::result::Result<T, Error>;

/// Big-endian u16 at `off`. Callers have checked `off + 2 <= b.len()`.
#[inline(always)]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Big-endian u32 at `off`. Callers have checked `off + 4 <= b.len()`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
