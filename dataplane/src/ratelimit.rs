//! Token buckets for `[service.rate_limit]`: new flows per client source, and packets per
//! service, each worker holding its share of every rate.
//!
//! A bucket is kept as one time, GCRA's theoretical arrival time (the virtual-scheduling
//! form of a token bucket, as ATM policers and Envoy's local rate limit do it): a rate of r
//! per second spaces arrivals T = 1/r apart, and a burst of b lets one arrive up to (b - 1)·T
//! early. One u64 per bucket, exact at any rate, no refill arithmetic that loses fractions.
//!
//! The per-source buckets live in [`SourceTable`], a fixed array reserved at start
//! (`[conntrack] rate_limit_sources` per worker): a source's slot is found in a small window
//! of its hash, and a new source takes an empty slot, one whose bucket has refilled (it holds
//! nothing a fresh bucket would not), or else the slot seen longest ago. A flood of spoofed
//! sources therefore recycles slots and never grows memory; a real client whose slot was
//! recycled starts again with a full bucket (limits fail open, never shut out a client).

use std::net::IpAddr;

/// A rate and a burst as the data path applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds between arrivals at the rate.
    interval_ns: u64,
    /// How early an arrival may be: (burst - 1) intervals.
    tolerance_ns: u64,
}

impl Rate {
    /// `per_second` arrivals a second (at least 1), `burst` at once (at least 1); `share` of
    /// it (the worker count) taken by each worker.
    pub fn new(per_second: u64, burst: u64, share: usize) -> Rate {
        let per_worker = (per_second / share.max(1) as u64).max(1);
        let burst = (burst / share.max(1) as u64).max(1);
        let interval_ns = (1_000_000_000 / per_worker).max(1);
        Rate {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst - 1),
        }
    }
}

/// One bucket: GCRA's theoretical arrival time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    tat_ns: u64,
}

impl Bucket {
    /// Whether an arrival at `now` conforms to `rate` (and is counted if so).
    #[inline]
    pub fn take(&mut self, now: u64, rate: Rate) -> bool {
        let tat = self.tat_ns.max(now);
        if tat - now > rate.tolerance_ns {
            return false;
        }
        self.tat_ns = tat + rate.interval_ns;
        true
    }

    /// Whether the bucket is full again at `now` (a new bucket would behave the same).
    #[inline]
    pub fn is_full(&self, now: u64) -> bool {
        self.tat_ns <= now
    }
}

/// The source a per-source limit counts: the address itself for IPv4, its /64 for IPv6 (a
/// host can pick any address in its /64), as one 128-bit key.
#[inline]
pub fn source_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)) | (0xffff << 32),
        IpAddr::V6(v) => u128::from(v) & !((1u128 << 64) - 1),
    }
}

/// The address a [`source_key`] stands for (an IPv6 /64 as its first address).
pub fn source_of(key: u128) -> IpAddr {
    if key >> 32 == 0xffff {
        IpAddr::V4(std::net::Ipv4Addr::from(key as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(key))
    }
}

/// One slot of the source table: 48 bytes.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct SourceSlot {
    pub source: u128,
    /// Which service (a hash of its VIP, stable across configuration changes); 0 when empty.
    pub service: u32,
    /// New flows refused since the slot was taken.
    pub refused: u32,
    pub bucket: Bucket,
    pub last_seen_ns: u64,
    pub last_refused_ns: u64,
}

/// Slots a source may be found in, from its hash on.
const WINDOW: usize = 8;

/// Counters of the table itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceTableCounters {
    /// Sources given a slot another source held (a flood of sources, or a full table).
    pub recycled: u64,
}

/// The per-source buckets of one worker, fixed in size.
#[derive(Debug)]
pub struct SourceTable {
    slots: Vec<SourceSlot>,
    mask: usize,
    pub counters: SourceTableCounters,
}

