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
//! Frames cross the seam as copies in [`OffloadFrame`]s, fixed-size buffers from one pool
//! allocated by [`OffloadRings::new`]: a shard then never holds a port's buffer (an mbuf or
//! a UMEM chunk, which only its queue's owner may free or send), and it can make frames of
//! its own (a SYN-ACK, an upstream connection's segments) from the same pool. The worker
//! copies a handed frame in and frees the port's buffer at once; it copies a returned frame
//! into a buffer of its port, filling in the Ethernet addresses a shard does not know.
//!
//! Both directions are lock-free bounded queues; a full ring, or an empty pool, drops the
//! frame and counts it. Nothing here allocates after [`OffloadRings::new`].

use crossbeam::queue::ArrayQueue;

/// The largest frame that crosses the seam: a 1500-byte IP packet with a VLAN-tagged
/// Ethernet header, and room to spare. Larger frames are dropped as `oversize`.
pub const OFFLOAD_FRAME: usize = 2048;

/// A frame's bytes on their way to or from a shard: a fixed buffer from the rings' pool.
pub struct OffloadFrame {
    buf: Box<[u8; OFFLOAD_FRAME]>,
    len: u16,
}

impl OffloadFrame {
    fn new() -> Self {
        OffloadFrame {
            buf: Box::new([0u8; OFFLOAD_FRAME]),
            len: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len as usize]
    }

    /// Sets the length to `len` (at most [`OFFLOAD_FRAME`]) and returns the bytes to fill.
    pub fn resize(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > OFFLOAD_FRAME {
            return None;
        }
        self.len = len as u16;
        Some(&mut self.buf[..len])
    }

