//! Exact-match tables keyed by an IP endpoint (address, port, protocol), which classify
//! every packet: VIPs to services, NAT backends to services. A key is packed into two machine
//! words (the address as 128 bits, IPv4 mapped, and one word of port, protocol and family), so
//! a probe compares integers instead of hashing and matching `IpAddr` enums field by field.
//! Up to [`LINEAR_MAX`] entries — the usual handful of services — are scanned in a small
//! array; larger tables hash the packed key.

use crate::fasthash::FastMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// Entries up to which a table is scanned rather than hashed.
pub const LINEAR_MAX: usize = 8;

/// An (address, port, protocol) endpoint packed into integers. The family is part of the key,
/// so an IPv4 address never matches its IPv4-mapped IPv6 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointKey {
    addr: u128,
    tail: u32,
}

impl EndpointKey {
    #[inline(always)]
    pub fn new(a: IpAddr, port: u16, proto: u8) -> EndpointKey {
        let (addr, v6) = match a {
            IpAddr::V4(v4) => (u32::from(v4) as u128, 0),
            IpAddr::V6(v6) => (u128::from(v6), 1),
        };
        EndpointKey {
            addr,
            tail: (port as u32) << 16 | (proto as u32) << 8 | v6,
        }
    }
}

impl Hash for EndpointKey {
    #[inline(always)]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64((self.addr >> 64) as u64);
        h.write_u64(self.addr as u64 ^ (self.tail as u64) << 32);
    }
}

/// A map from endpoints to small values (service indices).
#[derive(Debug, Clone)]
pub struct EndpointMap<V> {
    linear: Vec<(EndpointKey, V)>,
    hashed: FastMap<EndpointKey, V>,
}

impl<V> Default for EndpointMap<V> {
    fn default() -> Self {
        EndpointMap {
            linear: Vec::new(),
            hashed: FastMap::default(),
        }
    }
}

impl<V: Copy> EndpointMap<V> {
    /// Inserts or replaces. Built off the data path, so growing here is fine.
    pub fn insert(&mut self, k: EndpointKey, v: V) {
        if !self.hashed.is_empty() {
            self.hashed.insert(k, v);
        } else if let Some(e) = self.linear.iter_mut().find(|e| e.0 == k) {
            e.1 = v;
        } else if self.linear.len() < LINEAR_MAX {
            self.linear.push((k, v));
        } else {
            self.hashed.extend(self.linear.drain(..));
            self.hashed.insert(k, v);
        }
    }

    #[inline]
    pub fn get(&self, k: EndpointKey) -> Option<V> {
        if self.hashed.is_empty() {
            self.linear.iter().find(|e| e.0 == k).map(|e| e.1)
        } else {
            self.hashed.get(&k).copied()
        }
    }

    pub fn len(&self) -> usize {
        self.linear.len() + self.hashed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(a: &str, port: u16, proto: u8) -> EndpointKey {
        EndpointKey::new(a.parse().unwrap(), port, proto)
    }

    #[test]
    fn keys_tell_every_field_and_the_family_apart() {
        let base = k("198.51.100.10", 80, 6);
        assert_eq!(base, k("198.51.100.10", 80, 6));
        for other in [
            k("198.51.100.11", 80, 6),
            k("198.51.100.10", 81, 6),
            k("198.51.100.10", 80, 17),
            k("::ffff:198.51.100.10", 80, 6),
            k("::c633:640a", 80, 6),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn linear_and_hashed_tables_answer_alike() {
        for n in [1usize, LINEAR_MAX, LINEAR_MAX + 1, 300] {
            let mut m = EndpointMap::default();
            for i in 0..n {
                let a = format!("10.0.{}.{}", i / 250, i % 250 + 1);
                m.insert(k(&a, 80, 6), i as u16);
                m.insert(
                    k(&format!("2001:db8::{:x}", i + 1), 443, 6),
                    (i + 1000) as u16,
                );
            }
            // Replacing keeps one entry per key.
            m.insert(k("10.0.0.1", 80, 6), 7);
            assert_eq!(m.len(), 2 * n);
            assert_eq!(m.get(k("10.0.0.1", 80, 6)), Some(7));
            for i in 1..n {
                let a = format!("10.0.{}.{}", i / 250, i % 250 + 1);
                assert_eq!(m.get(k(&a, 80, 6)), Some(i as u16), "n={n} i={i}");
                assert_eq!(m.get(k(&a, 80, 17)), None);
                let v6 = format!("2001:db8::{:x}", i + 1);
                assert_eq!(m.get(k(&v6, 443, 6)), Some((i + 1000) as u16));
            }
            assert_eq!(m.get(k("10.9.9.9", 80, 6)), None);
        }
    }
}
