//! The SYN proxy on the `mem` port, packet by packet: the client's handshake answered with a
//! cookie and nothing tracked; forged ACKs refused; a valid ACK opening the backend's
//! handshake with the client's own ISN and options; the backend's SYN-ACK answered and the
//! held data sent after it; every later segment translated both ways (sequence numbers,
//! acknowledgements, SACK blocks, windows); a backend's RST passed on; `auto` switching.

use super::*;
use crate::port::{MemPort, PacketBuf};
use crate::setup::{Forwarding, NodeSetup, ServiceSetup, Setup, SynProxyMode};
use packet::checksum;
use packet::ipv4::Ipv4Repr;
use packet::tcp::{SynOptions, TcpPacket, TcpRepr, ACK, PSH, RST, SYN};
use std::net::{IpAddr, Ipv4Addr};

const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const VIP: [u8; 4] = [198, 51, 100, 10];
const CLIENT: [u8; 4] = [203, 0, 113, 7];
const BACKEND: [u8; 4] = [10, 1, 0, 1];
const NODE: [u8; 4] = [192, 0, 2, 1];
const S: u64 = 1_000_000_000;

fn setup(forwarding: Forwarding, mode: SynProxyMode) -> Setup {
    let mut node = NodeSetup::new(packet::MacAddr(NODE_MAC), packet::MacAddr(GATEWAY_MAC));
    node.ipv4 = Some(Ipv4Addr::from(NODE));
    let mut web = ServiceSetup::new(
        "web",
        "198.51.100.10:80".parse().unwrap(),
        packet::ipv4::PROTO_TCP,
        forwarding,
    )
    .backend(
        "10.1.0.1:8080".parse().unwrap(),
        Some(packet::MacAddr(BACKEND_MAC)),
    );
    web.syn_proxy.mode = mode;
    Setup::new(node).service(web)
}

struct Seg<'a> {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
    payload: &'a [u8],
}

/// An Ethernet + IPv4 + TCP frame with valid checksums.
fn frame(s: &Seg<'_>, from_mac: [u8; 6]) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: s.src.1,
        dst_port: s.dst.1,
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        window: s.window,
        options: s.options,
    };
    let tl = tcp.header_len() + s.payload.len();
    let mut f = vec![0u8; 14 + 20 + tl];
    f[..6].copy_from_slice(&NODE_MAC);
    f[6..12].copy_from_slice(&from_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    Ipv4Repr {
        src: s.src.0.into(),
        dst: s.dst.0.into(),
        protocol: 6,
        payload_len: tl as u16,
        ttl: 64,
        dscp_ecn: 0,
        dont_fragment: true,
    }
    .emit(&mut f[14..34])
    .unwrap();
    f[34 + tcp.header_len()..].copy_from_slice(s.payload);
    let pseudo = checksum::pseudo_v4(s.src.0.into(), s.dst.0.into(), 6, tl as u16);
    tcp.emit(&mut f[34..], pseudo).unwrap();
    f
}

/// What a transmitted frame is, with its checksums checked.
#[derive(Debug)]
struct Out {
    dst_mac: [u8; 6],
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: SynOptions,
    sack: Vec<u32>,
    payload: Vec<u8>,
}

fn read(f: &[u8]) -> Out {
    let p = packet::parse_frame(f).expect("a frame sluice sent parses");
    let ip = packet::ipv4::Ipv4Packet::new_checked(&f[14..p.l3_end]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let seg = &f[p.l4_off..p.l3_end];
    let (IpAddr::V4(a), IpAddr::V4(b)) = (p.src, p.dst) else {
        panic!()
    };
    let pseudo = checksum::pseudo_v4(a, b, 6, seg.len() as u16);
    assert_eq!(
        checksum::fold(checksum::sum(pseudo, seg)),
        0xffff,
        "TCP checksum"
    );
    let t = TcpPacket::new_checked(seg).unwrap();
    let o = t.options();
    let mut sack = Vec::new();
    let mut i = 0;
    while i < o.len() {
        match o[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = o[i + 1] as usize;
                if kind == packet::tcp::OPT_SACK {
                    for e in (i + 2..i + len).step_by(4) {
                        sack.push(u32::from_be_bytes([o[e], o[e + 1], o[e + 2], o[e + 3]]));
                    }
                }
                i += len;
            }
        }
    }
    Out {
        dst_mac: f[..6].try_into().unwrap(),
        src: (p.src, p.src_port),
        dst: (p.dst, p.dst_port),
        seq: t.seq_number(),
        ack: t.ack_number(),
        flags: t.flags(),
        window: t.window(),
        opts: t.syn_options(),
        sack,
        payload: t.payload().to_vec(),
    }
}

