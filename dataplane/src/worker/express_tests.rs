//! The express lane is an exact shortcut: two workers, one with the lane and one without,
//! given the same frames and the same configuration changes, send the same bytes and count
//! the same things.

use super::*;
use crate::port::MemPort;
use crate::setup::{Forwarding, NodeSetup, RateLimitSetup, ServiceSetup, Setup, SynProxyMode};
use crate::snapshot::Admin;
use packet::ipv4::{PROTO_TCP, PROTO_UDP};
use packet::tcp::{ACK, FIN, PSH, RST, SYN};

/// The services: `nat`, `snat` and `dsr`, a `nat` service with a packet rate limit, one
/// with the SYN proxy on, one in `ipip` and one in `gue`; backend `.9` of the first has no
/// MAC (its next hop is resolved, to [`LEARNED`], in every other configuration, and
/// unresolved in the rest).
fn setup(variant: usize) -> Setup {
    let mut node = NodeSetup::new(
        packet::MacAddr([2, 0, 0, 0, 0, 1]),
        packet::MacAddr([2, 0, 0, 0, 0, 0xfe]),
    );
    node.ipv4 = Some("192.0.2.1".parse().unwrap());
    node.standby = variant == 3;
    // Variant 4: a tunnel MTU that the larger datagrams do not fit once encapsulated.
    if variant == 4 {
        node.tunnel_mtu = Some(80);
    }
    let svc = |i: u8, proto, fwd, backends: &[u8]| {
        let port = if proto == PROTO_TCP { 80 } else { 53 };
        let mut s = ServiceSetup::new(
            &format!("s{i}"),
            format!("198.51.100.{i}:{port}").parse().unwrap(),
            proto,
            fwd,
        );
        for &b in backends {
            let mac = (b != 9).then_some(packet::MacAddr([2, 0, 0, 0, i, b]));
            let bport = if fwd == Forwarding::Nat || fwd == Forwarding::Snat {
                8080
            } else {
                port
            };
            s = s.backend(format!("10.{i}.0.{b}:{bport}").parse().unwrap(), mac);
        }
        s
    };
    // Variants: 1 changes the first service's backends, 2 drains one and disables another.
    let first: &[u8] = if variant == 1 {
        &[1, 3, 4, 9]
    } else {
        &[1, 2, 3, 9]
    };
    let mut nat = svc(10, PROTO_TCP, Forwarding::Nat, first);
    if variant == 2 {
        nat.backends[0].admin = Admin::Drain;
        nat.backends[1].admin = Admin::Disabled;
    }
    let mut limited = svc(13, PROTO_UDP, Forwarding::Nat, &[1, 2]);
    limited.rate_limit = Some(RateLimitSetup {
        new_flows_per_source: None,
        packets: Some((2000, 50)),
    });
    let mut proxied = svc(14, PROTO_TCP, Forwarding::Nat, &[1, 2]);
    // Off in variant 1: the flows it opens then stay unproxied when the proxy comes on;
    // `auto` in variant 2, switching on at a handful of SYNs a second.
    proxied.syn_proxy.mode = match variant {
        1 => SynProxyMode::Off,
        2 => SynProxyMode::Auto {
            on_rate: 5,
            off_rate: 2,
        },
        _ => SynProxyMode::On,
    };
    Setup::new(node)
        .service(nat)
        .service(svc(11, PROTO_TCP, Forwarding::Snat, &[1, 2]))
        .service(svc(12, PROTO_UDP, Forwarding::Dsr, &[1, 2]))
        .service(limited)
        .service(proxied)
        .service(svc(15, PROTO_TCP, Forwarding::Ipip, &[1, 2]))
        .service(svc(16, PROTO_TCP, Forwarding::Gue, &[1, 2]))
}

