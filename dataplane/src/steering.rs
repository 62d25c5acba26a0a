//! Which worker owns a flow. Frames reach workers by the NIC's RSS hash (symmetric Toeplitz,
//! redirection table filled round-robin); replies whose addresses differ from the forward
//! direction are sent to the owner by rule: for SNAT, the source-port range each worker
//! allocates from; for DNAT, the RSS queue of the original client -> VIP tuple.

use packet::parse::{parse_frame, Network};
use packet::rss;
use std::net::IpAddr;

/// Entries in the RSS redirection table (as most NICs and DPDK's default).
pub const RETA_SIZE: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steering {
    pub workers: usize,
    /// Entries in the device's redirection table (filled round-robin over the workers).
    pub reta_size: usize,
    /// The node's SNAT source port range, inclusive.
    pub snat_ports: (u16, u16),
}

impl Steering {
    pub fn new(workers: usize, snat_ports: (u16, u16)) -> Self {
        Steering {
            workers: workers.max(1),
            reta_size: RETA_SIZE,
            snat_ports,
        }
    }

    /// The same rule for a device whose redirection table has `n` entries.
    pub fn with_reta_size(self, n: usize) -> Self {
        Steering {
            reta_size: if n == 0 { RETA_SIZE } else { n },
            ..self
        }
    }

    /// The queue the NIC's redirection table maps an RSS hash to.
    #[inline]
    pub fn queue_for_hash(&self, h: u32) -> usize {
        (h as usize % self.reta_size) % self.workers
    }

    /// The queue a NIC would deliver this frame to: 4-tuple for TCP/UDP, 2-tuple for other IP,
    /// queue 0 for anything else.
    pub fn queue_for_frame(&self, frame: &[u8]) -> usize {
        if self.workers == 1 {
            return 0;
        }
        match parse_frame(frame) {
            Ok(p)
                if p.is_ip()
                    && !p.fragment
                    && (p.proto == packet::ipv4::PROTO_TCP
                        || p.proto == packet::ipv4::PROTO_UDP) =>
            {
                self.queue_for_hash(rss::hash_tuple(
                    &rss::SYMMETRIC_KEY,
                    p.src,
                    p.dst,
                    p.src_port,
                    p.dst_port,
                ))
            }
            Ok(p) if matches!(p.network, Network::Ipv4 | Network::Ipv6) => {
                self.queue_for_hash(rss::hash_addrs(&rss::SYMMETRIC_KEY, p.src, p.dst))
            }
            _ => 0,
        }
    }

    /// The worker that owns the flow `client -> vip`: where RSS delivers its forward packets.
    #[inline]
    pub fn owner_of(&self, client: IpAddr, client_port: u16, vip: IpAddr, vip_port: u16) -> usize {
        if self.workers == 1 {
            return 0;
        }
        self.queue_for_hash(rss::hash_tuple(
            &rss::SYMMETRIC_KEY,
            client,
            vip,
            client_port,
            vip_port,
        ))
    }

    /// The SNAT source ports worker `w` allocates from, inclusive.
    pub fn snat_range(&self, w: usize) -> (u16, u16) {
        let (lo, hi) = (self.snat_ports.0 as usize, self.snat_ports.1 as usize);
        let span = (hi - lo + 1) / self.workers;
        let start = lo + w * span;
        (start as u16, (start + span - 1) as u16)
    }

    /// The worker that allocated an SNAT source port, if the port is in the SNAT range.
    #[inline]
    pub fn snat_owner(&self, port: u16) -> Option<usize> {
        let (lo, hi) = self.snat_ports;
        if port < lo || port > hi {
            return None;
        }
        let span = (hi as usize - lo as usize + 1) / self.workers;
        let w = (port - lo) as usize / span;
        (w < self.workers).then_some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snat_ranges_partition_and_invert() {
        // 31744 ports over 3 workers: 10581 each, one left over.
        let s = Steering::new(3, (1024, 32767));
        let mut prev_end = 1023u16;
        for w in 0..3 {
            let (lo, hi) = s.snat_range(w);
            assert_eq!(lo, prev_end + 1);
            assert_eq!(s.snat_owner(lo), Some(w));
            assert_eq!(s.snat_owner(hi), Some(w));
            prev_end = hi;
        }
        assert_eq!(s.snat_owner(1000), None);
        // The ports left over by the even split belong to no worker.
        assert_eq!(s.snat_owner(32767), None);
    }

    #[test]
    fn owner_matches_forward_queue_in_both_directions() {
        let s = Steering::new(2, (1024, 65535));
        let c: IpAddr = "203.0.113.9".parse().unwrap();
        let v: IpAddr = "198.51.100.10".parse().unwrap();
        let mut seen = [0; 2];
        for p in 1000..1100 {
            let o = s.owner_of(c, p, v, 80);
            assert_eq!(o, s.owner_of(v, 80, c, p));
            seen[o] += 1;
        }
        assert!(seen[0] > 20 && seen[1] > 20, "{seen:?}");
    }
}
