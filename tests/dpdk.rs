//! `sluice run` on DPDK virtual devices. Every scenario is its own `sluice` process with its
//! own EAL (DPDK initialises the EAL once per process), in `--in-memory` mode so nothing is
//! left in /var/run/dpdk. Hugepages come from scripts/test.sh, which reserves and mounts them.
//!
//! - `net_pcap` with one RX file per queue (the capture split by the same RSS rule a NIC
//!   applies) gives, queue by queue and frame by frame, the output `sluice replay` gives.
//! - A 30 s soak from `net_pcap,infinite_rx=1` to `net_null` accounts for every packet and
//!   returns the buffer pool to its baseline.
//! - Bad ports, EAL arguments and cores fail with messages that say what to fix; SIGTERM stops
//!   the daemon cleanly with final counters.

mod common;

use common::*;
use dataplane::Steering;
use std::path::Path;
use std::process::{Command, Stdio};

fn dataplane_section(cores: &[usize], eal: &[String], port: &str, tx_port: Option<&str>) -> String {
    let eal: Vec<String> = ["--in-memory", "--no-pci", "--log-level=lib.eal:error"]
        .iter()
        .map(|s| format!("{s:?}"))
        .chain(eal.iter().map(|s| format!("{s:?}")))
        .collect();
    let mut s = format!("\n[dataplane]\ndriver = \"dpdk\"\ncores = {cores:?}\n\n[dataplane.dpdk]\neal_args = [{}]\nport = \"{port}\"\nmbufs = 8191\n", eal.join(", "));
    if let Some(t) = tx_port {
        s += &format!("tx_port = \"{t}\"\n");
    }
    // Each daemon its own control socket: the tests run side by side.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    s + &format!(
        "\n[control]\nsocket = \"/tmp/sluice-dpdk-test-{}-{n}.sock\"\n",
        std::process::id()
    )
}

fn run_daemon(
    dir: &Path,
    cfg_text: &str,
    args: &[&str],
) -> (std::process::Output, Option<serde_json::Value>) {
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let stats = dir.join("run.json");
    let _ = std::fs::remove_file(&stats);
    let mut a = vec![
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--stats",
        stats.to_str().unwrap(),
        "-q",
    ];
    a.extend_from_slice(args);
    let o = sluice(&a);
    let s = std::fs::read(&stats)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (o, s)
}

/// Replays `frames` with `workers` workers through the pcap driver and through DPDK
/// `net_pcap` (one RX file per queue, split by the RSS rule), and checks that each queue's
/// output is exactly the replay output of the frames that queue received, in order.
fn dpdk_matches_replay(name: &str, cfg: &str, frames: &[(u64, Vec<u8>)], workers: usize) {
    let dir = scratch(&format!("dpdk-{name}-{workers}"));
    let replayed = replay(&dir, cfg, frames, workers);
    assert_eq!(
        replayed.out.len(),
        frames.len(),
        "every test frame is forwarded by replay"
    );
    let steer = Steering::new(workers, SNAT_PORTS);
    let queue_of: Vec<usize> = frames
        .iter()
        .map(|(_, f)| steer.queue_for_frame(f))
        .collect();
    let mut vdev = String::from("net_pcap0");
    for q in 0..workers {
        let part: Vec<(u64, Vec<u8>)> = frames
            .iter()
            .zip(&queue_of)
            .filter(|(_, k)| **k == q)
            .map(|(f, _)| f.clone())
            .collect();
        write_capture(&dir.join(format!("q{q}.pcap")), &part);
        vdev += &format!(",rx_pcap={}", dir.join(format!("q{q}.pcap")).display());
    }
    for q in 0..workers {
        vdev += &format!(",tx_pcap={}", dir.join(format!("o{q}.pcap")).display());
    }
    let cores: Vec<usize> = (0..workers).collect();
    let text = format!(
        "{cfg}{}",
        dataplane_section(&cores, &["--vdev".into(), vdev], "net_pcap0", None)
    );
    let (o, stats) = run_daemon(&dir, &text, &["--idle-exit", "0.5", "--duration", "30"]);
    assert!(
        o.status.success(),
        "sluice run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stats = stats.expect("stats written");
    assert_eq!(stats["port"]["rx_packets"], frames.len() as u64, "{stats}");
    // net_pcap offers no checksum offload either way, and the report says so.
    assert_eq!(
        stats["port"]["tx_checksum_offloads"],
        serde_json::json!([]),
        "{stats}"
    );
    assert_eq!(
        stats["port"]["rx_checksum_offloads"],
        serde_json::json!([]),
        "{stats}"
    );
    assert_eq!(
        stats["mempool"]["in_use_at_end"], stats["mempool"]["in_use_at_start"],
        "no mbuf leaked"
    );
    for q in 0..workers {
        let got: Vec<Vec<u8>> = read_capture(&dir.join(format!("o{q}.pcap")))
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        let want: Vec<Vec<u8>> = replayed
            .out
            .iter()
            .zip(&queue_of)
            .filter(|(_, k)| **k == q)
            .map(|((_, f), _)| f.clone())
            .collect();
        assert!(
            !want.is_empty() || workers == 1,
            "queue {q} got no frames: the test must spread flows"
        );
        assert_eq!(got.len(), want.len(), "{name}: queue {q} frame count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{name}: queue {q} frame {i} differs from replay");
        }
    }
}

