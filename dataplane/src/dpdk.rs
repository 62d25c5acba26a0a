//! The `dpdk` port driver: the one safe wrapper over `dpdk-sys`. EAL initialisation (once per
//! process), mbuf pools (one per NUMA socket that has a worker), ethdev set-up (queue pair per
//! worker, symmetric RSS, round-robin redirection table), and [`DpdkQueue`], a [`Port`] over
//! one RX/TX queue pair whose frames are mbufs rewritten in place (encapsulation prepends into
//! the mbuf headroom): no copy and no allocation per packet.
//!
//! Soundness rests on lifetimes, not on teardown order written by hand: an [`EthPort`]
//! borrows the pools its receive queues fill from, a [`DpdkQueue`] borrows its port and its
//! pool, and every [`Mbuf`] carries the queue's lifetime. So no mbuf or queue can outlive its
//! pool or port, a port can be stopped ([`EthPort::stop`], which consumes it) only once no
//! queue or mbuf borrows it, and a pool is freed ([`Mempool`]'s `Drop`, `rte_mempool_free`)
//! only after every port that posts its buffers has closed. Workers run on scoped threads,
//! which is what lets them hold these borrows. None of this costs anything per packet.

use crate::port::{Frame, Port, BURST};
use dpdk_sys as sys;
use packet::MacAddr;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

fn strerror(e: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local string.
    unsafe { CStr::from_ptr(sys::rte_strerror(e)) }
        .to_string_lossy()
        .into_owned()
}

fn rte_errno() -> i32 {
    // SAFETY: reads DPDK's per-thread errno.
    unsafe { sys::sluice_errno() }
}

fn free_hugepages() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    m.lines()
        .find(|l| l.starts_with("HugePages_Free:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The initialised EAL. DPDK allows one per process.
pub struct Eal(());

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

impl Eal {
    /// Initialises the EAL with `args` (program name first). Errors say what to fix.
    pub fn init(args: &[String]) -> Result<Eal, String> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err("DPDK's EAL is already initialised in this process (it can be only once); run each DPDK scenario in its own process".into());
        }
        let no_huge = args.iter().any(|a| a == "--no-huge");
        if !no_huge && free_hugepages() == Some(0) {
            return Err("no free hugepages: reserve some with `echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` and mount hugetlbfs with `mount -t hugetlbfs nodev /dev/hugepages` (scripts/test.sh does both), or add \"--no-huge\" to eal_args for virtual devices".into());
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| {
                CString::new(a.as_str())
                    .map_err(|_| format!("EAL argument {a:?} contains a NUL byte"))
            })
            .collect::<Result<_, _>>()?;
        // The EAL keeps pointers into argv for the life of the process: leak it on purpose.
        let argv: &'static mut [*mut std::os::raw::c_char] = Box::leak(
            cargs
                .into_iter()
                .map(|c| c.into_raw())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        // SAFETY: argv holds argc valid NUL-terminated strings that live forever.
        let ret = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if ret < 0 {
            let e = rte_errno();
            return Err(format!("DPDK EAL initialisation failed: {} (the EAL's own messages above say more); check eal_args in [dataplane.dpdk], that hugepages are reserved and mounted, and that the device is bound to vfio-pci", strerror(e)));
        }
        Ok(Eal(()))
    }

    /// Registers the calling (non-EAL) thread with DPDK, giving it an lcore id so the mbuf
    /// pool's per-core cache works for it.
    pub fn register_thread(&self) -> Result<u32, String> {
        // SAFETY: plain call; fails cleanly if no lcore id is free.
        if unsafe { sys::rte_thread_register() } != 0 {
            return Err(format!("rte_thread_register: {}", strerror(rte_errno())));
        }
        // SAFETY: plain call.
        Ok(unsafe { sys::sluice_lcore_id() })
    }

    pub fn unregister_thread(&self) {
        // SAFETY: the thread was registered by register_thread.
        unsafe { sys::rte_thread_unregister() }
    }
}

