//! One L7 shard: a thread that takes the frames the poll loops handed it, runs them through
//! its TCP stack, drives each connection's proxy session, and sends what results back
//! through the workers. Connections are found by 4-tuple in a hash map and woken by a timer
//! set ordered by deadline; nothing walks all connections.

use crate::balance::PoolState;
use crate::proxy::Session;
use crate::setup::{ClientTls, L7Setup, Protocol};
use crate::stats::{L7Error, ShardStats};
use crate::tcp::{self, Sock, Stack};
use crate::tls::TlsSession;
use arc_swap::ArcSwap;
use dataplane::offload::{Handed, OffloadRings};
use hashbrown::{HashMap, HashSet};
use packet::ipv4::PROTO_TCP;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::IpListenEndpoint;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The setup every shard reads, swapped whole by the control plane.
pub struct SharedSetup {
    inner: ArcSwap<L7Setup>,
}

impl SharedSetup {
    pub fn new(s: L7Setup) -> Self {
        SharedSetup {
            inner: ArcSwap::from_pointee(s),
        }
    }

    pub fn store(&self, s: L7Setup) {
        self.inner.store(Arc::new(s));
    }

    pub fn load(&self) -> Arc<L7Setup> {
        self.inner.load_full()
    }

    /// The setup, if it is not `current` any more: a look without touching the reference
    /// count, so a shard can ask on every poll.
    fn newer_than(&self, current: &Arc<L7Setup>) -> Option<Arc<L7Setup>> {
        let g = self.inner.load();
        (!Arc::ptr_eq(&g, current)).then(|| Arc::clone(&g))
    }
}

pub type ConnId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A connection upstream, to a backend.
pub(crate) struct Upstream {
    pub backend: SocketAddr,
    /// Where its counters go: service, pool, backend index (of the setup it was opened in).
    pub slot: (usize, usize, usize),
    pub client: Option<ConnId>,
    pub idle_since: Option<u64>,
    /// Re-encryption (`[service.pool.tls]`): the TLS layer over its socket, and the pool's
    /// settings it was opened with (a pooled connection is reused only under the same).
    pub tls: Option<Box<TlsSession>>,
    pub made_with: Option<ClientTls>,
}

pub(crate) enum Role {
    Client(Box<Session>),
    Upstream(Upstream),
}

pub(crate) struct Conn {
    /// `None` once closed (its socket went back to the spares).
    pub sock: Option<Sock>,
    pub key: ConnKey,
    /// The worker whose queue its last segment came through (its segments leave there).
    pub worker: usize,
    pub role: Role,
    deadline: Option<u64>,
}

/// Frames taken from the ring per poll before the connections are driven.
const INTAKE: usize = 64;
/// Parks upstream connection `uid` in its backend's idle list for reuse, unless the list
/// already holds `max`; returns whether it did.
pub(crate) fn park(
    idle: &mut HashMap<SocketAddr, Vec<ConnId>>,
    max: usize,
    up: &mut Upstream,
    uid: ConnId,
    now: u64,
) -> bool {
    let list = idle.entry(up.backend).or_default();
    if list.len() >= max {
        return false;
    }
    up.idle_since = Some(now);
    list.push(uid);
    true
}

/// Per-route counters of `new` taken from those of `old` where a route of the same service
/// (by name) has the same conditions; the last entry of each service is its default pool's.
fn carry_routes<T: Clone + Default>(
    old: &L7Setup,
    new: &L7Setup,
    counts: &[Vec<T>],
) -> Vec<Vec<T>> {
    new.services
        .iter()
        .map(|s| {
            let os = old.services.iter().position(|o| o.name == s.name);
            let slot = |k: Option<usize>| -> T {
                os.zip(k)
                    .and_then(|(i, k)| counts.get(i)?.get(k).cloned())
                    .unwrap_or_default()
            };
            let mut v: Vec<T> = s
                .routes
                .iter()
                .map(|r| slot(os.and_then(|i| old.services[i].routes.iter().position(|o| o == r))))
                .collect();
            v.push(slot(os.map(|i| old.services[i].routes.len())));
            v
        })
        .collect()
}

/// Closed sockets kept for reuse, at most.
const SPARE_SOCKETS: usize = 4096;
/// How often the counters are published.
const PUBLISH_MS: u64 = 100;