fn mode_on_dpdk(mode: &str) {
    for (v6, workers) in [(false, 1), (false, 2), (true, 2)] {
        let (frames, _) = tcp_flows(v6, 40);
        let cfg = config(mode, v6, "tcp", &[1, 1, 2], "");
        dpdk_matches_replay(
            &format!("{mode}-{}", if v6 { "v6" } else { "v4" }),
            &cfg,
            &frames,
            workers,
        );
    }
}

#[test]
fn nat_on_dpdk_matches_replay() {
    mode_on_dpdk("nat");
}
#[test]
fn snat_on_dpdk_matches_replay() {
    mode_on_dpdk("snat");
}
#[test]
fn dsr_on_dpdk_matches_replay() {
    mode_on_dpdk("dsr");
}
#[test]
fn ipip_on_dpdk_matches_replay() {
    mode_on_dpdk("ipip");
}
#[test]
fn gue_on_dpdk_matches_replay() {
    mode_on_dpdk("gue");
}

/// NAT replies are reverse-translated on DPDK too (one worker: a reply and its flow share the
/// queue, so the order of the file is the order of events).
#[test]
fn nat_replies_on_dpdk_match_replay() {
    let cfg = config("nat", false, "tcp", &[1, 1, 2], "");
    let dir = scratch("dpdk-replies-learn");
    let syns: Vec<(u64, Vec<u8>)> = (0..30u32)
        .map(|i| {
            (
                T0 + i as u64,
                builder(false, i, None).frame(&tcp(41000 + i as u16, VIP_PORT, 0x02, b"")),
            )
        })
        .collect();
    let learned = replay(&dir, &cfg, &syns, 1);
    let mut frames = syns.clone();
    for (i, (_, f)) in learned.out.iter().enumerate() {
        let d = decode(f);
        let backend = ip_fields(&d.ip).dst;
        let fb = fixtures::FrameBuilder::new(
            packet::MacAddr(d.dst_mac),
            packet::MacAddr(NODE_MAC),
            backend,
            client_ip(false, i as u32),
        );
        frames.push((
            T0 + 1000 + i as u64,
            fb.frame(&tcp(8080, 41000 + i as u16, 0x12, b"ok")),
        ));
    }
    dpdk_matches_replay("nat-replies", &cfg, &frames, 1);
}

