//! Golden replay tests: captures built by the `fixtures` crate go through `sluice replay` for every
//! forwarding mode over IPv4 and IPv6, and every header field of every output frame is
//! checked against the input with an independent decoder and checksum (tests/common).

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// (timestamp ns, frame) records.
type Capture = Vec<(u64, Vec<u8>)>;

const MODES: [&str; 5] = ["nat", "snat", "dsr", "ipip", "gue"];
const WEIGHTS: [u32; 3] = [1, 1, 2];

fn backend_index(v6: bool, a: IpAddr) -> usize {
    (0..WEIGHTS.len())
        .find(|i| backend_ip(v6, *i) == a)
        .unwrap_or_else(|| panic!("{a} is not a backend"))
}

/// Checks one forwarded frame against its input; returns the backend it went to.
fn check_forwarded(mode: &str, v6: bool, fin: &[u8], fout: &[u8]) -> (usize, u16) {
    let (din, dout) = (decode(fin), decode(fout));
    let ipin = ip_fields(&din.ip);
    assert_eq!(dout.src_mac, NODE_MAC, "source MAC is the node's");
    assert_eq!(dout.vlan, din.vlan, "802.1Q tag kept");
    let (b, snat_port) = match mode {
        "nat" | "snat" => {
            let ipo = ip_fields(&dout.ip);
            let b = backend_index(v6, ipo.dst);
            assert_eq!(ports(&dout.ip).1, 8080, "destination port translated");
            assert_eq!(ipo.ttl, ipin.ttl - 1, "TTL decremented");
            assert!(ip_checksum_ok(&dout.ip), "IPv4 header checksum");
            assert!(l4_checksum_ok(&dout.ip), "TCP checksum");
            let (lo, li) = (l4(&dout.ip), l4(&din.ip));
            assert_eq!(
                (&lo[4..16], &lo[18..]),
                (&li[4..16], &li[18..]),
                "sequence numbers, flags, window, payload untouched"
            );
            assert_eq!(dout.ip.len(), din.ip.len());
            let mut sp = 0;
            if mode == "nat" {
                assert_eq!(
                    (ipo.src, ports(&dout.ip).0),
                    (ipin.src, ports(&din.ip).0),
                    "source untouched"
                );
            } else {
                assert_eq!(ipo.src, node_ip(v6), "source is the node's address");
                sp = ports(&dout.ip).0;
                assert!(
                    (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&sp),
                    "SNAT port {sp} in range"
                );
            }
            (b, sp)
        }
        "dsr" => {
            assert_eq!(dout.ip, din.ip, "DSR leaves the datagram byte for byte");
            let b = (0..WEIGHTS.len())
                .find(|i| backend_mac(*i) == dout.dst_mac)
                .expect("destination MAC is a backend's");
            (b, 0)
        }
        _ => {
            let outer = ip_fields(&dout.ip);
            assert_eq!(dout.ethertype, if v6 { 0x86dd } else { 0x0800 });
            assert_eq!(outer.src, node_ip(v6), "tunnel source is the node");
            assert_eq!(outer.ttl, 64, "outer TTL");
            assert!(ip_checksum_ok(&dout.ip), "outer IPv4 header checksum");
            let b = backend_index(v6, outer.dst);
            let inner_proto = if v6 { 41 } else { 4 };
            let inner_off = if mode == "ipip" {
                assert_eq!(outer.proto, inner_proto);
                outer.header_len
            } else {
                assert_eq!(outer.proto, 17);
                let u = l4(&dout.ip);
                assert_eq!(u16::from_be_bytes([u[2], u[3]]), 6080, "GUE port");
                assert!(
                    u16::from_be_bytes([u[0], u[1]]) >= 49152,
                    "GUE source port from the flow hash"
                );
                assert_eq!(
                    u16::from_be_bytes([u[4], u[5]]) as usize,
                    u.len(),
                    "UDP length"
                );
                assert_eq!(
                    &u[8..12],
                    &[0, inner_proto, 0, 0],
                    "GUE header: variant 0, inner protocol"
                );
                if v6 {
                    assert!(l4_checksum_ok(&dout.ip), "outer UDP checksum over IPv6");
                }
                outer.header_len + 12
            };
            assert_eq!(
                &dout.ip[inner_off..],
                &din.ip[..],
                "inner datagram is the client's, unchanged"
            );
            (b, 0)
        }
    };
    assert_eq!(
        dout.dst_mac,
        backend_mac(b),
        "destination MAC is the chosen backend's"
    );
    (b, snat_port)
}