struct Rig {
    w: Worker,
    port: MemPort,
    b: Bursts<PacketBuf>,
    rings: Rings<PacketBuf>,
    now: u64,
}

impl Rig {
    fn new(s: Setup) -> Rig {
        let snap = Arc::new(Snapshot::build(&s).unwrap());
        Rig {
            w: Worker::new(0, Steering::new(1, (1024, 32767)), snap, false),
            port: MemPort::new(false),
            b: Bursts::new(),
            rings: Rings::new(1, 64),
            now: 100 * S,
        }
    }

    /// Sends `frames` in one burst; what sluice transmitted.
    fn send(&mut self, frames: &[Vec<u8>]) -> Vec<Out> {
        self.now += 1_000_000;
        for f in frames {
            assert!(self.port.inject(f, self.now, 0));
        }
        self.w.poll(&mut self.port, &mut self.b, &self.rings);
        let out: Vec<PacketBuf> = self.port.tx.drain(..).collect();
        let read: Vec<Out> = out.iter().map(|f| read(f.data())).collect();
        self.port.recycle(out);
        read
    }
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, window scale 7.
const LINUX_SYN: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];

fn client_syn(port: u16, isn: u32) -> Vec<u8> {
    frame(
        &Seg {
            src: (CLIENT, port),
            dst: (VIP, 80),
            seq: isn,
            ack: 0,
            flags: SYN,
            window: 64240,
            options: &LINUX_SYN,
            payload: &[],
        },
        GATEWAY_MAC,
    )
}

fn client_ack(port: u16, seq: u32, ack: u32, payload: &[u8], options: &[u8]) -> Vec<u8> {
    frame(
        &Seg {
            src: (CLIENT, port),
            dst: (VIP, 80),
            seq,
            ack,
            flags: if payload.is_empty() { ACK } else { ACK | PSH },
            window: 502,
            options,
            payload,
        },
        GATEWAY_MAC,
    )
}