/// 30 s of `net_pcap,infinite_rx=1` -> `net_null` on one core: every packet received is sent
/// or dropped with a reason, the TX device took every packet sent, and the buffer pool's use
/// returns to its baseline.
#[test]
fn soak_accounts_for_every_packet_and_leaks_no_mbuf() {
    let dir = scratch("dpdk-soak");
    let input = dir.join("flows.pcap");
    let mut frames = fixtures::bench_capture(5000, 2);
    // Some frames that must be dropped, so the accounting covers drops too.
    frames.extend(
        fixtures::malformed_frames()
            .into_iter()
            .map(|(_, f)| (T0, f)),
    );
    write_capture(&input, &frames);
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sluice.toml"))
        .unwrap();
    let eal = [
        "--vdev".to_string(),
        format!("net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
        "--vdev".into(),
        "net_null0".into(),
    ];
    // infinite_rx preloads the whole capture into mbufs: the pool must hold it and the queues.
    let text = format!(
        "{cfg}{}",
        dataplane_section(&[1], &eal, "net_pcap0", Some("net_null0"))
            .replace("mbufs = 8191", "mbufs = 32767")
    );
    let (o, stats) = run_daemon(&dir, &text, &["--duration", "30"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = stats.unwrap();
    let n = |k: &str| s[k].as_u64().unwrap();
    let received = s["port"]["rx_packets"].as_u64().unwrap();
    eprintln!(
        "soak: {received} packets in {:.1} s, {:.0} packets/s",
        s["elapsed_seconds"], s["packets_per_second"]
    );
    assert!(
        received > 1_000_000,
        "the soak moved only {received} packets"
    );
    assert_eq!(
        n("packets_in"),
        received,
        "the workers saw every packet the port received"
    );
    assert_eq!(
        n("packets_in"),
        n("packets_out") + n("to_host") + n("dropped"),
        "every packet is sent or dropped with a reason: {s}"
    );
    assert_eq!(
        s["tx_port"]["tx_packets"].as_u64().unwrap(),
        n("packets_out"),
        "net_null took every packet sent"
    );
    assert!(
        n("dropped") > 0 && s["drops"]["ipv4_bad_checksum"].as_u64().unwrap() > 0,
        "malformed frames were dropped by reason"
    );
    assert_eq!(
        s["mempool"]["in_use_at_end"], s["mempool"]["in_use_at_start"],
        "mbufs returned to the pool"
    );
    assert_eq!(
        s["mempool"]["in_use_after_close"], 0,
        "closing the ports gave back every buffer the devices held"
    );
}

#[test]
fn configuration_and_eal_errors_say_what_to_fix() {
    let dir = scratch("dpdk-errors");
    let base = config("nat", false, "tcp", &[1], "");
    // No [dataplane] section.
    let (o, _) = run_daemon(&dir, &base, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a [dataplane] section"));
    // A port that does not exist: the message lists the ones that do.
    let (o, _) = run_daemon(
        &dir,
        &format!(
            "{base}{}",
            dataplane_section(
                &[0],
                &["--vdev".into(), "net_null0".into()],
                "net_pcap7",
                None
            )
        ),
        &[],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("no DPDK port named `net_pcap7`") && e.contains("net_null0"),
        "{e}"
    );
    // An EAL argument DPDK rejects.
    let (o, _) = run_daemon(
        &dir,
        &format!(
            "{base}{}",
            dataplane_section(&[0], &["--no-such-eal-flag".into()], "net_null0", None)
        ),
        &[],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("EAL initialisation failed"), "{e}");
    // A core the machine does not have.
    let (o, _) = run_daemon(
        &dir,
        &format!(
            "{base}{}",
            dataplane_section(&[4096], &[], "net_null0", None)
        ),
        &[],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("names core 4096"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn sigterm_stops_the_daemon_with_final_counters() {
    let dir = scratch("dpdk-sigterm");
    let text = format!(
        "{}{}",
        config("nat", false, "tcp", &[1], ""),
        dataplane_section(
            &[0],
            &["--vdev".into(), "net_null0".into()],
            "net_null0",
            None
        )
    );
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, text).unwrap();
    let stats = dir.join("run.json");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--stats",
            stats.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let k = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("processed") && out.contains("port net_null0"),
        "{out}"
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(stats).unwrap()).unwrap();
    // net_null delivers empty frames: they are not IP, so all are dropped as not ours.
    assert!(s["packets_in"].as_u64().unwrap() > 0);
    assert_eq!(s["packets_in"], s["drops"]["not_ours"]);
}

/// The README's DPDK example runs as documented.
#[test]
fn the_documented_vdev_example_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(format!("{root}/target")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(root)
        .args([
            "run",
            "--config",
            "examples/dpdk-vdev.toml",
            "--idle-exit",
            "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("10.1.0.3:8080") && out.contains("port net_pcap0: 1300 received"),
        "{out}"
    );
    // 300 IPv4 web flows x 3 frames forwarded, and the sample's ARP requests for the node's
    // and VIPs' addresses answered.
    let out = read_capture(Path::new(&format!("{root}/target/dpdk-out.pcap")));
    let arp = out.iter().filter(|(_, f)| f[12..14] == [8, 6]).count();
    assert_eq!((out.len() - arp, arp), (900, 8));
}

/// Runs `frames` through the daemon on one core: `net_pcap` reading them as fast as the worker
/// polls, writing what it transmits to a capture. The daemon's stats, and that capture's path.
fn run_capture_on_one_core(
    dir: &Path,
    cfg: &str,
    frames: &[(u64, Vec<u8>)],
) -> (serde_json::Value, std::path::PathBuf) {
    let input = dir.join("in.pcap");
    write_capture(&input, frames);
    let out = dir.join("out.pcap");
    let eal = [
        "--vdev".to_string(),
        format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            input.display(),
            out.display()
        ),
    ];
    let text = format!("{cfg}{}", dataplane_section(&[1], &eal, "net_pcap0", None));
    let (o, stats) = run_daemon(dir, &text, &["--idle-exit", "1", "--duration", "60"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (stats.expect("stats written"), out)
}

/// A SYN flood on DPDK virtual devices at the rate one core takes (`net_pcap` feeds the worker
/// as fast as it polls): 200,000 SYNs from spoofed sources, interleaved with 20 rounds of one
/// data packet from each of 1,000 established flows, into an 8,192-flow table. None of the
/// established flows loses its backend, every one of their packets is forwarded, no
/// established flow is evicted, and the flood only ever evicts half-open flows.
#[test]
fn a_syn_flood_at_full_rate_leaves_a_thousand_established_flows_on_their_backends() {
    let dir = scratch("dpdk-syn-flood");
    let cfg = config(
        "nat",
        false,
        "tcp",
        &[1, 1, 1],
        "\n[conntrack]\ncapacity = 8192\nhalf_open_percent = 25\n",
    );
    let (established, rounds, flood_per_round) = (1000u32, 20u32, 10_000u32);
    let mut frames = Vec::new();
    let mut t = T0;
    let mut next = || {
        t += 200;
        t
    };
    for i in 0..established {
        let b = builder(false, i, None);
        frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x02, b""))));
        frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x10, b""))));
    }
    let mut spoofed = 0u32;
    for _ in 0..rounds {
        for _ in 0..flood_per_round {
            spoofed += 1;
            let b = fixtures::FrameBuilder::new(
                packet::MacAddr(GW_MAC),
                packet::MacAddr(NODE_MAC),
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + spoofed)),
                vip(false),
            );
            frames.push((
                next(),
                b.frame(&tcp(1024 + (spoofed % 60000) as u16, VIP_PORT, 0x02, b"")),
            ));
        }
        for i in 0..established {
            let b = builder(false, i, None);
            frames.push((next(), b.frame(&tcp(20000, VIP_PORT, 0x18, b"data"))));
        }
    }
    let (s, out) = run_capture_on_one_core(&dir, &cfg, &frames);
    let c = &s["conntrack"];
    eprintln!(
        "syn flood on DPDK: {} packets in {:.2} s ({:.0} packets/s); conntrack {c}",
        s["packets_in"], s["elapsed_seconds"], s["packets_per_second"]
    );
    assert_eq!(s["port"]["rx_packets"], frames.len() as u64, "{s}");
    assert_eq!(c["evictions"], 0, "no established flow evicted: {c}");
    assert!(
        c["half_open_evictions"].as_u64().unwrap() > 150_000,
        "the flood evicted itself: {c}"
    );
    // Every established flow's packets: all forwarded, all to one backend.
    let mut by_flow: std::collections::HashMap<[u8; 4], (std::collections::HashSet<[u8; 6]>, u32)> =
        Default::default();
    for (_, f) in read_capture(&out) {
        let src: [u8; 4] = f[26..30].try_into().unwrap();
        if src[0] == 10 {
            continue; // a spoofed source's SYN
        }
        let e = by_flow.entry(src).or_default();
        e.0.insert(f[0..6].try_into().unwrap());
        e.1 += 1;
    }
    assert_eq!(
        by_flow.len(),
        established as usize,
        "every established flow forwarded"
    );
    for (src, (backends, n)) in &by_flow {
        assert_eq!(
            backends.len(),
            1,
            "flow from {src:?} changed backend: {backends:?}"
        );
        assert_eq!(
            *n,
            2 + rounds,
            "flow from {src:?}: {n} of {} packets forwarded",
            2 + rounds
        );
    }
}

