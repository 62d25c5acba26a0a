//! The shard's TCP stack: one smoltcp `Interface` (IP medium: the poll loops own the link)
//! driven one socket at a time. smoltcp's `SocketSet` is scanned linearly on every poll, so
//! the shard keeps its connections itself, in a map by 4-tuple, and puts just the socket a
//! segment belongs to (or the socket with something to send) into a one-socket set for each
//! step: the cost per segment does not grow with the number of connections.
//!
//! Segments leave as frames of the offload pool, on the return ring of the worker the
//! connection's last segment came through; the worker fills in the Ethernet addresses.

use dataplane::offload::OffloadRings;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

/// Ethernet header room in front of each IP packet a shard makes.
pub const ETH_LEN: usize = 14;

/// What the stack's frames did, for the shard's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    pub frames_out: u64,
    /// No free frame in the offload pool for a segment (smoltcp retransmits it).
    pub no_buffer: u64,
    /// The worker's return ring was full.
    pub ring_full: u64,
}

/// The device smoltcp reads one segment from and writes segments through.
struct Link<'r> {
    rx: Option<&'r [u8]>,
    rings: &'r OffloadRings,
    worker: usize,
    counters: &'r mut LinkCounters,
    mtu: usize,
}

struct Rx<'r>(&'r [u8]);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct Tx<'a, 'r> {
    rings: &'r OffloadRings,
    worker: usize,
    counters: &'a mut LinkCounters,
}

impl TxToken for Tx<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = self.rings.frame();
        let mut frame = match frame {
            Some(fr) if ETH_LEN + len <= dataplane::OFFLOAD_FRAME => fr,
            other => {
                if let Some(fr) = other {
                    self.rings.recycle(fr);
                }
                self.counters.no_buffer += 1;
                // smoltcp still writes the packet; into scratch, and it is lost (TCP sends
                // it again).
                let mut scratch = [0u8; dataplane::OFFLOAD_FRAME];
                let n = len.min(scratch.len());
                return f(&mut scratch[..n]);
            }
        };
        let r = match frame.resize(ETH_LEN + len) {
            Some(buf) => {
                let r = f(&mut buf[ETH_LEN..]);
                let ethertype: [u8; 2] = if buf.get(ETH_LEN).is_some_and(|b| b >> 4 == 6) {
                    [0x86, 0xdd]
                } else {
                    [0x08, 0x00]
                };
                buf[..12].fill(0);
                buf[12..14].copy_from_slice(&ethertype);
                r
            }
            None => f(&mut []),
        };
        match self.rings.give_back(self.worker, frame) {
            Ok(()) => self.counters.frames_out += 1,
            Err(fr) => {
                self.rings.recycle(fr);
                self.counters.ring_full += 1;
            }
        }
        r
    }
}

impl Device for Link<'_> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a, 'a>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_, '_>)> {
        let data = self.rx.take()?;
        Some((
            Rx(data),
            Tx {
                rings: self.rings,
                worker: self.worker,
                counters: self.counters,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_, '_>> {
        Some(Tx {
            rings: self.rings,
            worker: self.worker,
            counters: self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c.max_burst_size = None;
        c
    }
}

/// A connection's socket, in a one-socket set of its own that the stack polls. The socket
/// stays where it is for the connection's life: moving its 550 bytes into a shared set and
/// back for every step cost 14% of the worker at 10,000 connections (perf: `memmove`).
pub struct Sock {
    set: SocketSet<'static>,
    handle: SocketHandle,
}

impl Sock {
    pub fn new(s: tcp::Socket<'static>) -> Sock {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(s);
        Sock { set, handle }
    }
}

impl std::ops::Deref for Sock {
    type Target = tcp::Socket<'static>;
    fn deref(&self) -> &Self::Target {
        self.set.get(self.handle)
    }
}

impl std::ops::DerefMut for Sock {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.set.get_mut(self.handle)
    }
}

/// The interface the shard's sockets are polled through.
pub struct Stack {
    iface: Interface,
    pub counters: LinkCounters,
    mtu: usize,
}

impl Stack {
    /// A stack answering for any address (the VIPs, and the node's address for upstream
    /// connections): the poll loops hand it only what is the pool's.
    pub fn new(rings: &OffloadRings, now: Instant, seed: u64, mtu: usize) -> Stack {
        let mut counters = LinkCounters::default();
        let mut link = Link {
            rx: None,
            rings,
            worker: 0,
            counters: &mut counters,
            mtu,
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut link, now);
        iface.set_any_ip(true);
        // Some address is needed for smoltcp to pick sources by; ours are given per socket.
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(192, 0, 2, 1), 32));
        });
        Stack {
            iface,
            counters,
            mtu,
        }
    }

    /// Feeds one IP packet to `sock` (or, with `None`, to no socket: smoltcp answers a
    /// segment no connection takes with a RST), sending what it answers through `worker`.
    pub fn ingress(
        &mut self,
        sock: Option<&mut Sock>,
        ip: &[u8],
        rings: &OffloadRings,
        worker: usize,
        now: Instant,
    ) {
        let mut counters = self.counters;
        let mtu = self.mtu;
        let mut link = Link {
            rx: Some(ip),
            rings,
            worker,
            counters: &mut counters,
            mtu,
        };
        match sock {
            Some(s) => {
                self.iface.poll_ingress_single(now, &mut link, &mut s.set);
            }
            None => {
                let iface = &mut self.iface;
                let mut empty = SocketSet::new(Vec::new());
                iface.poll_ingress_single(now, &mut link, &mut empty);
            }
        }
        self.counters = counters;
    }

    /// Sends whatever `sock` has to send now (data, ACKs, retransmissions, FIN), through
    /// `worker`; returns when it next needs attention (smoltcp's `poll_at`), in ms.
    pub fn egress(
        &mut self,
        sock: &mut Sock,
        rings: &OffloadRings,
        worker: usize,
        now: Instant,
    ) -> Option<u64> {
        let mut counters = self.counters;
        let mtu = self.mtu;
        let mut link = Link {
            rx: None,
            rings,
            worker,
            counters: &mut counters,
            mtu,
        };
        let (iface, set) = (&mut self.iface, &mut sock.set);
        // Bounded: a socket sends at most a window's worth per step.
        for _ in 0..256 {
            if iface.poll_egress(now, &mut link, set) == smoltcp::iface::PollResult::None {
                break;
            }
        }
        let at = iface
            .poll_at(now, set)
            .map(|t| t.total_millis().max(0) as u64);
        self.counters = counters;
        at
    }

    pub fn context(&mut self) -> &mut smoltcp::iface::Context {
        self.iface.context()
    }
}

/// A new socket with buffers of these sizes, tuned for proxying: no Nagle delay (heads and
/// small responses go out at once), Cubic congestion control.
pub fn socket(rx: usize, tx: usize) -> Sock {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; rx]),
        tcp::SocketBuffer::new(vec![0u8; tx]),
    );
    s.set_nagle_enabled(false);
    s.set_congestion_control(tcp::CongestionControl::Cubic);
    // Linux's shortest delayed ACK (smoltcp's default is 10 ms): a busy worker's answer then
    // carries the ACK more often, rather than a segment of its own before it.
    s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(40)));
    Sock::new(s)
}
