//! The AF_XDP port driver: the only safe wrapper over `xdp-sys` (and, with it, the only
//! `unsafe` code of this driver). [`XdpProgram`] loads sluice's XDP program onto an interface
//! (native mode where the driver has it, generic otherwise) and keeps its maps in step with
//! the configuration snapshot, so only the balancer's frames leave the kernel's path.
//! [`XskQueue`] is one AF_XDP socket with its own UMEM (zero-copy where supported, copy
//! otherwise), a [`Port`] whose frames are UMEM chunks rewritten in place, with headroom for
//! encapsulation. One queue per worker; a frame handed to another worker (which owns its
//! flow) is processed there in place, and copied into that worker's own UMEM only when it is
//! transmitted; its chunk goes back to its home queue through a lock-free return ring.

use crate::port::{Frame, Port, BURST, HEADROOM};
use crate::snapshot::Snapshot;
use crossbeam::queue::ArrayQueue;
use std::collections::HashSet;
use std::ffi::CString;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
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

/// A frame in a UMEM chunk: `addr` is where its data starts, which moves back into the
/// chunk's headroom when encapsulation prepends.
pub struct XskFrame {
    area: *mut u8,
    /// The return ring of the queue whose UMEM holds the chunk.
    home: *const ArrayQueue<u64>,
    addr: u64,
    len: u32,
    ts: u64,
}

// SAFETY: a frame points into its queue's UMEM, which outlives every frame (the queue is
// dropped after the worker's bursts and rings); one thread uses a frame at a time.
unsafe impl Send for XskFrame {}

impl XskFrame {
    fn chunk(&self) -> u64 {
        self.addr & !(FRAME_SIZE as u64 - 1)
    }
}

/// Gives a frame's chunk back to the queue whose UMEM holds it.
fn send_home(f: &XskFrame) {
    // SAFETY: every queue outlives the frames of its UMEM (the daemon drains the hand-off
    // rings before dropping queues), so `home` is live; the ring has room for every chunk.
    let _ = unsafe { &*f.home }.push(f.chunk());
}

