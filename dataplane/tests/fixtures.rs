//! The byte-exact fixture table: for every forwarding mode over IPv4 and IPv6, an input
//! frame, the verdict it must get, and the exact frame that must leave (tests/fixtures/
//! table.txt, computed by tests/fixtures/make_table.py from the RFCs with code that shares
//! nothing with sluice's). Fields the other tests do not pin are here: outer DSCP/ECN,
//! IPv6 traffic class and flow label, the outer IPv4 ID and DF bit, the GUE source port,
//! TTL rules per mode, padding trimmed before encapsulation and kept by translation.
//!
//! Each case goes through `Worker::poll` (the burst pipeline) and through `Worker::process`,
//! which must agree.

use dataplane::setup::{Forwarding, NodeSetup, ServiceSetup, Setup};
use dataplane::{Bursts, DropReason, Frame, MemPort, PacketBuf, Rings, Snapshot, Steering};
use dataplane::{Verdict, Worker};
use packet::MacAddr;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

const TABLE: &str = include_str!("fixtures/table.txt");

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The set-up make_table.py describes, for one mode and family.
fn setup(mode: &str, v6: bool) -> Setup {
    let mut node = NodeSetup::new(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 0xfe]));
    node.ipv4 = Some("192.0.2.1".parse().unwrap());
    node.ipv6 = Some("2001:db8::1".parse().unwrap());
    node.snat_ports = (1024, 32767);
    let (forwarding, port) = match mode {
        "nat" => (Forwarding::Nat, 8080),
        "snat" => (Forwarding::Snat, 8080),
        "dsr" => (Forwarding::Dsr, 80),
        "ipip" => (Forwarding::Ipip, 80),
        "gue" => (Forwarding::Gue, 80),
        other => panic!("unknown mode {other}"),
    };
    let (vip, backend): (IpAddr, IpAddr) = if v6 {
        (
            "2001:db8:100::10".parse().unwrap(),
            "2001:db8:1::1".parse().unwrap(),
        )
    } else {
        (
            "198.51.100.10".parse().unwrap(),
            "10.1.0.1".parse().unwrap(),
        )
    };
    let mut svc = ServiceSetup::new(
        "web",
        SocketAddr::new(vip, 80),
        packet::ipv4::PROTO_TCP,
        forwarding,
    )
    .backend(
        SocketAddr::new(backend, port),
        Some(MacAddr([2, 0, 0, 0, 1, 1])),
    );
    svc.table_size = 251;
    Setup::new(node).service(svc)
}

fn verdict_name(v: Verdict) -> String {
    match v {
        Verdict::Transmit => "transmit".into(),
        Verdict::ToHost => "host".into(),
        Verdict::Drop(r) => format!("drop:{}", r.name()),
        Verdict::Handoff(w) => format!("handoff:{w}"),
        Verdict::Offload(s) => format!("offload:{s}"),
        Verdict::Fragment(m) => format!("fragment:{m}"),
    }
}

struct Case {
    name: String,
    mode: String,
    v6: bool,
    verdict: String,
    input: Vec<u8>,
    expected: Option<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "table line: {l}");
            Case {
                name: f[0].into(),
                mode: f[1].into(),
                v6: f[2] == "v6",
                verdict: f[3].into(),
                input: hex(f[4]),
                expected: (f[5] != "-").then(|| hex(f[5])),
            }
        })
        .collect()
}

/// The first byte at which two frames differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("byte {i}: got {:#04x}, want {:#04x}", a[i], b[i]),
        None => format!("lengths differ: got {}, want {}", a.len(), b.len()),
    }
}

#[test]
fn every_fixture_gets_its_verdict_and_its_exact_output_through_poll_and_process() {
    let all = cases();
    assert_eq!(all.len(), 20, "the table lost cases");
    for mode in ["nat", "snat", "dsr", "ipip", "gue"] {
        for v6 in [false, true] {
            assert!(
                all.iter().any(|c| c.mode == mode && c.v6 == v6),
                "no fixture for {mode} over IPv{}",
                if v6 { 6 } else { 4 }
            );
        }
    }
    for c in &all {
        let snap = Arc::new(Snapshot::build(&setup(&c.mode, c.v6)).unwrap());
        // Through the burst pipeline.
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&snap), false);
        let mut port = MemPort::new(false);
        port.clock = Some(1_000_000_000);
        assert!(port.inject(&c.input, 0, 0));
        let rings: Rings<PacketBuf> = Rings::new(1, 8);
        w.poll(&mut port, &mut Bursts::new(), &rings);
        match &c.expected {
            Some(want) => {
                assert_eq!(port.tx.len(), 1, "{}: one frame sent", c.name);
                let got = port.tx[0].data();
                assert!(
                    got == &want[..],
                    "{}: {}\n got  {}\n want {}",
                    c.name,
                    first_difference(got, want),
                    hexs(got),
                    hexs(want)
                );
            }
            None => {
                assert!(port.tx.is_empty(), "{}: nothing sent", c.name);
                let reason = c.verdict.strip_prefix("drop:").expect("a drop verdict");
                let counted: Vec<&str> = DropReason::all()
                    .filter(|r| w.stats.dropped(*r) > 0)
                    .map(|r| r.name())
                    .collect();
                assert_eq!(
                    counted,
                    [reason],
                    "{}: dropped and counted by reason",
                    c.name
                );
            }
        }
        // One frame at a time: the same verdict and bytes.
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), snap, false);
        let mut f = PacketBuf::new();
        assert!(f.load(&c.input, 0, 0));
        assert_eq!(verdict_name(w.process(&mut f, 1)), c.verdict, "{}", c.name);
        if let Some(want) = &c.expected {
            assert!(f.data() == &want[..], "{}: process and poll agree", c.name);
        }
    }
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The committed table is what its generator writes (run `python3
/// dataplane/tests/fixtures/make_table.py` after changing it).
#[test]
fn the_committed_table_matches_its_generator() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_table.py");
    match std::process::Command::new("python3")
        .arg(script)
        .arg("--check")
        .status()
    {
        Ok(s) => assert!(
            s.success(),
            "tests/fixtures/table.txt is stale: run python3 {script}"
        ),
        Err(e) => panic!(
            "python3 is needed to check the fixture table ({e}); scripts/test.sh installs it"
        ),
    }
}