fn forwarding_mode(mode: &str, v6: bool) {
    let dir = scratch(&format!("forward-{mode}-{}", if v6 { "v6" } else { "v4" }));
    let (frames, flow_of) = tcp_flows(v6, 60);
    let run = replay(&dir, &config(mode, v6, "tcp", &WEIGHTS, ""), &frames, 1);
    assert_eq!(
        run.out.len(),
        frames.len(),
        "every frame forwarded: {}",
        run.stats
    );
    let mut chosen: HashMap<u32, (usize, u16)> = HashMap::new();
    for (k, ((tin, fin), (tout, fout))) in frames.iter().zip(&run.out).enumerate() {
        assert_eq!(tin, tout, "output frame keeps the input frame's timestamp");
        let got = check_forwarded(mode, v6, fin, fout);
        let first = *chosen.entry(flow_of[k]).or_insert(got);
        assert_eq!(
            first, got,
            "flow {} keeps its backend (and SNAT port)",
            flow_of[k]
        );
    }
    let used: HashSet<usize> = chosen.values().map(|c| c.0).collect();
    assert_eq!(
        used.len(),
        WEIGHTS.len(),
        "60 flows reach all three backends"
    );
    if mode == "snat" {
        let tuples: HashSet<(usize, u16)> = chosen.values().copied().collect();
        assert_eq!(
            tuples.len(),
            chosen.len(),
            "SNAT ports are unique per backend"
        );
    }
    let s = &run.stats;
    assert_eq!(s["packets_out"], frames.len() as u64);
    assert_eq!(s["dropped"], 0);
    assert_eq!(s["conntrack"]["inserts"], 60);
    let new_flows: u64 = s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["new_flows"].as_u64().unwrap())
        .sum();
    assert_eq!(new_flows, 60);
}

#[test]
fn nat_v4() {
    forwarding_mode("nat", false)
}
#[test]
fn nat_v6() {
    forwarding_mode("nat", true)
}
#[test]
fn snat_v4() {
    forwarding_mode("snat", false)
}
#[test]
fn snat_v6() {
    forwarding_mode("snat", true)
}
#[test]
fn dsr_v4() {
    forwarding_mode("dsr", false)
}
#[test]
fn dsr_v6() {
    forwarding_mode("dsr", true)
}
#[test]
fn ipip_v4() {
    forwarding_mode("ipip", false)
}
#[test]
fn ipip_v6() {
    forwarding_mode("ipip", true)
}
#[test]
fn gue_v4() {
    forwarding_mode("gue", false)
}
#[test]
fn gue_v6() {
    forwarding_mode("gue", true)
}

/// 12,000 new flows over weights 1:2:3 land within 2 percentage points of 1/6, 2/6, 3/6, by
/// both the output frames and the stats file; and a second, UDP service splits the same way.
#[test]
fn split_over_many_flows_follows_weights() {
    for (proto, v6) in [("tcp", false), ("udp", true)] {
        let dir = scratch(&format!("split-{proto}"));
        let weights = [1u32, 2, 3];
        let mut rng = fixtures::Rng::new(42);
        let frames: Vec<(u64, Vec<u8>)> = (0..12_000u32)
            .map(|i| {
                let sport = 1024 + rng.below(60000) as u16;
                let t = if proto == "tcp" {
                    tcp(sport, VIP_PORT, 0x02, b"")
                } else {
                    udp(sport, VIP_PORT, b"q")
                };
                (T0 + i as u64 * 1000, builder(v6, i, None).frame(&t))
            })
            .collect();
        let run = replay(&dir, &config("nat", v6, proto, &weights, ""), &frames, 1);
        let mut counts = [0u64; 3];
        for (_, f) in &run.out {
            let d = decode(f);
            counts[(0..3)
                .find(|i| backend_ip(v6, *i) == ip_fields(&d.ip).dst)
                .unwrap()] += 1;
        }
        let stats_counts: Vec<u64> = run.stats["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["new_flows"].as_u64().unwrap())
            .collect();
        assert_eq!(stats_counts, counts.to_vec());
        for (i, c) in counts.iter().enumerate() {
            let share = *c as f64 / 12_000.0;
            let want = weights[i] as f64 / 6.0;
            assert!(
                (share - want).abs() < 0.02,
                "{proto}: backend {i} got {share:.4}, weight share {want:.4}"
            );
        }
    }
}

/// Forward SYNs, then learn from the output which backend (and SNAT port) each flow got.
fn learn(
    dir: &std::path::Path,
    cfg: &str,
    v6: bool,
    n: u32,
    workers: usize,
) -> (Capture, Vec<(IpAddr, u16)>) {
    let syns: Vec<(u64, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                T0 + i as u64 * 1000,
                builder(v6, i, None).frame(&tcp(40000 + i as u16, VIP_PORT, 0x02, b"")),
            )
        })
        .collect();
    let run = replay(dir, cfg, &syns, workers);
    assert_eq!(run.out.len(), syns.len());
    // (backend address, found by destination MAC; the port the backend sees as its peer)
    let peers = run
        .out
        .iter()
        .map(|(_, f)| {
            let d = decode(f);
            let b = (0..WEIGHTS.len())
                .find(|i| backend_mac(*i) == d.dst_mac)
                .expect("destination MAC is a backend's");
            (backend_ip(v6, b), ports(&d.ip).0)
        })
        .collect();
    (syns, peers)
}

