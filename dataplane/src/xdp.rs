//! The AF_XDP port driver: the only safe wrapper over `xdp-sys` (and, with it, the only
//! `unsafe` code of this driver). [`XdpProgram`] loads sluice's XDP program onto an interface
//! (native mode where the driver has it, generic otherwise) and keeps its maps in step with
//! the configuration snapshot, so only the balancer's frames leave the kernel's path.
//! [`XskQueue`] is one AF_XDP socket with its own UMEM (zero-copy where supported, copy
//! otherwise), a [`Port`] whose frames are UMEM chunks rewritten in place, with headroom for
//! encapsulation. One queue per worker; a frame handed to another worker (which owns its
//! flow) is processed there in place, and copied into that worker's own UMEM only when it is
//! transmitted; its chunk goes back to its home queue through a lock-free return ring.
//!
//! Soundness rests on lifetimes: a [`Umem`] owns the socket and the memory it maps; an
//! [`XskQueue`] and every [`XskFrame`] borrow their UMEM, so none can outlive it, and the
//! UMEM is closed only after all of them are gone. A frame dropped anywhere but through its
//! port (left in a ring at shutdown, say) gives its chunk back to its home UMEM's return
//! ring: no path leaks a chunk, and nothing costs an atomic per packet (frames freed or sent
//! by their port return their chunks directly).

use crate::port::{Frame, Port, BURST, HEADROOM};
use crate::snapshot::Snapshot;
use crossbeam::queue::ArrayQueue;
use std::collections::HashSet;
use std::ffi::CString;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;
use xdp_sys as sys;

/// Bytes per UMEM chunk (a power of two, as aligned mode needs).
pub const FRAME_SIZE: u32 = 4096;

/// How the XDP program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native where the driver has it, else generic.
    Auto,
    Native,
    Generic,
}

/// Whether the socket binds zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Zero-copy where the driver has it, else copy.
    Auto,
    ZeroCopy,
    Copy,
}

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn v4_key(a: [u8; 4]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12..].copy_from_slice(&a);
    k
}

fn addr_key(a: IpAddr, port: u16, proto: u8) -> sys::addr_key {
    sys::addr_key {
        addr: match a {
            IpAddr::V4(v) => v4_key(v.octets()),
            IpAddr::V6(v) => v.octets(),
        },
        port: port.to_be(),
        proto,
        pad: 0,
    }
}

/// sluice's XDP program on one interface; detached on drop.
pub struct XdpProgram {
    prog: *mut sys::sx_prog,
    pub interface: String,
    /// Attached in native (driver) mode; otherwise generic (skb) mode.
    pub native: bool,
    vips: HashSet<sys::addr_key>,
    nat: HashSet<sys::addr_key>,
}

// SAFETY: the program handle is only used by the thread that owns the XdpProgram (map
// updates and detach are syscalls on file descriptors, safe from any thread).
unsafe impl Send for XdpProgram {}