/// A pool of packet buffers (mbufs).
pub struct Mempool(NonNull<sys::rte_mempool>);

// SAFETY: DPDK mempools are safe to use from any thread (per-lcore caches plus a lock-free ring).
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs of DPDK's default size on `socket`.
    pub fn create(name: &str, n: u32, socket: i32) -> Result<Mempool, String> {
        let cname = CString::new(name).map_err(|_| "pool name contains a NUL byte".to_string())?;
        // SAFETY: valid C string; sizes are in range.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        NonNull::new(p).map(Mempool).ok_or_else(|| format!("cannot create a pool of {n} packet buffers: {} (reserve more hugepages, or lower dataplane.dpdk.mbufs)", strerror(rte_errno())))
    }

    /// The NUMA socket of CPU `core` (0 where the machine does not say).
    pub fn socket_of_core(core: usize) -> i32 {
        std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{core}"))
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok()).find_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("node"))
                        .and_then(|n| n.parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Buffers currently allocated (per-core caches count as free).
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { sys::rte_mempool_in_use_count(self.0.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // Every mbuf and port borrows its pool, so none is left by now; a count above zero
        // would mean a buffer escaped the types (an mbuf leaked with `forget`), and freeing
        // the pool under it would be unsound: keep it, and say so.
        let left = self.in_use();
        if left != 0 {
            eprintln!(
                "sluice: an mbuf pool still has {left} buffer(s) in use at exit; not freeing it"
            );
            return;
        }
        // SAFETY: the pool is valid, nothing uses it (no borrow of it is left), freed once.
        unsafe { sys::rte_mempool_free(self.0.as_ptr()) }
    }
}

/// One ethdev, configured and started. It borrows the pools its receive queues fill from
/// (`'p`): the device holds their buffers until it is closed. Dropping it stops and closes
/// it; [`EthPort::stop`] does the same and says so.
pub struct EthPort<'p> {
    pub id: u16,
    pub info: sys::sluice_port_info,
    open: bool,
    pools: PhantomData<&'p Mempool>,
}

/// Port counters from the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_no_mbuf: u64,
}