fn reverse_translation(mode: &str, v6: bool, workers: usize) -> Run {
    let dir = scratch(&format!("reply-{mode}-{v6}-{workers}"));
    let cfg = config(mode, v6, "tcp", &WEIGHTS, "");
    let n = 40;
    let (syns, peers) = learn(&dir, &cfg, v6, n, workers);
    let mut frames = syns.clone();
    let t1 = T0 + 1_000_000_000;
    for (i, (backend, peer_port)) in peers.iter().enumerate() {
        let b = backend_index(v6, *backend);
        let dst = if mode == "nat" {
            client_ip(v6, i as u32)
        } else {
            node_ip(v6)
        };
        let fb = fixtures::FrameBuilder::new(
            packet::MacAddr(backend_mac(b)),
            packet::MacAddr(NODE_MAC),
            *backend,
            dst,
        );
        frames.push((
            t1 + i as u64,
            fb.frame(&tcp(8080, *peer_port, 0x12, b"HTTP/1.1 200 OK\r\n")),
        ));
    }
    // A reply nobody asked for: to a client port (nat) or SNAT port (snat) with no flow.
    let stray_dst = if mode == "nat" {
        client_ip(v6, 999)
    } else {
        node_ip(v6)
    };
    let fb = fixtures::FrameBuilder::new(
        packet::MacAddr(backend_mac(0)),
        packet::MacAddr(NODE_MAC),
        backend_ip(v6, 0),
        stray_dst,
    );
    frames.push((t1 + 999, fb.frame(&tcp(8080, 31000, 0x12, b""))));
    let run = replay(&dir, &cfg, &frames, workers);
    assert_eq!(run.out.len(), 2 * n as usize, "{}", run.stats);
    for (i, (_, f)) in run.out[n as usize..].iter().enumerate() {
        let din = decode(&frames[n as usize + i].1);
        let d = decode(f);
        let ip = ip_fields(&d.ip);
        assert_eq!(
            (d.src_mac, d.dst_mac),
            (NODE_MAC, GW_MAC),
            "reply goes to the gateway from the node"
        );
        assert_eq!(
            (ip.src, ports(&d.ip).0),
            (vip(v6), VIP_PORT),
            "reply comes from the VIP"
        );
        assert_eq!(
            (ip.dst, ports(&d.ip).1),
            (client_ip(v6, i as u32), 40000 + i as u16),
            "reply goes to the client"
        );
        assert_eq!(ip.ttl, ip_fields(&din.ip).ttl - 1);
        assert!(
            ip_checksum_ok(&d.ip) && l4_checksum_ok(&d.ip),
            "checksums of the reverse-translated reply"
        );
        assert_eq!(&l4(&d.ip)[20..], b"HTTP/1.1 200 OK\r\n");
    }
    assert_eq!(run.stats["replies_translated"], n as u64);
    if mode == "nat" {
        assert_eq!(run.stats["drops"]["reply_no_flow"], 1);
        assert!(run.host.is_empty());
    } else {
        assert_eq!(
            run.host.len(),
            1,
            "untracked traffic to the node's address goes to the host"
        );
        assert_eq!(run.host[0].1, frames.last().unwrap().1);
    }
    run
}

#[test]
fn nat_replies_are_reverse_translated() {
    reverse_translation("nat", false, 1);
    reverse_translation("nat", true, 1);
}

#[test]
fn snat_replies_are_reverse_translated() {
    reverse_translation("snat", false, 1);
    reverse_translation("snat", true, 1);
}

/// With two workers, replies that land on the worker not owning their flow are handed over,
/// and the output is the same, frame for frame, as with one worker.
#[test]
fn two_workers_make_the_same_choices() {
    let one = reverse_translation("nat", false, 1);
    let two = reverse_translation("nat", false, 2);
    assert_eq!(
        one.out, two.out,
        "NAT output identical with 1 and 2 workers"
    );
    assert!(
        two.stats["handed_off"].as_u64().unwrap() > 0,
        "some replies crossed workers: {}",
        two.stats
    );
    let snat = reverse_translation("snat", true, 2);
    assert!(snat.stats["handed_off"].as_u64().unwrap() > 0);
    for mode in ["dsr", "ipip", "gue"] {
        let (frames, _) = tcp_flows(false, 50);
        let cfg = config(mode, false, "tcp", &WEIGHTS, "");
        let a = replay(&scratch(&format!("w1-{mode}")), &cfg, &frames, 1);
        let b = replay(&scratch(&format!("w2-{mode}")), &cfg, &frames, 2);
        assert_eq!(a.out, b.out, "{mode}: same output with 2 workers");
    }
}

/// The datagram the VIP sent to the client that a router bounced, as it would have been quoted.
fn quoted_reply(v6: bool, client: u32, client_port: u16) -> Vec<u8> {
    let fb = fixtures::FrameBuilder::new(
        packet::MacAddr(NODE_MAC),
        packet::MacAddr(GW_MAC),
        vip(v6),
        client_ip(v6, client),
    );
    fb.datagram(&tcp(VIP_PORT, client_port, 0x18, b"0123456789abcdef"))
}