pub struct Shard<'r> {
    pub id: usize,
    pub(crate) rings: &'r OffloadRings,
    shared: &'r SharedSetup,
    pub(crate) setup: Arc<L7Setup>,
    /// Per service, per pool.
    pub(crate) pools: Vec<Vec<PoolState>>,
    pub(crate) stack: Stack,
    pub(crate) conns: Vec<Option<Conn>>,
    free_ids: Vec<ConnId>,
    by_key: HashMap<ConnKey, ConnId>,
    timers: BTreeSet<(u64, ConnId)>,
    /// Connections to drive, and (by id, so a connection taken out of `conns` while it is
    /// worked on can be flagged too) whether each is listed.
    touched: Vec<ConnId>,
    is_touched: Vec<bool>,
    /// Connections that may have something to send, the same way.
    dirty: Vec<ConnId>,
    is_dirty: Vec<bool>,
    /// Idle upstream connections by backend address, most recently used last.
    pub(crate) idle: HashMap<SocketAddr, Vec<ConnId>>,
    ports: (u16, u16),
    port_cursor: u16,
    ports_used: HashSet<(SocketAddr, u16)>,
    pub(crate) clients: Vec<usize>,
    pub stats: ShardStats,
    published: Option<&'r Mutex<ShardStats>>,
    last_publish: u64,
    /// Room for peeking at a head (the largest `header_bytes` of any service, plus one).
    pub(crate) scratch: Vec<u8>,
    /// Closed sockets kept with their buffers for the next connections (smoltcp resets a
    /// socket's state and buffers when it listens or connects again): a new connection
    /// then costs no allocation and no zeroing of 2 × 64 KiB.
    spare: Vec<Sock>,
    epoch: std::time::Instant,
}

