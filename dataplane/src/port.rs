//! The port abstraction every driver implements (receive a burst, transmit a burst, hand
//! frames to the host), the frame buffer trait (with headroom, so encapsulation prepends in
//! place), and the `mem` driver: in-memory queues for tests, benches and capture replay.

use std::collections::VecDeque;

/// Frames per receive burst.
pub const BURST: usize = 32;
/// Bytes reserved in front of every frame for encapsulation (DPDK's default mbuf headroom).
pub const HEADROOM: usize = 128;
/// Largest frame the `mem` driver's buffers hold (jumbo frames included).
pub const MAX_FRAME: usize = 9216;

/// A frame buffer owned by a port.
pub trait Frame {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame at the front by `n` bytes taken from the headroom. False if there is
    /// not enough headroom (the frame is unchanged).
    fn prepend(&mut self, n: usize) -> bool;
    /// Grows the frame at the end by `n` bytes taken from the tailroom (their contents are
    /// whatever the buffer held: the caller writes them). False if there is not enough
    /// tailroom (the frame is unchanged).
    fn append(&mut self, n: usize) -> bool;
    /// Shortens the frame to `len` bytes (no-op if already shorter).
    fn truncate(&mut self, len: usize);
    /// Receive time in nanoseconds: the capture timestamp in replay, the burst's time live.
    fn timestamp_ns(&self) -> u64;
}

/// A packet I/O device queue. The worker loop is generic over it, so it monomorphises.
pub trait Port {
    type Frame: Frame;
    /// Appends up to `BURST - out.len()` received frames to `out`.
    fn rx_burst(&mut self, out: &mut Vec<Self::Frame>);
    /// Transmits and drains `frames`; frames the device could not take are freed and counted
    /// by the port.
    fn tx_burst(&mut self, frames: &mut Vec<Self::Frame>);
    /// Gives and drains frames to the host's own stack (the exception path).
    fn to_host(&mut self, frames: &mut Vec<Self::Frame>);
    /// Whether [`Port::to_host`] reaches anything; if not, the worker drops such frames as
    /// `not_ours` instead.
    fn has_host_path(&self) -> bool;
    /// Returns a frame's buffer to the port.
    fn free(&mut self, frame: Self::Frame);
    /// A fresh frame of `len` bytes (contents unset) for a frame the worker writes itself
    /// (ARP requests, neighbour solicitations); `None` if the port has no buffer free.
    fn alloc(&mut self, len: usize) -> Option<Self::Frame>;
    /// The time of the current burst, for live ports; `None` makes the worker use each
    /// frame's own [`Frame::timestamp_ns`] (capture replay).
    fn clock_ns(&self) -> Option<u64> {
        None
    }
    /// The driver's own work between bursts, beside the data path: the DPDK driver moves
    /// what the kernel sent through the exception port out of the port. The worker threads
    /// call it after every poll.
    fn after_poll(&mut self) {}
}

/// Bytes of a [`PacketBuf`]'s buffer.
const BUF_LEN: usize = HEADROOM + MAX_FRAME;

/// A heap buffer with headroom, used by the `mem` driver. 32 bytes, moved by value into and
/// out of the port's queues (the worker moves it only in a burst that is not all sent): its
/// buffer is a fixed-size array, so its length is a constant rather than a field, and the
/// frame's offsets are 32-bit.
#[derive(Debug, Clone)]
pub struct PacketBuf {
    buf: Box<[u8; BUF_LEN]>,
    head: u32,
    len: u32,
    pub ts_ns: u64,
    /// Position of the input frame that caused this one (replay keeps output in input order).
    pub seq: u64,
}

impl PacketBuf {
    pub fn new() -> Self {
        PacketBuf {
            buf: Box::new([0; BUF_LEN]),
            head: HEADROOM as u32,
            len: 0,
            ts_ns: 0,
            seq: 0,
        }
    }
    /// Loads a frame; false if it is larger than [`MAX_FRAME`].
    pub fn load(&mut self, data: &[u8], ts_ns: u64, seq: u64) -> bool {
        if data.len() > MAX_FRAME {
            return false;
        }
        self.head = HEADROOM as u32;
        self.len = data.len() as u32;
        self.buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
        self.ts_ns = ts_ns;
        self.seq = seq;
        true
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Frame for PacketBuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        let (head, len) = (self.head as usize, self.len as usize);
        &self.buf[head..head + len]
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        let (head, len) = (self.head as usize, self.len as usize);
        &mut self.buf[head..head + len]
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.head as usize {
            return false;
        }
        // Both fit: n is at most head, and head + len at most BUF_LEN.
        self.head -= n as u32;
        self.len += n as u32;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if n > BUF_LEN - self.head as usize - self.len as usize {
            return false;
        }
        self.len += n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u32;
        }
    }
    #[inline]
    fn timestamp_ns(&self) -> u64 {
        self.ts_ns
    }
}