fn icmp_steering(mode: &str, v6: bool) {
    let dir = scratch(&format!("icmp-{mode}-{v6}"));
    let cfg = config(mode, v6, "tcp", &WEIGHTS, "");
    let n = 12;
    let (syns, peers) = learn(&dir, &cfg, v6, n, 1);
    let router: IpAddr = if v6 {
        "2001:db8::fe".parse().unwrap()
    } else {
        "192.0.2.254".parse().unwrap()
    };
    let mut frames = syns.clone();
    let icmp = |client: u32, port: u16| {
        let fb = fixtures::FrameBuilder::new(
            packet::MacAddr(GW_MAC),
            packet::MacAddr(NODE_MAC),
            router,
            vip(v6),
        );
        let quote = quoted_reply(v6, client, port);
        let t = if v6 {
            fixtures::Transport::Icmp {
                msg_type: 2,
                code: 0,
                rest: 1280u32.to_be_bytes(),
                payload: &quote,
            }
        } else {
            fixtures::Transport::Icmp {
                msg_type: 3,
                code: 4,
                rest: [0, 0, 0x05, 0x78],
                payload: &quote,
            }
        };
        fb.frame(&t)
    };
    for i in 0..n {
        frames.push((T0 + 2_000_000_000 + i as u64, icmp(i, 40000 + i as u16)));
    }
    frames.push((T0 + 3_000_000_000, icmp(500, 12345))); // quotes a flow nobody has
    let run = replay(&dir, &cfg, &frames, 1);
    assert_eq!(run.out.len(), 2 * n as usize, "{}", run.stats);
    assert_eq!(run.stats["icmp_errors_steered"], n as u64);
    assert_eq!(run.stats["drops"]["icmp_no_flow"], 1);
    for i in 0..n as usize {
        let (backend, peer_port) = peers[i];
        let b = backend_index(v6, backend);
        let din = decode(&frames[n as usize + i].1);
        let d = decode(&run.out[n as usize + i].1);
        assert_eq!(
            (d.src_mac, d.dst_mac),
            (NODE_MAC, backend_mac(b)),
            "{mode}: ICMP error goes to the flow's backend"
        );
        match mode {
            "dsr" => assert_eq!(d.ip, din.ip),
            "ipip" | "gue" => {
                assert_eq!(ip_fields(&d.ip).dst, backend);
                let hl = ip_fields(&d.ip).header_len + if mode == "gue" { 12 } else { 0 };
                assert_eq!(&d.ip[hl..], &din.ip[..], "inner ICMP error unchanged");
            }
            _ => {
                let outer = ip_fields(&d.ip);
                assert_eq!(
                    (outer.src, outer.dst, outer.ttl),
                    (router, backend, ip_fields(&din.ip).ttl - 1)
                );
                assert!(ip_checksum_ok(&d.ip), "outer IP checksum");
                assert!(l4_checksum_ok(&d.ip), "ICMP checksum");
                let quote = &l4(&d.ip)[8..];
                let q = ip_fields(quote);
                assert_eq!(
                    (q.src, ports(quote).0),
                    (backend, 8080),
                    "quoted source is the backend's socket"
                );
                let want_dst = if mode == "nat" {
                    (client_ip(v6, i as u32), 40000 + i as u16)
                } else {
                    (node_ip(v6), peer_port)
                };
                assert_eq!(
                    (q.dst, ports(quote).1),
                    want_dst,
                    "quoted destination is the backend's peer"
                );
                assert!(ip_checksum_ok(quote), "quoted IP header checksum");
                assert!(l4_checksum_ok(quote), "quoted TCP checksum");
            }
        }
    }
}

#[test]
fn icmp_errors_reach_the_flows_backend() {
    for mode in MODES {
        icmp_steering(mode, false);
        icmp_steering(mode, true);
    }
}

#[test]
fn malformed_frames_are_dropped_and_counted_by_reason() {
    let dir = scratch("malformed");
    let frames = read_capture(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed.pcap"),
    );
    let run = replay(&dir, &config("nat", false, "tcp", &WEIGHTS, ""), &frames, 1);
    assert!(run.out.is_empty() && run.host.is_empty());
    let mut want: HashMap<&str, u64> = HashMap::new();
    for (reason, _) in fixtures::malformed_frames() {
        *want.entry(reason).or_default() += 1;
    }
    for (reason, count) in run.stats["drops"].as_object().unwrap() {
        assert_eq!(
            count.as_u64().unwrap(),
            want.get(reason.as_str()).copied().unwrap_or(0),
            "drops.{reason}"
        );
    }
    assert_eq!(run.stats["dropped"], frames.len() as u64);
}