impl XdpProgram {
    pub fn attach(interface: &str, mode: AttachMode) -> Result<XdpProgram, String> {
        let name = CString::new(interface).map_err(|_| "interface name has a NUL byte")?;
        let mut err = [0u8; 256];
        let mut got = 0;
        let m = match mode {
            AttachMode::Auto => 0,
            AttachMode::Native => 1,
            AttachMode::Generic => 2,
        };
        // SAFETY: the program bytes and name outlive the call; err has the length given.
        let prog = unsafe {
            sys::sx_prog_attach(
                sys::XDP_PROGRAM.as_ptr().cast(),
                sys::XDP_PROGRAM.len(),
                name.as_ptr(),
                m,
                &mut got,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if prog.is_null() {
            return Err(format!("AF_XDP on {interface}: {}", message(&err)));
        }
        Ok(XdpProgram {
            prog,
            interface: interface.into(),
            native: got == 1,
            vips: HashSet::new(),
            nat: HashSet::new(),
        })
    }

    fn fd(&self, which: i32) -> i32 {
        if self.prog.is_null() {
            return -1;
        }
        // SAFETY: prog is a live handle (not yet detached).
        unsafe { sys::sx_prog_map_fd(self.prog, which) }
    }

    fn put<K, V>(&self, which: i32, key: &K, value: &V) -> Result<(), String> {
        // SAFETY: key and value are plain C structs of the map's key and value sizes.
        let r = unsafe {
            sys::sx_map(
                self.fd(which),
                0,
                (key as *const K).cast(),
                (value as *const V).cast(),
            )
        };
        if r < 0 {
            return Err(format!(
                "cannot update the XDP program's map: {}",
                std::io::Error::from_raw_os_error(-r)
            ));
        }
        Ok(())
    }

    fn delete(&self, which: i32, key: &sys::addr_key) {
        // SAFETY: as in put; deleting a missing key is harmless.
        unsafe {
            sys::sx_map(
                self.fd(which),
                1,
                (key as *const sys::addr_key).cast(),
                std::ptr::null(),
            )
        };
    }

    /// Makes the program's maps say what `snap` says: VIPs (address and service tuples),
    /// `nat` backends, the node's addresses and SNAT range.
    pub fn sync(&mut self, snap: &Snapshot) -> Result<(), String> {
        let mut vips = HashSet::new();
        let mut nat = HashSet::new();
        for s in &snap.services {
            vips.insert(addr_key(s.vip.ip(), 0, 0));
            if s.forwarding == crate::setup::Forwarding::Nat {
                for b in &s.backends {
                    nat.insert(addr_key(b.addr.ip(), b.addr.port(), s.proto));
                }
            }
        }
        for k in vips.difference(&self.vips) {
            self.put(sys::MAP_VIPS, k, &1u8)?;
        }
        for k in self.vips.difference(&vips) {
            self.delete(sys::MAP_VIPS, k);
        }
        for k in nat.difference(&self.nat) {
            self.put(sys::MAP_NAT_BACKENDS, k, &1u8)?;
        }
        for k in self.nat.difference(&nat) {
            self.delete(sys::MAP_NAT_BACKENDS, k);
        }
        self.vips = vips;
        self.nat = nat;
        let n = &snap.node;
        let cfg = sys::node_cfg {
            v4: n.ipv4.map_or([0; 4], |a| a.octets()),
            v6: n.ipv6.map_or([0; 16], |a| a.octets()),
            snat_lo: n.snat_ports.0,
            snat_hi: n.snat_ports.1,
            has_v4: n.ipv4.is_some() as u8,
            has_v6: n.ipv6.is_some() as u8,
            // sluice answers ARP and neighbour solicitations for its addresses itself.
            neigh: 1,
            pad: 0,
            up_lo: n.offload_ports.map_or(0, |p| p.0),
            up_hi: n.offload_ports.map_or(0, |p| p.1),
        };
        self.put(sys::MAP_NODE, &0u32, &cfg)
    }
}

impl XdpProgram {
    /// Takes the program off the interface (the kernel keeps an attached XDP program after
    /// the process exits, so the daemon detaches explicitly on its way out). Idempotent.
    pub fn detach(&mut self) {
        if !self.prog.is_null() {
            // SAFETY: prog is live; it is nulled so it is detached once.
            unsafe { sys::sx_prog_detach(self.prog) };
            self.prog = std::ptr::null_mut();
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The memory of one AF_XDP socket (its UMEM) and the socket itself: created together by
/// [`Umem::open`], closed together when it drops. Queues and frames borrow it.
pub struct Umem {
    sock: *mut sys::sx_sock,
    area: *mut u8,
    /// Chunks of this UMEM that other workers, or dropped frames, are done with (room for
    /// every chunk).
    returns: ArrayQueue<u64>,
    frames: u32,
    queue: u32,
    pub zerocopy: bool,
}

// SAFETY: shared access touches only `returns` (a lock-free queue) and reads the area
// pointer; the socket's rings are used through the one XskQueue that borrows this UMEM
// mutably in spirit (it is the only holder of the ring operations).
unsafe impl Sync for Umem {}
unsafe impl Send for Umem {}

impl Umem {
    /// Opens queue `queue` of the program's interface with `frames` UMEM chunks (half given to
    /// the kernel for receiving, by the queue) and rings of `ring` entries.
    pub fn open(
        prog: &XdpProgram,
        queue: u32,
        frames: u32,
        ring: u32,
        copy: CopyMode,
    ) -> Result<Umem, String> {
        let name =
            CString::new(prog.interface.as_str()).map_err(|_| "interface name has a NUL byte")?;
        let mut err = [0u8; 256];
        let mut zc = 0;
        let z = match copy {
            CopyMode::Auto => 0,
            CopyMode::ZeroCopy => 1,
            CopyMode::Copy => 2,
        };
        // SAFETY: name and err outlive the call; the map fd belongs to the live program.
        let sock = unsafe {
            sys::sx_open(
                name.as_ptr(),
                queue,
                frames,
                FRAME_SIZE,
                HEADROOM as u32,
                ring,
                prog.fd(3),
                z,
                &mut zc,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if sock.is_null() {
            return Err(format!(
                "AF_XDP on {} queue {queue}: {}",
                prog.interface,
                message(&err)
            ));
        }
        Ok(Umem {
            sock,
            // SAFETY: sock is live.
            area: unsafe { sys::sx_area(sock) },
            returns: ArrayQueue::new(frames.max(1) as usize),
            frames,
            queue,
            zerocopy: zc == 1,
        })
    }

    /// The interface queue this UMEM's socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Takes this UMEM's chunk `chunk` back (from another worker, or a dropped frame).
    fn give_back(&self, chunk: u64) {
        // The ring has room for every chunk of the UMEM, and a chunk is out at most once.
        let _ = self.returns.push(chunk);
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: sock is live and closed once; no queue or frame borrows this UMEM now.
        unsafe { sys::sx_close(self.sock) };
    }
}

/// A frame in a UMEM chunk: `addr` is where its data starts, which moves back into the
/// chunk's headroom when encapsulation prepends. It borrows the UMEM that holds it.
pub struct XskFrame<'u> {
    umem: &'u Umem,
    addr: u64,
    len: u32,
    ts: u64,
}

// SAFETY: a frame points into its UMEM, which outlives it (the borrow); one thread uses a
// frame at a time.
unsafe impl Send for XskFrame<'_> {}

impl XskFrame<'_> {
    fn chunk(&self) -> u64 {
        self.addr & !(FRAME_SIZE as u64 - 1)
    }
}

impl Drop for XskFrame<'_> {
    /// A frame dropped without passing through a port (left in a hand-off ring, say) gives
    /// its chunk back to its UMEM. The port's own paths `forget` the frame instead, having
    /// put the chunk where it belongs.
    fn drop(&mut self) {
        self.umem.give_back(self.chunk());
    }
}

impl Frame for XskFrame<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        // SAFETY: addr..addr+len lies in one chunk of the mapped UMEM (the kernel's
        // descriptor, or our own prepend/truncate within the chunk), mapped while 'u lasts.
        unsafe {
            std::slice::from_raw_parts(self.umem.area.add(self.addr as usize), self.len as usize)
        }
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data; this frame is the chunk's only user.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.umem.area.add(self.addr as usize),
                self.len as usize,
            )
        }
    }
    fn prepend(&mut self, n: usize) -> bool {
        if self.addr - self.chunk() < n as u64 {
            return false;
        }
        self.addr -= n as u64;
        self.len += n as u32;
        true
    }
    fn append(&mut self, n: usize) -> bool {
        let end = self.addr + u64::from(self.len) + n as u64;
        if end > self.chunk() + FRAME_SIZE as u64 {
            return false;
        }
        self.len += n as u32;
        true
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len as u32);
    }
    fn timestamp_ns(&self) -> u64 {
        self.ts
    }
}