impl Frame for XskFrame {
    fn data(&self) -> &[u8] {
        // SAFETY: addr..addr+len lies in one chunk of the mapped UMEM (the kernel's
        // descriptor, or our own prepend/truncate within the chunk).
        unsafe { std::slice::from_raw_parts(self.area.add(self.addr as usize), self.len as usize) }
    }
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data; this frame is the chunk's only user.
        unsafe {
            std::slice::from_raw_parts_mut(self.area.add(self.addr as usize), self.len as usize)
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

/// One AF_XDP socket (one interface queue) with its own UMEM.
pub struct XskQueue {
    sock: *mut sys::sx_sock,
    area: *mut u8,
    /// Chunks of this UMEM that other workers are done with (room for every chunk).
    returns: Arc<ArrayQueue<u64>>,
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

// SAFETY: the socket and its UMEM are used only by the worker thread that owns the queue.
unsafe impl Send for XskQueue {}

impl XskQueue {
    /// Opens queue `queue` of the program's interface with `frames` UMEM chunks (half given to
    /// the kernel for receiving) and rings of `ring` entries.
    pub fn open(
        prog: &XdpProgram,
        queue: u32,
        frames: u32,
        ring: u32,
        copy: CopyMode,
    ) -> Result<XskQueue, String> {
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
        // SAFETY: sock is live.
        let area = unsafe { sys::sx_area(sock) };
        let mut q = XskQueue {
            sock,
            area,
            returns: Arc::new(ArrayQueue::new(frames.max(1) as usize)),
            free: (0..frames as u64).map(|i| i * FRAME_SIZE as u64).collect(),
            addrs: [0; BURST],
            lens: [0; BURST],
            comp: [0; 64],
            zerocopy: zc == 1,
            tx_full: 0,
            copied_in: 0,
        };
        q.refill();
        Ok(q)
    }

    /// Takes back chunks the kernel finished transmitting, and gives free chunks to the fill
    /// ring. Transmit needs no chunks of its own: frames go out in the chunk they came in.
    fn refill(&mut self) {
        // `free` has room for every chunk of the UMEM, so these pushes never reallocate.
        while let Some(a) = self.returns.pop() {
            self.free.push(a);
        }
        loop {
            // SAFETY: comp has room for its length.
            let n = unsafe {
                sys::sx_complete(self.sock, self.comp.as_mut_ptr(), self.comp.len() as u32)
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
            let given = unsafe { sys::sx_fill(self.sock, self.free[from..].as_ptr(), take as u32) }
                as usize;
            // The ring took the first `given` of the slice (fewer than offered when full).
            self.free.drain(from..from + given);
        }
    }

    pub fn stats(&self) -> XskStats {
        let mut v = [0u64; 4];
        // SAFETY: v has the four entries the shim writes.
        unsafe { sys::sx_stats(self.sock, v.as_mut_ptr()) };
        XskStats {
            rx_dropped: v[0],
            rx_invalid: v[1],
            tx_invalid: v[2],
            rx_ring_full: v[3],
        }
    }
}

impl Drop for XskQueue {
    fn drop(&mut self) {
        // SAFETY: sock is live and dropped once.
        unsafe { sys::sx_close(self.sock) };
    }
}

impl Port for XskQueue {
    type Frame = XskFrame;

    fn rx_burst(&mut self, out: &mut Vec<XskFrame>) {
        self.refill();
        let room = BURST.saturating_sub(out.len());
        if room == 0 {
            return;
        }
        // SAFETY: addrs and lens have room for `room` <= BURST entries.
        let n = unsafe {
            sys::sx_rx(
                self.sock,
                self.addrs.as_mut_ptr(),
                self.lens.as_mut_ptr(),
                room as u32,
            )
        } as usize;
        let ts = clock_ns();
        let home = Arc::as_ptr(&self.returns);
        for i in 0..n {
            out.push(XskFrame {
                area: self.area,
                home,
                addr: self.addrs[i],
                len: self.lens[i],
                ts,
            });
        }
    }

    fn tx_burst(&mut self, frames: &mut Vec<XskFrame>) {
        // Frames from another queue's UMEM are copied into one of ours (or dropped, counted as
        // tx_full, when none is free) and their chunks sent home.
        let mut i = 0;
        while i < frames.len() {
            if frames[i].area == self.area {
                i += 1;
                continue;
            }
            let f = &frames[i];
            match self.free.pop() {
                Some(chunk) => {
                    let len = f.len as usize;
                    let at = chunk + (HEADROOM as u64).min(FRAME_SIZE as u64 - len as u64);
                    // SAFETY: `at..at+len` lies inside one chunk of our UMEM, which no one
                    // else uses while it is off the free list; the source is the frame's.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            f.data().as_ptr(),
                            self.area.add(at as usize),
                            len,
                        )
                    };
                    send_home(f);
                    let f = &mut frames[i];
                    f.area = self.area;
                    f.home = Arc::as_ptr(&self.returns);
                    f.addr = at;
                    self.copied_in += 1;
                    i += 1;
                }
                None => {
                    let f = frames.swap_remove(i);
                    send_home(&f);
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
        let sent =
            unsafe { sys::sx_tx(self.sock, self.addrs.as_ptr(), self.lens.as_ptr(), n as u32) }
                as usize;
        for f in frames.drain(..).skip(sent) {
            self.tx_full += 1;
            self.free.push(f.chunk());
        }
    }

    fn to_host(&mut self, frames: &mut Vec<XskFrame>) {
        for f in frames.drain(..) {
            self.free(f);
        }
    }

    fn has_host_path(&self) -> bool {
        false
    }

    fn free(&mut self, frame: XskFrame) {
        if frame.area == self.area {
            self.free.push(frame.chunk());
        } else {
            send_home(&frame);
        }
    }

    fn alloc(&mut self, len: usize) -> Option<XskFrame> {
        if HEADROOM + len > FRAME_SIZE as usize {
            return None;
        }
        let chunk = self.free.pop()?;
        Some(XskFrame {
            area: self.area,
            home: Arc::as_ptr(&self.returns),
            addr: chunk + HEADROOM as u64,
            len: len as u32,
            ts: clock_ns(),
        })
    }

    fn clock_ns(&self) -> Option<u64> {
        Some(clock_ns())
    }
}