/// Traffic the balancer must not forward: wrong port on a VIP, fragments, TTL 1 in NAT, ARP
/// and traffic for other hosts (to the host path).
#[test]
fn classification_of_traffic_that_is_not_forwarded() {
    let dir = scratch("classify");
    let b = builder(false, 1, None);
    let wrong_port = b.frame(&tcp(1234, 443, 0x02, b""));
    let mut fragment = b.frame(&tcp(1234, VIP_PORT, 0x02, b""));
    fragment[20] |= 0x20; // more fragments
    fragment[24] = 0;
    fragment[25] = 0;
    let c = !ones_sum(&[&fragment[14..34]]);
    fragment[24..26].copy_from_slice(&c.to_be_bytes());
    let mut ttl1 = b.clone();
    ttl1.ttl = 1;
    let ttl1 = ttl1.frame(&tcp(1235, VIP_PORT, 0x02, b""));
    // ARP for an address that is not ours (ours are answered: see the next test).
    let arp = fixtures::arp_request(
        packet::MacAddr(GW_MAC),
        "192.0.2.254".parse().unwrap(),
        "192.0.2.200".parse().unwrap(),
    );
    let other = fixtures::FrameBuilder::new(
        packet::MacAddr(GW_MAC),
        packet::MacAddr(NODE_MAC),
        client_ip(false, 1),
        "192.0.2.77".parse().unwrap(),
    )
    .frame(&tcp(5, 22, 0x02, b""));
    let frames: Vec<(u64, Vec<u8>)> = [wrong_port, fragment, ttl1, arp.clone(), other.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, f)| (T0 + i as u64, f))
        .collect();
    let run = replay(&dir, &config("nat", false, "tcp", &WEIGHTS, ""), &frames, 1);
    assert!(run.out.is_empty());
    let d = &run.stats["drops"];
    assert_eq!(
        (
            d["no_service"].as_u64(),
            d["fragment"].as_u64(),
            d["ttl_exceeded"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        run.host.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        vec![arp, other],
        "ARP and other hosts' traffic to the host path, unchanged"
    );
    // Without --host-output the same frames are counted as not ours.
    let run = replay_with(
        &dir,
        &config("nat", false, "tcp", &WEIGHTS, ""),
        &frames,
        1,
        false,
    );
    assert_eq!(run.stats["drops"]["not_ours"], 2);
    assert_eq!(run.stats["to_host"], 0);
}

/// ARP requests for a VIP or the node's address get a reply, and neighbour solicitations
/// for them an advertisement, written by the data path and checked here field by field with
/// the independent checksum; requests for other addresses, gratuitous ARP and duplicate
/// address detection probes are not answered.
#[test]
fn neighbour_requests_for_our_addresses_are_answered() {
    let dir = scratch("neighbour");
    let asker = [2, 0, 0, 0, 0x0a, 0x0b];
    let asker_ip: std::net::Ipv4Addr = "192.0.2.254".parse().unwrap();
    let arp = |target| fixtures::arp_request(packet::MacAddr(asker), asker_ip, target);
    let asker6: std::net::Ipv6Addr = "2001:db8::fe".parse().unwrap();
    let ns = |target| fixtures::neighbour_solicitation(packet::MacAddr(asker), asker6, target);
    let frames: Vec<(u64, Vec<u8>)> = [
        arp(VIP_V4),
        arp(NODE_V4),
        arp("192.0.2.200".parse().unwrap()),
        fixtures::arp_request(packet::MacAddr(asker), VIP_V4, VIP_V4), // gratuitous
        ns(VIP_V6),
        ns(NODE_V6),
        ns("2001:db8::77".parse().unwrap()),
        fixtures::neighbour_solicitation(
            packet::MacAddr(asker),
            std::net::Ipv6Addr::UNSPECIFIED,
            VIP_V6,
        ), // DAD
    ]
    .into_iter()
    .enumerate()
    .map(|(i, f)| (T0 + i as u64, f))
    .collect();
    let mut cfg = config("nat", false, "tcp", &WEIGHTS, "");
    cfg += &format!("\n[[service]]\nname = \"six\"\nvip = \"[{VIP_V6}]:80\"\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n[[service.backend]]\naddress = \"[2001:db8:1::1]:80\"\nmac = \"02:00:00:00:01:01\"\n");
    let run = replay(&dir, &cfg, &frames, 1);
    assert_eq!(run.stats["neighbour_answers"], 4, "{}", run.stats);
    assert_eq!(run.out.len(), 4);
    for (i, (_, f)) in run.out.iter().take(2).enumerate() {
        let want_ip = [VIP_V4, NODE_V4][i].octets();
        assert_eq!(&f[..6], &asker, "to the asker");
        assert_eq!(&f[6..12], &NODE_MAC, "from the node");
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 2], "an ARP reply");
        assert_eq!(&f[22..28], &NODE_MAC, "sender: our MAC");
        assert_eq!(&f[28..32], &want_ip, "sender: the address asked for");
        assert_eq!(&f[32..38], &asker);
        assert_eq!(&f[38..42], &asker_ip.octets());
    }
    for (i, (_, f)) in run.out.iter().skip(2).enumerate() {
        let target = [VIP_V6, NODE_V6][i].octets();
        assert_eq!(
            (&f[..6], &f[6..12], &f[12..14]),
            (&asker[..], &NODE_MAC[..], &[0x86, 0xdd][..])
        );
        let ip = &f[14..];
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]),
            32,
            "payload: advertisement + option"
        );
        assert_eq!((ip[6], ip[7]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(&ip[8..24], &target, "from the target address");
        assert_eq!(&ip[24..40], &asker6.octets(), "to the asker");
        let m = &ip[40..72];
        assert_eq!((m[0], m[1]), (136, 0), "neighbour advertisement");
        assert_eq!(
            &m[4..8],
            &[0x60, 0, 0, 0],
            "solicited, override, not a router"
        );
        assert_eq!(&m[8..24], &target);
        assert_eq!(
            (m[24], m[25], &m[26..32]),
            (2, 1, &NODE_MAC[..]),
            "our link-layer address"
        );
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
        assert_eq!(ones_sum(&[&pseudo, m]), 0xffff, "ICMPv6 checksum verifies");
        assert_eq!(f.len(), 14 + 40 + 32);
    }
}

