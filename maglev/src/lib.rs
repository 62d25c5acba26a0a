//! The Maglev lookup table (Eisenbud et al., NSDI 2016, section 3.4), with weights.
//!
//! Each backend's preference list is the permutation `(offset + j * skip) mod M` of the table
//! slots, with `offset` and `skip` from two independent hashes of the backend's identity (its
//! address). Backends take turns claiming their next free preferred slot, in the order of
//! their identities (not the order they are listed in), and a backend of weight `w` takes
//! `w / w_max` turns per round, so its share of slots follows its weight. Which backend owns
//! each slot is then a pure function of the set of (identity, weight): every sluice instance
//! behind ECMP builds the same table whatever order its configuration lists the backends in
//! or they were added in. Built off the data path; lookups are one modulo and one load.
//!
//! This crate depends on nothing of sluice's: `config` uses its prime helpers to validate
//! table sizes, and `dataplane` builds and reads tables with it.

/// The splitmix64 finaliser: a bijection on u64 with full avalanche. (The same function as
/// `packet::flow::mix64`; kept here so Maglev depends on no other crate of ours, and so the
/// table a backend set gives can never change because a packet hash did.)
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Marks an unclaimed slot during the build.
const EMPTY: u16 = u16::MAX;

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    /// The size is not a prime (permutations only cover every slot when M is prime).
    NotPrime(u32),
    NoBackends,
    /// More backends than slots, or than a u16 index can name.
    TooManyBackends {
        backends: usize,
        size: u32,
    },
    ZeroWeight {
        backend: usize,
    },
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaglevError::NotPrime(m) => write!(
                f,
                "Maglev table size {m} is not prime; use a prime such as 65537 or 655373"
            ),
            MaglevError::NoBackends => f.write_str("a Maglev table needs at least one backend"),
            MaglevError::TooManyBackends { backends, size } => write!(
                f,
                "{backends} backends do not fit a Maglev table of {size} entries"
            ),
            MaglevError::ZeroWeight { backend } => {
                write!(f, "backend {backend} has weight 0; weights start at 1")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// A built table: slot -> backend index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    entries: Box<[u16]>,
}

/// A backend as Maglev sees it: a stable identity and a weight.
#[derive(Debug, Clone, Copy)]
pub struct MaglevBackend<'a> {
    pub identity: &'a [u8],
    pub weight: u32,
}

fn fnv1a(basis: u64, data: &[u8]) -> u64 {
    let mut h = basis;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

impl MaglevTable {
    /// Builds the table of `size` entries (a prime) for `backends`.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Result<MaglevTable, MaglevError> {
        if !is_prime(size as u64) {
            return Err(MaglevError::NotPrime(size));
        }
        let n = backends.len();
        if n == 0 {
            return Err(MaglevError::NoBackends);
        }
        if n > size as usize || n >= EMPTY as usize {
            return Err(MaglevError::TooManyBackends { backends: n, size });
        }
        if let Some(i) = backends.iter().position(|b| b.weight == 0) {
            return Err(MaglevError::ZeroWeight { backend: i });
        }
        let m = size as u64;
        // Two independent hashes: FNV-1a from two different offset bases, each finalised.
        let mut pos: Vec<u64> = Vec::with_capacity(n);
        let mut skip: Vec<u64> = Vec::with_capacity(n);
        for b in backends {
            pos.push(fnv1a(0xcbf2_9ce4_8422_2325, b.identity) % m);
            skip.push(fnv1a(0x6c62_272e_07bb_0142, b.identity) % (m - 1) + 1);
        }
        // Turns are taken in the order of the identities: two lists of the same backends in
        // different orders then fill every slot alike (taking turns in list order, a slot
        // two backends both want next goes to whichever is listed first).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            backends[a]
                .identity
                .cmp(backends[b].identity)
                .then(backends[a].weight.cmp(&backends[b].weight))
        });
        let w_max = backends.iter().map(|b| b.weight as u64).max().unwrap_or(1);
        let mut credit = vec![0u64; n];
        let mut entries = vec![EMPTY; size as usize].into_boxed_slice();
        let mut filled = 0u64;
        loop {
            for &i in &order {
                credit[i] += backends[i].weight as u64;
                while credit[i] >= w_max {
                    credit[i] -= w_max;
                    let mut c = pos[i];
                    while entries[c as usize] != EMPTY {
                        c = (c + skip[i]) % m;
                    }
                    entries[c as usize] = i as u16;
                    pos[i] = (c + skip[i]) % m;
                    filled += 1;
                    if filled == m {
                        return Ok(MaglevTable { entries });
                    }
                }
            }
        }
    }

    /// The backend index for a flow hash.
    #[inline(always)]
    pub fn lookup(&self, flow_hash: u64) -> u16 {
        // `entries` is never empty (size >= 2 as a prime), so the index is in range.
        self.entries[(flow_hash % self.entries.len() as u64) as usize]
    }

    /// Re-labels every entry through `map` (entry `i` becomes `map[i]`): a table built over
    /// a subset of a service's backends then names them by their place in the full list.
    pub fn relabel(&mut self, map: &[u16]) {
        for e in self.entries.iter_mut() {
            if let Some(m) = map.get(*e as usize) {
                *e = *m;
            }
        }
    }

    pub fn size(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// Slots held by each of `n` backends.
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut s = vec![0usize; n];
        for &e in self.entries.iter() {
            if let Some(c) = s.get_mut(e as usize) {
                *c += 1;
            }
        }
        s
    }
}