impl<'r> Shard<'r> {
    /// Shard `id`, taking its frames from `rings` and opening upstream connections from the
    /// source ports `ports` (inclusive; the plan's range for this shard).
    pub fn new(
        id: usize,
        rings: &'r OffloadRings,
        shared: &'r SharedSetup,
        ports: (u16, u16),
    ) -> Self {
        let setup = shared.load();
        let seed = packet::flow::mix64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ id as u64,
        );
        let stack = Stack::new(rings, NetInstant::from_millis(0), seed, 1500);
        let mut s = Shard {
            id,
            rings,
            shared,
            setup: Arc::clone(&setup),
            pools: Vec::new(),
            stack,
            conns: Vec::new(),
            free_ids: Vec::new(),
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
            touched: Vec::new(),
            is_touched: Vec::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            idle: HashMap::new(),
            ports,
            // From a random place in the range: a restarted daemon does not begin with the
            // ports of its predecessor's connections.
            port_cursor: ports.0 + (seed % (ports.1.saturating_sub(ports.0) as u64 + 1)) as u16,
            ports_used: HashSet::new(),
            clients: Vec::new(),
            stats: ShardStats::default(),
            published: None,
            last_publish: 0,
            scratch: Vec::new(),
            spare: Vec::new(),
            epoch: std::time::Instant::now(),
        };
        s.adopt(setup);
        s
    }

    /// Publishes a copy of the counters to `m` every 100 ms (never waiting for it).
    pub fn publishing_to(mut self, m: &'r Mutex<ShardStats>) -> Self {
        self.published = Some(m);
        self
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Takes a new setup: fresh balancing state, room for its counters, and idle upstream
    /// connections to backends that no longer take requests closed.
    fn adopt(&mut self, setup: Arc<L7Setup>) {
        self.pools = setup
            .services
            .iter()
            .enumerate()
            .map(|(si, s)| {
                s.pools
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| PoolState::new(p, (self.id * 7919 + si * 131 + pi) as u64))
                    .collect()
            })
            .collect();
        self.clients.resize(setup.services.len(), 0);
        if setup.tcp != self.setup.tcp {
            self.spare.clear();
        }
        // Counters carry over by name (service, pool, backend address; a route by its
        // conditions), so a live change does not reset them.
        let old = &self.setup;
        let old_backends = std::mem::take(&mut self.stats.backends);
        let old_routes = std::mem::take(&mut self.stats.routes);
        self.stats.backends = setup
            .services
            .iter()
            .map(|s| {
                let os = old.services.iter().position(|o| o.name == s.name);
                s.pools
                    .iter()
                    .map(|p| {
                        let op = os.and_then(|i| {
                            old.services[i]
                                .pools
                                .iter()
                                .position(|o| o.name == p.name)
                                .map(|j| (i, j))
                        });
                        p.backends
                            .iter()
                            .map(|b| {
                                op.and_then(|(i, j)| {
                                    let k = old.services[i].pools[j]
                                        .backends
                                        .iter()
                                        .position(|o| o.address == b.address)?;
                                    old_backends.get(i)?.get(j)?.get(k).copied()
                                })
                                .unwrap_or_default()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        // Per-service request counters, by name too.
        let old_services = std::mem::take(&mut self.stats.services);
        self.stats.services = setup
            .services
            .iter()
            .map(|s| {
                old.services
                    .iter()
                    .position(|o| o.name == s.name)
                    .and_then(|i| old_services.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        self.stats.routes = carry_routes(old, &setup, &old_routes);
        let old_status = std::mem::take(&mut self.stats.route_status);
        self.stats.route_status = carry_routes(old, &setup, &old_status);
        let head = setup
            .services
            .iter()
            .map(|s| match s.protocol {
                Protocol::Http => s.limits.header_bytes + 1,
                Protocol::TlsPassthrough => crate::proxy::hello_peek(s.limits.header_bytes),
            })
            .max()
            .unwrap_or(16385);
        self.scratch.resize(head.max(16385), 0);
        let ready: HashSet<SocketAddr> = setup
            .services
            .iter()
            .flat_map(|s| s.pools.iter())
            .flat_map(|p| p.backends.iter())
            .filter(|b| b.takes_requests())
            .map(|b| b.address)
            .collect();
        let stale: Vec<ConnId> = self
            .idle
            .iter()
            .filter(|(a, _)| !ready.contains(*a))
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        for id in stale {
            if let Some(c) = self.conn_mut(id) {
                if let Some(s) = c.sock.as_mut() {
                    s.close();
                }
            }
            self.touch(id);
        }
        self.idle.retain(|a, _| ready.contains(a));
        self.setup = setup;
    }

    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize)?.as_mut()
    }

    pub(crate) fn take_conn(&mut self, id: ConnId) -> Option<Conn> {
        self.conns.get_mut(id as usize)?.take()
    }

    pub(crate) fn put_conn(&mut self, id: ConnId, c: Conn) {
        if let Some(slot) = self.conns.get_mut(id as usize) {
            *slot = Some(c);
        }
    }

    pub(crate) fn touch(&mut self, id: ConnId) {
        if let Some(f) = self.is_touched.get_mut(id as usize) {
            if !*f {
                *f = true;
                self.touched.push(id);
            }
        }
    }

    /// Lists `id` for sending after this round of driving.
    fn dirty(&mut self, id: ConnId) {
        if let Some(f) = self.is_dirty.get_mut(id as usize) {
            if !*f {
                *f = true;
                self.dirty.push(id);
            }
        }
    }

    fn insert(&mut self, c: Conn) -> ConnId {
        let key = c.key;
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.conns[id as usize] = Some(c);
                id
            }
            None => {
                self.conns.push(Some(c));
                self.is_touched.push(false);
                self.is_dirty.push(false);
                (self.conns.len() - 1) as ConnId
            }
        };
        self.by_key.insert(key, id);
        id
    }

    /// A socket for a new connection: a spare one, or new.
    fn socket(&mut self) -> Sock {
        match self.spare.pop() {
            Some(s) => s,
            None => {
                let t = self.setup.tcp;
                tcp::socket(t.rx_buffer, t.tx_buffer)
            }
        }
    }

    /// Number of connections the shard holds (clients and upstream).
    pub fn connections(&self) -> usize {
        self.by_key.len()
    }

    /// A free source port toward `backend`.
    fn alloc_port(&mut self, backend: SocketAddr) -> Option<u16> {
        let (lo, hi) = self.ports;
        let span = (hi - lo) as u32 + 1;
        for _ in 0..span {
            let p = self.port_cursor;
            self.port_cursor = if p >= hi { lo } else { p + 1 };
            if self.ports_used.insert((backend, p)) {
                return Some(p);
            }
        }
        None
    }

    /// Opens a connection to `backend` for client connection `client`.
    pub(crate) fn connect(
        &mut self,
        backend: SocketAddr,
        slot: (usize, usize, usize),
        client: ConnId,
        worker: usize,
    ) -> Result<ConnId, L7Error> {
        let src: IpAddr = match backend.ip() {
            IpAddr::V4(_) => self.setup.node_ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => self.setup.node_ipv6.map(IpAddr::V6),
        }
        .ok_or(L7Error::BackendFailed)?;
        let made_with = self
            .setup
            .services
            .get(slot.0)
            .and_then(|s| s.pools.get(slot.1))
            .and_then(|p| p.tls.clone());
        let tls = match &made_with {
            None => None,
            Some(t) => Some(Box::new(
                TlsSession::client(&t.config, t.name_for(backend))
                    .map_err(|_| L7Error::BackendFailed)?,
            )),
        };
        let port = self
            .alloc_port(backend)
            .ok_or(L7Error::UpstreamPortsExhausted)?;
        let mut sock = self.socket();
        if sock
            .connect(self.stack.context(), backend, SocketAddr::new(src, port))
            .is_err()
        {
            self.ports_used.remove(&(backend, port));
            return Err(L7Error::BackendFailed);
        }
        let id = self.insert(Conn {
            sock: Some(sock),
            key: ConnKey {
                local: SocketAddr::new(src, port),
                remote: backend,
            },
            worker,
            role: Role::Upstream(Upstream {
                backend,
                slot,
                client: Some(client),
                idle_since: None,
                tls,
                made_with,
            }),
            deadline: None,
        });
        self.stats.upstream_opened += 1;
        self.stats.upstream_connections += 1;
        self.touch(id);
        Ok(id)
    }

    /// One frame from the ring.
    fn intake(&mut self, h: Handed, now: u64) {
        self.stats.frames_in += 1;
        let data = h.frame.data();
        let p = match packet::parse::parse_frame(data) {
            Ok(p) if p.proto == PROTO_TCP && !p.fragment => p,
            _ => {
                self.stats.frames_not_tcp += 1;
                self.rings.recycle(h.frame);
                return;
            }
        };
        let Some(ip) = data.get(p.l2_len..p.l3_end) else {
            self.rings.recycle(h.frame);
            return;
        };
        let key = ConnKey {
            local: SocketAddr::new(p.dst, p.dst_port),
            remote: SocketAddr::new(p.src, p.src_port),
        };
        let t = NetInstant::from_millis(now as i64);
        let syn = p.tcp_flags & packet::tcp::SYN != 0 && p.tcp_flags & packet::tcp::ACK == 0;
        if syn {
            self.end_time_wait(&key);
        }
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(mut c) = self.take_conn(id) {
                c.worker = h.worker;
                if let Some(s) = c.sock.as_mut() {
                    self.stack.ingress(Some(s), ip, self.rings, h.worker, t);
                }
                self.put_conn(id, c);
                self.touch(id);
            }
        } else if syn {
            match self.setup.service_at(p.dst, p.dst_port) {
                Some(svc) if self.clients[svc] < self.setup.services[svc].limits.connections => {
                    let tls = match &self.setup.services[svc].tls {
                        None => Ok(None),
                        Some(cfg) => TlsSession::new(&cfg.0).map(|t| Some(Box::new(t))),
                    };
                    let Ok(tls) = tls else {
                        self.stats.error(L7Error::TlsHandshake);
                        self.stack.ingress(None, ip, self.rings, h.worker, t);
                        self.rings.recycle(h.frame);
                        return;
                    };
                    let mut sock = self.socket();
                    let ok = sock
                        .listen(IpListenEndpoint {
                            addr: Some(p.dst.into()),
                            port: p.dst_port,
                        })
                        .is_ok();
                    if ok {
                        let id = self.insert(Conn {
                            sock: Some(sock),
                            key,
                            worker: h.worker,
                            role: Role::Client(Box::new(
                                Session::new(svc, now).with_tls(tls).passthrough(
                                    self.setup.services[svc].protocol == Protocol::TlsPassthrough,
                                ),
                            )),
                            deadline: None,
                        });
                        self.clients[svc] += 1;
                        self.stats.client_connections += 1;
                        self.stats.clients_accepted += 1;
                        if let Some(mut c) = self.take_conn(id) {
                            if let Some(s) = c.sock.as_mut() {
                                self.stack.ingress(Some(s), ip, self.rings, h.worker, t);
                            }
                            self.put_conn(id, c);
                        }
                        self.touch(id);
                    }
                }
                Some(_) => {
                    self.stats.error(L7Error::ConnectionLimit);
                    self.stack.ingress(None, ip, self.rings, h.worker, t);
                }
                None => {
                    self.stats.segments_no_connection += 1;
                    self.stack.ingress(None, ip, self.rings, h.worker, t);
                }
            }
        } else {
            self.stats.segments_no_connection += 1;
            self.stack.ingress(None, ip, self.rings, h.worker, t);
        }
        self.rings.recycle(h.frame);
    }

    /// A new SYN on the 4-tuple of a connection in TIME-WAIT (which the proxy enters when it
    /// closes first, after `Connection: close`) starts a new connection, as Linux allows
    /// (RFC 6191): clients reuse ports sooner than TIME-WAIT ends.
    fn end_time_wait(&mut self, key: &ConnKey) {
        let Some(&id) = self.by_key.get(key) else {
            return;
        };
        let done = self
            .conns
            .get(id as usize)
            .and_then(|c| c.as_ref())
            .and_then(|c| c.sock.as_ref())
            .is_some_and(|s| {
                matches!(
                    s.state(),
                    smoltcp::socket::tcp::State::TimeWait | smoltcp::socket::tcp::State::Closed
                )
            });
        if !done {
            return;
        }
        if let Some(mut c) = self.take_conn(id) {
            if let Some(d) = c.deadline.take() {
                self.timers.remove(&(d, id));
            }
            if let Some(s) = c.sock.as_mut() {
                s.abort();
            }
            self.reap(id, c);
        }
    }

    /// Drives the touched connections, sends what they (and their partners) have, and sets
    /// their timers; frees those that have closed.
    fn settle(&mut self, now: u64) {
        for _ in 0..4 {
            let round = std::mem::take(&mut self.touched);
            if round.is_empty() {
                break;
            }
            for &id in &round {
                if let Some(f) = self.is_touched.get_mut(id as usize) {
                    *f = false;
                }
            }
            for &id in &round {
                self.drive(id, now);
            }
        }
        // What is still touched after four rounds is driven next poll.
        let t = NetInstant::from_millis(now as i64);
        let dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(f) = self.is_dirty.get_mut(id as usize) {
                *f = false;
            }
            let Some(mut c) = self.take_conn(id) else {
                continue;
            };
            let at = c
                .sock
                .as_mut()
                .and_then(|s| self.stack.egress(s, self.rings, c.worker, t));
            let app = self.app_deadline(&c);
            // TIME-WAIT is not kept: it would hold a connection's buffers for its 10 s, and a
            // new SYN on the same 4-tuple starts a new connection anyway (`end_time_wait`).
            let closed = c.sock.as_ref().is_none_or(|s| {
                matches!(
                    s.state(),
                    smoltcp::socket::tcp::State::Closed | smoltcp::socket::tcp::State::TimeWait
                )
            });
            if closed {
                if let Some(d) = c.deadline.take() {
                    self.timers.remove(&(d, id));
                }
                self.reap(id, c);
                continue;
            }
            let next = match (at, app) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(|d| d.max(now + 1).min(now + 3_600_000));
            // Most steps leave the deadline where it was (an idle or response timeout).
            if next != c.deadline {
                if let Some(d) = c.deadline.take() {
                    self.timers.remove(&(d, id));
                }
                if let Some(d) = next {
                    c.deadline = Some(d);
                    self.timers.insert((d, id));
                }
            }
            self.put_conn(id, c);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            // Keeps the list's allocation.
            self.dirty = dirty;
        }
    }

    fn app_deadline(&self, c: &Conn) -> Option<u64> {
        match &c.role {
            Role::Client(s) => s.deadline(&self.setup),
            Role::Upstream(u) => {
                let svc = self.setup.services.get(u.slot.0)?;
                u.idle_since.map(|t| t + svc.timeouts.pool_idle_ms)
            }
        }
    }

    fn reap(&mut self, id: ConnId, mut c: Conn) {
        self.by_key.remove(&c.key);
        self.free_ids.push(id);
        if let Some(mut s) = c.sock.take() {
            // At most as many spares as the busiest moment needed, up to a bound.
            if self.spare.len() < SPARE_SOCKETS {
                s.abort();
                self.spare.push(s);
            }
        }
        match c.role {
            Role::Client(s) => {
                if let Some(n) = self.clients.get_mut(s.svc) {
                    *n = n.saturating_sub(1);
                }
                self.stats.client_connections = self.stats.client_connections.saturating_sub(1);
                if let Some(uid) = s.up {
                    self.release_upstream(uid, false);
                }
            }
            Role::Upstream(u) => {
                self.ports_used.remove(&(u.backend, c.key.local.port()));
                self.stats.upstream_connections = self.stats.upstream_connections.saturating_sub(1);
                if let Some(list) = self.idle.get_mut(&u.backend) {
                    list.retain(|&x| x != id);
                }
                if let Some(cid) = u.client {
                    self.touch(cid);
                }
            }
        }
    }

    /// Detaches upstream `uid` from its client: parked idle for reuse when `reuse`, closed
    /// (reset) otherwise.
    pub(crate) fn release_upstream(&mut self, uid: ConnId, reuse: bool) {
        let now = self.now_ms();
        let max_idle = self.setup.tcp.max_idle;
        let Some(c) = self.conns.get_mut(uid as usize).and_then(|c| c.as_mut()) else {
            return;
        };
        let Role::Upstream(u) = &mut c.role else {
            return;
        };
        u.client = None;
        let open = c
            .sock
            .as_ref()
            .is_some_and(|s| s.state() == smoltcp::socket::tcp::State::Established);
        if !(reuse && open && park(&mut self.idle, max_idle, u, uid, now)) {
            if let Some(s) = c.sock.as_mut() {
                s.abort();
            }
        }
        self.touch(uid);
    }

    /// An idle pooled connection to `backend`, if one is still good and was opened with the
    /// re-encryption settings `tls` (none: plain HTTP) — a pool's may have changed since.
    pub(crate) fn pooled(
        &mut self,
        backend: SocketAddr,
        tls: Option<&ClientTls>,
        client: ConnId,
    ) -> Option<ConnId> {
        loop {
            let uid = self.idle.get_mut(&backend)?.pop()?;
            let Some(c) = self.conn_mut(uid) else {
                continue;
            };
            let good = c.sock.as_ref().is_some_and(|s| {
                s.state() == smoltcp::socket::tcp::State::Established && s.recv_queue() == 0
            });
            if let Role::Upstream(u) = &mut c.role {
                if good && u.made_with.as_ref() == tls {
                    u.client = Some(client);
                    u.idle_since = None;
                    self.stats.upstream_reused += 1;
                    return Some(uid);
                }
            }
            if let Some(s) = c.sock.as_mut() {
                s.abort();
            }
            self.touch(uid);
        }
    }

    fn drive(&mut self, id: ConnId, now: u64) {
        let client = match self.conns.get(id as usize).and_then(|c| c.as_ref()) {
            Some(Conn {
                role: Role::Client(_),
                ..
            }) => Some(id),
            Some(Conn {
                role: Role::Upstream(u),
                ..
            }) => u.client,
            None => return,
        };
        match client {
            Some(cid) => {
                self.drive_client(cid, now);
                self.dirty(cid);
                let up = match self.conns.get(cid as usize).and_then(|c| c.as_ref()) {
                    Some(Conn {
                        role: Role::Client(s),
                        ..
                    }) => s.up,
                    _ => None,
                };
                if let Some(uid) = up {
                    self.dirty(uid);
                }
            }
            None => self.drive_idle_upstream(id, now),
        }
        self.dirty(id);
    }

    /// A pooled connection: closed when the backend closes it, sends anything, or it idled
    /// past `pool_idle_ms`.
    fn drive_idle_upstream(&mut self, id: ConnId, now: u64) {
        let deadline = self
            .conns
            .get(id as usize)
            .and_then(|c| c.as_ref())
            .and_then(|c| self.app_deadline(c));
        let Some(c) = self.conn_mut(id) else { return };
        let Some(s) = c.sock.as_mut() else { return };
        if !s.may_recv() || s.recv_queue() > 0 || deadline.is_some_and(|d| now >= d) {
            if s.recv_queue() > 0 {
                s.abort();
            } else {
                s.close();
            }
            // Out of the pool, and no more pool timer.
            if let Role::Upstream(u) = &mut c.role {
                u.idle_since = None;
            }
            if let Some(b) = match &c.role {
                Role::Upstream(u) => Some(u.backend),
                Role::Client(_) => None,
            } {
                if let Some(list) = self.idle.get_mut(&b) {
                    list.retain(|&x| x != id);
                }
            }
        }
    }

    /// One poll at time `now` (ms): frames in, timers due, connections driven, segments out.
    /// Returns whether there was anything to do.
    pub fn poll_at(&mut self, now: u64) -> bool {
        if let Some(newer) = self.shared.newer_than(&self.setup) {
            self.adopt(newer);
        }
        let mut worked = false;
        for _ in 0..INTAKE {
            match self.rings.take(self.id) {
                Some(h) => {
                    self.intake(h, now);
                    worked = true;
                }
                None => break,
            }
        }
        while let Some(&(d, id)) = self.timers.first() {
            if d > now {
                break;
            }
            self.timers.pop_first();
            if let Some(c) = self.conn_mut(id) {
                c.deadline = None;
            }
            self.touch(id);
            worked = true;
        }
        if !self.touched.is_empty() {
            self.settle(now);
        }
        let lc = self.stack.counters;
        self.stats.frames_out = lc.frames_out;
        self.stats.frames_no_buffer = lc.no_buffer;
        self.stats.frames_ring_full = lc.ring_full;
        if let Some(m) = self.published {
            if now >= self.last_publish + PUBLISH_MS {
                if let Ok(mut g) = m.try_lock() {
                    g.clone_from(&self.stats);
                    self.last_publish = now;
                }
            }
        }
        worked
    }

    /// Polls until `stop`, spinning while there is work and sleeping briefly when idle (the
    /// shard shares its core).
    pub fn run(&mut self, stop: &AtomicBool) {
        self.run_until(stop);
        self.shutdown(self.now_ms());
    }

    /// Resets every connection the shard holds, sending the RSTs through the workers (which
    /// keep polling until the shards are done): peers then hold no state of a stopped
    /// daemon, and a restarted one does not meet its old connections (a backend that still
    /// had one would answer a new SYN on the same 4-tuple with a challenge ACK, and the
    /// connection would wait a retransmission timeout).
    pub fn shutdown(&mut self, now: u64) {
        self.shutdown_with(now, &mut std::hint::spin_loop);
    }

    /// [`Shard::shutdown`], calling `wait` while a worker's ring has no room for a reset
    /// (a shard that runs inside the poll loop passes a poll of it).
    pub fn shutdown_with(&mut self, now: u64, wait: &mut dyn FnMut()) {
        let t = NetInstant::from_millis(now as i64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        for id in 0..self.conns.len() as ConnId {
            let Some(mut c) = self.take_conn(id) else {
                continue;
            };
            // The worker drains its ring as it goes; wait for room rather than lose a RST.
            while self.rings.room(c.worker) < 4 && std::time::Instant::now() < deadline {
                wait();
            }
            if let Some(s) = c.sock.as_mut() {
                s.abort();
            }
            if let Some(s) = c.sock.as_mut() {
                self.stack.egress(s, self.rings, c.worker, t);
            }
            self.stats.reset_at_stop += 1;
            self.by_key.remove(&c.key);
        }
        self.timers.clear();
        self.idle.clear();
        self.stats.client_connections = 0;
        self.stats.upstream_connections = 0;
        let lc = self.stack.counters;
        self.stats.frames_out = lc.frames_out;
        if let Some(m) = self.published {
            if let Ok(mut g) = m.lock() {
                g.clone_from(&self.stats);
            }
        }
    }

    fn run_until(&mut self, stop: &AtomicBool) {
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let now = self.now_ms();
            if self.poll_at(now) {
                idle = 0;
            } else {
                idle += 1;
                if idle > 64 {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}