impl<'p> EthPort<'p> {
    /// Finds a port by its DPDK name (`net_pcap0`) or PCI address.
    pub fn find(name: &str) -> Result<u16, String> {
        let cname = CString::new(name).map_err(|_| "port name contains a NUL byte".to_string())?;
        let mut id = 0u16;
        // SAFETY: valid C string and out pointer.
        if unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } == 0 {
            return Ok(id);
        }
        let mut names = Vec::new();
        // Only ports that exist (asking by every possible id makes DPDK log each unused one).
        // SAFETY: rte_eth_find_next only reads DPDK's port table.
        let mut p = unsafe { sys::rte_eth_find_next(0) } as u16;
        while (p as u32) < sys::RTE_MAX_ETHPORTS {
            let mut buf = [0 as std::os::raw::c_char; 64];
            // SAFETY: buf is large enough for RTE_ETH_NAME_MAX_LEN.
            if unsafe { sys::rte_eth_dev_get_name_by_port(p, buf.as_mut_ptr()) } == 0 {
                // SAFETY: NUL-terminated by DPDK.
                names.push(
                    unsafe { CStr::from_ptr(buf.as_ptr()) }
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            // SAFETY: as above.
            p = unsafe { sys::rte_eth_find_next(p + 1) } as u16;
        }
        Err(if names.is_empty() {
            format!("DPDK found no ports, so there is no `{name}`: for a NIC, bind it to vfio-pci (dpdk-devbind.py -b vfio-pci ADDR) and allow it with \"-a ADDR\" in eal_args; for a virtual device add \"--vdev\", \"{name},...\"")
        } else {
            format!(
                "no DPDK port named `{name}`; the ports are: {}",
                names.join(", ")
            )
        })
    }

    /// Configures one RX/TX queue pair per entry of `pools` (RX queue q fills from
    /// `pools[q]`, the pool on its worker's NUMA socket), with symmetric RSS, and starts it.
    pub fn setup(
        id: u16,
        rx_desc: u16,
        tx_desc: u16,
        pools: &[&'p Mempool],
        rss_key: &[u8; 40],
    ) -> Result<EthPort<'p>, String> {
        let queues = pools.len() as u16;
        let mut raw: Vec<*mut sys::rte_mempool> = pools.iter().map(|p| p.0.as_ptr()).collect();
        let mut info = sys::sluice_port_info::default();
        let mut err = [0 as std::os::raw::c_char; 256];
        // SAFETY: all pointers valid for the call; the shim copies the key.
        let ret = unsafe {
            sys::sluice_port_setup(
                id,
                queues,
                rx_desc,
                tx_desc,
                raw.as_mut_ptr(),
                rss_key.as_ptr(),
                rss_key.len() as u8,
                &mut info,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if ret != 0 {
            // SAFETY: the shim NUL-terminates err.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(format!("cannot set up DPDK port {id}: {msg}"));
        }
        Ok(EthPort {
            id,
            info,
            open: true,
            pools: PhantomData,
        })
    }

    /// The checksum offloads the device offers on transmit and on receive, by name
    /// ("ipv4", "tcp", "udp"; none for net_pcap and the other virtual devices). Reported so an
    /// operator sees what a NIC could take over; sluice computes every checksum itself.
    pub fn checksum_offloads(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let names = |bits: u8| {
            [(1, "ipv4"), (2, "tcp"), (4, "udp")]
                .into_iter()
                .filter(|(b, _)| bits & b != 0)
                .map(|(_, n)| n)
                .collect()
        };
        (names(self.info.tx_cksum), names(self.info.rx_cksum))
    }

    pub fn driver(&self) -> String {
        // SAFETY: NUL-terminated by the shim (snprintf).
        unsafe { CStr::from_ptr(self.info.driver.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// (link up, speed in Mb/s).
    pub fn link(&self) -> (bool, u32) {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid port and out pointer.
        unsafe { sys::rte_eth_link_get_nowait(self.id, &mut l) };
        (l.link_status() == 1, l.link_speed)
    }

    pub fn mac(&self) -> MacAddr {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port and out pointer.
        unsafe { sys::rte_eth_macaddr_get(self.id, &mut a) };
        MacAddr(a.addr_bytes)
    }

    pub fn counters(&self) -> PortCounters {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port and out pointer.
        unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        PortCounters {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        }
    }

    /// The RX/TX queue pair `q`, for one worker; transmits on `tx` (another port's queue `q`)
    /// when given, else on this port. Frames the worker writes itself (ARP requests, neighbour
    /// solicitations) come from `pool`.
    pub fn queue<'a>(
        &'a self,
        q: u16,
        pool: &'a Mempool,
        tx: Option<&'a EthPort<'_>>,
        host: Option<&'a EthPort<'_>>,
    ) -> DpdkQueue<'a> {
        DpdkQueue {
            pool,
            port: self.id,
            tx_port: tx.map_or(self.id, |t| t.id),
            queue: q,
            host: host.map(|h| h.id),
            raw: [std::ptr::null_mut(); BURST],
            from_host: 0,
            to_host: 0,
            host_dropped: 0,
            tx_full: 0,
            oversize: 0,
            borrows: PhantomData,
        }
    }

    /// Stops the port. Taking it by value means no queue (and no mbuf from one) can still
    /// use it. The device keeps the buffers posted to its receive rings until the stopped
    /// port is dropped, which closes it.
    pub fn stop(mut self) -> StoppedPort<'p> {
        // SAFETY: valid port, stopped once; no queue borrows it any more.
        unsafe { sys::rte_eth_dev_stop(self.id) };
        self.open = false;
        StoppedPort {
            id: self.id,
            pools: PhantomData,
        }
    }
}

impl Drop for EthPort<'_> {
    /// A port dropped without [`EthPort::stop`] (an error path) is stopped and closed.
    fn drop(&mut self) {
        if self.open {
            // SAFETY: valid port, stopped and closed once; nothing borrows it any more.
            unsafe {
                sys::rte_eth_dev_stop(self.id);
                sys::rte_eth_dev_close(self.id);
            }
        }
    }
}

/// A stopped port, which still holds the buffers posted to its receive rings (so a pool's
/// in-use count read now compares with the one read at start). Dropping it closes the port
/// and gives them back.
pub struct StoppedPort<'p> {
    id: u16,
    pools: PhantomData<&'p Mempool>,
}

impl Drop for StoppedPort<'_> {
    fn drop(&mut self) {
        // SAFETY: the port is stopped and closed once.
        unsafe { sys::rte_eth_dev_close(self.id) };
    }
}

