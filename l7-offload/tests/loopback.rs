//! A shard between a client and backends that are themselves smoltcp stacks, in one
//! process: every frame the client sends goes through the offload rings to the shard, and
//! every frame the shard returns is delivered by its destination address. What the e2e tests
//! check with real clients and servers, checked here frame by frame, deterministically.

use dataplane::offload::{OffloadPlan, OffloadRings};
use l7_offload::setup::HeaderRule;
use l7_offload::setup::*;
use l7_offload::{Shard, SharedSetup};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

#[derive(Default)]
struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}
struct R(Vec<u8>);
struct T<'a>(&'a mut Vec<Vec<u8>>);
impl RxToken for R {
    fn consume<X, F: FnOnce(&[u8]) -> X>(self, f: F) -> X {
        f(&self.0)
    }
}
impl TxToken for T<'_> {
    fn consume<X, F: FnOnce(&mut [u8]) -> X>(self, len: usize, f: F) -> X {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}
impl Device for Wire {
    type RxToken<'a> = R;
    type TxToken<'a> = T<'a>;
    fn receive(&mut self, _: Instant) -> Option<(R, T<'_>)> {
        let p = self.rx.pop_front()?;
        Some((R(p), T(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<T<'_>> {
        Some(T(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

/// A host: an IP-medium smoltcp stack with some sockets.
struct Host {
    addr: IpAddr,
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
}

impl Host {
    fn new(addr: IpAddr) -> Host {
        let mut wire = Wire::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut wire, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::from(addr), 24));
        });
        Host {
            addr,
            iface,
            wire,
            sockets: SocketSet::new(vec![]),
        }
    }
    fn socket(&mut self) -> SocketHandle {
        self.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        ))
    }
    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }
}

/// A keep-alive HTTP/1.1 server on a backend host: answers every request with its name and
/// the path; `/big` answers 200,000 bytes, chunked.
struct Server {
    name: String,
    port: u16,
    conns: Vec<(SocketHandle, Vec<u8>, Vec<u8>)>,
    /// Connections accepted so far.
    accepted: usize,
    requests: Vec<String>,
    /// Reads requests but never answers (a hung backend).
    mute: bool,
    /// Body bytes received, over all requests.
    body_bytes: usize,
    /// A 100 Continue was sent (once per test).
    continued: bool,
}

impl Server {
    fn new(host: &mut Host, name: &str, port: u16) -> Server {
        let mut s = Server {
            name: name.into(),
            port,
            conns: vec![],
            accepted: 0,
            requests: vec![],
            mute: false,
            body_bytes: 0,
            continued: false,
        };
        s.listen(host);
        s
    }
    fn listen(&mut self, host: &mut Host) {
        let h = host.socket();
        host.sockets
            .get_mut::<tcp::Socket>(h)
            .listen(self.port)
            .unwrap();
        self.conns.push((h, vec![], vec![]));
    }
    fn serve(&mut self, host: &mut Host) {
        for (h, buf, pending) in self.conns.iter_mut() {
            let s = host.sockets.get_mut::<tcp::Socket>(*h);
            if s.state() == tcp::State::Listen {
                continue;
            }
            if !pending.is_empty() {
                if let Ok(n) = s.send_slice(pending) {
                    pending.drain(..n);
                }
                if !pending.is_empty() {
                    continue;
                }
            }
            let _ = s.recv(|d| {
                buf.extend_from_slice(d);
                (d.len(), ())
            });
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
                if head.to_ascii_lowercase().contains("expect: 100-continue")
                    && !std::mem::replace(&mut self.continued, true)
                {
                    pending.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() < end + 4 + len {
                    break;
                }
                buf.drain(..end + 4 + len);
                self.body_bytes += len;
                if self.mute {
                    self.requests.push(head.clone());
                    continue;
                }
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                self.requests.push(head.clone());
                let body = format!("{} {}\n", self.name, path);
                if path == "/big" || path == "/big-chunks" {
                    // 200 chunks of 1000 bytes, or 3 of 64 KiB (larger than what a TLS
                    // layer takes at once).
                    let (size, n) = if path == "/big" {
                        (1000, 200)
                    } else {
                        (65536, 3)
                    };
                    let chunk = vec![b'z'; size];
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for _ in 0..n {
                        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                        out.extend_from_slice(&chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                    pending.extend_from_slice(&out);
                } else {
                    pending.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
                if let Ok(n) = s.send_slice(pending) {
                    pending.drain(..n);
                }
            }
            if !s.may_recv() && s.may_send() && pending.is_empty() {
                s.close();
            }
        }
        // Listeners for the next connections (a backlog of 64), as those were taken.
        let listening = self
            .conns
            .iter()
            .filter(|(h, _, _)| {
                host.sockets.get_mut::<tcp::Socket>(*h).state() == tcp::State::Listen
            })
            .count();
        // Every socket that is not listening (they are never reused) took a connection.
        self.accepted = self.conns.len() - listening;
        for _ in listening..64 {
            self.listen(host);
        }
    }
}

const VIP: &str = "10.99.0.100:80";
const NODE: [u8; 4] = [10, 99, 0, 1];

fn setup(backends: &[&str]) -> L7Setup {
    let pool = |name: &str, addrs: &[&str]| Pool {
        name: name.into(),
        algorithm: Algorithm::RoundRobin,
        sticky_cookie: None,
        sticky_max_age: None,
        eject_after: 0,
        eject_for_ms: 0,
        eject_on_5xx: false,
        tls: None,
        backends: addrs
            .iter()
            .map(|a| L7Backend {
                address: a.parse().unwrap(),
                weight: 1,
                admin: Admin::Ready,
                health: Health::Up,
            })
            .collect(),
    };
    L7Setup {
        services: vec![L7Service {
            name: "site".into(),
            vip: VIP.parse().unwrap(),
            protocol: Protocol::Http,
            default_pool: Some(0),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            routes: vec![Route {
                path: Some(PathMatch::Prefix("/api/".into())),
                pool: 1,
                ..Route::default()
            }],
            pools: vec![pool("www", &backends[..1]), pool("api", &backends[1..])],
            tls: None,
        }],
        node_ipv4: Some(NODE.into()),
        node_ipv6: None,
        tcp: TcpSetup::default(),
    }
}

struct World {
    client: Host,
    backends: Vec<(Host, Server)>,
    /// TLS servers (for tls-passthrough), by address.
    tls_backends: Vec<(Host, TlsServer)>,
    /// Shared with the shard under test (which borrows it while the world runs).
    rings: std::sync::Arc<OffloadRings>,
    now: i64,
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12] = 0x08;
    f.extend_from_slice(ip);
    f
}

impl World {
    fn new(backends: &[&str]) -> World {
        let client = Host::new("10.98.0.2".parse().unwrap());
        let backends = backends
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let sa: SocketAddr = a.parse().unwrap();
                let mut h = Host::new(sa.ip());
                let s = Server::new(&mut h, &format!("b{}", i + 1), sa.port());
                (h, s)
            })
            .collect();
        World {
            client,
            backends,
            rings: std::sync::Arc::new(OffloadRings::new(
                OffloadPlan::new(1).with_upstream_ports(40000, 40999),
                1,
                4096,
            )),
            now: 0,
            tls_backends: vec![],
        }
    }

