//! The hot path allocates nothing: a counting allocator watches the worker's thread while it
//! polls bursts of new and tracked flows (NAT, with replies and the conntrack sweep) and
//! while it swaps in a new snapshot with counters the control plane shaped for it.

use dataplane::setup::{Forwarding, NodeSetup, ServiceSetup, Setup};
use dataplane::WorkerStats;
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Snapshot, Steering, Worker};
use packet::MacAddr;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts allocations made by a thread while it is armed.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ARMED.with(|a| a.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations (and frees) `f` makes on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

fn setup(backends: u8) -> Setup {
    let mut node = NodeSetup::new(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 0xfe]));
    node.ipv4 = Some("192.0.2.1".parse().unwrap());
    let mut svc = ServiceSetup::new(
        "web",
        "198.51.100.10:80".parse().unwrap(),
        packet::ipv4::PROTO_TCP,
        Forwarding::Nat,
    );
    for b in 1..=backends {
        svc = svc.backend(
            format!("10.1.0.{b}:8080").parse().unwrap(),
            Some(MacAddr([2, 0, 0, 0, 1, b])),
        );
    }
    svc.table_size = 1009;
    let mut s = Setup::new(node).service(svc);
    s.conntrack.capacity = 4096;
    s
}

/// A TCP segment of flow `i` from the client to the VIP (or, `reply`, from backend 1 back).
fn segment(i: u16, flags: u8, reply: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xfe, 0x08, 0x00];
    let (src, dst, sport, dport) = if reply {
        ([10, 1, 0, 1], [203, 0, 113, 7], 8080u16, 10000 + i)
    } else {
        ([203, 0, 113, 7], [198, 51, 100, 10], 10000 + i, 80u16)
    };
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = packet::checksum::finish(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

#[test]
fn polling_and_swapping_snapshots_allocate_nothing() {
    let snap = Arc::new(Snapshot::build(&setup(3)).unwrap());
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&snap), false);
    let mut port = MemPort::new(false);
    let mut bursts: Bursts<PacketBuf> = Bursts::new();
    let rings: Rings<PacketBuf> = Rings::new(1, 64);
    let frames: Vec<Vec<u8>> = (0..2000u16)
        .flat_map(|i| [segment(i, 0x02, false), segment(i, 0x10, true)])
        .collect();
    // Warm up: every buffer the port will need exists, every vector has its capacity.
    port.pool.reserve(256);
    port.tx.reserve(256);
    let mut round = |w: &mut Worker, port: &mut MemPort, at: usize, t: u64| {
        for f in frames.iter().cycle().skip(at).take(32) {
            port.inject(f, t, 0);
        }
        let (_, n) = counted(|| {
            port.clock = Some(t);
            w.poll(port, &mut bursts, &rings);
        });
        while let Some(f) = port.tx.pop() {
            port.pool.push(f);
        }
        n
    };
    for r in 0..200 {
        round(&mut w, &mut port, r * 32, 1_000_000_000 + r as u64);
    }
    assert!(w.ct.len() > 1000, "flows tracked: {}", w.ct.len());
    let mut allocs = 0;
    for r in 0..2000 {
        allocs += round(&mut w, &mut port, r * 32, 2_000_000_000 + r as u64 * 1000);
    }
    assert!(w.stats.packets_out > 40_000, "{}", w.stats.packets_out);
    assert!(w.stats.replies > 10_000, "{}", w.stats.replies);
    assert_eq!(allocs, 0, "allocations in 2,000 polls");
    // A snapshot swap with counters shaped beforehand (as the control plane hands them).
    let next = Arc::new(Snapshot::build(&setup(4)).unwrap());
    let mut spare = WorkerStats::new(&next.backend_counts());
    let (_, n) = counted(|| w.set_snapshot_with(Arc::clone(&next), &mut spare));
    assert_eq!(n, 0, "allocations in a snapshot swap");
    assert_eq!(w.stats.backends[0].len(), 4);
    assert_eq!(
        spare.backends[0].len(),
        3,
        "the old shape comes back to be freed"
    );
    let kept: u64 = w.stats.backends[0].iter().map(|c| c.packets).sum();
    assert!(kept > 0, "counters of kept backends carried over");
    let (_, n) = counted(|| round(&mut w, &mut port, 0, 3_000_000_000));
    assert_eq!(n, 0);
}