/// A packet buffer owned by sluice. Dropping it returns it to its pool; it cannot outlive the
/// queue it came from (`'a`), nor so its port and pool.
pub struct Mbuf<'a>(NonNull<sys::rte_mbuf>, PhantomData<&'a Mempool>);

// SAFETY: an mbuf is owned by exactly one Mbuf at a time; handing it to another core is how
// DPDK applications pass packets between lcores.
unsafe impl Send for Mbuf<'_> {}

impl Mbuf<'_> {
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: we own the mbuf.
        unsafe { self.0.as_ref() }
    }
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own the mbuf.
        unsafe { self.0.as_mut() }
    }
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and give it back exactly once.
        unsafe { sys::sluice_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl Frame for Mbuf<'_> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: single-segment mbuf (checked at receive): data_len bytes at data_off are ours.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(), and we hold the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if n > m.data_off as usize {
            return false;
        }
        m.data_off -= n as u16;
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        let end = m.data_off as usize + m.data_len as usize;
        if end + n > m.buf_len as usize {
            return false;
        }
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        let m = self.m_mut();
        if len < m.data_len as usize {
            m.pkt_len -= m.data_len as u32 - len as u32;
            m.data_len = len as u16;
        }
    }
    #[inline]
    fn timestamp_ns(&self) -> u64 {
        0
    }
}

fn monotonic_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One RX/TX queue pair of an [`EthPort`], polled by one worker; it borrows its port (and
/// the transmit and exception ports, if any) and its pool for `'a`.
pub struct DpdkQueue<'a> {
    pool: &'a Mempool,
    port: u16,
    tx_port: u16,
    queue: u16,
    /// The exception port (a TAP device into the kernel), if any: frames that are not the
    /// balancer's go there, and what the kernel sends back goes out of the port.
    host: Option<u16>,
    raw: [*mut sys::rte_mbuf; BURST],
    /// Frames the kernel sent through the exception port and this queue transmitted.
    pub from_host: u64,
    /// Frames given to the kernel through the exception port.
    pub to_host: u64,
    /// Frames either way of the exception path that a queue had no room for (freed).
    pub host_dropped: u64,
    /// Frames the device did not accept for transmission (freed).
    pub tx_full: u64,
    /// Multi-segment frames received (freed: the data path handles single buffers).
    pub oversize: u64,
    borrows: PhantomData<&'a EthPort<'a>>,
}

// SAFETY: the raw array is scratch space; the queue is used by one thread at a time, and the
// ports and pool it borrows are usable from any thread.
unsafe impl Send for DpdkQueue<'_> {}

/// The counters a queue kept, once it is done.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueCounters {
    pub from_host: u64,
    pub to_host: u64,
    pub host_dropped: u64,
    pub tx_full: u64,
    pub oversize: u64,
}

impl<'a> DpdkQueue<'a> {
    /// What this queue counted (read after its worker stopped, before it is dropped).
    pub fn counters(&self) -> QueueCounters {
        QueueCounters {
            from_host: self.from_host,
            to_host: self.to_host,
            host_dropped: self.host_dropped,
            tx_full: self.tx_full,
            oversize: self.oversize,
        }
    }