    /// Runs everything for `ms` milliseconds of simulated time in 1 ms steps.
    fn run(&mut self, shard: &mut Shard, ms: i64) {
        for _ in 0..ms {
            self.now += 1;
            let t = Instant::from_millis(self.now);
            self.client.poll(t);
            for (h, s) in self.backends.iter_mut() {
                h.poll(t);
                s.serve(h);
                h.poll(t);
            }
            for (h, s) in self.tls_backends.iter_mut() {
                h.poll(t);
                s.serve(h);
                h.poll(t);
            }
            // Everything the hosts sent goes to the shard (as the poll loop hands it).
            let mut out: Vec<Vec<u8>> = self.client.wire.tx.drain(..).collect();
            for (h, _) in self.backends.iter_mut() {
                out.append(&mut h.wire.tx);
            }
            for (h, _) in self.tls_backends.iter_mut() {
                out.append(&mut h.wire.tx);
            }
            for p in out {
                self.rings.hand(0, 0, &eth(&p)).unwrap();
            }
            shard.poll_at(self.now as u64);
            while let Some(f) = self.rings.returned(0) {
                let ip = f.data()[14..].to_vec();
                self.rings.recycle(f);
                let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
                if dst == self.client.addr {
                    self.client.wire.rx.push_back(ip);
                } else if let Some((h, _)) = self.backends.iter_mut().find(|(h, _)| h.addr == dst) {
                    h.wire.rx.push_back(ip);
                } else if let Some((h, _)) =
                    self.tls_backends.iter_mut().find(|(h, _)| h.addr == dst)
                {
                    h.wire.rx.push_back(ip);
                }
            }
        }
    }

