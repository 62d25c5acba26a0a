//! The HTTP/1.1 proxy session of one client connection: read a request head, choose a pool
//! and a backend, send the head and stream the body upstream, read the response head and
//! stream its body back, then reuse both connections (keep-alive) or close them. Requests
//! on one connection are handled one at a time, so pipelined requests are answered in
//! order. Bodies stream through the sockets' buffers (the receiving window closes while the
//! other side is slow): nothing buffers a whole body.

use crate::http::{
    self, error_response, parse_request, parse_response, BodyKind, ChunkedBody, ClientFraming,
    HeadError,
};
use crate::route;
use crate::setup::L7Setup;
use crate::shard::{Conn, ConnId, Role, Shard};
use crate::stats::L7Error;
use crate::tls::{TlsFault, TlsSession};
use bytes::{Buf, BytesMut};
use smoltcp::socket::tcp::{Socket, State};
use std::net::IpAddr;

mod passthrough;
pub(crate) use passthrough::hello_peek;

/// How long a closing connection may take to flush what is left for its client.
const CLOSING_MS: u64 = 5_000;
/// How long a closed connection waits for the client's side of the close before it is
/// reset.
const FIN_WAIT_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is on its way to a backend, or its response on its way back.
    Exchange,
    /// After a 101 response: bytes relayed both ways untouched.
    Tunnel,
    /// Sending what is left for the client, then closing.
    Closing,
    /// tls-passthrough: waiting for (the rest of) the ClientHello.
    Hello,
    /// tls-passthrough: bytes relayed untouched between the client and its backend.
    Passthrough,
}

/// Where a streamed body stands.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Done,
    Length(u64),
    Chunked(ChunkedBody),
    UntilClose,
}

impl Body {
    fn of(kind: BodyKind) -> Body {
        match kind {
            BodyKind::None | BodyKind::Length(0) => Body::Done,
            BodyKind::Length(n) => Body::Length(n),
            BodyKind::Chunked => Body::Chunked(ChunkedBody::default()),
            BodyKind::UntilClose => Body::UntilClose,
        }
    }

    fn done(&self) -> bool {
        match self {
            Body::Done => true,
            Body::Chunked(c) => c.done(),
            _ => false,
        }
    }
}

/// One request and its response.
pub(crate) struct Exchange {
    pool: usize,
    backend: usize,
    route: Option<usize>,
    request: Body,
    response: Option<Body>,
    keep_alive: bool,
    /// The client spoke HTTP/1.0 (keep-alive must then be said).
    http10: bool,
    head_request: bool,
    upgrade: bool,
    /// The head as sent is in the session's `retry_head`, for one retry: the request has no
    /// body and may be repeated.
    retryable: bool,
    retried: bool,
    started: u64,
    /// When the request was all sent (the response timeout runs from here).
    sent: Option<u64>,
    /// Any response byte has arrived (no retry after that).
    answered: bool,
    /// The upstream connection is established (the connect timeout no longer applies).
    connected: bool,
    close_client: bool,
    reusable: bool,
    status: u16,
    cookie: Option<String>,
    /// Cleared when the backend's in-flight count has been given back.
    counted: bool,
}

pub(crate) struct Session {
    pub svc: usize,
    pub phase: Phase,
    /// When the current phase began (ms).
    pub since: u64,
    /// When the first byte of the head being read arrived.
    head_started: Option<u64>,
    pub served: u32,
    pub up: Option<ConnId>,
    to_up: BytesMut,
    to_client: BytesMut,
    /// The current request's head when it may be retried (its buffer is kept between
    /// requests, so a retryable request allocates nothing for it).
    retry_head: BytesMut,
    ex: Option<Exchange>,
    /// The TLS layer of an `l7 = "tls"` service's client.
    pub tls: Option<Box<TlsSession>>,
}

impl Session {
    pub fn new(svc: usize, now: u64) -> Self {
        Session {
            svc,
            phase: Phase::Head,
            since: now,
            head_started: None,
            served: 0,
            up: None,
            to_up: BytesMut::new(),
            to_client: BytesMut::new(),
            retry_head: BytesMut::new(),
            ex: None,
            tls: None,
        }
    }

    pub fn with_tls(mut self, tls: Option<Box<TlsSession>>) -> Self {
        self.tls = tls;
        self
    }

    /// A tls-passthrough session starts by reading the ClientHello, not a request.
    pub fn passthrough(mut self, yes: bool) -> Self {
        if yes {
            self.phase = Phase::Hello;
        }
        self
    }

