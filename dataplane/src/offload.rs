//! The offload seam: where the poll loop hands frames to a pool of workers that run off the
//! packet path (the L7 pool: userspace TCP, TLS and HTTP), and takes back the frames they
//! produce.
//!
//! A service marked for offload ([`ServiceSetup::offload`](crate::setup::ServiceSetup)) has
//! its frames handed, unmodified, to one of `shards` bounded rings, chosen by the flow's
//! stable hash, so every frame of a connection reaches the same shard whichever worker
//! received it. Frames addressed to the node in a shard's upstream port range (replies on the
//! connections a shard opens to backends) go to that shard too. A shard pushes the frames it
//! produces onto the return ring of the worker it names (the one the frame came from, for a
//! frame it answers in place); that worker drains its return ring into its transmit burst,
//! since only a queue's owner may transmit on it.
//!
//! Both directions are lock-free bounded queues; a full ring drops the frame and counts it.
//! Nothing here allocates after [`OffloadRings::new`].

use crossbeam::queue::ArrayQueue;

/// A frame on its way to a shard, with the worker whose queue it arrived on.
#[derive(Debug)]
pub struct Handed<F> {
    pub frame: F,
    pub worker: usize,
}

/// How frames are spread over the shards: a `Copy` value each worker keeps, so choosing a
/// shard reads nothing shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadPlan {
    shards: usize,
    /// The node's source ports for the shards' upstream connections (inclusive), split
    /// evenly between shards; `None` when the shards open no connections of their own.
    upstream_ports: Option<(u16, u16)>,
}

impl OffloadPlan {
    pub fn new(shards: usize) -> Self {
        OffloadPlan {
            shards: shards.max(1),
            upstream_ports: None,
        }
    }

    /// Steers frames to the node's address with a destination port in `lo..=hi` to the
    /// shard that owns that port: shard `i` of `n` owns the `i`-th of `n` even slices.
    pub fn with_upstream_ports(mut self, lo: u16, hi: u16) -> Self {
        self.upstream_ports = (lo <= hi).then_some((lo, hi));
        self
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard a flow with this stable hash belongs to (multiply-shift: no division).
    #[inline]
    pub fn shard_of(&self, flow_hash: u64) -> usize {
        ((flow_hash as u128 * self.shards as u128) >> 64) as usize
    }

    /// The source ports shard `shard` opens upstream connections from (inclusive), if any.
    pub fn upstream_range(&self, shard: usize) -> Option<(u16, u16)> {
        let (lo, hi) = self.upstream_ports?;
        let n = self.shards as u32;
        let span = hi as u32 - lo as u32 + 1;
        let (s, e) = (
            lo as u32 + span * shard as u32 / n,
            lo as u32 + span * (shard as u32 + 1) / n,
        );
        (s < e && shard < self.shards).then(|| (s as u16, (e - 1) as u16))
    }

    /// The shard that owns upstream port `port`, if it is in the upstream range.
    #[inline]
    pub fn upstream_owner(&self, port: u16) -> Option<usize> {
        let (lo, hi) = self.upstream_ports?;
        if port < lo || port > hi {
            return None;
        }
        // The shard i with floor(span*i/n) <= off < floor(span*(i+1)/n): the inverse of
        // `upstream_range`'s split.
        let span = hi as u64 - lo as u64 + 1;
        let off = (port - lo) as u64;
        Some((((off + 1) * self.shards as u64 - 1) / span) as usize)
    }
}

/// The rings between the workers and the offload shards.
pub struct OffloadRings<F> {
    plan: OffloadPlan,
    to_shard: Vec<ArrayQueue<Handed<F>>>,
    to_worker: Vec<ArrayQueue<F>>,
}

impl<F> OffloadRings<F> {
    /// Rings for the shards of `plan` and for `workers` workers, each holding `capacity`
    /// frames.
    pub fn new(plan: OffloadPlan, workers: usize, capacity: usize) -> Self {
        OffloadRings {
            plan,
            to_shard: (0..plan.shards())
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
            to_worker: (0..workers.max(1))
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
        }
    }