    /// Replaces the contents with `data`; false (unchanged) if it does not fit.
    pub fn load(&mut self, data: &[u8]) -> bool {
        match self.resize(data.len()) {
            Some(b) => {
                b.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for OffloadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OffloadFrame({} bytes)", self.len)
    }
}

/// A frame on its way to a shard, with the worker whose queue it arrived on.
#[derive(Debug)]
pub struct Handed {
    pub frame: OffloadFrame,
    pub worker: usize,
}

/// Why a frame did not reach its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandError {
    /// The shard's ring is full (or the shard does not exist).
    RingFull,
    /// Every buffer of the pool is in use.
    NoBuffer,
    /// The frame is larger than [`OFFLOAD_FRAME`].
    Oversize,
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

/// The rings between the workers and the offload shards, and the pool of frames they carry.
pub struct OffloadRings {
    plan: OffloadPlan,
    to_shard: Vec<ArrayQueue<Handed>>,
    to_worker: Vec<ArrayQueue<OffloadFrame>>,
    free: ArrayQueue<OffloadFrame>,
}

impl OffloadRings {
    /// Rings for the shards of `plan` and for `workers` workers, each holding `capacity`
    /// frames, and a pool with a frame for every slot of every ring (so a full pool means
    /// full rings, or frames a shard holds on to).
    pub fn new(plan: OffloadPlan, workers: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let workers = workers.max(1);
        let frames = capacity * (plan.shards() + workers);
        let free = ArrayQueue::new(frames);
        for _ in 0..frames {
            let _ = free.push(OffloadFrame::new());
        }
        OffloadRings {
            plan,
            to_shard: (0..plan.shards())
                .map(|_| ArrayQueue::new(capacity))
                .collect(),
            to_worker: (0..workers).map(|_| ArrayQueue::new(capacity)).collect(),
            free,
        }
    }

    pub fn plan(&self) -> OffloadPlan {
        self.plan
    }

    /// Worker side: copies `data` (received by `worker`) into a frame of the pool and hands
    /// it to `shard`.
    #[inline]
    pub fn hand(&self, shard: usize, worker: usize, data: &[u8]) -> Result<(), HandError> {
        let q = self.to_shard.get(shard).ok_or(HandError::RingFull)?;
        if data.len() > OFFLOAD_FRAME {
            return Err(HandError::Oversize);
        }
        if q.is_full() {
            return Err(HandError::RingFull);
        }
        let mut frame = self.free.pop().ok_or(HandError::NoBuffer)?;
        frame.load(data);
        q.push(Handed { frame, worker }).map_err(|h| {
            self.recycle(h.frame);
            HandError::RingFull
        })
    }

    /// Shard side: the next frame handed to `shard`.
    #[inline]
    pub fn take(&self, shard: usize) -> Option<Handed> {
        self.to_shard.get(shard)?.pop()
    }

    /// Shard side: a free frame to fill, if the pool has one.
    #[inline]
    pub fn frame(&self) -> Option<OffloadFrame> {
        self.free.pop()
    }

    /// Either side: gives a frame back to the pool.
    #[inline]
    pub fn recycle(&self, frame: OffloadFrame) {
        // The pool has room for every frame it made; one made elsewhere is dropped.
        let _ = self.free.push(frame);
    }

    /// Shard side: queues `frame` for transmission by `worker`; gives it back when that
    /// worker's return ring is full or the worker does not exist.
    #[inline]
    pub fn give_back(&self, worker: usize, frame: OffloadFrame) -> Result<(), OffloadFrame> {
        match self.to_worker.get(worker) {
            Some(q) => q.push(frame),
            None => Err(frame),
        }
    }

    /// Worker side: the next frame a shard returned to `worker` (recycle it when copied).
    #[inline]
    pub fn returned(&self, worker: usize) -> Option<OffloadFrame> {
        self.to_worker.get(worker)?.pop()
    }

    /// Free places in `worker`'s return ring.
    pub fn room(&self, worker: usize) -> usize {
        self.to_worker
            .get(worker)
            .map_or(0, |q| q.capacity() - q.len())
    }

    /// True when no frame waits in a return ring (for a worker to send).
    pub fn returns_empty(&self) -> bool {
        self.to_worker.iter().all(|q| q.is_empty())
    }

    /// True when no frame is in any ring.
    pub fn is_empty(&self) -> bool {
        self.to_shard.iter().all(|q| q.is_empty()) && self.to_worker.iter().all(|q| q.is_empty())
    }

    /// Frames in the pool now.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Empties every ring into the pool (at shutdown) and returns how many frames were
    /// still in them.
    pub fn drain(&self) -> u64 {
        let mut n = 0;
        for q in &self.to_shard {
            while let Some(h) = q.pop() {
                self.recycle(h.frame);
                n += 1;
            }
        }
        for q in &self.to_worker {
            while let Some(f) = q.pop() {
                self.recycle(f);
                n += 1;
            }
        }
        n
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
    fn full_rings_and_an_empty_pool_give_the_frame_back() {
        let r = OffloadRings::new(OffloadPlan::new(1), 1, 1);
        assert_eq!(r.free_frames(), 2);
        assert_eq!(r.hand(0, 0, &[1, 2, 3]), Ok(()));
        assert_eq!(r.hand(0, 0, &[2]), Err(HandError::RingFull));
        assert_eq!(r.hand(7, 0, &[3]), Err(HandError::RingFull));
        assert_eq!(
            r.hand(0, 0, &[0; OFFLOAD_FRAME + 1]),
            Err(HandError::Oversize)
        );
        let mut f = r.frame().unwrap();
        assert!(r.frame().is_none(), "the pool is empty");
        f.resize(2).unwrap().copy_from_slice(&[4, 4]);
        assert_eq!(r.give_back(0, f).map_err(|_| ()), Ok(()));
        let f = r.returned(0).unwrap();
        assert_eq!(f.data(), &[4, 4]);
        let f = r.give_back(9, f).unwrap_err();
        assert!(!r.is_empty());
        let h = r.take(0).unwrap();
        assert_eq!((h.frame.data(), h.worker), (&[1u8, 2, 3][..], 0));
        r.recycle(h.frame);
        assert!(r.is_empty());
        assert_eq!(r.hand(0, 0, &[5]), Ok(()));
        assert_eq!(r.take(0).map(|h| h.frame.data().to_vec()), Some(vec![5]));
        assert_eq!(
            r.hand(0, 0, &[6]),
            Err(HandError::NoBuffer),
            "one frame is held"
        );
        r.recycle(f);
        assert_eq!(r.hand(0, 0, &[6]), Ok(()));
    }

    #[test]
    fn drain_returns_every_frame_to_the_pool() {
        let r = OffloadRings::new(OffloadPlan::new(2), 2, 4);
        for i in 0..4u8 {
            r.hand(i as usize % 2, 0, &[i]).unwrap();
        }
        let f = r.frame().unwrap();
        r.give_back(1, f).unwrap();
        assert_eq!(r.drain(), 5);
        assert_eq!(r.free_frames(), 16);
        assert!(r.is_empty());
    }
}