    /// Moves `frames` (at most one burst) into `raw` and transmits them on `port`; frees the
    /// ones the device did not take. Returns (sent, refused).
    fn send(&mut self, port: u16, frames: &mut Vec<Mbuf<'a>>) -> (usize, usize) {
        let n = frames.len().min(BURST);
        for (slot, f) in self.raw.iter_mut().zip(frames.drain(..n)) {
            *slot = f.into_raw();
        }
        // Anything beyond one burst (never produced by the worker) is freed.
        frames.clear();
        self.send_raw(port, n)
    }

    /// Transmits the first `n` entries of `raw` (mbufs we own) on `port`, freeing the ones
    /// the device did not take. Returns (sent, refused).
    fn send_raw(&mut self, port: u16, n: usize) -> (usize, usize) {
        // SAFETY: the first n entries are mbufs we own; the PMD takes the first `sent`.
        let sent =
            unsafe { sys::sluice_tx_burst(port, self.queue, self.raw.as_mut_ptr(), n as u16) }
                as usize;
        if sent < n {
            // SAFETY: the unsent ones are still ours.
            unsafe {
                sys::sluice_pktmbuf_free_bulk(self.raw[sent..n].as_mut_ptr(), (n - sent) as u32)
            };
        }
        (sent, n - sent)
    }

    /// Moves one burst the kernel sent through the exception port out of the port,
    /// unchanged (the host's own traffic: SSH, health checks, routing daemons). Returns how
    /// many frames were read.
    pub fn pump_host(&mut self) -> usize {
        let Some(host) = self.host else { return 0 };
        // SAFETY: raw has room for BURST pointers.
        let n =
            unsafe { sys::sluice_rx_burst(host, self.queue, self.raw.as_mut_ptr(), BURST as u16) }
                as usize;
        if n > 0 {
            let (sent, refused) = self.send_raw(self.tx_port, n);
            self.from_host += sent as u64;
            self.host_dropped += refused as u64;
        }
        n
    }
}

impl<'a> Port for DpdkQueue<'a> {
    type Frame = Mbuf<'a>;

    fn rx_burst(&mut self, out: &mut Vec<Mbuf<'a>>) {
        let room = BURST.saturating_sub(out.len()) as u16;
        if room == 0 {
            return;
        }
        // SAFETY: raw has room for BURST pointers; the PMD fills at most `room`.
        let n = unsafe { sys::sluice_rx_burst(self.port, self.queue, self.raw.as_mut_ptr(), room) }
            as usize;
        for &p in &self.raw[..n] {
            let Some(nn) = NonNull::new(p) else { continue };
            let m = Mbuf(nn, PhantomData);
            if m.m().nb_segs != 1 {
                self.oversize += 1;
                drop(m);
            } else {
                out.push(m);
            }
        }
    }

    fn tx_burst(&mut self, frames: &mut Vec<Mbuf<'a>>) {
        let (_, refused) = self.send(self.tx_port, frames);
        self.tx_full += refused as u64;
    }

    fn to_host(&mut self, frames: &mut Vec<Mbuf<'a>>) {
        let Some(host) = self.host else {
            frames.clear();
            return;
        };
        let (sent, refused) = self.send(host, frames);
        self.to_host += sent as u64;
        self.host_dropped += refused as u64;
    }

    fn has_host_path(&self) -> bool {
        self.host.is_some()
    }

    fn free(&mut self, frame: Mbuf<'a>) {
        drop(frame);
    }

    fn alloc(&mut self, len: usize) -> Option<Mbuf<'a>> {
        let len = u16::try_from(len).ok()?;
        // SAFETY: the pool is valid for 'a, which the mbuf carries.
        NonNull::new(unsafe { sys::sluice_pktmbuf_alloc(self.pool.0.as_ptr(), len) })
            .map(|m| Mbuf(m, PhantomData))
    }

    fn after_poll(&mut self) {
        self.pump_host();
    }

    fn clock_ns(&self) -> Option<u64> {
        Some(monotonic_ns())
    }
}