    /// When the session's own timer fires (the sockets have their own).
    pub fn deadline(&self, setup: &L7Setup) -> Option<u64> {
        let t = setup.services.get(self.svc)?.timeouts;
        match self.phase {
            Phase::Head => Some(match self.head_started {
                Some(h) => h + t.client_header_ms,
                None if self.served == 0 => self.since + t.client_header_ms,
                None => self.since + t.client_idle_ms,
            }),
            Phase::Exchange => {
                let ex = self.ex.as_ref()?;
                if !ex.connected {
                    Some(ex.started + t.backend_connect_ms)
                } else if ex.answered {
                    None
                } else {
                    ex.sent.map(|s| s + t.backend_response_ms)
                }
            }
            Phase::Tunnel => None,
            Phase::Hello => Some(self.since + t.client_header_ms),
            Phase::Passthrough => {
                let ex = self.ex.as_ref()?;
                Some(if ex.connected {
                    self.since + t.client_idle_ms
                } else {
                    ex.started + t.backend_connect_ms
                })
            }
            // Only while a response is still being flushed; after the close, the socket's
            // own timers finish the connection. (A deadline that has passed and is not acted
            // on would wake the connection every millisecond.)
            Phase::Closing if !self.to_client.is_empty() => Some(self.since + CLOSING_MS),
            Phase::Closing => Some(self.since + FIN_WAIT_MS),
        }
    }
}

/// A byte stream the proxy reads and writes: an upstream's TCP socket, or a client's
/// ([`ConnIo`]: its socket, or the TLS layer over it). HTTP never knows which.
pub(crate) trait Stream {
    /// Bytes waiting to be read.
    fn recv_queue(&self) -> usize;
    /// Copies waiting bytes into `buf` without taking them.
    fn peek(&mut self, buf: &mut [u8]) -> usize;
    /// Gives `f` the waiting bytes (maybe not all); `f` says how many it took.
    fn take<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Option<R>;
    /// Writes what of `data` fits; returns how much.
    fn send(&mut self, data: &[u8]) -> usize;
    /// About how much a `send` would take now.
    fn room(&self) -> usize;
    fn may_send(&self) -> bool;
    /// Whether the peer will send nothing more (it closed, or the connection is gone), as
    /// opposed to not having finished the handshake yet.
    fn peer_done(&self) -> bool;
    fn close(&mut self);
    fn abort(&mut self);
    /// Whether the peer is done and everything it sent has been read.
    fn drained(&self) -> bool {
        self.peer_done() && self.recv_queue() == 0
    }
}

impl Stream for Socket<'static> {
    fn recv_queue(&self) -> usize {
        Socket::recv_queue(self)
    }
    fn peek(&mut self, buf: &mut [u8]) -> usize {
        self.peek_slice(buf).unwrap_or(0)
    }
    fn take<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Option<R> {
        self.recv(f).ok()
    }
    fn send(&mut self, data: &[u8]) -> usize {
        self.send_slice(data).unwrap_or(0)
    }
    fn room(&self) -> usize {
        self.send_capacity().saturating_sub(self.send_queue())
    }
    fn may_send(&self) -> bool {
        Socket::may_send(self)
    }
    fn peer_done(&self) -> bool {
        !self.may_recv()
            && !matches!(
                self.state(),
                State::Listen | State::SynReceived | State::SynSent
            )
    }
    fn close(&mut self) {
        Socket::close(self)
    }
    fn abort(&mut self) {
        Socket::abort(self)
    }
}

/// A client connection as the proxy sees it: plain TCP, or TLS over it.
pub(crate) struct ConnIo<'a> {
    sock: &'a mut Socket<'static>,
    tls: Option<&'a mut TlsSession>,
}

impl<'a> ConnIo<'a> {
    fn of(sock: &'a mut Socket<'static>, tls: &'a mut Option<Box<TlsSession>>) -> Self {
        ConnIo {
            sock,
            tls: tls.as_deref_mut(),
        }
    }
}

impl Stream for ConnIo<'_> {
    fn recv_queue(&self) -> usize {
        match &self.tls {
            Some(t) => t.recv_queue(),
            None => Socket::recv_queue(self.sock),
        }
    }
    fn peek(&mut self, buf: &mut [u8]) -> usize {
        match &self.tls {
            Some(t) => t.peek(buf),
            None => Stream::peek(&mut *self.sock, buf),
        }
    }
    fn take<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Option<R> {
        match &mut self.tls {
            Some(t) => Some(t.recv(f)),
            None => self.sock.take(f),
        }
    }
    fn send(&mut self, data: &[u8]) -> usize {
        match &mut self.tls {
            Some(t) => t.send(data),
            None => Stream::send(self.sock, data),
        }
    }
    fn room(&self) -> usize {
        match &self.tls {
            Some(t) if !t.may_send() => 0,
            _ => self.sock.room(),
        }
    }
    fn may_send(&self) -> bool {
        Socket::may_send(self.sock) && self.tls.as_ref().is_none_or(|t| t.may_send())
    }
    fn peer_done(&self) -> bool {
        self.sock.peer_done() || self.tls.as_ref().is_some_and(|t| t.peer_done())
    }
    fn close(&mut self) {
        match &mut self.tls {
            Some(t) => t.close(self.sock),
            None => Socket::close(self.sock),
        }
    }
    fn abort(&mut self) {
        Socket::abort(self.sock)
    }
}

/// Where a client's TLS layer is, as far as HTTP is concerned.
enum TlsState {
    /// HTTP may run: no TLS, or the handshake is done.
    Ready,
    Handshaking,
    /// The session failed or is closing before HTTP began.
    Failed,
}

/// Writes as much of `pending` as `s` takes.
fn flush(pending: &mut BytesMut, s: &mut impl Stream) {
    if pending.is_empty() || !s.may_send() {
        return;
    }
    let n = s.send(pending);
    pending.advance(n);
}