/// True when `n` is prime (trial division; table sizes are at most ~2^24).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The smallest prime >= n (for suggesting a table size).
pub fn next_prime(mut n: u64) -> u64 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255))
            .collect()
    }

    fn table(ids: &[String], weights: &[u32], size: u32) -> MaglevTable {
        let bs: Vec<MaglevBackend> = ids
            .iter()
            .zip(weights)
            .map(|(i, &w)| MaglevBackend {
                identity: i.as_bytes(),
                weight: w,
            })
            .collect();
        MaglevTable::build(&bs, size).unwrap()
    }

    /// Measured (65537 entries): with weights 1..=10 every backend's share is within 0.01
    /// percentage points of its weight share (the largest gap is 0.00001); the test allows 1%.
    #[test]
    fn shares_follow_weights_within_one_percent() {
        let ids = names(10);
        let weights: Vec<u32> = (1..=10).collect();
        let t = table(&ids, &weights, 65537);
        let total: u32 = weights.iter().sum();
        for (i, s) in t.shares(10).iter().enumerate() {
            let got = *s as f64 / 65537.0;
            let want = weights[i] as f64 / total as f64;
            eprintln!(
                "weight {}: {s} entries, share {got:.5} vs {want:.5}",
                weights[i]
            );
            assert!(
                (got - want).abs() / want < 0.01,
                "backend {i}: share {got:.5} vs weight share {want:.5}"
            );
        }
        let equal = table(&names(1000), &[1; 1000], 655373);
        let s = equal.shares(1000);
        let (lo, hi) = (s.iter().min().unwrap(), s.iter().max().unwrap());
        assert!(hi - lo <= 1, "equal weights: min {lo} max {hi}");
    }

    /// Measured: removing one of 100 equal backends (65537 entries) reassigns 0.58% of the
    /// entries the other 99 held (377 of 64882; the paper reports the same order at M = 65537);
    /// the test allows 2%. Every entry of the removed backend moves, as it must.
    #[test]
    fn removing_a_backend_moves_few_other_entries() {
        let ids = names(100);
        let before = table(&ids, &[1; 100], 65537);
        let mut fewer = ids.clone();
        let gone = fewer.remove(37);
        let after = table(&fewer, &[1; 99], 65537);
        let mut moved = 0usize;
        let mut others = 0usize;
        for (a, b) in before.entries().iter().zip(after.entries()) {
            let was = &ids[*a as usize];
            let now = &fewer[*b as usize];
            assert_ne!(now, &gone);
            if was != &gone {
                others += 1;
                if was != now {
                    moved += 1;
                }
            }
        }
        let frac = moved as f64 / others as f64;
        eprintln!(
            "disruption: moved {moved} of {others} ({:.3}%)",
            frac * 100.0
        );
        assert!(
            frac < 0.02,
            "moved {moved} of {others} ({:.3}%)",
            frac * 100.0
        );
    }

    #[test]
    fn table_is_a_pure_function_of_the_backend_set() {
        let ids = names(40);
        let weights: Vec<u32> = (0..40).map(|i| 1 + i % 4).collect();
        let a = table(&ids, &weights, 65537);
        assert_eq!(a, table(&ids, &weights, 65537));
        // Any order of listing changes the indices, never which backend owns a slot: every
        // one of the 65,537 slots names the same backend.
        let owners = |ids: &[String], t: &MaglevTable| -> Vec<String> {
            t.entries()
                .iter()
                .map(|&e| ids[e as usize].clone())
                .collect()
        };
        let want = owners(&ids, &a);
        let mut state = 0x1234_5678_u64;
        for round in 0..6 {
            let mut order: Vec<usize> = (0..40).collect();
            if round == 0 {
                order.reverse();
            } else {
                // A Fisher-Yates shuffle from a fixed seed.
                for i in (1..order.len()).rev() {
                    state = mix64(state);
                    order.swap(i, (state % (i as u64 + 1)) as usize);
                }
            }
            let ids2: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
            let w2: Vec<u32> = order.iter().map(|&i| weights[i]).collect();
            let t = table(&ids2, &w2, 65537);
            assert!(owners(&ids2, &t) == want, "order {order:?}");
        }
        // A different weight is a different set, and a different table.
        let mut heavier = weights.clone();
        heavier[7] += 1;
        assert!(owners(&ids, &table(&ids, &heavier, 65537)) != want);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ids = names(3);
        let bs: Vec<MaglevBackend> = ids
            .iter()
            .map(|i| MaglevBackend {
                identity: i.as_bytes(),
                weight: 1,
            })
            .collect();
        assert_eq!(
            MaglevTable::build(&bs, 65536),
            Err(MaglevError::NotPrime(65536))
        );
        assert_eq!(MaglevTable::build(&[], 65537), Err(MaglevError::NoBackends));
        assert_eq!(
            MaglevTable::build(&bs, 2),
            Err(MaglevError::TooManyBackends {
                backends: 3,
                size: 2
            })
        );
        let z = [MaglevBackend {
            identity: b"a",
            weight: 0,
        }];
        assert_eq!(
            MaglevTable::build(&z, 7),
            Err(MaglevError::ZeroWeight { backend: 0 })
        );
    }

    #[test]
    fn primes() {
        assert!(
            is_prime(65537)
                && is_prime(655373)
                && is_prime(2)
                && !is_prime(65536)
                && !is_prime(1)
                && !is_prime(9)
        );
        assert_eq!(next_prime(65536), 65537);
    }
}