/// Expiry follows capture time: a UDP flow idle past its timeout is started afresh, one
/// within it is a hit.
#[test]
fn expiry_is_reproducible_from_capture_timestamps() {
    let dir = scratch("expiry");
    let b = builder(false, 3, None);
    let f = b.frame(&udp(5353, VIP_PORT, b"x"));
    let frames = vec![
        (T0, f.clone()),
        (T0 + 61_000_000_000, f.clone()),
        (T0 + 62_000_000_000, f),
    ];
    let short = replay(
        &dir,
        &config(
            "nat",
            false,
            "udp",
            &WEIGHTS,
            "\n[conntrack]\nudp_timeout = 60\n",
        ),
        &frames,
        1,
    );
    let c = &short.stats["conntrack"];
    assert_eq!(
        (
            c["inserts"].as_u64(),
            c["hits"].as_u64(),
            c["restarts"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{c}"
    );
    let long = replay(
        &dir,
        &config(
            "nat",
            false,
            "udp",
            &WEIGHTS,
            "\n[conntrack]\nudp_timeout = 120\n",
        ),
        &frames,
        1,
    );
    let c = &long.stats["conntrack"];
    assert_eq!(
        (c["inserts"].as_u64(), c["hits"].as_u64()),
        (Some(1), Some(2)),
        "{c}"
    );
    assert_eq!(
        short.out, long.out,
        "the same flow goes to the same backend either way"
    );
}

/// The committed captures are exactly what the committed generator makes.
#[test]
fn committed_fixtures_match_their_generator() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = fixtures::sample_capture();
    assert_eq!(
        std::fs::read(root.join("examples/sample.pcap")).unwrap(),
        pcap::to_bytes(sample.iter().map(|(t, f)| (*t, f.as_slice()))),
        "examples/sample.pcap is stale: run `cargo run -p fixtures --bin make-fixtures -- .`"
    );
    let bad = read_capture(&root.join("tests/fixtures/malformed.pcap"));
    let want: Vec<Vec<u8>> = fixtures::malformed_frames()
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        bad.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
        want,
        "tests/fixtures/malformed.pcap is stale"
    );
}

/// Instances behind ECMP must choose alike (the HA issue's first item): the same 40 weighted
/// backends listed in the opposite order send every flow to the same backend, frame for
/// frame; and a flow whose SYN another instance saw — here, its later packets replayed alone
/// through the other listing — goes to the backend the SYN went to.
#[test]
fn instances_listing_backends_in_any_order_choose_alike() {
    let weights: Vec<u32> = (0..40).map(|i| 1 + i % 3).collect();
    let flows = 2000;
    let (frames, _) = tcp_flows(false, flows);
    for mode in ["dsr", "nat", "gue"] {
        let cfg = config(mode, false, "tcp", &weights, "");
        let (head, rest) = cfg.split_once("\n[[service.backend]]").unwrap();
        let mut blocks: Vec<&str> = rest.split("\n[[service.backend]]").collect();
        blocks.reverse();
        let reversed = format!(
            "{head}\n[[service.backend]]{}",
            blocks.join("\n[[service.backend]]")
        );
        assert_ne!(cfg, reversed);
        let a = replay(&scratch(&format!("order-a-{mode}")), &cfg, &frames, 1);
        let b = replay(&scratch(&format!("order-b-{mode}")), &reversed, &frames, 1);
        assert_eq!(a.out.len(), frames.len(), "{mode}: every frame forwarded");
        assert!(a.out == b.out, "{mode}: the same backend for every flow");
        // Every backend got some flows (the comparison is not of one backend's traffic).
        let used: HashSet<Vec<u8>> = a.out.iter().map(|(_, f)| f[..6].to_vec()).collect();
        if mode == "dsr" {
            assert_eq!(used.len(), 40, "{mode}: flows over all backends");
        }
        // The data and FIN packets alone, through the other listing: no SYN seen there.
        let later = &frames[flows as usize..];
        let c = replay(&scratch(&format!("order-c-{mode}")), &reversed, later, 1);
        assert!(
            c.out == a.out[flows as usize..],
            "{mode}: mid-flow packets follow their SYN's backend"
        );
        assert!(
            c.stats["conntrack"]["inserts"].as_u64().unwrap_or(0) >= flows as u64,
            "{mode}: and become tracked: {}",
            c.stats
        );
    }
}

/// Clears DF in an untagged IPv4 frame's header and fixes its checksum.
fn clear_df(frame: &mut [u8]) {
    frame[14 + 6] &= !0x40;
    frame[14 + 10..14 + 12].fill(0);
    let c = !ones_sum(&[&frame[14..34]]);
    frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
}