/// The whole life of one proxied connection through `nat` (or `snat`).
fn proxied_connection(forwarding: Forwarding) {
    let mut r = Rig::new(setup(forwarding, SynProxyMode::On));
    let isn = 1_000_000;
    // 1. The SYN is answered by sluice, from the VIP, toward the gateway; nothing tracked.
    let out = r.send(&[client_syn(40000, isn)]);
    assert_eq!(out.len(), 1);
    let synack = &out[0];
    assert_eq!(synack.dst_mac, GATEWAY_MAC);
    assert_eq!(
        (synack.src, synack.dst),
        ((ip(VIP), 80), (ip(CLIENT), 40000))
    );
    assert_eq!((synack.flags, synack.ack), (SYN | ACK, isn + 1));
    assert_eq!(
        synack.opts,
        SynOptions {
            mss: Some(1460),
            window_scale: Some(crate::synproxy::WINDOW_SCALE),
            sack_permitted: true,
            timestamps: None
        },
        "the client's options the cookie can carry, and no timestamps"
    );
    assert_eq!(
        synack.window, 1460,
        "one segment until the backend's window"
    );
    assert_eq!(r.w.ct.len(), 0, "a SYN answered by cookie is not tracked");
    assert_eq!(r.w.stats.syn_proxy_cookies, 1);
    let cookie = synack.seq;

    // 2. ACKs that do not return the cookie are dropped; nothing is tracked.
    for bad in [cookie, cookie.wrapping_add(2), cookie ^ 0x1000] {
        assert!(r
            .send(&[client_ack(40000, isn + 1, bad, b"", &[])])
            .is_empty());
    }
    assert!(r
        .send(&[client_ack(40001, isn + 1, cookie + 1, b"", &[])])
        .is_empty());
    assert_eq!(r.w.stats.dropped(DropReason::SynProxyBadCookie), 4);
    assert_eq!(r.w.ct.len(), 0);

    // 3. The ACK returning it, with the request, opens the backend's handshake: a SYN with
    //    the client's ISN and options (no timestamps); the request is held.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = r.send(&[client_ack(40000, isn + 1, cookie + 1, request, &[])]);
    assert_eq!(out.len(), 1);
    let syn = &out[0];
    let from = match forwarding {
        Forwarding::Snat => ip(NODE),
        _ => ip(CLIENT),
    };
    assert_eq!(syn.dst_mac, BACKEND_MAC);
    assert_eq!(syn.dst, (ip(BACKEND), 8080));
    assert_eq!(syn.src.0, from);
    if forwarding == Forwarding::Nat {
        assert_eq!(syn.src.1, 40000);
    }
    assert_eq!((syn.flags, syn.seq), (SYN, isn));
    assert_eq!(
        syn.opts,
        SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: None
        }
    );
    assert_eq!(syn.window, 502 << 7, "the client's window, unscaled");
    assert!(syn.payload.is_empty());
    assert_eq!(r.w.ct.len(), 1);
    assert_eq!(r.w.held.in_use(), 1);
    let (conn_src, conn_port) = syn.src;
    let IpAddr::V4(conn) = conn_src else { panic!() };
    let conn = conn.octets();

    // A client retransmission while the backend is silent resends the SYN.
    let out = r.send(&[client_ack(40000, isn + 1, cookie + 1, request, &[])]);
    assert_eq!((out.len(), out[0].flags, out[0].seq), (1, SYN, isn));
    assert_eq!(r.w.held.in_use(), 1, "held once");
    // The backend's other segments before its SYN-ACK are dropped.
    let stray = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (conn, conn_port),
            seq: 5,
            ack: isn + 1,
            flags: ACK,
            window: 100,
            options: &[],
            payload: b"x",
        },
        BACKEND_MAC,
    );
    assert!(r.send(&[stray]).is_empty());
    assert_eq!(r.w.stats.dropped(DropReason::SynProxyOpening), 1);

    // 4. The backend's SYN-ACK (scale 9) is answered with the ACK completing its handshake,
    //    and the held request follows it, its acknowledgement in the backend's space.
    let biss = 7_777_000u32;
    let backend_synack = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (conn, conn_port),
            seq: biss,
            ack: isn + 1,
            flags: SYN | ACK,
            window: 65160,
            options: &[2, 4, 0x05, 0xb4, 1, 3, 3, 9, 1, 1, 4, 2],
            payload: &[],
        },
        BACKEND_MAC,
    );
    let out = r.send(std::slice::from_ref(&backend_synack));
    assert_eq!(out.len(), 2, "{out:?}");
    let (ack, data) = (&out[0], &out[1]);
    assert_eq!(ack.dst_mac, BACKEND_MAC);
    assert_eq!(
        (ack.src, ack.dst),
        ((conn_src, conn_port), (ip(BACKEND), 8080))
    );
    assert_eq!(
        (ack.flags, ack.seq, ack.ack, ack.window),
        (ACK, isn + 1, biss + 1, 502)
    );
    assert_eq!(
        (data.src, data.dst),
        ((conn_src, conn_port), (ip(BACKEND), 8080))
    );
    assert_eq!((data.seq, data.ack), (isn + 1, biss + 1));
    assert_eq!(data.payload, request);
    assert_eq!(r.w.held.in_use(), 0);
    assert_eq!(
        (r.w.stats.syn_proxy_opened, r.w.stats.syn_proxy_held_sent),
        (1, 1)
    );
    // Its SYN-ACK again (sluice's ACK lost): answered again, nothing else changes.
    let out = r.send(&[backend_synack]);
    assert_eq!((out.len(), out[0].flags, out[0].ack), (1, ACK, biss + 1));

    // 5. The backend's reply reaches the client from the VIP, in the cookie's sequence
    //    space, its window rescaled from the backend's scale (9) to sluice's (7).
    let reply = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (conn, conn_port),
            seq: biss + 1,
            ack: isn + 1 + request.len() as u32,
            flags: ACK | PSH,
            window: 100,
            options: &[],
            payload: b"HTTP/1.1 200 OK\r\n\r\n",
        },
        BACKEND_MAC,
    );
    let out = r.send(&[reply]);
    assert_eq!(out.len(), 1);
    let to_client = &out[0];
    assert_eq!(to_client.dst_mac, GATEWAY_MAC);
    assert_eq!(
        (to_client.src, to_client.dst),
        ((ip(VIP), 80), (ip(CLIENT), 40000))
    );
    assert_eq!(
        (to_client.seq, to_client.ack, to_client.window),
        (cookie + 1, isn + 1 + request.len() as u32, 400)
    );
    assert_eq!(to_client.payload, b"HTTP/1.1 200 OK\r\n\r\n");

    // An ICMP "fragmentation needed" from a router about that reply reaches the backend with
    // the quoted sequence number in the backend's space (or its path MTU discovery would
    // ignore it).
    let quoted = frame(
        &Seg {
            src: (VIP, 80),
            dst: (CLIENT, 40000),
            seq: cookie + 1,
            ack: 0,
            flags: ACK,
            window: 0,
            options: &[],
            payload: &[],
        },
        NODE_MAC,
    );
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    let c = checksum::finish(0, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut err = vec![0u8; 14 + 20];
    err[..6].copy_from_slice(&NODE_MAC);
    err[6..12].copy_from_slice(&GATEWAY_MAC);
    err[12..14].copy_from_slice(&[0x08, 0x00]);
    Ipv4Repr {
        src: Ipv4Addr::new(192, 0, 2, 254),
        dst: VIP.into(),
        protocol: 1,
        payload_len: icmp.len() as u16,
        ttl: 64,
        dscp_ecn: 0,
        dont_fragment: false,
    }
    .emit(&mut err[14..34])
    .unwrap();
    err.extend_from_slice(&icmp);
    r.now += 1_000_000;
    assert!(r.port.inject(&err, r.now, 0));
    r.w.poll(&mut r.port, &mut r.b, &r.rings);
    let sent: Vec<PacketBuf> = r.port.tx.drain(..).collect();
    assert_eq!(sent.len(), 1);
    let d = sent[0].data();
    assert_eq!(&d[..6], &BACKEND_MAC);
    let quoted_tcp = 14 + 20 + 8 + 20;
    assert_eq!(
        u32::from_be_bytes(d[quoted_tcp + 4..quoted_tcp + 8].try_into().unwrap()),
        biss + 1,
        "the quoted sequence number, in the backend's space"
    );
    assert_eq!(
        checksum::fold(checksum::sum(0, &d[34..])),
        0xffff,
        "the ICMP checksum"
    );
    r.port.recycle(sent);

    // 6. The client's next segments reach the backend with their acknowledgements and SACK
    //    blocks in the backend's space.
    let sack = {
        let mut o = vec![1, 1, 5, 10];
        o.extend_from_slice(&(cookie + 1000).to_be_bytes());
        o.extend_from_slice(&(cookie + 2000).to_be_bytes());
        o
    };
    let out = r.send(&[client_ack(
        40000,
        isn + 1 + request.len() as u32,
        cookie + 20,
        b"",
        &sack,
    )]);
    assert_eq!(out.len(), 1);
    let up = &out[0];
    assert_eq!(up.dst, (ip(BACKEND), 8080));
    assert_eq!(up.src, (conn_src, conn_port));
    assert_eq!(up.ack, biss + 20);
    assert_eq!(up.sack, [biss + 1000, biss + 2000]);
    assert_eq!(up.window, 502, "the backend took the client's scale");
    assert_eq!(r.w.ct.len(), 1);
    assert_eq!(r.w.stats.total_drops(), 5);
}