/// Kernel counters of an AF_XDP socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct XskStats {
    /// Frames the kernel dropped because the fill ring was empty.
    pub rx_dropped: u64,
    pub rx_invalid: u64,
    pub tx_invalid: u64,
    pub rx_ring_full: u64,
}

/// One AF_XDP socket (one interface queue) over its [`Umem`], polled by one worker.
pub struct XskQueue<'u> {
    umem: &'u Umem,
    /// Free chunk addresses, reserved at the UMEM's size.
    free: Vec<u64>,
    addrs: [u64; BURST],
    lens: [u32; BURST],
    comp: [u64; 64],
    pub zerocopy: bool,
    /// Frames the TX ring had no room for (freed).
    pub tx_full: u64,
    /// Frames from other workers' queues copied in to be transmitted here.
    pub copied_in: u64,
}

/// Nanoseconds on one clock shared by every queue (and so every worker) of the process.
fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// SAFETY: the socket's rings are used only by the worker thread that owns the queue.
unsafe impl Send for XskQueue<'_> {}

impl<'u> XskQueue<'u> {
    /// The queue over `umem`: every chunk free, half of them given to the kernel to fill.
    pub fn new(umem: &'u Umem) -> XskQueue<'u> {
        let mut q = XskQueue {
            umem,
            free: (0..umem.frames as u64)
                .map(|i| i * FRAME_SIZE as u64)
                .collect(),
            addrs: [0; BURST],
            lens: [0; BURST],
            comp: [0; 64],
            zerocopy: umem.zerocopy,
            tx_full: 0,
            copied_in: 0,
        };
        q.refill();
        q
    }

    fn owns(&self, f: &XskFrame<'_>) -> bool {
        std::ptr::eq(f.umem, self.umem)
    }

    /// Takes back chunks the kernel finished transmitting, and gives free chunks to the fill
    /// ring. Transmit needs no chunks of its own: frames go out in the chunk they came in.
    fn refill(&mut self) {
        // `free` has room for every chunk of the UMEM, so these pushes never reallocate.
        while let Some(a) = self.umem.returns.pop() {
            self.free.push(a);
        }
        loop {
            // SAFETY: comp has room for its length.
            let n = unsafe {
                sys::sx_complete(
                    self.umem.sock,
                    self.comp.as_mut_ptr(),
                    self.comp.len() as u32,
                )
            } as usize;
            for &a in &self.comp[..n] {
                self.free.push(a & !(FRAME_SIZE as u64 - 1));
            }
            if n < self.comp.len() {
                break;
            }
        }
        if !self.free.is_empty() {
            let take = self.free.len().min(BURST * 4);
            let from = self.free.len() - take;
            // SAFETY: the addresses are chunk offsets inside this UMEM.
            let given =
                unsafe { sys::sx_fill(self.umem.sock, self.free[from..].as_ptr(), take as u32) }
                    as usize;
            // The ring took the first `given` of the slice (fewer than offered when full).
            self.free.drain(from..from + given);
        }
    }

    pub fn stats(&self) -> XskStats {
        let mut v = [0u64; 4];
        // SAFETY: v has the four entries the shim writes.
        unsafe { sys::sx_stats(self.umem.sock, v.as_mut_ptr()) };
        XskStats {
            rx_dropped: v[0],
            rx_invalid: v[1],
            tx_invalid: v[2],
            rx_ring_full: v[3],
        }
    }

    /// A frame this queue is done with: its chunk back to the free list if the UMEM is ours,
    /// else to its home UMEM.
    fn recycle(&mut self, f: XskFrame<'u>) {
        if self.owns(&f) {
            self.free.push(f.chunk());
            std::mem::forget(f);
        }
        // A foreign frame's Drop sends its chunk home.
    }
}

impl<'u> Port for XskQueue<'u> {
    type Frame = XskFrame<'u>;