/// `node.tunnel_fragment`: a tunnel packet without DF that is too big once encapsulated leaves
/// as outer IPv4 fragments, each within the MTU, that put back together are exactly the
/// encapsulated packet; one with DF is still answered with "fragmentation needed".
#[test]
fn tunnels_fragment_packets_without_df_when_configured() {
    for (mode, overhead) in [("ipip", 20usize), ("gue", 32)] {
        let cfg = config(
            mode,
            false,
            "tcp",
            &[1],
            "tunnel_mtu = 1500\ntunnel_fragment = true\n",
        );
        let b = builder(false, 7, None);
        let big = vec![b'c'; 2000];
        let mut no_df = b.frame(&tcp(40000, VIP_PORT, 0x18, &big));
        clear_df(&mut no_df);
        let frames = vec![
            (T0, b.frame(&tcp(40000, VIP_PORT, 0x02, b""))),
            (T0 + 1_000, no_df.clone()),
            (T0 + 2_000, b.frame(&tcp(40000, VIP_PORT, 0x18, &big))),
        ];
        let run = replay(&scratch(&format!("fragment-{mode}")), &cfg, &frames, 1);
        let what = format!("{mode}: {}", run.stats);
        assert_eq!(
            run.stats["drops"]["tunnel_too_big"].as_u64(),
            Some(1),
            "{what}: the DF one"
        );
        let to_backend: Vec<&Vec<u8>> = run
            .out
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f[0..6] == backend_mac(0))
            .collect();
        assert_eq!(to_backend.len(), 3, "{what}: the SYN and two fragments");
        let mut outer = Vec::new();
        let id = &to_backend[1][18..20];
        for (k, f) in to_backend[1..].iter().enumerate() {
            let ip = &f[14..];
            assert!(
                ip.len() <= 1500,
                "{what}: fragment {k} is {} bytes",
                ip.len()
            );
            assert_eq!(ones_sum(&[&ip[..20]]), 0xffff, "{what}: header checksum");
            assert_eq!(&ip[4..6], id, "{what}: one identification");
            let flags = u16::from_be_bytes([ip[6], ip[7]]);
            assert_eq!(flags & 0x2000 != 0, k == 0, "{what}: MF on the first only");
            assert_eq!((flags & 0x1fff) as usize * 8, outer.len(), "{what}: offset");
            outer.extend_from_slice(&ip[20..]);
        }
        // The outer payload: [UDP + GUE, for GUE] then the client's datagram as it came.
        let inner = &outer[overhead - 20..];
        assert_eq!(inner, &no_df[14..], "{what}: reassembled");
    }
}

/// Path MTU through the tunnels (`node.tunnel_mtu`): a packet that would be too large once
/// encapsulated is never sent; with DF (IPv4) or as IPv6, its sender gets "fragmentation
/// needed" / "packet too big" from the VIP, carrying the tunnel MTU less the overhead and
/// quoting the packet; without DF it is dropped; packets that fit are encapsulated. Each one
/// too big is counted as `tunnel_too_big`.
#[test]
fn tunnels_answer_packets_too_big_for_the_path_with_icmp() {
    for (mode, v6, overhead) in [
        ("ipip", false, 20usize),
        ("gue", false, 32),
        ("ipip", true, 40),
        ("gue", true, 52),
    ] {
        let cfg = config(mode, v6, "tcp", &[1], "tunnel_mtu = 1500\n");
        let b = builder(v6, 7, None);
        let ip_hdr = if v6 { 40 } else { 20 };
        // The largest payload that fits, and one byte more.
        let fits = 1500 - overhead - ip_hdr - 20;
        let small = vec![b'a'; fits];
        let big = vec![b'b'; fits + 1];
        let mut no_df = b.frame(&tcp(40000, VIP_PORT, 0x18, &big));
        if !v6 {
            clear_df(&mut no_df);
        }
        let frames = vec![
            (T0, b.frame(&tcp(40000, VIP_PORT, 0x02, b""))),
            (T0 + 1_000, b.frame(&tcp(40000, VIP_PORT, 0x18, &small))),
            (T0 + 2_000, b.frame(&tcp(40000, VIP_PORT, 0x18, &big))),
            (T0 + 3_000, no_df),
        ];
        let run = replay(&scratch(&format!("too-big-{mode}-{v6}")), &cfg, &frames, 1);
        let what = format!("{mode} v6={v6}");
        let too_big = run.stats["drops"]["tunnel_too_big"].as_u64();
        // Both big packets: with DF (answered) and without (IPv4: dropped; IPv6: answered).
        assert_eq!(too_big, Some(2), "{what}: {}", run.stats);
        // SYN and the packet that fits go to the backend, encapsulated: at most 1500 bytes.
        let to_backend: Vec<&Vec<u8>> = run
            .out
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f[0..6] == backend_mac(0))
            .collect();
        assert_eq!(to_backend.len(), 2, "{what}");
        assert_eq!(
            to_backend[1].len() - 14,
            1500,
            "{what}: the largest that fits"
        );
        // The rest: one ICMP error to the client (IPv6's second too-big packet gets one too).
        let errors: Vec<&Vec<u8>> = run
            .out
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f[0..6] == GW_MAC)
            .collect();
        assert_eq!(errors.len(), if v6 { 2 } else { 1 }, "{what}");
        let e = errors[0];
        assert_eq!(e[6..12], NODE_MAC, "{what}: from the node");
        let want_mtu = (1500 - overhead) as u32;
        if v6 {
            assert_eq!(&e[12..14], &[0x86, 0xdd]);
            let ip = &e[14..];
            assert_eq!(ip[6], 58, "ICMPv6");
            assert_eq!(
                &ip[8..24],
                &vip(true)
                    .to_string()
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
            );
            let icmp = &ip[40..];
            assert_eq!((icmp[0], icmp[1]), (2, 0), "{what}: packet too big");
            assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), want_mtu);
            assert!(ip.len() <= 1280, "{what}: within the minimum MTU");
            // Quotes the offending packet from its start.
            let sent = &frames[2].1[14..];
            assert_eq!(&icmp[8..], &sent[..icmp.len() - 8], "{what}");
            let len = (ip.len() - 40) as u32;
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[8..40]);
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            assert_eq!(
                ones_sum(&[&pseudo, icmp]),
                0xffff,
                "{what}: ICMPv6 checksum"
            );
        } else {
            assert_eq!(&e[12..14], &[0x08, 0x00]);
            let ip = &e[14..];
            assert_eq!(
                ones_sum(&[&ip[..20]]),
                0xffff,
                "{what}: IPv4 header checksum"
            );
            assert_eq!(ip[9], 1, "ICMP");
            assert_eq!(
                IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()),
                vip(false)
            );
            assert_eq!(
                IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()),
                client_ip(false, 7)
            );
            let icmp = &ip[20..];
            assert_eq!((icmp[0], icmp[1]), (3, 4), "{what}: fragmentation needed");
            assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]) as u32, want_mtu);
            assert!(ip.len() <= 576, "{what}: within 576 bytes");
            assert_eq!(ones_sum(&[icmp]), 0xffff, "{what}: ICMP checksum");
            let sent = &frames[2].1[14..];
            assert_eq!(
                &icmp[8..],
                &sent[..icmp.len() - 8],
                "{what}: quotes the packet"
            );
        }
    }
    // Without tunnel_mtu nothing is checked: the large packet is encapsulated.
    let cfg = config("ipip", false, "tcp", &[1], "");
    let b = builder(false, 7, None);
    let frames = vec![
        (T0, b.frame(&tcp(40000, VIP_PORT, 0x02, b""))),
        (
            T0 + 1_000,
            b.frame(&tcp(40000, VIP_PORT, 0x18, &[b'c'; 1460])),
        ),
    ];
    let run = replay(&scratch("too-big-unchecked"), &cfg, &frames, 1);
    assert_eq!(run.out.len(), 2);
    assert_eq!(run.out[1].1.len() - 14, 1520);
}