#[test]
fn a_proxied_nat_connection_is_opened_and_translated_both_ways() {
    proxied_connection(Forwarding::Nat);
}

#[test]
fn a_proxied_snat_connection_is_opened_and_translated_both_ways() {
    proxied_connection(Forwarding::Snat);
}

/// A backend that refuses (RST to sluice's SYN): the client, which believes itself
/// connected, gets a RST it accepts (in its window), from the VIP; the held data is freed.
#[test]
fn a_backends_refusal_reaches_the_client_as_a_reset() {
    let mut r = Rig::new(setup(Forwarding::Nat, SynProxyMode::On));
    let out = r.send(&[client_syn(40000, 5)]);
    let cookie = out[0].seq;
    let out = r.send(&[client_ack(40000, 6, cookie + 1, b"hello", &[])]);
    assert_eq!(out[0].flags, SYN);
    assert_eq!(r.w.held.in_use(), 1);
    let rst = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (CLIENT, 40000),
            seq: 0,
            ack: 6,
            flags: RST | ACK,
            window: 0,
            options: &[],
            payload: &[],
        },
        BACKEND_MAC,
    );
    let out = r.send(&[rst]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst),
        ((ip(VIP), 80), (ip(CLIENT), 40000))
    );
    assert_eq!((out[0].flags, out[0].seq), (RST, cookie + 1));
    assert_eq!(r.w.held.in_use(), 0);
    assert_eq!(r.w.stats.syn_proxy_refused, 1);
}