/// Why relaying a body stopped short.
enum RelayFault {
    Chunked,
    TooLarge,
}

/// Moves body bytes from `src` to `dst` as far as `dst` has room and `body` says they
/// belong to the message; `limit` caps the body's size.
fn relay(
    src: &mut impl Stream,
    dst: &mut impl Stream,
    body: &mut Body,
    limit: u64,
) -> Result<usize, RelayFault> {
    let mut moved = 0;
    for _ in 0..64 {
        let room = dst.room();
        if room == 0 || !dst.may_send() || body.done() || src.recv_queue() == 0 {
            break;
        }
        let step: Result<usize, RelayFault> = match body {
            Body::Done => Ok(0),
            Body::Length(rem) => {
                let rem_now = *rem;
                let r = src.take(|buf| {
                    let n = buf.len().min(room).min(rem_now as usize);
                    let sent = dst.send(&buf[..n]);
                    (sent, sent)
                });
                let n = r.unwrap_or(0);
                *rem -= n as u64;
                if *rem == 0 {
                    *body = Body::Done;
                }
                Ok(n)
            }
            Body::Chunked(c) => {
                let r = src.take(|buf| {
                    let take = buf.len().min(room);
                    // The checker follows only what `dst` takes: a TLS layer may take less
                    // than its socket's room.
                    let mut ahead = c.clone();
                    match ahead.advance(&buf[..take]) {
                        Ok(n) => {
                            let sent = dst.send(&buf[..n]);
                            if sent == n {
                                *c = ahead;
                            } else if c.advance(&buf[..sent]).is_err() {
                                return (0, Err(RelayFault::Chunked));
                            }
                            (sent, Ok(sent))
                        }
                        Err(_) => (0, Err(RelayFault::Chunked)),
                    }
                });
                match r {
                    Some(Ok(_)) if c.data_bytes > limit => Err(RelayFault::TooLarge),
                    Some(x) => x,
                    None => Ok(0),
                }
            }
            Body::UntilClose => {
                let r = src.take(|buf| {
                    let n = buf.len().min(room);
                    let sent = dst.send(&buf[..n]);
                    (sent, sent)
                });
                Ok(r.unwrap_or(0))
            }
        };
        match step? {
            0 => break,
            n => moved += n,
        }
    }
    Ok(moved)
}

/// Relays bytes untouched both ways between a client and its upstream (an upgraded
/// connection's tunnel, a passthrough session), what is `pending` for the client first, and
/// passes each side's close on once everything it sent has gone across. Returns the bytes
/// moved (up, down).
fn relay_both_ways(
    cs: &mut impl Stream,
    us: &mut impl Stream,
    pending: &mut BytesMut,
) -> (usize, usize) {
    flush(pending, cs);
    let sent = relay(cs, us, &mut Body::UntilClose, u64::MAX).unwrap_or(0);
    let got = if pending.is_empty() {
        relay(us, cs, &mut Body::UntilClose, u64::MAX).unwrap_or(0)
    } else {
        0
    };
    if cs.drained() && us.may_send() {
        us.close();
    }
    if us.drained() && cs.may_send() && pending.is_empty() {
        cs.close();
    }
    (sent, got)
}

/// Takes `n` bytes off `s` (in parts where a ring wraps).
fn discard(s: &mut impl Stream, n: usize) {
    let mut left = n;
    while left > 0 {
        match s.take(|b| {
            let k = left.min(b.len());
            (k, k)
        }) {
            Some(0) | None => break,
            Some(k) => left -= k,
        }
    }
}

