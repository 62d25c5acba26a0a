//! A hash index from flow keys to slab slot ids, laid out so a lookup touches one cache line
//! and so that line can be prefetched before it is needed: buckets of 64 bytes hold eight
//! (16-bit tag, 32-bit id) pairs. A key's probe sequence starts at bucket `hash & mask` and
//! moves to the next bucket only while the bucket says something that hashed to it overflowed
//! (linear probing at bucket granularity). Each bucket counts the entries that passed it while
//! full and live further on, and removal decrements the counts along the removed entry's probe,
//! so under churn probes stay as short as the live entries need (a flag that only ever set
//! would, after enough insertions and evictions, make every miss walk the whole table). Sized for at most half the slots in use, so probes
//! rarely leave the first bucket. Fixed size: it never allocates after construction.

/// Slots per bucket.
const WAYS: usize = 8;
/// Buckets a probe visits at most. An entry lives within this many buckets of its home
/// bucket (an insert that finds no room in them fails), so no lookup, however unlucky or
/// hostile its keys, reads more than 16 cache lines. At the sizing below (at most half the
/// slots in use) a probe past the second bucket is already rare.
pub const MAX_PROBE: usize = 16;
/// Tag of an empty slot (real tags have the low bit set).
const EMPTY: u16 = 0;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Bucket {
    tags: [u16; WAYS],
    ids: [u32; WAYS],
    /// How many entries whose probe passed this bucket (because it was full) live further
    /// on. Saturates at 255, after which it is never decremented: a longer probe, never a
    /// wrong answer.
    overflow: u8,
}

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [EMPTY; WAYS],
    ids: [0; WAYS],
    overflow: 0,
};

pub struct FlowIndex {
    buckets: Box<[Bucket]>,
    mask: usize,
    len: usize,
}

#[inline(always)]
fn tag_of(hash: u64) -> u16 {
    ((hash >> 48) as u16) | 1
}