/// A flood of spoofed SYNs is answered one SYN-ACK each and tracks nothing; a client without
/// window scaling or SACK gets neither; a backend that refuses scaling has the client's
/// windows scaled for it.
#[test]
fn a_syn_flood_tracks_nothing_and_options_follow_each_side() {
    let mut r = Rig::new(setup(Forwarding::Nat, SynProxyMode::On));
    for burst in 0..100u32 {
        let frames: Vec<Vec<u8>> = (0..32u32)
            .map(|i| {
                let n = burst * 32 + i;
                let mut f = client_syn(1024 + (n % 60000) as u16, n);
                // Spoofed sources: 203.0.(n / 256).(n % 256).
                f[28] = (n >> 8) as u8;
                f[29] = n as u8;
                f[24..26].copy_from_slice(&[0, 0]);
                let c = checksum::finish(0, &f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f
            })
            .collect();
        let out = r.send(&frames);
        assert_eq!(out.len(), 32);
        assert!(out.iter().all(|o| o.flags == SYN | ACK));
    }
    assert_eq!(r.w.ct.len(), 0);
    assert_eq!(r.w.stats.syn_proxy_cookies, 3200);
    assert_eq!(r.w.stats.backends[0][0].packets, 0, "the backend saw none");

    // A SYN with only an MSS: the SYN-ACK offers no scaling and no SACK.
    let plain = frame(
        &Seg {
            src: (CLIENT, 50000),
            dst: (VIP, 80),
            seq: 9,
            ack: 0,
            flags: SYN,
            window: 5840,
            options: &[2, 4, 0x05, 0x78],
            payload: &[],
        },
        GATEWAY_MAC,
    );
    let out = r.send(&[plain]);
    assert_eq!(
        out[0].opts,
        SynOptions {
            mss: Some(1460),
            ..Default::default()
        }
    );
    let cookie = out[0].seq;
    let out = r.send(&[client_ack(50000, 10, cookie + 1, b"", &[])]);
    assert_eq!(
        out[0].opts,
        SynOptions {
            mss: Some(1400),
            ..Default::default()
        },
        "the client's MSS, kept by the cookie, and nothing it did not offer"
    );

    // A client with scaling (7) and a backend without: the client's windows reach it
    // scaled up by 7, its windows reach the client scaled down by 7.
    let out = r.send(&[client_syn(50001, 100)]);
    let cookie = out[0].seq;
    r.send(&[client_ack(50001, 101, cookie + 1, b"", &[])]);
    let synack = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (CLIENT, 50001),
            seq: 1,
            ack: 101,
            flags: SYN | ACK,
            window: 65535,
            options: &[2, 4, 0x05, 0xb4],
            payload: &[],
        },
        BACKEND_MAC,
    );
    let out = r.send(&[synack]);
    assert_eq!(
        out[0].window,
        502 << 7,
        "the client's window, unscaled for the backend"
    );
    let data = frame(
        &Seg {
            src: (BACKEND, 8080),
            dst: (CLIENT, 50001),
            seq: 2,
            ack: 101,
            flags: ACK,
            window: 29200,
            options: &[],
            payload: b"hi",
        },
        BACKEND_MAC,
    );
    let out = r.send(&[data]);
    assert_eq!((out[0].seq, out[0].window), (cookie + 1, 29200 >> 7));
    let out = r.send(&[client_ack(50001, 101, cookie + 3, b"", &[])]);
    assert_eq!(
        (out[0].ack, out[0].window),
        (4, 502 << 7),
        "the backend sent 2 bytes from ISN 1"
    );
}

