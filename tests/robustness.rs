//! The hot path never panics on any input: every frame of the 398 real captures in
//! `../shared/corpus/tcpdump-ether/` (BSD-licensed, from tcpdump's test suite) and hundreds of
//! thousands of random and mutated frames go through the parser and through a worker in every
//! forwarding mode; and every corpus capture is replayed by the `sluice` binary.

mod common;

use common::*;
use config::Config;
use dataplane::port::PacketBuf;
use dataplane::{Frame, Steering, Verdict, Worker};
use fixtures::{FrameBuilder, Rng, Transport};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

const MODES: [&str; 5] = ["nat", "snat", "dsr", "ipip", "gue"];

fn corpus_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tcpdump-ether");
    assert!(
        d.is_dir(),
        "the capture corpus is missing at {}: CI runs with shared/ beside the clone",
        d.display()
    );
    d
}

fn corpus_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    v
}

fn fmt(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}:{p}"),
        IpAddr::V6(v) => format!("[{v}]:{p}"),
    }
}

/// A config in `mode` whose VIPs are destinations seen in `tuples`, whose backends are the
/// sources seen (so replies in the corpus hit the reverse path too), and whose node addresses
/// are addresses seen.
fn config_for(mode: &str, tuples: &[packet::FlowKey]) -> Config {
    let v4 = tuples
        .iter()
        .find(|k| k.dst.is_ipv4())
        .map(|k| k.dst.to_string())
        .unwrap_or("192.0.2.1".into());
    let v6 = tuples
        .iter()
        .find(|k| k.dst.is_ipv6())
        .map(|k| k.dst.to_string())
        .unwrap_or("2001:db8::1".into());
    let mut t = format!("[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"{v4}\"\nipv6 = \"{v6}\"\ngateway_mac = \"02:00:00:00:00:fe\"\n[conntrack]\ncapacity = 512\n");
    let mut vips = HashSet::new();
    for (i, k) in tuples.iter().enumerate() {
        if k.dst_port == 0
            || k.src_port == 0
            || !vips.insert((k.dst, k.dst_port, k.proto))
            || k.src == k.dst
        {
            continue;
        }
        let proto = if k.proto == 6 { "tcp" } else { "udp" };
        let (bport, bsrc) = if mode == "nat" || mode == "snat" {
            (k.src_port, k.src)
        } else {
            (k.dst_port, k.src)
        };
        t += &format!("[[service]]\nname = \"s{i}\"\nvip = \"{}\"\nprotocol = \"{proto}\"\nforwarding = \"{mode}\"\ntable_size = 251\n", fmt(k.dst, k.dst_port));
        t += &format!(
            "[[service.backend]]\naddress = \"{}\"\nmac = \"02:00:00:00:01:01\"\n",
            fmt(bsrc, bport)
        );
    }
    Config::from_toml(&t, None).unwrap_or_else(|e| panic!("{e}\n{t}"))
}

fn workers_for(tuples: &[packet::FlowKey]) -> Vec<Worker> {
    MODES
        .iter()
        .map(|m| {
            let c = config_for(m, tuples);
            Worker::new(
                0,
                Steering::new(1, c.node.snat_ports),
                Arc::new(controlplane::snapshot::build(&c).unwrap()),
                true,
            )
        })
        .collect()
}

/// Runs one frame through every worker; returns how many transmitted it.
fn exercise(workers: &mut [Worker], buf: &mut PacketBuf, frame: &[u8], now: u64) -> usize {
    let _ = packet::parse_frame(frame).map(|p| packet::parse::parse_quoted(frame, &p));
    let mut sent = 0;
    for w in workers.iter_mut() {
        if !buf.load(frame, now, 0) {
            return 0;
        }
        if w.process(buf, now) == Verdict::Transmit {
            sent += 1;
            // Whatever we transmit must itself parse.
            assert!(
                packet::parse_frame(buf.data()).is_ok(),
                "transmitted an unparseable frame from input {frame:02x?}"
            );
        }
    }
    sent
}