    fn connect(&mut self, port: u16) -> SocketHandle {
        let h = self.client.socket();
        let cx = self.client.iface.context();
        self.client
            .sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, VIP.parse::<SocketAddr>().unwrap(), port)
            .unwrap();
        h
    }

    fn send(&mut self, h: SocketHandle, data: &[u8]) {
        let s = self.client.sockets.get_mut::<tcp::Socket>(h);
        assert_eq!(s.send_slice(data).unwrap(), data.len());
    }

    fn received(&mut self, h: SocketHandle) -> Vec<u8> {
        let s = self.client.sockets.get_mut::<tcp::Socket>(h);
        let mut out = vec![];
        while let Ok(n) = s.recv(|d| (d.len(), d.to_vec())) {
            if n.is_empty() {
                break;
            }
            out.extend(n);
        }
        out
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn requests_are_routed_balanced_and_reuse_upstream_connections() {
    let shared = SharedSetup::new(setup(&[
        "10.99.0.11:8080",
        "10.99.0.12:8080",
        "10.99.0.13:8080",
    ]));
    let mut w = World::new(&["10.99.0.11:8080", "10.99.0.12:8080", "10.99.0.13:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(50000);
    w.run(&mut shard, 20);
    // Keep-alive: six requests on one connection, one at a time.
    let mut got = vec![];
    for path in ["/", "/api/a", "/api/b", "/x", "/api/c", "/api/d"] {
        w.send(
            c,
            format!("GET {path} HTTP/1.1\r\nHost: site\r\n\r\n").as_bytes(),
        );
        w.run(&mut shard, 30);
        got.push(text(&w.received(c)));
    }
    assert!(
        got[0].starts_with("HTTP/1.1 200 OK\r\n") && got[0].ends_with("b1 /\n"),
        "{}",
        got[0]
    );
    assert!(got[1].ends_with("b2 /api/a\n"), "{}", got[1]);
    assert!(got[2].ends_with("b3 /api/b\n"), "round robin: {}", got[2]);
    assert!(got[3].ends_with("b1 /x\n"));
    assert!(got[4].ends_with("b2 /api/c\n"));
    assert!(got[5].ends_with("b3 /api/d\n"));
    // Each backend saw one connection (reused), and the forwarding fields.
    for (_, s) in &w.backends {
        assert_eq!(s.accepted, 1, "{}: one upstream connection", s.name);
        assert!(
            s.requests
                .iter()
                .all(|r| r.contains("X-Forwarded-For: 10.98.0.2\r\n")
                    && r.contains("X-Forwarded-Proto: http\r\n")),
            "{:?}",
            s.requests
        );
    }
    assert_eq!(shard.stats.requests, 6);
    assert_eq!(shard.stats.status[1], 6);
    assert_eq!(shard.stats.upstream_opened, 3);
    assert_eq!(shard.stats.upstream_reused, 3);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_large_chunked_responses_stream() {
    let shared = SharedSetup::new(setup(&["10.99.0.11:8080", "10.99.0.12:8080"]));
    let mut w = World::new(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(50001);
    w.run(&mut shard, 20);
    w.send(c, b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut all = vec![];
    for _ in 0..100 {
        w.run(&mut shard, 10);
        all.extend(w.received(c));
    }
    let s = text(&all);
    let first = s.find("b1 /1\n").expect("first answer");
    let big = s.find("Transfer-Encoding: chunked").expect("second answer");
    let third = s.find("b1 /3\n").expect("third answer");
    assert!(first < big && big < third, "in order");
    assert_eq!(s.matches('z').count(), 200_000, "the whole chunked body");
}

#[test]
fn no_route_malformed_and_no_backend_get_their_status() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.services[0].default_pool = None;
    st.services[0].pools[1].backends[0].health = Health::Down;
    let shared = SharedSetup::new(st);
    let mut w = World::new(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    for (port, req, want) in [
        (
            50010u16,
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            "HTTP/1.1 404 ",
        ),
        (
            50011,
            b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "HTTP/1.1 503 ",
        ),
        (
            50012,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (50013, b"\x00\x01garbage\r\n\r\n", "HTTP/1.1 400 "),
    ] {
        let c = w.connect(port);
        w.run(&mut shard, 20);
        w.send(c, req);
        w.run(&mut shard, 50);
        let got = text(&w.received(c));
        assert!(got.starts_with(want), "{want}: {got}");
        let s = w.client.sockets.get_mut::<tcp::Socket>(c);
        assert!(!s.may_recv(), "closed after the error");
    }
    assert_eq!(shard.stats.status[3], 3);
    assert_eq!(shard.stats.status[4], 1);
}

/// A world with one shard over it.
fn world(st: L7Setup, backends: &[&str]) -> (World, SharedSetup) {
    (World::new(backends), SharedSetup::new(st))
}

#[test]
fn an_idempotent_request_to_a_refusing_backend_is_retried_on_another() {
    // Backend 10.99.0.12 exists as a host but nothing listens on 8081: it answers RST.
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8081", "10.99.0.13:8080"]);
    st.services[0].pools[1].sticky_cookie = Some("S".into());
    let (mut w, shared) = world(
        st,
        &["10.99.0.11:8080", "10.99.0.12:9999", "10.99.0.13:8080"],
    );
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(50020);
    w.run(&mut shard, 20);
    w.send(c, b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n");
    w.run(&mut shard, 100);
    let got = text(&w.received(c));
    assert!(got.ends_with("b3 /api/x\n"), "{got}");
    assert_eq!(shard.stats.retries, 1);
    let b3 = l7_offload::balance::sticky_id("10.99.0.13:8080".parse().unwrap());
    assert!(
        got.contains(&format!("Set-Cookie: S={b3:016x};")),
        "the cookie names the backend that answered: {got}"
    );
    // A POST is not retried: 502.
    w.send(
        c,
        b"POST /api/y HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    );
    w.run(&mut shard, 100);
    let got = text(&w.received(c));
    assert!(
        got.starts_with("HTTP/1.1 502 ") || got.ends_with("b3 /api/y\n"),
        "{got}"
    );
}

#[test]
fn a_hung_backend_gets_504_and_a_slow_client_is_closed() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.services[0].timeouts.backend_response_ms = 300;
    st.services[0].timeouts.client_header_ms = 400;
    let (mut w, shared) = world(st, &["10.99.0.11:8080", "10.99.0.12:8080"]);
    w.backends[1].1.mute = true;
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(50030);
    w.run(&mut shard, 20);
    w.send(c, b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n");
    w.run(&mut shard, 200);
    assert_eq!(w.received(c), b"", "not yet");
    w.run(&mut shard, 200);
    let got = text(&w.received(c));
    assert!(got.starts_with("HTTP/1.1 504 "), "{got}");
    assert_eq!(
        shard
            .stats
            .errors_of(l7_offload::stats::L7Error::BackendTimeout),
        1
    );
    // Slowloris: half a head, then nothing.
    let s = w.connect(50031);
    w.run(&mut shard, 20);
    w.send(s, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    w.run(&mut shard, 300);
    assert!(
        w.client.sockets.get_mut::<tcp::Socket>(s).may_recv(),
        "still open"
    );
    w.run(&mut shard, 300);
    let st = w.client.sockets.get_mut::<tcp::Socket>(s).state();
    assert!(!matches!(st, tcp::State::Established), "closed: {st}");
    assert_eq!(
        shard
            .stats
            .errors_of(l7_offload::stats::L7Error::ClientHeaderTimeout),
        1
    );
}

#[test]
fn connections_past_the_limit_are_reset_and_counted() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.services[0].limits.connections = 2;
    let (mut w, shared) = world(st, &["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let a = w.connect(50040);
    let b = w.connect(50041);
    let c = w.connect(50042);
    w.run(&mut shard, 30);
    let state = |w: &mut World, h| w.client.sockets.get_mut::<tcp::Socket>(h).state();
    assert_eq!(state(&mut w, a), tcp::State::Established);
    assert_eq!(state(&mut w, b), tcp::State::Established);
    assert_eq!(state(&mut w, c), tcp::State::Closed, "reset");
    assert_eq!(
        shard
            .stats
            .errors_of(l7_offload::stats::L7Error::ConnectionLimit),
        1
    );
    assert_eq!(shard.stats.client_connections, 2);
}

#[test]
fn a_large_upload_streams_to_the_backend_and_oversize_bodies_get_413() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.services[0].limits.body_bytes = 400_000;
    let (mut w, shared) = world(st, &["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(50050);
    w.run(&mut shard, 20);
    let body = vec![b'u'; 300_000];
    w.send(
        c,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n",
    );
    let mut sent = 0;
    let mut got = vec![];
    for _ in 0..400 {
        let s = w.client.sockets.get_mut::<tcp::Socket>(c);
        if sent < body.len() {
            sent += s.send_slice(&body[sent..]).unwrap();
        }
        w.run(&mut shard, 5);
        got.extend(w.received(c));
        if got.ends_with(b"b1 /up\n") {
            break;
        }
    }
    assert!(text(&got).ends_with("b1 /up\n"), "{}", text(&got));
    assert_eq!(w.backends[0].1.body_bytes, 300_000);
    w.send(
        c,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 400001\r\n\r\n",
    );
    w.run(&mut shard, 50);
    assert!(text(&w.received(c)).starts_with("HTTP/1.1 413 "));
}

#[test]
fn closed_connections_are_freed_and_idle_ones_do_not_spin() {
    let (mut w, shared) = world(
        setup(&["10.99.0.11:8080", "10.99.0.12:8080"]),
        &["10.99.0.11:8080", "10.99.0.12:8080"],
    );
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let mut handles = vec![];
    for i in 0..50u16 {
        let c = w.connect(51000 + i);
        handles.push(c);
    }
    w.run(&mut shard, 20);
    for &c in &handles {
        w.send(c, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    }
    w.run(&mut shard, 100);
    for &c in &handles {
        assert!(text(&w.received(c)).ends_with("b1 /\n"));
        w.client.sockets.get_mut::<tcp::Socket>(c).close();
    }
    w.run(&mut shard, 200);
    assert_eq!(
        shard.stats.client_connections, 0,
        "every client connection freed"
    );
    assert_eq!(
        shard.connections(),
        shard.stats.upstream_connections as usize,
        "only the pooled upstream connections are left"
    );
    // Nothing left wakes every millisecond: a quiet second drives no connection.
    let frames = shard.stats.frames_out;
    w.run(&mut shard, 1000);
    assert_eq!(
        shard.stats.frames_out, frames,
        "a quiet shard sends nothing"
    );
}

#[test]
fn a_backend_failing_requests_in_a_row_is_ejected_for_a_while() {
    // 10.99.0.12 answers RST on 8081 (nothing listens there).
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8081", "10.99.0.13:8080"]);
    st.services[0].pools[1].eject_after = 2;
    st.services[0].pools[1].eject_for_ms = 10_000;
    let (mut w, shared) = world(
        st,
        &["10.99.0.11:8080", "10.99.0.12:9999", "10.99.0.13:8080"],
    );
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let c = w.connect(52000);
    w.run(&mut shard, 20);
    for i in 0..8 {
        w.send(
            c,
            format!("GET /api/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        w.run(&mut shard, 60);
        let got = text(&w.received(c));
        assert!(got.ends_with(&format!("b3 /api/{i}\n")), "{i}: {got}");
    }
    assert_eq!(shard.stats.ejections, 1);
    assert_eq!(shard.stats.retries, 2, "only until it was ejected");
    assert_eq!(shard.stats.backends[0][1][0].ejections, 1);
    assert_eq!(shard.stats.backends[0][1][0].failures, 2);
}

#[test]
fn expect_continue_http_1_0_keep_alive_and_response_rules() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.services[0].routes[0].response_headers = vec![
        HeaderRule::Add("X-Served-By".into(), "sluice".into()),
        HeaderRule::Set("Content-Type".into(), "text/plain".into()),
    ];
    let (mut w, shared) = world(st, &["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    // Expect: 100-continue: the backend's interim answer reaches the client before the body.
    let c = w.connect(53000);
    w.run(&mut shard, 20);
    w.send(
        c,
        b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    w.run(&mut shard, 40);
    let interim = text(&w.received(c));
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    w.send(c, b"hello");
    w.run(&mut shard, 40);
    let got = text(&w.received(c));
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("b2 /api/up\n"),
        "{got}"
    );
    // Response rules of the route.
    assert!(
        got.contains("X-Served-By: sluice\r\n") && got.contains("Content-Type: text/plain\r\n"),
        "{got}"
    );
    assert_eq!(w.backends[1].1.body_bytes, 5);
    // HTTP/1.0: keep-alive only when asked, and then said.
    let d = w.connect(53001);
    w.run(&mut shard, 20);
    w.send(d, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    w.run(&mut shard, 40);
    let got = text(&w.received(d));
    assert!(
        got.contains("Connection: keep-alive\r\n") && got.ends_with("b1 /a\n"),
        "{got}"
    );
    w.send(d, b"GET /b HTTP/1.0\r\n\r\n");
    w.run(&mut shard, 40);
    let got = text(&w.received(d));
    assert!(
        got.contains("Connection: close\r\n") && got.ends_with("b1 /b\n"),
        "{got}"
    );
    w.run(&mut shard, 40);
    assert!(
        !w.client.sockets.get_mut::<tcp::Socket>(d).may_recv(),
        "closed after it"
    );
}

#[test]
fn idle_pooled_connections_are_bounded_per_backend() {
    let mut st = setup(&["10.99.0.11:8080", "10.99.0.12:8080"]);
    st.tcp.max_idle = 2;
    let (mut w, shared) = world(st, &["10.99.0.11:8080", "10.99.0.12:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let clients: Vec<_> = (0..6).map(|i| w.connect(54000 + i)).collect();
    w.run(&mut shard, 20);
    for &c in &clients {
        w.send(c, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }
    w.run(&mut shard, 100);
    for &c in &clients {
        assert!(text(&w.received(c)).ends_with("b1 /\n"));
    }
    assert_eq!(shard.stats.upstream_opened, 6, "six at once need six");
    w.run(&mut shard, 100);
    assert_eq!(
        shard.stats.upstream_connections, 2,
        "two kept idle, four closed"
    );
}

/// A TLS client over one of the client host's sockets: rustls on the client side too.
struct TlsClient {
    conn: rustls::ClientConnection,
    h: SocketHandle,
    /// Every byte it sent (ciphertext), to compare with what a passthrough backend got.
    sent: Vec<u8>,
}

fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(include_bytes!("tls/ca.pem"))
                .unwrap(),
        )
        .unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    std::sync::Arc::new(c)
}

impl World {
    fn tls_connect(
        &mut self,
        port: u16,
        cfg: &std::sync::Arc<rustls::ClientConfig>,
        sni: &str,
    ) -> TlsClient {
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        TlsClient {
            conn: rustls::ClientConnection::new(std::sync::Arc::clone(cfg), name).unwrap(),
            h: self.connect(port),
            sent: vec![],
        }
    }

    /// Moves the TLS client's bytes between rustls and its socket; an error is the client's
    /// view of a failed handshake.
    fn tls_pump(&mut self, c: &mut TlsClient) -> Result<(), rustls::Error> {
        let s = self.client.sockets.get_mut::<tcp::Socket>(c.h);
        while s.can_recv() {
            // rustls takes nothing while its plaintext waits to be read.
            let n = s
                .recv(|b| {
                    let mut r: &[u8] = b;
                    let n = c.conn.read_tls(&mut r).unwrap_or(0);
                    (n, n)
                })
                .unwrap_or(0);
            c.conn.process_new_packets()?;
            if n == 0 {
                break;
            }
        }
        while c.conn.wants_write() && s.can_send() {
            let _ = s.send(|b| {
                let mut w: &mut [u8] = &mut *b;
                let n = c.conn.write_tls(&mut w).unwrap_or(0);
                c.sent.extend_from_slice(&b[..n]);
                (n, ())
            });
        }
        Ok(())
    }

    /// Runs the world with the TLS client pumped, `rounds` times 5 ms.
    fn tls_run(
        &mut self,
        shard: &mut Shard,
        c: &mut TlsClient,
        rounds: usize,
    ) -> Result<(), rustls::Error> {
        for _ in 0..rounds {
            self.tls_pump(c)?;
            self.run(shard, 5);
        }
        self.tls_pump(c)
    }
}

fn tls_setup() -> L7Setup {
    let mut st = setup(&["10.99.0.11:8080"]);
    let cert = |names: &[&str], chain: &[u8], key: &[u8], default: bool, i: usize| {
        l7_offload::tls::CertSpec {
            names: names.iter().map(|n| n.to_string()).collect(),
            chain_pem: chain.to_vec(),
            key_pem: key.to_vec(),
            default,
            origin: format!("service.certificate[{i}]"),
        }
    };
    let spec = l7_offload::tls::TlsSpec {
        certificates: vec![
            cert(
                &["www.example"],
                include_bytes!("tls/www.pem"),
                include_bytes!("tls/www.key"),
                true,
                0,
            ),
            cert(
                &["*.img.example"],
                include_bytes!("tls/img.pem"),
                include_bytes!("tls/img.key"),
                false,
                1,
            ),
        ],
        versions: vec![
            l7_offload::tls::TlsVersion::Tls12,
            l7_offload::tls::TlsVersion::Tls13,
        ],
        alpn: vec!["http/1.1".into()],
        cipher_suites: vec![
            "TLS13_CHACHA20_POLY1305_SHA256".into(),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        ],
        session_tickets: true,
        session_cache: 1024,
    };
    st.services[0].tls = Some(ServerTls(l7_offload::tls::server_config(&spec).unwrap()));
    st
}

#[test]
fn tls_clients_are_terminated_and_their_requests_proxied() {
    let (mut w, shared) = world(tls_setup(), &["10.99.0.11:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let v13 = client_config(&[&rustls::version::TLS13], &["http/1.1"]);
    // TLS 1.3, SNI naming the wildcard certificate (the client verifies it against the CA).
    let mut c = w.tls_connect(50100, &v13, "a.img.example");
    w.tls_run(&mut shard, &mut c, 20).unwrap();
    assert!(!c.conn.is_handshaking());
    assert_eq!(c.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        c.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // The service's cipher suites, in its order of preference (not the client's).
    assert_eq!(
        c.conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    // Keep-alive requests inside TLS, proxied in plain HTTP with X-Forwarded-Proto: https.
    for path in ["/one", "/two"] {
        use std::io::{Read, Write};
        c.conn
            .writer()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: a.img.example\r\n\r\n").as_bytes())
            .unwrap();
        w.tls_run(&mut shard, &mut c, 10).unwrap();
        let mut got = vec![0u8; 4096];
        let n = c.conn.reader().read(&mut got).unwrap();
        let got = text(&got[..n]);
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with(&format!("b1 {path}\n")),
            "{got}"
        );
    }
    let b = &w.backends[0].1;
    assert!(
        b.requests
            .iter()
            .all(|r| r.contains("X-Forwarded-Proto: https\r\n") && r.contains("proto=https")),
        "{:?}",
        b.requests
    );
    assert_eq!(b.requests.len(), 2);
    // A second connection resumes the session (a ticket from the first).
    let mut again = w.tls_connect(50101, &v13, "a.img.example");
    w.tls_run(&mut shard, &mut again, 20).unwrap();
    assert_eq!(
        again.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    // TLS 1.2, no SNI match: the default certificate, which names www.example.
    let v12 = client_config(&[&rustls::version::TLS12], &[]);
    let mut old = w.tls_connect(50102, &v12, "www.example");
    w.tls_run(&mut shard, &mut old, 20).unwrap();
    assert_eq!(
        old.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        old.conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    // Handshakes counted by version, the resumed one too.
    assert_eq!(shard.stats.tls_handshakes, [1, 2]);
    assert_eq!(shard.stats.tls_resumed, 1);
    // A client that offers only h2 shares no ALPN protocol: an alert, counted.
    let h2 = client_config(&[&rustls::version::TLS13], &["h2"]);
    let mut bad = w.tls_connect(50103, &h2, "www.example");
    let r = w.tls_run(&mut shard, &mut bad, 20);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        shard.stats.errors[l7_offload::stats::L7Error::ALL
            .iter()
            .position(|&e| e == l7_offload::stats::L7Error::TlsHandshake)
            .unwrap()],
        1
    );
    // And plain HTTP to the TLS port is a failed handshake too, never proxied.
    let p = w.connect(50104);
    w.run(&mut shard, 10);
    w.send(p, b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n");
    w.run(&mut shard, 20);
    assert!(!text(&w.received(p)).contains("HTTP/1.1"));
    assert_eq!(w.backends[0].1.requests.len(), 2);
    // A ClientHello that stops halfway holds its connection only until client_header_ms.
    let slow = w.connect(50105);
    w.run(&mut shard, 10);
    w.send(slow, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
    w.run(&mut shard, 9_000);
    let state = |w: &mut World| w.client.sockets.get_mut::<tcp::Socket>(slow).state();
    assert_eq!(state(&mut w), tcp::State::Established, "still waiting");
    w.run(&mut shard, 1_500);
    assert_eq!(state(&mut w), tcp::State::Closed, "reset after 10 s");
    let timeouts = shard.stats.errors[l7_offload::stats::L7Error::ALL
        .iter()
        .position(|&e| e == l7_offload::stats::L7Error::ClientHeaderTimeout)
        .unwrap()];
    // The stalled handshake, and the two TLS connections above that never sent a request.
    assert_eq!(timeouts, 3);
}

/// A TLS server on a backend host (for tls-passthrough): terminates TLS with its own
/// certificate and answers each request inside it with its name and the SNI it was asked
/// for.
struct TlsServer {
    name: String,
    port: u16,
    cfg: std::sync::Arc<rustls::ServerConfig>,
    /// Socket, TLS session, plaintext so far, ciphertext received.
    conns: Vec<(SocketHandle, rustls::ServerConnection, Vec<u8>, Vec<u8>)>,
}

impl TlsServer {
    fn new(host: &mut Host, name: &str, port: u16, chain: &[u8], key: &[u8]) -> TlsServer {
        TlsServer::asking(host, name, port, chain, key, None)
    }

    /// A server that asks for a client certificate signed by `client_ca`, if given.
    fn asking(
        host: &mut Host,
        name: &str,
        port: u16,
        chain: &[u8],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> TlsServer {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(rustls::pki_types::CertificateDer::from_pem_slice(ca).unwrap())
                    .unwrap();
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        roots.into(),
                        provider,
                    )
                    .build()
                    .unwrap(),
                )
            }
        };
        let cfg = builder.with_single_cert(certs, key).unwrap();
        let mut s = TlsServer {
            name: name.into(),
            port,
            cfg: std::sync::Arc::new(cfg),
            conns: vec![],
        };
        s.listen(host);
        s
    }

    fn listen(&mut self, host: &mut Host) {
        let h = host.socket();
        host.sockets
            .get_mut::<tcp::Socket>(h)
            .listen(self.port)
            .unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::clone(&self.cfg)).unwrap();
        self.conns.push((h, conn, vec![], vec![]));
    }

    /// Connections that got past listening.
    fn accepted(&self, host: &mut Host) -> usize {
        self.conns
            .iter()
            .filter(|(h, ..)| host.sockets.get_mut::<tcp::Socket>(*h).state() != tcp::State::Listen)
            .count()
    }

    fn serve(&mut self, host: &mut Host) {
        use std::io::{Read, Write};
        for (h, conn, plain, raw) in self.conns.iter_mut() {
            let s = host.sockets.get_mut::<tcp::Socket>(*h);
            while s.can_recv() {
                let _ = s.recv(|b| {
                    raw.extend_from_slice(b);
                    let mut r: &[u8] = b;
                    let n = conn.read_tls(&mut r).unwrap_or(0);
                    (n, ())
                });
                if conn.process_new_packets().is_err() {
                    // As a real server does: the alert rustls queued, then the close.
                    while conn.wants_write() && s.can_send() {
                        let _ = s.send(|b| {
                            let mut w: &mut [u8] = b;
                            let n = conn.write_tls(&mut w).unwrap_or(0);
                            (n, ())
                        });
                    }
                    s.close();
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            while let Ok(n) = conn.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&chunk[..n]);
            }
            while let Some(end) = plain.windows(4).position(|w| w == b"\r\n\r\n") {
                plain.drain(..end + 4);
                let body = format!("{} {}\n", self.name, conn.server_name().unwrap_or("-"));
                let _ = write!(
                    conn.writer(),
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            while conn.wants_write() && s.can_send() {
                let _ = s.send(|b| {
                    let mut w: &mut [u8] = b;
                    let n = conn.write_tls(&mut w).unwrap_or(0);
                    (n, ())
                });
            }
            if !s.may_recv() && s.may_send() && !conn.wants_write() {
                s.close();
            }
        }
        let listening = self
            .conns
            .iter()
            .filter(|(h, ..)| host.sockets.get_mut::<tcp::Socket>(*h).state() == tcp::State::Listen)
            .count();
        for _ in listening..8 {
            self.listen(host);
        }
    }
}

impl World {
    fn tls_accepted(&mut self, i: usize) -> usize {
        let (h, s) = &mut self.tls_backends[i];
        s.accepted(h)
    }
}

fn passthrough_setup() -> L7Setup {
    let mut st = setup(&["10.99.0.21:8443", "10.99.0.22:8443"]);
    let s = &mut st.services[0];
    s.protocol = Protocol::TlsPassthrough;
    s.default_pool = None;
    s.routes = vec![
        Route {
            sni: Some(HostMatch::Suffix(".img.example".into())),
            pool: 0,
            ..Route::default()
        },
        Route {
            sni: Some(HostMatch::Exact("www.example".into())),
            pool: 1,
            ..Route::default()
        },
    ];
    st
}

fn alert_of(r: Result<(), rustls::Error>) -> Option<rustls::AlertDescription> {
    match r {
        Err(rustls::Error::AlertReceived(a)) => Some(a),
        _ => None,
    }
}

#[test]
fn tls_passthrough_routes_by_sni_and_relays_bytes_untouched() {
    use std::io::{Read, Write};
    let (mut w, shared) = world(passthrough_setup(), &[]);
    for (addr, name, chain, key) in [
        (
            "10.99.0.21:8443",
            "img-backend",
            &include_bytes!("tls/img.pem")[..],
            &include_bytes!("tls/img.key")[..],
        ),
        (
            "10.99.0.22:8443",
            "www-backend",
            &include_bytes!("tls/www.pem")[..],
            &include_bytes!("tls/www.key")[..],
        ),
    ] {
        let sa: SocketAddr = addr.parse().unwrap();
        let mut h = Host::new(sa.ip());
        let s = TlsServer::new(&mut h, name, sa.port(), chain, key);
        w.tls_backends.push((h, s));
    }
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let cfg = client_config(&[&rustls::version::TLS13], &["http/1.1"]);
    let request = |w: &mut World, shard: &mut Shard, c: &mut TlsClient, host: &str| -> String {
        c.conn
            .writer()
            .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        w.tls_run(shard, c, 10).unwrap();
        let mut got = vec![0u8; 4096];
        let n = c.conn.reader().read(&mut got).unwrap_or(0);
        text(&got[..n])
    };
    // By wildcard: the backend's own certificate (verified by the client for the name),
    // its own answer.
    let mut a = w.tls_connect(50200, &cfg, "a.img.example");
    w.tls_run(&mut shard, &mut a, 20).unwrap();
    assert!(!a.conn.is_handshaking());
    let got = request(&mut w, &mut shard, &mut a, "a.img.example");
    assert!(got.ends_with("img-backend a.img.example\n"), "{got}");
    // By exact name, to the other pool.
    let mut b = w.tls_connect(50201, &cfg, "www.example");
    w.tls_run(&mut shard, &mut b, 20).unwrap();
    let got = request(&mut w, &mut shard, &mut b, "www.example");
    assert!(got.ends_with("www-backend www.example\n"), "{got}");
    // Untouched: each backend got exactly the bytes its client sent.
    for (i, c) in [(0, &a), (1, &b)] {
        let raw = &w.tls_backends[i].1.conns[0].3;
        assert_eq!(raw, &c.sent, "backend {i}");
    }
    assert_eq!(shard.stats.tls_passthrough, 2);
    assert_eq!(
        shard.stats.tls_handshakes,
        [0, 0],
        "nothing terminated in sluice"
    );
    // A name no route takes, and no default pool: refused with unrecognized_name.
    let mut other = w.tls_connect(50202, &cfg, "other.test");
    let r = w.tls_run(&mut shard, &mut other, 20);
    assert_eq!(
        alert_of(r),
        Some(rustls::AlertDescription::UnrecognisedName)
    );
    let errors = |shard: &Shard, e: l7_offload::stats::L7Error| {
        shard.stats.errors[l7_offload::stats::L7Error::ALL
            .iter()
            .position(|&x| x == e)
            .unwrap()]
    };
    assert_eq!(errors(&shard, l7_offload::stats::L7Error::NoRoute), 1);
    // A ClientHello split over segments sent 50 ms apart: no backend connection until it
    // is whole, then the handshake completes through it.
    let mut split = w.tls_connect(50203, &cfg, "b.img.example");
    let mut hello = vec![];
    while split.conn.wants_write() {
        split.conn.write_tls(&mut hello).unwrap();
    }
    let before = w.tls_accepted(0);
    w.run(&mut shard, 10);
    w.send(split.h, &hello[..40]);
    w.run(&mut shard, 50);
    w.send(split.h, &hello[40..200]);
    w.run(&mut shard, 50);
    assert_eq!(
        w.tls_accepted(0),
        before,
        "no backend for half a ClientHello"
    );
    w.send(split.h, &hello[200..]);
    split.sent = hello.clone();
    w.tls_run(&mut shard, &mut split, 20).unwrap();
    assert!(!split.conn.is_handshaking());
    let got = request(&mut w, &mut shard, &mut split, "b.img.example");
    assert!(got.ends_with("img-backend b.img.example\n"), "{got}");
    // Plain HTTP to the passthrough port: reset, counted, no backend.
    let p = w.connect(50204);
    w.run(&mut shard, 10);
    w.send(p, b"GET / HTTP/1.1\r\nHost: db.example\r\n\r\n");
    w.run(&mut shard, 20);
    let state = |w: &mut World, h| w.client.sockets.get_mut::<tcp::Socket>(h).state();
    assert_eq!(state(&mut w, p), tcp::State::Closed);
    assert_eq!(
        errors(&shard, l7_offload::stats::L7Error::TlsClientHello),
        1
    );
    assert_eq!(shard.stats.tls_passthrough, 3);
    // The established sessions are still served.
    let got = request(&mut w, &mut shard, &mut a, "a.img.example");
    assert!(got.ends_with("img-backend a.img.example\n"), "{got}");
    // With a default pool, a hello without SNI goes there.
    let mut st = passthrough_setup();
    st.services[0].default_pool = Some(1);
    shared.store(st);
    let mut nosni = w.tls_connect(50205, &cfg, "10.99.0.100");
    w.tls_run(&mut shard, &mut nosni, 20).ok();
    // The www certificate does not name the address, so the client refuses it: but the
    // backend got the connection and answered the handshake.
    assert_eq!(w.tls_accepted(1), 2);
    assert_eq!(shard.stats.tls_passthrough, 4);
    // A client that closes: the backend sees the close, the connection is freed.
    a.conn.send_close_notify();
    w.tls_run(&mut shard, &mut a, 2).unwrap();
    w.client.sockets.get_mut::<tcp::Socket>(a.h).close();
    w.run(&mut shard, 200);
    let in_flight: u64 = shard.stats.backends[0][0].iter().map(|b| b.in_flight).sum();
    assert_eq!(
        in_flight, 1,
        "only the split client's connection is left on pool 0"
    );
}

/// A pool of `backend` that re-encrypts to it, verifying it against `ca` for `name`.
fn reencrypting(
    backend: &str,
    ca: &[u8],
    verify: bool,
    name: Option<&str>,
    client_cert: bool,
) -> L7Setup {
    let mut st = setup(&[backend, backend]);
    let spec = l7_offload::tls::ClientTlsSpec {
        ca_pem: ca.to_vec(),
        verify,
        client_cert: client_cert.then(|| {
            (
                include_bytes!("tls/client.pem").to_vec(),
                include_bytes!("tls/client.key").to_vec(),
            )
        }),
        origin: "test pool".into(),
    };
    let tls = ClientTls {
        config: l7_offload::tls::client_config(&spec).unwrap(),
        server_name: name.map(|n| l7_offload::tls::server_name(n).unwrap()),
    };
    st.services[0].routes.clear();
    for p in st.services[0].pools.iter_mut() {
        p.tls = Some(tls.clone());
    }
    st
}

#[test]
fn requests_are_re_encrypted_to_backends_that_verify() {
    const PLAIN: &str = "10.99.0.21:8443";
    const MTLS: &str = "10.99.0.22:8443";
    let ca = include_bytes!("tls/ca.pem");
    let (mut w, shared) = world(
        reencrypting(PLAIN, ca, true, Some("www.example"), false),
        &[],
    );
    for (addr, client_ca) in [
        ("10.99.0.21:8443", None),
        ("10.99.0.22:8443", Some(&include_bytes!("tls/ca.pem")[..])),
    ] {
        let sa: SocketAddr = addr.parse().unwrap();
        let mut h = Host::new(sa.ip());
        let s = TlsServer::asking(
            &mut h,
            "tls-backend",
            sa.port(),
            include_bytes!("tls/www.pem"),
            include_bytes!("tls/www.key"),
            client_ca,
        );
        w.tls_backends.push((h, s));
    }
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let errors = |shard: &Shard, e: l7_offload::stats::L7Error| {
        shard.stats.errors[l7_offload::stats::L7Error::ALL
            .iter()
            .position(|&x| x == e)
            .unwrap()]
    };
    let mut port = 50300;
    let mut ask = |w: &mut World, shard: &mut Shard| -> String {
        port += 1;
        let h = w.connect(port);
        w.run(shard, 10);
        w.send(h, b"GET /x HTTP/1.1\r\nHost: www.example\r\n\r\n");
        w.run(shard, 100);
        text(&w.received(h))
    };
    // Verified for server_name, which the backend also gets as SNI: two requests, one TLS
    // handshake (the second reuses the pooled connection, still encrypted).
    let got = ask(&mut w, &mut shard);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("tls-backend www.example\n"), "{got}");
    let got = ask(&mut w, &mut shard);
    assert!(got.ends_with("tls-backend www.example\n"), "{got}");
    assert_eq!(shard.stats.upstream_tls_handshakes, 1);
    assert_eq!(shard.stats.upstream_reused, 1);
    // A backend that asks for a client certificate this pool has none of refuses it.
    shared.store(reencrypting(MTLS, ca, true, Some("www.example"), false));
    let got = ask(&mut w, &mut shard);
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    assert!(errors(&shard, l7_offload::stats::L7Error::UpstreamTls) >= 1);
    // With the client certificate (mTLS), it answers.
    shared.store(reencrypting(MTLS, ca, true, Some("www.example"), true));
    let got = ask(&mut w, &mut shard);
    assert!(got.ends_with("tls-backend www.example\n"), "{got}");
    // A CA that did not sign the backends' certificates: 502, counted, and no request
    // reaches a backend over an unverified connection.
    let before = errors(&shard, l7_offload::stats::L7Error::UpstreamTls);
    shared.store(reencrypting(
        PLAIN,
        include_bytes!("tls/other-ca.pem"),
        true,
        Some("www.example"),
        false,
    ));
    let got = ask(&mut w, &mut shard);
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    assert!(errors(&shard, l7_offload::stats::L7Error::UpstreamTls) > before);
    // The right CA but a name the certificates do not carry: 502 too.
    shared.store(reencrypting(
        PLAIN,
        ca,
        true,
        Some("backend.internal"),
        false,
    ));
    let got = ask(&mut w, &mut shard);
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    // Without a server_name the address is the name, which these certificates do not carry.
    shared.store(reencrypting(PLAIN, ca, true, None, false));
    let got = ask(&mut w, &mut shard);
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    // verify = false takes the certificate as it is.
    shared.store(reencrypting(
        PLAIN,
        include_bytes!("tls/other-ca.pem"),
        false,
        None,
        false,
    ));
    let got = ask(&mut w, &mut shard);
    assert!(
        got.ends_with("tls-backend -\n"),
        "no SNI for an address: {got}"
    );
}

/// A chunked response with chunks larger than the TLS layer takes at once, read slowly: the
/// chunk checker must follow only what the TLS layer took.
#[test]
fn a_large_response_streams_through_tls_to_a_slow_reader() {
    use std::io::{Read, Write};
    let (mut w, shared) = world(tls_setup(), &["10.99.0.11:8080"]);
    let rings = std::sync::Arc::clone(&w.rings);
    let mut shard = Shard::new(0, &rings, &shared, (40000, 40999));
    let cfg = client_config(&[&rustls::version::TLS13], &["http/1.1"]);
    let mut c = w.tls_connect(50400, &cfg, "www.example");
    w.tls_run(&mut shard, &mut c, 20).unwrap();
    c.conn
        .writer()
        .write_all(b"GET /big-chunks HTTP/1.1\r\nHost: www.example\r\n\r\n")
        .unwrap();
    w.tls_run(&mut shard, &mut c, 2).unwrap();
    // The client reads nothing for a while: every buffer on the way fills, so the proxy
    // then meets whole 64 KiB chunks waiting upstream and room for them below the TLS layer.
    w.run(&mut shard, 300);
    let mut got = Vec::new();
    for _ in 0..4000 {
        w.tls_run(&mut shard, &mut c, 1).unwrap();
        let mut buf = vec![0u8; 2048];
        if let Ok(n) = c.conn.reader().read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    let body_start = got.windows(4).position(|x| x == b"\r\n\r\n").unwrap() + 4;
    let zs = got[body_start..].iter().filter(|&&b| b == b'z').count();
    assert_eq!(zs, 3 * 65536, "{} bytes received", got.len());
}