    fn rx_burst(&mut self, out: &mut Vec<XskFrame<'u>>) {
        self.refill();
        let room = BURST.saturating_sub(out.len());
        if room == 0 {
            return;
        }
        // SAFETY: addrs and lens have room for `room` <= BURST entries.
        let n = unsafe {
            sys::sx_rx(
                self.umem.sock,
                self.addrs.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                room as u32,
            )
        } as usize;
        let ts = clock_ns();
        for i in 0..n {
            out.push(XskFrame {
                umem: self.umem,
                addr: self.addrs[i],
                len: self.lens[i],
                ts,
            });
        }
    }

    fn tx_burst(&mut self, frames: &mut Vec<XskFrame<'u>>) {
        // Frames from another queue's UMEM are copied into one of ours (or dropped, counted as
        // tx_full, when none is free) and their chunks sent home.
        let mut i = 0;
        while i < frames.len() {
            if self.owns(&frames[i]) {
                i += 1;
                continue;
            }
            match self.free.pop() {
                Some(chunk) => {
                    let len = frames[i].len as usize;
                    let at = chunk + (HEADROOM as u64).min(FRAME_SIZE as u64 - len as u64);
                    // SAFETY: `at..at+len` lies inside one chunk of our UMEM, which no one
                    // else uses while it is off the free list; the source is the frame's.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            frames[i].data().as_ptr(),
                            self.umem.area.add(at as usize),
                            len,
                        )
                    };
                    let copy = XskFrame {
                        umem: self.umem,
                        addr: at,
                        len: len as u32,
                        ts: frames[i].ts,
                    };
                    // The original goes home (its Drop) and the copy takes its place.
                    drop(std::mem::replace(&mut frames[i], copy));
                    self.copied_in += 1;
                    i += 1;
                }
                None => {
                    drop(frames.swap_remove(i));
                    self.tx_full += 1;
                }
            }
        }
        let n = frames.len().min(BURST);
        for (i, f) in frames.iter().take(n).enumerate() {
            self.addrs[i] = f.addr;
            self.lens[i] = f.len;
        }
        // SAFETY: the first n entries of addrs and lens are filled.
        let sent = unsafe {
            sys::sx_tx(
                self.umem.sock,
                self.addrs.as_ptr(),
                self.lens.as_ptr(),
                n as u32,
            )
        } as usize;
        // The kernel owns the chunks it took until it completes them (refill).
        for f in frames.drain(..sent) {
            std::mem::forget(f);
        }
        for f in frames.drain(..) {
            self.tx_full += 1;
            self.recycle(f);
        }
    }

    fn to_host(&mut self, frames: &mut Vec<XskFrame<'u>>) {
        for f in frames.drain(..) {
            self.recycle(f);
        }
    }

    fn has_host_path(&self) -> bool {
        false
    }

    fn free(&mut self, frame: XskFrame<'u>) {
        self.recycle(frame);
    }

    fn alloc(&mut self, len: usize) -> Option<XskFrame<'u>> {
        if HEADROOM + len > FRAME_SIZE as usize {
            return None;
        }
        let chunk = self.free.pop()?;
        Some(XskFrame {
            umem: self.umem,
            addr: chunk + HEADROOM as u64,
            len: len as u32,
            ts: clock_ns(),
        })
    }

    fn clock_ns(&self) -> Option<u64> {
        Some(clock_ns())
    }
}