#[test]
fn every_corpus_frame_goes_through_parse_and_every_mode() {
    let files = corpus_files();
    assert_eq!(files.len(), 398, "expected the 398 captures of the corpus");
    let mut frames = Vec::new();
    for f in &files {
        let recs = pcap::read_all(std::fs::File::open(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        frames.extend(recs);
    }
    let mut tuples = Vec::new();
    let mut seen = HashSet::new();
    for (_, f) in &frames {
        if let Ok(p) = packet::parse_frame(f) {
            if p.is_ip()
                && !p.fragment
                && (p.proto == 6 || p.proto == 17)
                && seen.insert((p.dst, p.dst_port, p.proto))
                && tuples.len() < 200
            {
                tuples.push(p.flow_key());
            }
        }
    }
    let mut workers = workers_for(&tuples);
    let mut buf = PacketBuf::new();
    let mut parsed = 0;
    let mut sent = 0;
    for (i, (ts, f)) in frames.iter().enumerate() {
        parsed += packet::parse_frame(f).is_ok() as usize;
        sent += exercise(&mut workers, &mut buf, f, *ts + i as u64);
    }
    eprintln!(
        "corpus: {} frames from {} files, {parsed} parsed, {sent} forwards across 5 modes",
        frames.len(),
        files.len()
    );
    assert!(
        frames.len() > 7_000,
        "read only {} corpus frames",
        frames.len()
    );
    assert!(
        sent > 1000,
        "the corpus configs must exercise the forwarding paths ({sent} forwards)"
    );
}

#[test]
fn every_corpus_capture_replays_through_the_binary() {
    let dir = scratch("corpus-replay");
    let cfg = dir.join("sluice.toml");
    std::fs::write(&cfg, config("nat", false, "tcp", &[1, 1], "")).unwrap();
    let mut ok = 0;
    for f in corpus_files() {
        let o = sluice(&[
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--input",
            f.to_str().unwrap(),
            "--output",
            dir.join("o.pcap").to_str().unwrap(),
            "--host-output",
            dir.join("h.pcap").to_str().unwrap(),
            "--workers",
            "2",
            "-q",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{}: {err}", f.display());
        assert!(o.status.success(), "{}: {err}", f.display());
        let frames = pcap::read_all(std::fs::File::open(&f).unwrap())
            .unwrap()
            .len();
        let host = read_capture(&dir.join("h.pcap")).len();
        assert!(host + read_capture(&dir.join("o.pcap")).len() <= frames);
        ok += 1;
    }
    assert_eq!(ok, 398);
}

/// Valid frames of every kind the data path handles, addressed to the test VIPs.
fn seed_frames() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        for vlan in [None, Some(7)] {
            let mut b = builder(v6, 1, vlan);
            if !v6 {
                b.ipv4_options = vec![0x94, 4, 0, 0];
            }
            v.push(b.frame(&tcp(40000, VIP_PORT, 0x02, b"")));
            v.push(b.frame(&tcp(40000, VIP_PORT, 0x18, b"GET / HTTP/1.1\r\n\r\n")));
            v.push(b.frame(&udp(40001, VIP_PORT, b"query")));
            let quote = FrameBuilder::new(
                packet::MacAddr(NODE_MAC),
                packet::MacAddr(GW_MAC),
                vip(v6),
                client_ip(v6, 1),
            )
            .datagram(&tcp(VIP_PORT, 40000, 0x12, b"abcdefgh"));
            let t = if v6 {
                Transport::Icmp {
                    msg_type: 2,
                    code: 0,
                    rest: [0, 0, 5, 0],
                    payload: &quote,
                }
            } else {
                Transport::Icmp {
                    msg_type: 3,
                    code: 4,
                    rest: [0, 0, 5, 0],
                    payload: &quote,
                }
            };
            v.push(
                FrameBuilder::new(
                    packet::MacAddr(GW_MAC),
                    packet::MacAddr(NODE_MAC),
                    client_ip(v6, 9),
                    vip(v6),
                )
                .frame(&t),
            );
            // replies from a backend and to the node's SNAT range
            v.push(
                FrameBuilder::new(
                    packet::MacAddr(backend_mac(0)),
                    packet::MacAddr(NODE_MAC),
                    backend_ip(v6, 0),
                    client_ip(v6, 1),
                )
                .frame(&tcp(8080, 40000, 0x12, b"")),
            );
            v.push(
                FrameBuilder::new(
                    packet::MacAddr(backend_mac(0)),
                    packet::MacAddr(NODE_MAC),
                    backend_ip(v6, 0),
                    node_ip(v6),
                )
                .frame(&tcp(8080, 1024, 0x12, b"")),
            );
        }
    }
    v
}

fn test_workers() -> Vec<Worker> {
    MODES
        .iter()
        .map(|m| {
            let mut t = config(m, false, "tcp", &[1, 2], "");
            // The same mode for TCP and UDP, IPv4 and IPv6.
            let v6 = config(m, true, "tcp", &[1, 2], "");
            let v6 = &v6[v6.find("[[service]]").unwrap()..];
            t += &v6.replace("name = \"svc\"", "name = \"svc6\"");
            let u = config(m, false, "udp", &[1], "");
            t += &u[u.find("[[service]]").unwrap()..].replace("name = \"svc\"", "name = \"svcu\"");
            let c = Config::from_toml(&t, None).unwrap_or_else(|e| panic!("{e}\n{t}"));
            Worker::new(
                0,
                Steering::new(1, c.node.snat_ports),
                Arc::new(controlplane::snapshot::build(&c).unwrap()),
                true,
            )
        })
        .collect()
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let seeds = seed_frames();
    let mut workers = test_workers();
    let mut buf = PacketBuf::new();
    let mut rng = Rng::new(0x5eed_f00d);
    // Establish flows first so mutated ICMP errors and replies find state to act on.
    for s in &seeds {
        exercise(&mut workers, &mut buf, s, 1);
    }
    let mut sent = 0;
    let mut frame = Vec::with_capacity(2048);
    for i in 0..300_000u64 {
        frame.clear();
        if i % 10 == 0 {
            let len = rng.below(200) as usize;
            frame.extend((0..len).map(|_| rng.next_u64() as u8));
        } else {
            frame.extend_from_slice(&seeds[rng.below(seeds.len() as u64) as usize]);
            for _ in 0..1 + rng.below(4) {
                match rng.below(5) {
                    0 if !frame.is_empty() => {
                        let n = rng.below(frame.len() as u64) as usize;
                        frame.truncate(n);
                    }
                    1 => frame.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
                    2 if !frame.is_empty() => {
                        let at = rng.below(frame.len() as u64) as usize;
                        frame[at] = [0, 0xff, 0x80, 0x01][rng.below(4) as usize];
                    }
                    _ if !frame.is_empty() => {
                        let at = rng.below(frame.len() as u64) as usize;
                        frame[at] ^= 1 << rng.below(8);
                    }
                    _ => {}
                }
            }
        }
        sent += exercise(&mut workers, &mut buf, &frame, 2 + i * 1000);
    }
    eprintln!("random/mutated: 300000 frames, {sent} forwards across 5 modes");
    assert!(
        sent > 10_000,
        "mutations should still leave many forwardable frames ({sent})"
    );
}

/// The same random and mutated frames, 32 to a burst, through `Worker::poll` (the burst
/// pipeline: parse and hash stage, bucket and slot prefetch stage, per-frame stage, sweep):
/// no panic, every transmitted frame parses, and every frame received is accounted for as
/// sent, given to the host, or dropped by reason.
#[test]
fn random_and_mutated_bursts_never_panic_in_the_poll_pipeline() {
    use dataplane::{Bursts, MemPort, Rings};
    let seeds = seed_frames();
    let mut workers = test_workers();
    let mut ports: Vec<MemPort> = workers.iter().map(|_| MemPort::new(true)).collect();
    let mut bursts: Vec<Bursts<PacketBuf>> = workers.iter().map(|_| Bursts::new()).collect();
    let rings: Rings<PacketBuf> = Rings::new(1, 64);
    let mut rng = Rng::new(0xb0a5_7ed5);
    let mut frame = Vec::with_capacity(2048);
    let (mut sent, mut seen) = (0u64, 0u64);
    for round in 0..3_000u64 {
        for _ in 0..32 {
            frame.clear();
            if rng.below(10) == 0 {
                let len = rng.below(200) as usize;
                frame.extend((0..len).map(|_| rng.next_u64() as u8));
            } else {
                frame.extend_from_slice(&seeds[rng.below(seeds.len() as u64) as usize]);
                for _ in 0..rng.below(3) {
                    if frame.is_empty() {
                        break;
                    }
                    match rng.below(3) {
                        0 => {
                            let n = rng.below(frame.len() as u64) as usize;
                            frame.truncate(n);
                        }
                        _ => {
                            let at = rng.below(frame.len() as u64) as usize;
                            frame[at] ^= 1 << rng.below(8);
                        }
                    }
                }
            }
            for p in ports.iter_mut() {
                p.inject(&frame, 0, 0);
            }
        }
        for ((w, p), b) in workers.iter_mut().zip(&mut ports).zip(&mut bursts) {
            p.clock = Some(1_000_000_000 + round * 1_000_000);
            while !p.rx.is_empty() {
                w.poll(p, b, &rings);
            }
            for f in p.tx.drain(..) {
                assert!(
                    packet::parse_frame(f.data()).is_ok(),
                    "transmitted an unparseable frame"
                );
                sent += 1;
            }
            p.host.clear();
        }
        seen += 32;
    }
    for w in &workers {
        let s = &w.stats;
        assert_eq!(
            s.packets_in,
            s.packets_out + s.to_host + s.total_drops(),
            "every frame is sent, given to the host or dropped by reason"
        );
        assert_eq!(s.packets_in, seen);
    }
    assert!(
        sent > 5_000,
        "mutations should leave many forwardable frames ({sent})"
    );
}