/// The MAC backend `.9`'s next hop resolves to when it does.
const LEARNED: packet::MacAddr = packet::MacAddr([2, 0, 0, 0, 0x99, 9]);

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A client frame to one of the services (or, now and then, to no service), with the odd
/// fault: TTL 1, a bad IP checksum, a VLAN tag, a cut, IP options.
fn frame(r: &mut Rng) -> Vec<u8> {
    let vip = 10 + r.below(8) as u8; // 17: no service
    let proto = if matches!(vip, 12 | 13) {
        PROTO_UDP
    } else {
        PROTO_TCP
    };
    let dport: u16 = if proto == PROTO_TCP { 80 } else { 53 };
    let flags = [
        SYN,
        ACK,
        ACK | PSH,
        ACK,
        ACK | PSH,
        FIN | ACK,
        RST,
        SYN | ACK,
    ][r.below(8) as usize];
    let payload = r.below(3) as usize * 7;
    let l4_len = if proto == PROTO_TCP { 20 } else { 8 } + payload;
    let ttl = if r.below(40) == 0 { 1 } else { 64 };
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xfe, 0x08, 0x00];
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, proto, 0, 0, 203, 0, 113, 0,
    ];
    ip[15] = 1 + r.below(6) as u8;
    ip.extend_from_slice(&[198, 51, 100, vip]);
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    let c = packet::checksum::finish(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    if r.below(60) == 0 {
        ip[10] ^= 0x10;
    }
    f.extend_from_slice(&ip);
    let sport = 40000 + r.below(4) as u16;
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == PROTO_TCP {
        f.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0x12, 0x34, 0, 0,
        ]);
    } else {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34]);
    }
    f.extend(std::iter::repeat_n(0xab, payload));
    match r.below(80) {
        0 => f.truncate(14 + 20 + r.below(l4_len as u64) as usize),
        1 => {
            f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        }
        _ => {}
    }
    f
}

/// Runs the same frames, in the same bursts, through a worker with the lane and one
/// without, swapping in the same configurations at the same points; returns how many
/// frames the lane forwarded.
fn compare(seed: u64, frames: usize) -> (u64, u64, u64) {
    let fresh = |v| {
        let snap = Snapshot::build(&setup(v)).unwrap();
        if v % 2 == 0 {
            for b in snap.services.iter().flat_map(|s| &s.backends) {
                if let crate::snapshot::NextHop::Resolved(i) = b.next_hop {
                    snap.neighbours.learn(i, LEARNED, 0);
                }
            }
        }
        Arc::new(snap)
    };
    let mut to_learned = 0;
    let mut w = [
        Worker::new(0, Steering::new(1, (1024, 32767)), fresh(0), false),
        Worker::new(0, Steering::new(1, (1024, 32767)), fresh(0), false).without_express_lane(),
    ];
    let mut ports = [MemPort::new(false), MemPort::new(false)];
    let mut bursts = [Bursts::new(), Bursts::new()];
    let rings = Rings::new(1, 64);
    let mut r = Rng(seed);
    let mut now = 1_000_000_000u64;
    let mut sent = 0;
    let (mut next_swap, mut variant, mut swaps) = (640, 0, 0);
    while sent < frames {
        // A burst of up to BURST frames a millisecond apart; now and then a new
        // configuration, or a silence long enough for UDP flows (30 s) to expire.
        if sent >= next_swap {
            next_swap += 640;
            variant = (variant + 1) % 5;
            swaps += 1;
            for w in &mut w {
                w.set_snapshot(fresh(variant));
            }
        }
        if r.below(50) == 0 {
            now += 40_000_000_000;
        }
        let n = 1 + r.below(BURST as u64) as usize;
        for _ in 0..n {
            let f = frame(&mut r);
            now += 1_000_000;
            for p in &mut ports {
                assert!(p.inject(&f, now, sent as u64));
            }
            sent += 1;
        }
        for i in 0..2 {
            w[i].poll(&mut ports[i], &mut bursts[i], &rings);
        }
        let out: Vec<Vec<Vec<u8>>> = ports
            .iter_mut()
            .map(|p| {
                let v = p.tx.iter().map(|b| b.data().to_vec()).collect();
                let t = std::mem::take(&mut p.tx);
                p.recycle(t);
                v
            })
            .collect();
        assert_eq!(
            out[0], out[1],
            "seed {seed}: the bursts up to frame {sent} differ"
        );
        to_learned += out[0].iter().filter(|f| f[..6] == LEARNED.0).count() as u64;
    }
    assert!(swaps >= frames / 640 - 1, "{swaps} configuration changes");
    assert!(
        w[0].stats.drops[DropReason::TunnelTooBig.index()] > 0,
        "datagrams too big for the tunnel MTU were sent"
    );
    let express = (w[0].stats.express, w[0].stats.packets_out);
    assert_eq!(w[1].stats.express, 0);
    w[0].stats.express = 0;
    assert_eq!(w[0].stats, w[1].stats, "seed {seed}: the counters differ");
    assert_eq!(w[0].ct.counters, w[1].ct.counters, "seed {seed}");
    assert_eq!(w[0].ct.len(), w[1].ct.len(), "seed {seed}");
    (express.0, express.1, to_learned)
}