    pub fn plan(&self) -> OffloadPlan {
        self.plan
    }

    /// Worker side: hands `frame` (received by `worker`) to `shard`; gives it back when the
    /// ring is full or the shard does not exist.
    #[inline]
    pub fn hand(&self, shard: usize, worker: usize, frame: F) -> Result<(), F> {
        match self.to_shard.get(shard) {
            Some(q) => q.push(Handed { frame, worker }).map_err(|h| h.frame),
            None => Err(frame),
        }
    }

    /// Shard side: the next frame handed to `shard`.
    #[inline]
    pub fn take(&self, shard: usize) -> Option<Handed<F>> {
        self.to_shard.get(shard)?.pop()
    }

    /// Shard side: queues `frame` for transmission by `worker`; gives it back when that
    /// worker's return ring is full or the worker does not exist.
    #[inline]
    pub fn give_back(&self, worker: usize, frame: F) -> Result<(), F> {
        match self.to_worker.get(worker) {
            Some(q) => q.push(frame),
            None => Err(frame),
        }
    }

    /// Worker side: the next frame a shard returned to `worker`.
    #[inline]
    pub fn returned(&self, worker: usize) -> Option<F> {
        self.to_worker.get(worker)?.pop()
    }

    /// True when no frame is in any ring.
    pub fn is_empty(&self) -> bool {
        self.to_shard.iter().all(|q| q.is_empty()) && self.to_worker.iter().all(|q| q.is_empty())
    }

    /// Takes a frame still waiting for a shard, for freeing at shutdown.
    pub fn pop_unclaimed(&self) -> Option<Handed<F>> {
        self.to_shard.iter().find_map(|q| q.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_ports_split_evenly_and_own_every_port_once() {
        for shards in 1..=5 {
            let r = OffloadPlan::new(shards).with_upstream_ports(1000, 1099);
            let mut owned = vec![None; 100];
            for s in 0..shards {
                let (lo, hi) = r.upstream_range(s).unwrap();
                for p in lo..=hi {
                    assert_eq!(owned[(p - 1000) as usize], None, "port {p} owned twice");
                    owned[(p - 1000) as usize] = Some(s);
                    assert_eq!(r.upstream_owner(p), Some(s), "{shards} shards, port {p}");
                }
            }
            assert!(owned.iter().all(|o| o.is_some()));
            assert_eq!(r.upstream_owner(999), None);
            assert_eq!(r.upstream_owner(1100), None);
        }
        let none = OffloadPlan::new(2);
        assert_eq!(none.upstream_owner(1000), None);
        assert_eq!(none.upstream_range(0), None);
    }

    #[test]
    fn shard_of_spreads_hashes_over_every_shard() {
        let r = OffloadPlan::new(3);
        let mut n = [0usize; 3];
        for i in 0..3000u64 {
            n[r.shard_of(packet::flow::mix64(i))] += 1;
        }
        assert!(n.iter().all(|&c| c > 800), "{n:?}");
        assert_eq!(r.shard_of(u64::MAX), 2);
        assert_eq!(r.shard_of(0), 0);
    }

    #[test]
    fn full_rings_give_the_frame_back() {
        let r = OffloadRings::new(OffloadPlan::new(1), 1, 1);
        assert_eq!(r.hand(0, 0, 1u32), Ok(()));
        assert_eq!(r.hand(0, 0, 2), Err(2));
        assert_eq!(r.hand(7, 0, 3), Err(3));
        assert_eq!(r.give_back(0, 4), Ok(()));
        assert_eq!(r.give_back(0, 5), Err(5));
        assert_eq!(r.give_back(9, 6), Err(6));
        assert!(!r.is_empty());
        let h = r.take(0).unwrap();
        assert_eq!((h.frame, h.worker), (1, 0));
        assert_eq!(r.returned(0), Some(4));
        assert!(r.is_empty());
    }
}