/// The `mem` driver: frames injected into an RX queue, transmitted frames collected in order.
#[derive(Debug, Default)]
pub struct MemPort {
    pub rx: VecDeque<PacketBuf>,
    pub tx: Vec<PacketBuf>,
    pub host: Vec<PacketBuf>,
    /// Free buffers, reused by [`MemPort::inject`].
    pub pool: Vec<PacketBuf>,
    /// Whether frames for the host are kept (in `host`) or dropped as `not_ours`.
    pub host_path: bool,
    /// Frames refused by [`MemPort::inject`] for being larger than the buffers.
    pub oversize: u64,
    /// A live clock, when the owner sets one (the daemon's `pcap` driver): bursts then run
    /// at this time, and idle polls still sweep conntrack. `None` uses each frame's
    /// timestamp (replay).
    pub clock: Option<u64>,
}

impl MemPort {
    pub fn new(host_path: bool) -> Self {
        MemPort {
            host_path,
            ..Default::default()
        }
    }

    /// Copies a frame into a buffer from the pool and queues it for receive.
    pub fn inject(&mut self, data: &[u8], ts_ns: u64, seq: u64) -> bool {
        let mut b = self.pool.pop().unwrap_or_default();
        if !b.load(data, ts_ns, seq) {
            self.oversize += 1;
            self.pool.push(b);
            return false;
        }
        self.rx.push_back(b);
        true
    }

    /// Returns buffers (for instance after their contents were written out) to the pool.
    pub fn recycle(&mut self, bufs: impl IntoIterator<Item = PacketBuf>) {
        self.pool.extend(bufs);
    }
}

impl Port for MemPort {
    type Frame = PacketBuf;
    /// When the whole queue fits (replay queues one burst at a time), it moves in one copy:
    /// the queue's buffer becomes a `Vec` and back without reallocating (its frames start at
    /// the front, where pushes onto an emptied queue put them), and `append` copies the
    /// frames at once. A pop and a push per frame cost 42 instructions a frame.
    fn rx_burst(&mut self, out: &mut Vec<PacketBuf>) {
        let room = BURST.saturating_sub(out.len());
        if self.rx.len() <= room {
            let mut all = Vec::from(std::mem::take(&mut self.rx));
            out.append(&mut all);
            self.rx = VecDeque::from(all);
        } else {
            out.extend(self.rx.drain(..room));
        }
    }
    fn tx_burst(&mut self, frames: &mut Vec<PacketBuf>) {
        self.tx.append(frames);
    }
    fn to_host(&mut self, frames: &mut Vec<PacketBuf>) {
        if self.host_path {
            self.host.append(frames);
        } else {
            self.pool.append(frames);
        }
    }
    fn has_host_path(&self) -> bool {
        self.host_path
    }
    fn free(&mut self, frame: PacketBuf) {
        self.pool.push(frame);
    }
    /// From the pool, or a new buffer when it is empty (the `mem` driver serves tests and
    /// replay, where buffers are plain heap memory).
    fn alloc(&mut self, len: usize) -> Option<PacketBuf> {
        if len > MAX_FRAME {
            return None;
        }
        let mut b = self.pool.pop().unwrap_or_default();
        b.head = HEADROOM as u32;
        b.len = len as u32;
        b.ts_ns = self.clock.unwrap_or(0);
        Some(b)
    }
    fn clock_ns(&self) -> Option<u64> {
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_prepend_and_truncate() {
        let mut b = PacketBuf::new();
        assert!(b.load(&[1, 2, 3], 5, 0));
        assert!(b.prepend(2));
        b.data_mut()[..2].copy_from_slice(&[8, 9]);
        assert_eq!(b.data(), &[8, 9, 1, 2, 3]);
        assert!(!b.prepend(HEADROOM));
        b.truncate(3);
        assert_eq!(b.data(), &[8, 9, 1]);
        assert!(b.append(2));
        assert_eq!(&b.data()[..3], &[8, 9, 1]);
        assert_eq!(b.data().len(), 5);
        assert!(!b.append(HEADROOM + MAX_FRAME), "no tailroom for that");
        assert_eq!(b.data().len(), 5);
        assert!(!b.load(&vec![0; MAX_FRAME + 1], 0, 0));
    }

    #[test]
    fn mem_port_bursts_at_most_burst_frames() {
        let mut p = MemPort::new(false);
        for i in 0..40 {
            assert!(p.inject(&[i as u8; 60], i, i));
        }
        let mut v = Vec::with_capacity(BURST);
        p.rx_burst(&mut v);
        assert_eq!(v.len(), BURST);
        assert_eq!(v[31].seq, 31);
        p.tx_burst(&mut v);
        assert!(v.is_empty() && p.tx.len() == BURST);
    }
}