#[test]
fn the_express_lane_sends_and_counts_what_the_general_path_does() {
    let (mut express, mut out, mut to_learned) = (0, 0, 0);
    for seed in 1..=6 {
        let (e, o, l) = compare(seed * 0x9e37_79b9, 4000);
        express += e;
        out += o;
        to_learned += l;
    }
    assert!(
        to_learned > 100,
        "only {to_learned} frames went to a resolved next hop"
    );
    // The comparison means something only if both paths forwarded a good share of the
    // 24,000 frames (a fifth of the frames are to proxied, limited or tunnelled services,
    // or to none, and a third of the time the node is standby or the backends are moving).
    assert!(express > 2400, "the lane forwarded only {express} of {out}");
    assert!(
        out - express > 2400,
        "the general path forwarded only {} of {out}",
        out - express
    );
}

/// A TCP or UDP frame from 203.0.113.1:40000 to service `vip` (`.10`-`.16` of
/// 198.51.100.0/24) with the given TCP flags (ignored for UDP).
fn first_frame(vip: u8, flags: u8) -> Vec<u8> {
    let mut r = Rng(1);
    loop {
        let f = frame(&mut r);
        // A clean frame to `vip` (no tag, no cut, TTL 64, good checksum), then given the
        // flags and source wanted.
        let clean = f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[22] == 64;
        if !clean || f[33] != vip || packet::parse_ipv4_flow(&f).is_none() {
            continue;
        }
        let mut f = f;
        f[29] = 1;
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        if f[23] == PROTO_TCP {
            f[47] = flags;
        }
        f[24..26].copy_from_slice(&[0, 0]);
        let c = packet::checksum::finish(0, &f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        return f;
    }
}

#[test]
fn a_new_flows_first_frame_takes_the_lane_where_nothing_gates_it() {
    // (service, forwarded by the lane): nat, snat, dsr, ipip and gue are; the one with a
    // rate limit and the one whose SYN proxy is on are the general path's.
    let cases = [
        (10, true),
        (11, true),
        (12, true),
        (13, false),
        (14, false),
        (15, true),
        (16, true),
    ];
    for (vip, lane) in cases {
        // A snapshot each: the first poll of one solicits the unresolved next hop, in the
        // neighbour table the snapshot holds.
        let snap = || Arc::new(Snapshot::build(&setup(0)).unwrap());
        let mut w = [
            Worker::new(0, Steering::new(1, (1024, 32767)), snap(), false),
            Worker::new(0, Steering::new(1, (1024, 32767)), snap(), false).without_express_lane(),
        ];
        // The SYN proxy answers a bare SYN itself: an ACK opens the flows here.
        let f = first_frame(vip, ACK | PSH);
        let mut out = Vec::new();
        for w in &mut w {
            let mut port = MemPort::new(false);
            assert!(port.inject(&f, 1_000_000_000, 0));
            w.poll(&mut port, &mut Bursts::new(), &Rings::new(1, 64));
            out.push(
                port.tx
                    .iter()
                    .map(|b| b.data().to_vec())
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(out[0], out[1], "service .{vip}: the lane sent other bytes");
        let placed = w[0].stats.express == 1 && w[0].ct.len() == 1;
        assert_eq!(placed, lane, "service .{vip}: {:?}", w[0].stats);
        if lane {
            assert!(
                out[0][0][..6] != [0xff; 6],
                "service .{vip}: forwarded first"
            );
            assert_eq!(w[0].ct.counters, w[1].ct.counters, "service .{vip}");
        }
    }
}