impl SourceTable {
    /// A table of at least `capacity` slots (rounded up to a power of two), reserved now.
    pub fn new(capacity: usize) -> SourceTable {
        let n = capacity.max(WINDOW).next_power_of_two();
        SourceTable {
            slots: vec![SourceSlot::default(); n],
            mask: n - 1,
            counters: SourceTableCounters::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether a new flow from `source` to service `service` (a nonzero service key)
    /// conforms to `rate` at `now`; counts a refusal on the source's slot.
    #[inline]
    pub fn admit(&mut self, source: u128, service: u32, rate: Rate, now: u64) -> bool {
        let h = mix(source, service) as usize;
        let mut victim = h & self.mask;
        let mut victim_seen = u64::MAX;
        for i in 0..WINDOW {
            let at = (h + i) & self.mask;
            let s = &mut self.slots[at];
            if s.service == service && s.source == source {
                s.last_seen_ns = now;
                let ok = s.bucket.take(now, rate);
                if !ok {
                    s.refused = s.refused.saturating_add(1);
                    s.last_refused_ns = now;
                }
                return ok;
            }
            // Free, or holding a bucket that has refilled (and no recent refusal to show):
            // as good as empty. Otherwise the slot seen longest ago.
            let free = s.service == 0
                || (s.bucket.is_full(now) && now.saturating_sub(s.last_refused_ns) > RECENT_NS);
            let seen = if free { 0 } else { s.last_seen_ns };
            if seen < victim_seen {
                victim = at;
                victim_seen = seen;
            }
        }
        let s = &mut self.slots[victim];
        if s.service != 0 && victim_seen != 0 {
            self.counters.recycled += 1;
        }
        *s = SourceSlot {
            source,
            service,
            refused: 0,
            bucket: Bucket::default(),
            last_seen_ns: now,
            last_refused_ns: 0,
        };
        // A fresh bucket always admits.
        s.bucket.take(now, rate)
    }

    /// The sources limited recently (a refusal within [`RECENT_NS`] of `now`), up to the
    /// room `out` has, for `sluicectl limits`.
    pub fn limited_now(&self, now: u64, out: &mut Vec<SourceSlot>) {
        self.scan_limited(0, self.slots.len(), now, out);
    }

    /// [`SourceTable::limited_now`] over at most `count` slots from `from`, so a probe holds
    /// a worker up only briefly; returns the slot to go on from (the capacity when done).
    /// Never allocates (`out` is the caller's).
    pub fn scan_limited(
        &self,
        from: usize,
        count: usize,
        now: u64,
        out: &mut Vec<SourceSlot>,
    ) -> usize {
        let end = from.saturating_add(count).min(self.slots.len());
        for (i, s) in self.slots.iter().enumerate().take(end).skip(from) {
            if out.len() == out.capacity() {
                return i;
            }
            if s.service != 0 && s.refused > 0 && now.saturating_sub(s.last_refused_ns) <= RECENT_NS
            {
                out.push(*s);
            }
        }
        end
    }
}

/// How long after its last refused flow a source still shows as limited: 10 s.
pub const RECENT_NS: u64 = 10_000_000_000;

#[inline]
fn mix(source: u128, service: u32) -> u64 {
    packet::flow::mix64(
        (source as u64)
            ^ ((source >> 64) as u64).rotate_left(29)
            ^ u64::from(service).rotate_left(47),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let rate = Rate::new(10, 5, 1);
        let mut b = Bucket::default();
        let t0 = 100 * S;
        let burst = (0..20).filter(|_| b.take(t0, rate)).count();
        assert_eq!(burst, 5, "the burst at once");
        // Over the next 10 s, one every 100 ms: 100 more, whatever the arrival spacing.
        let mut admitted = 0;
        for i in 1..=100_000u64 {
            if b.take(t0 + i * 100_000, rate) {
                admitted += 1;
            }
        }
        assert!((99..=101).contains(&admitted), "{admitted} in 10 s at 10/s");
        assert!(b.is_full(t0 + 20 * S));
    }

    #[test]
    fn each_worker_takes_its_share() {
        let whole = Rate::new(1000, 100, 1);
        let quarter = Rate::new(1000, 100, 4);
        assert_eq!(whole.interval_ns * 4, quarter.interval_ns);
        assert_eq!(
            Rate::new(1, 1, 8),
            Rate::new(1, 1, 1),
            "never below one per second"
        );
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(source_of(source_key(a)), a);
        let b: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source_key(b), source_key(c), "one /64, one source");
        assert_eq!(
            source_of(source_key(b)),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(
            source_key(b),
            source_key("2001:db8:1:3::1".parse().unwrap())
        );
    }

    #[test]
    fn a_source_over_its_rate_is_refused_while_others_are_not() {
        let mut t = SourceTable::new(1024);
        let rate = Rate::new(100, 10, 1);
        let (a, b) = (
            source_key("10.0.0.1".parse().unwrap()),
            source_key("10.0.0.2".parse().unwrap()),
        );
        // `a` opens 1,000 flows in one second, `b` 50.
        let (mut a_ok, mut b_ok) = (0, 0);
        for i in 0..1000u64 {
            let now = 10 * S + i * 1_000_000;
            a_ok += usize::from(t.admit(a, 7, rate, now));
            if i % 20 == 0 {
                b_ok += usize::from(t.admit(b, 7, rate, now));
            }
        }
        assert!(
            (105..=112).contains(&a_ok),
            "a cut to its burst and rate: {a_ok}"
        );
        assert_eq!(b_ok, 50, "b under its rate: all");
        let mut out = Vec::with_capacity(16);
        t.limited_now(11 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].source, a);
        assert!(out[0].refused >= 880);
        // The same source to another service has its own bucket.
        assert!(t.admit(a, 8, rate, 11 * S));
    }

    #[test]
    fn a_flood_of_sources_recycles_slots_and_never_grows_the_table() {
        let mut t = SourceTable::new(256);
        let cap = t.capacity();
        let rate = Rate::new(1, 1, 1);
        let limited = source_key("192.0.2.9".parse().unwrap());
        let mut now = S;
        for i in 0..100_000u32 {
            now += 1_000;
            // Spoofed sources, each seen once: every one admitted (a fresh bucket).
            assert!(t.admit(u128::from(i) | 1 << 100, 1, rate, now));
            // A real source that keeps opening flows is seen often, so its slot survives.
            if i % 64 == 0 {
                t.admit(limited, 1, rate, now);
            }
        }
        assert_eq!(t.capacity(), cap);
        assert!(t.counters.recycled > 90_000, "{:?}", t.counters);
        let mut out = Vec::with_capacity(8);
        t.limited_now(now, &mut out);
        assert!(
            out.iter().any(|s| s.source == limited && s.refused > 1000),
            "the busy source stays limited through the flood: {out:?}"
        );
    }
}
