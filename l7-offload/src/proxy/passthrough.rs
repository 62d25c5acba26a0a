//! tls-passthrough sessions: the ClientHello is read from a copy of what the client sent
//! (nothing is taken off its socket), its server name and ALPN choose a pool, a backend is
//! picked and connected, and from then on the bytes (the ClientHello first) are relayed both
//! ways untouched, as HAProxy's `mode tcp` with `req.ssl_sni` does. The backend terminates
//! TLS and presents its own certificate.

use super::{flush, relay_both_ways, Body, ConnIo, Exchange, Phase, Session, Stream};
use crate::hello::{read_client_hello, HelloError};
use crate::route;
use crate::shard::{Conn, ConnId, Role, Shard};
use crate::stats::L7Error;
use crate::tcp::Sock;
use smoltcp::socket::tcp::State;

/// TLS alert descriptions (RFC 8446 §6).
const ALERT_INTERNAL_ERROR: u8 = 80;
const ALERT_UNRECOGNIZED_NAME: u8 = 112;

/// How many bytes to copy to find a ClientHello of at most `max` bytes: room for its record
/// headers too, even when a client splits it into fragments as small as 5 bytes.
pub(crate) fn hello_peek(max: usize) -> usize {
    2 * max + 5
}

/// A fatal TLS alert record in the clear, as a server sends before its ServerHello.
fn alert(description: u8) -> [u8; 7] {
    [21, 3, 3, 0, 2, 2, description]
}

/// Ends a passthrough session that failed with `e`: before any byte of a backend reached the
/// client, with a TLS alert (`unrecognized_name` when no route took the name), else with a
/// reset.
pub(super) fn refuse(sess: &mut Session, sock: Option<&mut Sock>, e: L7Error, now: u64) {
    let relayed = sess.ex.as_ref().is_some_and(|ex| ex.answered);
    sess.ex = None;
    sess.to_up.clear();
    sess.to_client.clear();
    if !relayed {
        sess.to_client.extend_from_slice(&alert(match e {
            L7Error::NoRoute => ALERT_UNRECOGNIZED_NAME,
            _ => ALERT_INTERNAL_ERROR,
        }));
    }
    sess.phase = Phase::Closing;
    sess.since = now;
    if let Some(s) = sock {
        let mut cs = ConnIo::of(s, &mut sess.tls);
        if relayed {
            cs.abort();
        } else {
            flush(&mut sess.to_client, &mut cs);
        }
    }
}

impl Shard<'_> {
    /// Reads the ClientHello so far; once it is whole, chooses the pool and backend and
    /// connects.
    pub(super) fn read_hello(&mut self, id: ConnId, c: &mut Conn, now: u64) {
        let worker = c.worker;
        let client_ip = c.key.remote.ip();
        let Role::Client(sess) = &mut c.role else {
            return;
        };
        let Some(sock) = c.sock.as_mut() else { return };
        let setup = std::sync::Arc::clone(&self.setup);
        let Some(svc) = setup.services.get(sess.svc) else {
            sock.abort();
            return;
        };
        let late = now >= sess.since + svc.timeouts.client_header_ms;
        let waiting = Stream::recv_queue(&**sock);
        let max = svc.limits.header_bytes;
        let cap = hello_peek(max).min(self.scratch.len());
        let n = Stream::peek(&mut **sock, &mut self.scratch[..cap.min(waiting)]);
        let choice = match read_client_hello(&mut self.scratch[..n], max) {
            Ok(hello) => route::choose_hello(svc, &hello),
            Err(HelloError::Incomplete) if n < cap => {
                if sock.peer_done() || late {
                    if late && !sock.peer_done() {
                        self.stats.error(L7Error::ClientHeaderTimeout);
                    }
                    sock.abort();
                    sess.phase = Phase::Closing;
                    sess.since = now;
                }
                return;
            }
            // Not TLS, malformed, or larger than allowed (also: more bytes than a hello of
            // `max` could take, and still not whole).
            Err(_) => {
                self.stats.error(L7Error::TlsClientHello);
                sock.abort();
                sess.phase = Phase::Closing;
                sess.since = now;
                return;
            }
        };
        let Some(choice) = choice.filter(|ch| ch.pool < svc.pools.len()) else {
            self.fail(c, L7Error::NoRoute, now);
            return;
        };
        let pool = &svc.pools[choice.pool];
        let Some(pick) = self
            .pools
            .get_mut(sess.svc)
            .and_then(|p| p.get_mut(choice.pool))
            .and_then(|st| st.at(now).pick(pool, None, client_ip, None))
        else {
            self.fail(c, L7Error::NoBackend, now);
            return;
        };
        sess.ex = Some(Exchange {
            pool: choice.pool,
            backend: pick.backend,
            route: choice.route,
            request: Body::UntilClose,
            response: None,
            keep_alive: false,
            http10: false,
            head_request: false,
            upgrade: false,
            // Nothing reaches the backend before it is connected: another may be tried.
            retryable: true,
            retried: false,
            started: now,
            sent: None,
            answered: false,
            connected: false,
            close_client: true,
            reusable: false,
            status: 0,
            cookie: None,
            counted: true,
        });
        sess.retry_head.clear();
        sess.phase = Phase::Passthrough;
        sess.since = now;
        self.stats.tls_passthrough += 1;
        self.count_pick(sess.svc, svc.routes.len(), choice, pick.backend);
        let backend = pool.backends[pick.backend].address;
        // Never a pooled connection: this one carries one client's TLS session.
        match self.connect(backend, (sess.svc, choice.pool, pick.backend), id, worker) {
            Ok(uid) => {
                sess.up = Some(uid);
                self.touch(uid);
            }
            Err(e) => {
                self.finish_backend(sess, true);
                self.fail(c, e, now);
            }
        }
    }

    /// Waits for the backend's connection (another backend once if it fails), then relays
    /// both ways; each side's FIN is passed on, a backend's reset resets the client, and a
    /// connection idle for `client_idle_ms` is reset on both sides.
    pub(super) fn passthrough(&mut self, id: ConnId, c: &mut Conn, now: u64) {
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
        let t = self
            .setup
            .services
            .get(sess.svc)
            .map(|s| s.timeouts)
            .unwrap_or_default();
        let (Some(cs), Some(us), Some(ex)) = (c.sock.as_mut(), u.sock.as_mut(), sess.ex.as_mut())
        else {
            self.put_conn(uid, u);
            return;
        };
        let state = us.state();
        if matches!(state, State::Established | State::CloseWait) {
            ex.connected = true;
        }
        if !ex.connected {
            let refused = matches!(state, State::Closed | State::TimeWait);
            let late = now >= ex.started + t.backend_connect_ms;
            self.put_conn(uid, u);
            if refused || late {
                self.upstream_failed(id, c, now, late && !refused);
            }
            return;
        }
        let cs = &mut ConnIo::of(cs, &mut sess.tls);
        let us: &mut smoltcp::socket::tcp::Socket<'static> = us;
        let (sent, got) = relay_both_ways(cs, us, &mut sess.to_client);
        if got > 0 {
            ex.answered = true;
        }
        if sent + got > 0 {
            sess.since = now;
        }
        if state == State::Closed && !cs.drained() {
            // The backend reset (a graceful end closes it only after the client's FIN).
            cs.abort();
        }
        if now >= sess.since + t.client_idle_ms {
            cs.abort();
            us.abort();
            sess.phase = Phase::Closing;
            sess.since = now;
        }
        self.put_conn(uid, u);
        self.touch(uid);
    }
}