/// `auto`: SYNs are balanced as usual under the on rate; at it, the proxy answers them and
/// refuses ACKs without a valid cookie; after the hold under the off rate, SYNs are balanced
/// again, and a cookie it gave out while on is still honoured.
#[test]
fn auto_turns_the_proxy_on_at_its_rate_and_off_after_the_hold() {
    let mode = SynProxyMode::Auto {
        on_rate: 1000,
        off_rate: 100,
    };
    let mut r = Rig::new(setup(Forwarding::Nat, mode));
    // 10 SYNs: forwarded to the backend (tracked).
    let out = r.send(&(0..10).map(|i| client_syn(2000 + i, 1)).collect::<Vec<_>>());
    assert!(out
        .iter()
        .all(|o| o.dst == (ip(BACKEND), 8080) && o.flags == SYN));
    assert_eq!(r.w.ct.len(), 10);
    // 1,000 more within the second: the proxy turns on at the thousandth.
    let mut cookies = 0;
    for b in 0..32u16 {
        let frames: Vec<Vec<u8>> = (0..32).map(|i| client_syn(3000 + b * 32 + i, 1)).collect();
        cookies += r
            .send(&frames)
            .iter()
            .filter(|o| o.flags == SYN | ACK)
            .count();
    }
    assert_eq!(
        cookies,
        1024 - 989,
        "the 1,000th SYN of the second (the 990th of these) is the first answered"
    );
    // While on, an ACK without a cookie is dropped; a tracked flow's is forwarded.
    assert!(r.send(&[client_ack(60000, 2, 12345, b"", &[])]).is_empty());
    assert_eq!(r.w.stats.dropped(DropReason::SynProxyBadCookie), 1);
    assert_eq!(r.send(&[client_ack(2000, 2, 1, b"", &[])]).len(), 1);
    // A cookie given out now.
    let out = r.send(&[client_syn(61000, 50)]);
    assert_eq!(out[0].flags, SYN | ACK);
    let cookie = out[0].seq;
    // Quiet for longer than the hold: the next SYN is balanced again.
    r.now += 3 * crate::synproxy::AUTO_OFF_HOLD_S * S;
    let out = r.send(&[client_syn(62000, 1)]);
    assert_eq!((out[0].dst, out[0].flags), ((ip(BACKEND), 8080), SYN));
    // The cookie from before still opens its flow.
    let out = r.send(&[client_ack(61000, 51, cookie + 1, b"", &[])]);
    assert_eq!((out[0].flags, out[0].seq), (SYN, 50));
    // With it off, an ACK of a flow sluice never saw is balanced, as without a proxy.
    let out = r.send(&[client_ack(63000, 2, 12345, b"", &[])]);
    assert_eq!(out[0].dst, (ip(BACKEND), 8080));
}