/// The SYN proxy on DPDK virtual devices at the rate one core takes: 100,000 SYNs from
/// spoofed sources are each answered with a SYN-ACK from the VIP to the gateway (a valid
/// frame: checksums verified), nothing is tracked, and no backend receives anything.
#[test]
fn the_syn_proxy_answers_a_full_rate_flood_on_dpdk_and_tracks_nothing() {
    let dir = scratch("dpdk-syn-proxy");
    let cfg = config("nat", false, "tcp", &[1, 1, 1], "").replace(
        "forwarding = \"nat\"\n",
        "forwarding = \"nat\"\nsyn_proxy = \"on\"\n",
    );
    let n = 100_000u32;
    let frames: Vec<(u64, Vec<u8>)> = (0..n)
        .map(|i| {
            let b = fixtures::FrameBuilder::new(
                packet::MacAddr(GW_MAC),
                packet::MacAddr(NODE_MAC),
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                vip(false),
            );
            (
                T0 + u64::from(i) * 100,
                b.frame(&tcp(1024 + (i % 60000) as u16, VIP_PORT, 0x02, b"")),
            )
        })
        .collect();
    let (s, out) = run_capture_on_one_core(&dir, &cfg, &frames);
    eprintln!(
        "SYN proxy on DPDK: {} SYNs in {:.3} s; {}",
        s["packets_in"], s["elapsed_seconds"], s["syn_proxy"]
    );
    assert_eq!(s["syn_proxy"]["cookies"], u64::from(n), "{s}");
    assert_eq!(s["conntrack"]["inserts"], 0, "{s}");
    let sent = read_capture(&out);
    assert_eq!(sent.len(), n as usize);
    let mut cookies = std::collections::HashSet::new();
    for (_, f) in &sent {
        let p = packet::parse_frame(f).expect("a SYN-ACK sluice wrote parses");
        assert_eq!(&f[..6], &GW_MAC, "to the gateway, not a backend");
        assert_eq!(
            (p.src, p.src_port, p.tcp_flags),
            (vip(false), VIP_PORT, 0x12)
        );
        let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (p.src, p.dst) else {
            panic!("IPv4 expected")
        };
        let seg = &f[p.l4_off..p.l3_end];
        let pseudo = packet::checksum::pseudo_v4(a, b, 6, seg.len() as u16);
        assert_eq!(
            packet::checksum::fold(packet::checksum::sum(pseudo, seg)),
            0xffff,
            "TCP checksum"
        );
        cookies.insert(u32::from_be_bytes(seg[4..8].try_into().unwrap()));
    }
    // Cookies differ per flow (a 21-bit hash and the option bits): nearly all distinct.
    assert!(cookies.len() > 95_000, "{} distinct cookies", cookies.len());
}