impl FlowIndex {
    /// An index for up to `capacity` entries (at most half its slots will be in use).
    pub fn with_capacity(capacity: usize) -> FlowIndex {
        let buckets = (capacity.max(1) * 2).div_ceil(WAYS).next_power_of_two();
        FlowIndex {
            buckets: vec![EMPTY_BUCKET; buckets].into_boxed_slice(),
            mask: buckets - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of its buckets (fixed at construction).
    pub fn reserved_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Asks the CPU to start loading the bucket a lookup of `hash` will read first.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        let b = &self.buckets[hash as usize & self.mask];
        prefetch_read(b as *const Bucket as *const u8);
    }

    /// The id stored for `hash` for which `is_key(id)` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut b = hash as usize & self.mask;
        for _ in 0..self.probe_len() {
            let bucket = &self.buckets[b];
            for w in 0..WAYS {
                if bucket.tags[w] == tag && is_key(bucket.ids[w]) {
                    return Some(bucket.ids[w]);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// The id of the first entry in `hash`'s home bucket with its tag: the likely answer of
    /// [`FlowIndex::find`], without a key to compare.
    #[inline(always)]
    pub fn first_in_home(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let bucket = &self.buckets[hash as usize & self.mask];
        let w = bucket.tags.iter().position(|&t| t == tag)?;
        Some(bucket.ids[w])
    }

    /// Buckets one probe may visit: [`MAX_PROBE`], or the whole table if it is smaller.
    #[inline(always)]
    fn probe_len(&self) -> usize {
        MAX_PROBE.min(self.mask + 1)
    }

    /// Stores `id` under `hash` (the caller ensures the key is not present). False when the
    /// [`MAX_PROBE`] buckets from its home are full (the caller does not track the key).
    pub fn insert(&mut self, hash: u64, id: u32) -> bool {
        let tag = tag_of(hash);
        let home = hash as usize & self.mask;
        let mut b = home;
        for _ in 0..self.probe_len() {
            let bucket = &mut self.buckets[b];
            if let Some(w) = bucket.tags.iter().position(|t| *t == EMPTY) {
                bucket.tags[w] = tag;
                bucket.ids[w] = id;
                self.len += 1;
                self.adjust_overflow(home, b, true);
                return true;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Counts (or uncounts) an entry stored in bucket `at` whose probe started at `home` in
    /// every bucket it passed on the way.
    fn adjust_overflow(&mut self, home: usize, at: usize, add: bool) {
        let mut b = home;
        while b != at {
            let o = &mut self.buckets[b].overflow;
            if add {
                *o = o.saturating_add(1);
            } else if *o != u8::MAX {
                *o -= 1;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Removes the entry `id` stored under `hash`. True if it was there.
    pub fn remove(&mut self, hash: u64, id: u32) -> bool {
        let tag = tag_of(hash);
        let home = hash as usize & self.mask;
        let mut b = home;
        for _ in 0..self.probe_len() {
            let bucket = &mut self.buckets[b];
            if let Some(w) = (0..WAYS).find(|&w| bucket.tags[w] == tag && bucket.ids[w] == id) {
                bucket.tags[w] = EMPTY;
                self.len -= 1;
                self.adjust_overflow(home, b, false);
                return true;
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }
}

/// A read prefetch of the cache line at `p` (a hint: no effect on correctness).
#[inline(always)]
pub fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::flow::mix64;

    #[test]
    fn insert_find_remove_under_full_load_and_collisions() {
        let n = 4096usize;
        let mut ix = FlowIndex::with_capacity(n);
        // Every key in one of four neighbouring home buckets out of each sixteen: forces
        // overflow chains (each cluster holds 64 entries, 8 buckets' worth).
        let hash = |i: u32| (mix64(i as u64) & !0x0f_u64) | (i as u64 % 4);
        for i in 0..n as u32 {
            assert!(ix.insert(hash(i), i));
        }
        assert_eq!(ix.len(), n);
        for i in 0..n as u32 {
            assert_eq!(ix.find(hash(i), |id| id == i), Some(i), "key {i}");
        }
        assert_eq!(ix.find(hash(7), |id| id == 99_999), None);
        for i in (0..n as u32).step_by(2) {
            assert!(ix.remove(hash(i), i));
        }
        assert!(!ix.remove(hash(0), 0));
        for i in 0..n as u32 {
            assert_eq!(
                ix.find(hash(i), |id| id == i).is_some(),
                i % 2 == 1,
                "key {i}"
            );
        }
        // Freed ways are reused without growing.
        for i in (0..n as u32).step_by(2) {
            assert!(ix.insert(hash(i), i));
        }
        assert_eq!(ix.len(), n);
    }

    /// Keys that all share a home bucket (what a client choosing tuples against a known
    /// hash would send) fill at most [`MAX_PROBE`] buckets; past that, inserts fail rather
    /// than lengthen every probe.
    #[test]
    fn a_full_probe_window_refuses_inserts_instead_of_growing_the_probe() {
        let mut ix = FlowIndex::with_capacity(4096);
        let hash = |i: u32| (i as u64) << 40;
        let room = (MAX_PROBE * WAYS) as u32;
        for i in 0..room {
            assert!(ix.insert(hash(i), i), "{i}");
        }
        assert!(!ix.insert(hash(room), room));
        assert_eq!(ix.len(), room as usize);
        for i in 0..room {
            assert_eq!(ix.find(hash(i), |id| id == i), Some(i));
        }
        assert_eq!(ix.find(hash(room), |id| id == room), None);
        assert!(ix.remove(hash(5), 5));
        assert!(ix.insert(hash(room), room));
        assert_eq!(ix.find(hash(room), |id| id == room), Some(room));
        // Keys homed elsewhere are unaffected.
        assert!(ix.insert(hash(1) | 700, 9999));
    }

    #[test]
    fn spread_keys_mostly_stay_in_their_first_bucket() {
        let n = 100_000usize;
        let mut ix = FlowIndex::with_capacity(n);
        for i in 0..n as u32 {
            ix.insert(mix64(i as u64), i);
        }
        let overflowed = ix.buckets.iter().filter(|b| b.overflow > 0).count();
        assert!(
            (overflowed as f64) < ix.buckets.len() as f64 * 0.02,
            "{overflowed} of {} buckets overflowed",
            ix.buckets.len()
        );
    }

    #[test]
    fn churn_keeps_probes_short() {
        // A full table whose entries are replaced over and over, as conntrack eviction does:
        // overflow counts must fall back as entries leave, or misses would walk the table.
        let n = 1024usize;
        let mut ix = FlowIndex::with_capacity(n);
        let mut live: std::collections::VecDeque<u32> = (0..n as u32).collect();
        for &i in &live {
            ix.insert(mix64(i as u64), i);
        }
        for next in n as u32..(n as u32 * 200) {
            let old = live.pop_front().unwrap();
            assert!(ix.remove(mix64(old as u64), old));
            assert!(ix.insert(mix64(next as u64), next));
            live.push_back(next);
        }
        assert_eq!(ix.len(), n);
        for &i in &live {
            assert_eq!(ix.find(mix64(i as u64), |id| id == i), Some(i));
        }
        let overflowed = ix.buckets.iter().filter(|b| b.overflow > 0).count();
        assert!(
            overflowed * 10 < ix.buckets.len(),
            "{overflowed} of {} buckets still say an entry overflowed",
            ix.buckets.len()
        );
        let total: usize = ix.buckets.iter().map(|b| b.overflow as usize).sum();
        let mut expected = 0;
        for &i in &live {
            let h = mix64(i as u64);
            let mut b = h as usize & ix.mask;
            while !ix.buckets[b]
                .ids
                .iter()
                .zip(&ix.buckets[b].tags)
                .any(|(id, t)| *id == i && *t == tag_of(h))
            {
                expected += 1;
                b = (b + 1) & ix.mask;
            }
        }
        assert_eq!(
            total, expected,
            "overflow counts match the live entries' displacement"
        );
    }
}