impl Shard<'_> {
    /// Drives client connection `id` (and its upstream) as far as it can go now.
    pub(crate) fn drive_client(&mut self, id: ConnId, now: u64) {
        let Some(mut c) = self.take_conn(id) else {
            return;
        };
        match self.pump_tls(&mut c, now) {
            TlsState::Ready => {
                for _ in 0..8 {
                    if !self.step(id, &mut c, now) {
                        break;
                    }
                }
                // What the steps wrote, encrypted and into the socket.
                self.pump_tls(&mut c, now);
            }
            // The closing phase still runs (its FIN wait is bounded).
            TlsState::Failed => {
                self.step(id, &mut c, now);
            }
            TlsState::Handshaking => self.handshake_late(&mut c, now),
        }
        self.put_conn(id, c);
    }

    /// Moves a TLS client's bytes between its socket and its TLS layer.
    fn pump_tls(&mut self, c: &mut Conn, now: u64) -> TlsState {
        let (Role::Client(sess), Some(sock)) = (&mut c.role, c.sock.as_mut()) else {
            return TlsState::Ready;
        };
        let Some(tls) = sess.tls.as_mut() else {
            return TlsState::Ready;
        };
        match tls.pump(sock) {
            Ok(()) => {
                if let Some(h) = tls.handshake_done() {
                    self.stats.tls_handshakes[h.version as usize] += 1;
                    self.stats.tls_resumed += u64::from(h.resumed);
                }
                if sess.phase == Phase::Closing && tls.is_handshaking() {
                    TlsState::Failed
                } else if tls.is_handshaking() {
                    TlsState::Handshaking
                } else {
                    TlsState::Ready
                }
            }
            Err(f) => {
                self.stats.error(match f {
                    TlsFault::Handshake(_) => L7Error::TlsHandshake,
                    TlsFault::Record(_) => L7Error::TlsRecord,
                });
                if sess.phase != Phase::Closing {
                    sess.phase = Phase::Closing;
                    sess.since = now;
                }
                TlsState::Failed
            }
        }
    }

    /// A handshake that has not finished within `client_header_ms` of the accept (a slow or
    /// stalled ClientHello holds a connection as slowloris does) is reset and counted.
    fn handshake_late(&mut self, c: &mut Conn, now: u64) {
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(limit) = self
            .setup
            .services
            .get(sess.svc)
            .map(|s| s.timeouts.client_header_ms)
        else {
            return;
        };
        if now >= sess.since + limit {
            self.stats.error(L7Error::ClientHeaderTimeout);
            if let Some(s) = c.sock.as_mut() {
                s.abort();
            }
            sess.phase = Phase::Closing;
            sess.since = now;
        }
    }

    /// One step of the session; true if it changed phase (worth another step).
    fn step(&mut self, id: ConnId, c: &mut Conn, now: u64) -> bool {
        let (gone, before) = match (&c.role, c.sock.as_ref()) {
            (Role::Client(sess), Some(sock)) => (
                matches!(sock.state(), State::Closed | State::TimeWait),
                sess.phase,
            ),
            _ => return false,
        };
        if gone {
            if let Role::Client(sess) = &mut c.role {
                if let Some(uid) = sess.up.take() {
                    self.finish_backend(sess, false);
                    self.release_upstream(uid, false);
                }
            }
            return false;
        }
        match before {
            Phase::Head => self.read_head(id, c, now),
            Phase::Exchange => self.exchange(id, c, now),
            Phase::Tunnel => self.tunnel(c),
            Phase::Hello => self.read_hello(id, c, now),
            Phase::Passthrough => self.passthrough(id, c, now),
            Phase::Closing => {
                if let (Role::Client(sess), Some(sock)) = (&mut c.role, c.sock.as_mut()) {
                    let mut cs = ConnIo::of(sock, &mut sess.tls);
                    flush(&mut sess.to_client, &mut cs);
                    if sess.to_client.is_empty() || now >= sess.since + CLOSING_MS {
                        sess.to_client.clear();
                        cs.close();
                    }
                    if now >= sess.since + FIN_WAIT_MS {
                        // The client never finished closing (as Linux's tcp_fin_timeout).
                        cs.abort();
                    }
                }
            }
        }
        matches!(&c.role, Role::Client(s) if s.phase != before)
    }

    /// Answers the client with the proxy's own response for `e` and closes after it.
    fn fail(&mut self, c: &mut Conn, e: L7Error, now: u64) {
        self.stats.error(e);
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        if matches!(e, L7Error::BackendFailed | L7Error::BackendTimeout) {
            if let Some(ex) = sess.ex.as_ref() {
                let (pool, backend) = (ex.pool, ex.backend);
                self.passive(sess.svc, pool, backend, true);
            }
        }
        if let Some(uid) = sess.up.take() {
            self.finish_backend(sess, true);
            self.release_upstream(uid, false);
        }
        if matches!(sess.phase, Phase::Hello | Phase::Passthrough) {
            passthrough::refuse(sess, c.sock.as_mut(), e, now);
            return;
        }
        let started = sess.ex.as_ref().is_some_and(|ex| ex.response.is_some());
        // A request that reached a backend was counted when its head was read.
        let counted = sess.ex.is_some();
        let n_routes = self
            .setup
            .services
            .get(sess.svc)
            .map_or(0, |s| s.routes.len());
        let route_slot = match (&sess.ex, e) {
            (Some(ex), _) => Some(ex.route.unwrap_or(n_routes)),
            (None, L7Error::NoRoute) => Some(n_routes),
            _ => None,
        };
        sess.ex = None;
        sess.to_up.clear();
        if let (Some(code), false) = (e.status(), started) {
            sess.to_client.clear();
            sess.to_client.extend_from_slice(error_response(code));
            self.stats.status(sess.svc, code);
            if let Some(slot) = route_slot {
                self.stats.route_status(sess.svc, slot, code);
            }
            if !counted {
                self.stats.requests += 1;
            }
        }
        sess.phase = Phase::Closing;
        sess.since = now;
        if let Some(s) = c.sock.as_mut() {
            let mut cs = ConnIo::of(s, &mut sess.tls);
            flush(&mut sess.to_client, &mut cs);
            if started || e.status().is_none() {
                cs.abort();
            }
        }
    }

    /// Gives the backend its in-flight slot back, counting a failure if `failed`.
    fn finish_backend(&mut self, sess: &mut Session, failed: bool) {
        let Some(ex) = sess.ex.as_mut() else { return };
        if !ex.counted {
            return;
        }
        ex.counted = false;
        if let Some(p) = self
            .pools
            .get_mut(sess.svc)
            .and_then(|p| p.get_mut(ex.pool))
        {
            if let Some(n) = p.in_flight.get_mut(ex.backend) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(b) = self.backend_stats(sess.svc, ex.pool, ex.backend) {
            b.in_flight = b.in_flight.saturating_sub(1);
            if failed {
                b.failures += 1;
            }
        }
    }

    /// Passive health: how a request to a backend ended.
    fn passive(&mut self, svc: usize, pool: usize, backend: usize, failed: bool) {
        let setup = std::sync::Arc::clone(&self.setup);
        let Some(p) = setup.services.get(svc).and_then(|s| s.pools.get(pool)) else {
            return;
        };
        let ejected = self
            .pools
            .get_mut(svc)
            .and_then(|x| x.get_mut(pool))
            .is_some_and(|st| st.record(p, backend, failed));
        if ejected {
            self.stats.ejections += 1;
            if let Some(b) = self.backend_stats(svc, pool, backend) {
                b.ejections += 1;
            }
        }
    }

    /// Counts a request (or a passthrough connection) that `choice` sent to `backend`: on its
    /// route (`routes`: the service's count, the default pool's slot), and as in flight on
    /// the backend.
    fn count_pick(&mut self, svc: usize, routes: usize, choice: route::Choice, backend: usize) {
        let slot = choice.route.unwrap_or(routes);
        if let Some(n) = self.stats.routes.get_mut(svc).and_then(|r| r.get_mut(slot)) {
            *n += 1;
        }
        if let Some(b) = self.backend_stats(svc, choice.pool, backend) {
            b.requests += 1;
            b.in_flight += 1;
        }
        if let Some(n) = self
            .pools
            .get_mut(svc)
            .and_then(|p| p.get_mut(choice.pool))
            .and_then(|p| p.in_flight.get_mut(backend))
        {
            *n += 1;
        }
    }

    fn backend_stats(
        &mut self,
        svc: usize,
        pool: usize,
        b: usize,
    ) -> Option<&mut crate::stats::BackendRequests> {
        self.stats.backends.get_mut(svc)?.get_mut(pool)?.get_mut(b)
    }

    fn read_head(&mut self, id: ConnId, c: &mut Conn, now: u64) {
        let worker = c.worker;
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(sock) = c.sock.as_mut() else { return };
        let proto = if sess.tls.is_some() { "https" } else { "http" };
        let sock = &mut ConnIo::of(sock, &mut sess.tls);
        let setup = std::sync::Arc::clone(&self.setup);
        let Some(svc) = setup.services.get(sess.svc) else {
            sock.abort();
            return;
        };
        let client_ip: IpAddr = c.key.remote.ip();
        let waiting = sock.recv_queue();
        if waiting == 0 {
            if sock.peer_done() {
                // The client is done with this connection.
                sock.close();
                sess.phase = Phase::Closing;
                return;
            }
            let t = svc.timeouts;
            let limit = if sess.served == 0 {
                t.client_header_ms
            } else {
                t.client_idle_ms
            };
            if now >= sess.since + limit {
                if sess.served == 0 {
                    self.stats.error(L7Error::ClientHeaderTimeout);
                }
                sock.close();
                sess.phase = Phase::Closing;
                sess.since = now;
            }
            return;
        }
        // The header timeout runs from the head's first byte (from the accept for the first
        // request: a connection that never sends is as slow as one that sends slowly).
        let head_started =
            *sess
                .head_started
                .get_or_insert(if sess.served == 0 { sess.since } else { now });
        let max = svc.limits.header_bytes;
        let n = sock.peek(&mut self.scratch[..(max + 1).min(waiting)]);
        let mut fields = vec![httparse::EMPTY_HEADER; svc.limits.header_count];
        let head = &self.scratch[..n];
        let parsed = parse_request(head, &mut fields, max);
        let req = match parsed {
            Ok(r) => r,
            Err(HeadError::Incomplete) => {
                if sock.peer_done() {
                    sock.abort();
                    sess.phase = Phase::Closing;
                } else if now >= head_started + svc.timeouts.client_header_ms {
                    self.stats.error(L7Error::ClientHeaderTimeout);
                    sock.abort();
                    sess.phase = Phase::Closing;
                }
                return;
            }
            Err(e) => {
                let err = if e.status() == 431 {
                    L7Error::HeadTooLarge
                } else {
                    L7Error::BadRequest
                };
                self.fail(c, err, now);
                return;
            }
        };
        let too_large = matches!(req.body, BodyKind::Length(n) if n > svc.limits.body_bytes);
        let choice = route::choose(svc, &req);
        let head_len = req.len;
        let Some(choice) = choice.filter(|ch| ch.pool < svc.pools.len()) else {
            self.fail(c, L7Error::NoRoute, now);
            return;
        };
        if too_large {
            self.fail(c, L7Error::BodyTooLarge, now);
            return;
        }
        let pool = &svc.pools[choice.pool];
        let Some(pick) = self
            .pools
            .get_mut(sess.svc)
            .and_then(|p| p.get_mut(choice.pool))
            .and_then(|st| st.at(now).pick(pool, Some(&req), client_ip, None))
        else {
            self.fail(c, L7Error::NoBackend, now);
            return;
        };
        let rules: &[crate::setup::HeaderRule] = choice
            .route
            .and_then(|r| svc.routes.get(r))
            .map_or(&[], |r| &r.request_headers);
        sess.to_up.clear();
        http::write_request(&mut sess.to_up, &req, client_ip, proto, rules);
        let retryable = req.body == BodyKind::None && req.idempotent() && !req.upgrade;
        if retryable {
            sess.retry_head.clear();
            sess.retry_head.extend_from_slice(&sess.to_up);
        }
        let cookie = if pick.set_cookie {
            self.pools[sess.svc][choice.pool].cookie(pool, pick.backend)
        } else {
            None
        };
        let ex = Exchange {
            pool: choice.pool,
            backend: pick.backend,
            route: choice.route,
            request: Body::of(req.body),
            response: None,
            keep_alive: req.keep_alive,
            http10: req.minor == 0,
            head_request: req.method == "HEAD",
            upgrade: req.upgrade,
            retryable,
            retried: false,
            started: now,
            sent: None,
            answered: false,
            connected: false,
            close_client: !req.keep_alive,
            reusable: false,
            status: 0,
            cookie,
            counted: true,
        };
        // The head is taken off the socket; the body (and any pipelined request) stays.
        discard(sock, head_len);
        sess.head_started = None;
        self.stats.requests += 1;
        self.count_pick(sess.svc, svc.routes.len(), choice, pick.backend);
        let backend = pool.backends[pick.backend].address;
        sess.ex = Some(ex);
        sess.phase = Phase::Exchange;
        sess.since = now;
        let up = match self.pooled(backend, pool.tls.as_ref(), id) {
            Some(uid) => Ok(uid),
            None => self.connect(backend, (sess.svc, choice.pool, pick.backend), id, worker),
        };
        match up {
            Ok(uid) => {
                sess.up = Some(uid);
                self.touch(uid);
            }
            Err(e) => {
                let Role::Client(sess) = &mut c.role else {
                    return;
                };
                self.finish_backend(sess, true);
                self.fail(c, e, now);
            }
        }
    }

    /// A failed upstream before any response byte: once more on another backend if the
    /// request allows it, else 502.
    fn upstream_failed(&mut self, id: ConnId, c: &mut Conn, now: u64, timeout: bool) {
        let worker = c.worker;
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let client_ip = c.key.remote.ip();
        if let Some(uid) = sess.up.take() {
            self.release_upstream(uid, false);
        }
        self.finish_backend(sess, true);
        if let Some(ex) = sess.ex.as_ref() {
            let (pool, backend) = (ex.pool, ex.backend);
            self.passive(sess.svc, pool, backend, true);
        }
        let setup = std::sync::Arc::clone(&self.setup);
        let retry = sess
            .ex
            .as_ref()
            .filter(|ex| ex.retryable && !ex.retried && !ex.answered)
            .map(|ex| (ex.pool, ex.backend));
        if let (Some((pool_i, failed)), Some(svc)) = (retry, setup.services.get(sess.svc)) {
            let pool = &svc.pools[pool_i];
            // The retry goes to the next backend by the pool's algorithm, avoiding the
            // failed one (the request's head is no longer at hand: no cookie or hash key).
            let pick =
                self.pools[sess.svc][pool_i]
                    .at(now)
                    .pick(pool, None, client_ip, Some(failed));
            if let Some(p) = pick.filter(|p| p.backend != failed) {
                let backend = pool.backends[p.backend].address;
                // A passthrough connection carries one client's TLS: never a pooled one.
                let reuse = sess.phase != Phase::Passthrough;
                let up = match reuse
                    .then(|| self.pooled(backend, pool.tls.as_ref(), id))
                    .flatten()
                {
                    Some(u) => Ok(u),
                    None => self.connect(backend, (sess.svc, pool_i, p.backend), id, worker),
                };
                if let Ok(uid) = up {
                    self.stats.retries += 1;
                    // A sticky pool's cookie names the backend that answers, not the one
                    // that failed.
                    let cookie = self.pools[sess.svc][pool_i].cookie(pool, p.backend);
                    if let Some(ex) = sess.ex.as_mut() {
                        ex.backend = p.backend;
                        ex.cookie = cookie;
                        ex.retried = true;
                        ex.started = now;
                        ex.sent = None;
                        ex.connected = false;
                        ex.counted = true;
                    }
                    self.pools[sess.svc][pool_i].in_flight[p.backend] += 1;
                    if let Some(b) = self.backend_stats(sess.svc, pool_i, p.backend) {
                        b.requests += 1;
                        b.in_flight += 1;
                    }
                    sess.to_up.clear();
                    sess.to_up.extend_from_slice(&sess.retry_head);
                    sess.up = Some(uid);
                    self.touch(uid);
                    return;
                }
            }
        }
        let e = if timeout {
            L7Error::BackendTimeout
        } else {
            L7Error::BackendFailed
        };
        self.fail(c, e, now);
    }

    fn exchange(&mut self, id: ConnId, c: &mut Conn, now: u64) {
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(uid) = sess.up else {
            self.upstream_failed(id, c, now, false);
            return;
        };
        let Some(mut u) = self.take_conn(uid) else {
            self.upstream_failed(id, c, now, false);
            return;
        };
        self.pump_upstream(&mut u);
        self.exchange_with(id, c, &mut u, now);
        // What the exchange wrote, encrypted and into the socket.
        self.pump_upstream(&mut u);
        self.put_conn(uid, u);
        self.let_go(id, c, uid);
    }

    /// An upstream that client `id` gave up while it was taken out of the table (a 502 or
    /// 504, or a retry elsewhere) could not be closed then: it is closed now.
    fn let_go(&mut self, id: ConnId, c: &Conn, uid: ConnId) {
        if matches!(&c.role, Role::Client(s) if s.up == Some(uid)) {
            return;
        }
        let ours = matches!(
            self.conns.get(uid as usize).and_then(|x| x.as_ref()),
            Some(Conn { role: Role::Upstream(u), .. }) if u.client == Some(id)
        );
        if ours {
            self.release_upstream(uid, false);
        }
    }

    /// Moves a re-encrypting upstream's bytes between its socket and its TLS layer; a failed
    /// handshake (a certificate that does not verify, say) or a bad record is counted, and
    /// the upstream then reads as closed.
    fn pump_upstream(&mut self, u: &mut Conn) {
        let (Role::Upstream(up), Some(sock)) = (&mut u.role, u.sock.as_mut()) else {
            return;
        };
        let Some(tls) = up.tls.as_mut() else { return };
        match tls.pump(sock) {
            Ok(()) => {
                if let Some(h) = tls.handshake_done() {
                    self.stats.upstream_tls_handshakes += 1;
                    self.stats.upstream_tls_resumed += u64::from(h.resumed);
                }
            }
            Err(_) => self.stats.error(L7Error::UpstreamTls),
        }
    }

    fn exchange_with(&mut self, id: ConnId, c: &mut Conn, u: &mut Conn, now: u64) {
        let setup = std::sync::Arc::clone(&self.setup);
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(svc) = setup.services.get(sess.svc) else {
            return;
        };
        let (Some(cs), Some(us_sock), Role::Upstream(up)) =
            (c.sock.as_mut(), u.sock.as_mut(), &mut u.role)
        else {
            return;
        };
        let state = us_sock.state();
        // Re-encrypting: connected once the TLS handshake is done too.
        let handshook = up.tls.as_ref().is_none_or(|t| !t.is_handshaking());
        let cs = &mut ConnIo::of(cs, &mut sess.tls);
        let us = &mut ConnIo::of(us_sock, &mut up.tls);
        let Some(ex) = sess.ex.as_mut() else {
            sess.phase = Phase::Head;
            return;
        };
        let t = svc.timeouts;
        if !ex.answered && us.recv_queue() > 0 {
            ex.answered = true;
        }
        if matches!(state, State::Established | State::CloseWait) && handshook {
            ex.connected = true;
        }
        // The backend went away (refused, reset, closed, failed TLS) before answering, or is
        // late.
        let refused = matches!(state, State::Closed | State::TimeWait)
            || (us.drained() && ex.response.is_none());
        let connect_late = !ex.connected && now >= ex.started + t.backend_connect_ms;
        let response_late =
            !ex.answered && ex.sent.is_some_and(|s| now >= s + t.backend_response_ms);
        if !ex.answered && (refused || connect_late) {
            self.upstream_failed(id, c, now, false);
            return;
        }
        if response_late {
            self.fail(c, L7Error::BackendTimeout, now);
            return;
        }
        if ex.response.is_some()
            && refused
            && !ex
                .response
                .as_ref()
                .is_some_and(|b| matches!(b, Body::UntilClose))
            && us.recv_queue() == 0
        {
            // Closed in the middle of a delimited response: the client cannot be told
            // cleanly any more.
            self.fail(c, L7Error::BackendFailed, now);
            return;
        }
        if state == State::Established || state == State::CloseWait {
            flush(&mut sess.to_up, us);
        }
        if sess.to_up.is_empty() && !ex.request.done() {
            match relay(cs, us, &mut ex.request, svc.limits.body_bytes) {
                Ok(_) => {}
                Err(RelayFault::Chunked) => {
                    self.fail(c, L7Error::BadRequest, now);
                    return;
                }
                Err(RelayFault::TooLarge) => {
                    self.fail(c, L7Error::BodyTooLarge, now);
                    return;
                }
            }
        }
        if sess.to_up.is_empty() && ex.request.done() && ex.sent.is_none() {
            ex.sent = Some(now);
        }
        // The response head.
        while ex.response.is_none() && us.recv_queue() > 0 {
            let waiting = us.recv_queue();
            let max = svc
                .limits
                .header_bytes
                .max(16384)
                .min(self.scratch.len() - 1);
            let n = us.peek(&mut self.scratch[..(max + 1).min(waiting)]);
            let mut fields = vec![httparse::EMPTY_HEADER; 128];
            let resp = match parse_response(&self.scratch[..n], &mut fields, max, ex.head_request) {
                Ok(r) => r,
                Err(HeadError::Incomplete) => {
                    if us.drained() {
                        self.fail(c, L7Error::BackendFailed, now);
                    }
                    return;
                }
                Err(_) => {
                    self.fail(c, L7Error::BackendFailed, now);
                    return;
                }
            };
            let rules: &[crate::setup::HeaderRule] = ex
                .route
                .and_then(|r| svc.routes.get(r))
                .map_or(&[], |r| &r.response_headers);
            let len = resp.len;
            if (100..200).contains(&resp.code) && resp.code != 101 {
                // An interim response passes as it is: the route's rules are for the final one.
                http::write_response(
                    &mut sess.to_client,
                    &resp,
                    &[],
                    ClientFraming {
                        close: false,
                        keep_alive_10: false,
                    },
                    None,
                );
                discard(us, len);
                continue;
            }
            if resp.code == 101 {
                if !ex.upgrade {
                    self.fail(c, L7Error::BackendFailed, now);
                    return;
                }
                http::write_response(
                    &mut sess.to_client,
                    &resp,
                    rules,
                    ClientFraming {
                        close: false,
                        keep_alive_10: false,
                    },
                    None,
                );
                ex.status = 101;
                discard(us, len);
                ex.response = Some(Body::Done);
                sess.phase = Phase::Tunnel;
                self.stats.status(sess.svc, 101);
                flush(&mut sess.to_client, cs);
                return;
            }
            ex.close_client = !ex.keep_alive || resp.body == BodyKind::UntilClose || cs.peer_done();
            ex.reusable = resp.reusable;
            ex.status = resp.code;
            http::write_response(
                &mut sess.to_client,
                &resp,
                rules,
                ClientFraming {
                    close: ex.close_client,
                    keep_alive_10: ex.http10 && ex.keep_alive && !ex.close_client,
                },
                ex.cookie.as_deref(),
            );
            ex.response = Some(Body::of(resp.body));
            discard(us, len);
        }
        flush(&mut sess.to_client, cs);
        let Some(resp_body) = ex.response.as_mut() else {
            return;
        };
        if sess.to_client.is_empty() {
            let _ = relay(us, cs, resp_body, u64::MAX);
            if matches!(resp_body, Body::UntilClose) && us.drained() {
                *resp_body = Body::Done;
            }
        }
        let complete = resp_body.done() && ex.request.done() && sess.to_client.is_empty();
        if !complete {
            return;
        }
        // The exchange is over.
        let status = ex.status;
        let secs = (now.saturating_sub(ex.started)) as f64 / 1000.0;
        // A backend drained, disabled or down since the request began gets no more requests
        // on this connection: it closes after its current one.
        let still_wanted = svc
            .pools
            .get(ex.pool)
            .and_then(|p| p.backends.get(ex.backend))
            .is_some_and(|b| b.takes_requests());
        let reuse = ex.reusable
            && still_wanted
            && sess.to_up.is_empty()
            && !us.peer_done()
            && us.recv_queue() == 0;
        let close_client = ex.close_client;
        let (pool, backend) = (ex.pool, ex.backend);
        self.stats.status(sess.svc, status);
        self.stats.duration(sess.svc, secs);
        let slot = ex.route.unwrap_or(svc.routes.len());
        self.stats.route_status(sess.svc, slot, status);
        if let Some(b) = self.backend_stats(sess.svc, pool, backend) {
            if let Some(s) = crate::stats::status_class(status).and_then(|i| b.status.get_mut(i)) {
                *s += 1;
            }
        }
        self.finish_backend(sess, status >= 500);
        let eject_5xx = svc.pools.get(pool).is_some_and(|p| p.eject_on_5xx);
        self.passive(sess.svc, pool, backend, eject_5xx && status >= 500);
        sess.ex = None;
        sess.served += 1;
        sess.since = now;
        if let Some(uid) = sess.up.take() {
            up.client = None;
            // Not reused: closed gracefully, the response being complete.
            if !(reuse && crate::shard::park(&mut self.idle, setup.tcp.max_idle, up, uid, now)) {
                ConnIo::of(us_sock, &mut up.tls).close();
            }
            self.touch(uid);
        }
        if close_client {
            sess.phase = Phase::Closing;
            if let Some(s) = c.sock.as_mut() {
                ConnIo::of(s, &mut sess.tls).close();
            }
        } else {
            sess.phase = Phase::Head;
        }
    }

    fn tunnel(&mut self, c: &mut Conn) {
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(uid) = sess.up else { return };
        let Some(mut u) = self.take_conn(uid) else {
            if let Some(s) = c.sock.as_mut() {
                s.close();
            }
            return;
        };
        self.pump_upstream(&mut u);
        if let (Some(cs), Some(us), Role::Upstream(up)) =
            (c.sock.as_mut(), u.sock.as_mut(), &mut u.role)
        {
            let cs = &mut ConnIo::of(cs, &mut sess.tls);
            let us = &mut ConnIo::of(us, &mut up.tls);
            relay_both_ways(cs, us, &mut sess.to_client);
        }
        self.pump_upstream(&mut u);
        self.put_conn(uid, u);
        self.touch(uid);
    }
}