/// A flood of SYNs from 20,000 spoofed sources into a 1,000-flow table that holds 200
/// established flows: the flood lives in the half-open share and evicts itself; no
/// established flow is evicted, and each one's packets after the flood are conntrack hits
/// going to the backend they had.
#[test]
fn a_syn_flood_cannot_evict_established_flows() {
    let cfg = config(
        "nat",
        false,
        "tcp",
        &[1, 1, 1],
        "\n[conntrack]\ncapacity = 1000\nhalf_open_percent = 20\n",
    );
    let mut frames = Vec::new();
    let mut t = T0;
    let mut next = || {
        t += 1_000;
        t
    };
    let established = 200u32;
    for i in 0..established {
        let b = builder(false, i, None);
        frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x02, b""))));
        frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x10, b""))));
    }
    for i in 0..20_000u32 {
        let b = builder(false, 10_000 + i, None);
        frames.push((
            next(),
            b.frame(&tcp(30000 + (i % 1000) as u16, VIP_PORT, 0x02, b"")),
        ));
    }
    for i in 0..established {
        let b = builder(false, i, None);
        frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x18, b"after"))));
    }
    let run = replay(&scratch("syn-flood"), &cfg, &frames, 1);
    let c = &run.stats["conntrack"];
    assert_eq!(c["evictions"], 0, "no established flow evicted: {c}");
    assert!(c["half_open_evictions"].as_u64().unwrap() >= 19_000, "{c}");
    // Each established flow's packets went to one backend, before and after the flood.
    let mut by_client: std::collections::HashMap<[u8; 4], std::collections::HashSet<[u8; 6]>> =
        Default::default();
    for (_, f) in &run.out {
        let src: [u8; 4] = f[26..30].try_into().unwrap();
        if u32::from_be_bytes(src) < u32::from_be_bytes(client_ip_v4(10_000)) {
            by_client
                .entry(src)
                .or_default()
                .insert(f[0..6].try_into().unwrap());
        }
    }
    assert_eq!(by_client.len(), established as usize);
    assert!(
        by_client.values().all(|b| b.len() == 1),
        "a flow changed backend"
    );
    // Hits: each established flow's ACK and its packet after the flood (a flow evicted by
    // the flood would miss there).
    assert!(c["hits"].as_u64().unwrap() >= 2 * established as u64, "{c}");
}

fn client_ip_v4(i: u32) -> [u8; 4] {
    match client_ip(false, i) {
        std::net::IpAddr::V4(a) => a.octets(),
        _ => unreachable!(),
    }
}
