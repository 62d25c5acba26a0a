//! Helpers shared by the integration tests: running the `sluice` binary, writing configs, and
//! an independent decoder and checksum (written here from the RFCs, not taken from the
//! `packet` crate, so the tests check the data path against a second implementation).
#![allow(dead_code)]

use fixtures::{FrameBuilder, Transport};
use packet::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const VIP_PORT: u16 = 80;
pub const SNAT_PORTS: (u16, u16) = (1024, 32767);
pub const T0: u64 = 1_767_225_600_000_000_000;

/// Runs `c` to completion, as `Command::output` does, but for at most `limit`: past it, the
/// command's whole process group (it is made its own) is killed and the test fails naming it,
/// with what it printed by then. A client that hangs (an iperf3 waiting on a connection that
/// will never answer) must fail its test, not stall the suite until CI gives up on it.
pub fn output_within(mut c: Command, limit: std::time::Duration) -> Output {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let what = format!("{c:?}");
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let group = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            let printed = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(|o| {
                    format!(
                        "stdout: {}\nstderr: {}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            panic!("{what} ran past {limit:?} and was killed\n{printed}");
        }
    }
}

/// The `sluicectl` binary. The `ctl` package builds it beside `sluice` (`cargo test
/// --workspace` does, for ctl's own tests); when only this package's tests were built, it is
/// built here, once per test process.
pub fn sluicectl() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let sluice = Path::new(env!("CARGO_BIN_EXE_sluice"));
    let p = sluice.with_file_name("sluicectl");
    BUILT.call_once(|| {
        let release = sluice
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-q", "-p", "ctl", "--bin", "sluicectl"]);
        if release {
            c.arg("--release");
        }
        let ok = c.status().is_ok_and(|s| s.success());
        assert!(
            ok && p.exists(),
            "could not build sluicectl: run `cargo build -p ctl --bin sluicectl`"
        );
    });
    p
}

pub fn backend_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 1, i as u8 + 1]
}

pub fn backend_ip(v6: bool, i: usize) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16 + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8 + 1))
    }
}

pub fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(VIP_V6)
    } else {
        IpAddr::V4(VIP_V4)
    }
}

pub fn node_ip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(NODE_V6)
    } else {
        IpAddr::V4(NODE_V4)
    }
}

pub fn client_ip(v6: bool, i: u32) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xc,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16 + 1,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            0xcb00_7100u32 + (i % 250) + 1 + ((i / 250) << 8) % 0x0001_0000,
        ))
    }
}

/// The port backends listen on: translated for nat/snat, the VIP's own otherwise.
pub fn backend_port(mode: &str) -> u16 {
    if mode == "nat" || mode == "snat" {
        8080
    } else {
        VIP_PORT
    }
}

fn fmt_addr(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A one-service config for `mode` and family with the given backend weights.
pub fn config(mode: &str, v6: bool, proto: &str, weights: &[u32], extra: &str) -> String {
    let mut s = format!(
        "[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"{NODE_V4}\"\nipv6 = \"{NODE_V6}\"\ngateway_mac = \"02:00:00:00:00:fe\"\nsnat_ports = [{}, {}]\n{extra}\n[[service]]\nname = \"svc\"\nvip = \"{}\"\nprotocol = \"{proto}\"\nforwarding = \"{mode}\"\n",
        SNAT_PORTS.0,
        SNAT_PORTS.1,
        fmt_addr(vip(v6), VIP_PORT)
    );
    for (i, w) in weights.iter().enumerate() {
        let m = backend_mac(i);
        s += &format!(
            "\n[[service.backend]]\naddress = \"{}\"\nmac = \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"\nweight = {w}\n",
            fmt_addr(backend_ip(v6, i), backend_port(mode)),
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
    }
    s
}

/// A scratch directory for one test, removed and recreated.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write_capture(path: &Path, frames: &[(u64, Vec<u8>)]) {
    std::fs::write(
        path,
        pcap::to_bytes(frames.iter().map(|(t, f)| (*t, f.as_slice()))),
    )
    .unwrap();
}

pub fn read_capture(path: &Path) -> Vec<(u64, Vec<u8>)> {
    pcap::read_all(std::fs::File::open(path).unwrap()).unwrap()
}

pub fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("running sluice")
}

/// Result of one replay run.
pub struct Run {
    pub out: Vec<(u64, Vec<u8>)>,
    pub host: Vec<(u64, Vec<u8>)>,
    pub stats: serde_json::Value,
}

/// Replays `frames` through `config_text` with `workers` workers; panics with sluice's stderr
/// if it fails.
pub fn replay(dir: &Path, config_text: &str, frames: &[(u64, Vec<u8>)], workers: usize) -> Run {
    replay_with(dir, config_text, frames, workers, true)
}

/// [`replay`], choosing whether the run has a host path (`--host-output`).
pub fn replay_with(
    dir: &Path,
    config_text: &str,
    frames: &[(u64, Vec<u8>)],
    workers: usize,
    host_path: bool,
) -> Run {
    let cfg = dir.join("sluice.toml");
    std::fs::write(&cfg, config_text).unwrap();
    let input = dir.join("in.pcap");
    write_capture(&input, frames);
    let (out, host, stats) = (
        dir.join("out.pcap"),
        dir.join("host.pcap"),
        dir.join("stats.json"),
    );
    let w = workers.to_string();
    let mut args = vec![
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--stats",
        stats.to_str().unwrap(),
        "--workers",
        &w,
        "--quiet",
    ];
    if host_path {
        args.extend(["--host-output", host.to_str().unwrap()]);
    }
    let o = sluice(&args);
    assert!(
        o.status.success(),
        "sluice replay failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Run {
        out: read_capture(&out),
        host: if host_path {
            read_capture(&host)
        } else {
            Vec::new()
        },
        stats: serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap(),
    }
}

pub fn builder(v6: bool, client: u32, vlan: Option<u16>) -> FrameBuilder {
    let mut b = FrameBuilder::new(
        MacAddr(GW_MAC),
        MacAddr(NODE_MAC),
        client_ip(v6, client),
        vip(v6),
    );
    b.vlan_tci = vlan;
    b
}

pub fn tcp<'a>(sport: u16, dport: u16, flags: u8, payload: &'a [u8]) -> Transport<'a> {
    Transport::Tcp {
        src_port: sport,
        dst_port: dport,
        flags,
        seq: 1000,
        ack: if flags & 0x10 != 0 { 1 } else { 0 },
        payload,
    }
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Transport<'_> {
    Transport::Udp {
        src_port: sport,
        dst_port: dport,
        payload,
    }
}

/// `n` TCP flows, three frames each (SYN, request, FIN), interleaved round by round. Every
/// other flow is VLAN-tagged; every fourth IPv4 flow carries an IP option.
pub fn tcp_flows(v6: bool, n: u32) -> (Vec<(u64, Vec<u8>)>, Vec<u32>) {
    let mut frames = Vec::new();
    let mut flow_of = Vec::new();
    for round in 0..3 {
        for i in 0..n {
            let mut b = builder(v6, i, (i % 2 == 1).then_some(100 + i as u16));
            if !v6 && i % 4 == 1 {
                b.ipv4_options = vec![0x94, 0x04, 0, 0]; // router alert
            }
            let sport = 30000 + i as u16;
            let req = format!("GET /flow-{i} HTTP/1.1\r\n\r\n");
            let t = match round {
                0 => tcp(sport, VIP_PORT, 0x02, b""),
                1 => tcp(sport, VIP_PORT, 0x18, req.as_bytes()),
                _ => tcp(sport, VIP_PORT, 0x11, b""),
            };
            frames.push((T0 + frames.len() as u64 * 1_000_000, b.frame(&t)));
            flow_of.push(i);
        }
    }
    (frames, flow_of)
}

// ---- independent decoding and checksums ------------------------------------------------

/// RFC 1071 sum, folded, not inverted.
pub fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    for c in chunks {
        let mut i = 0;
        while i + 1 < c.len() {
            s += ((c[i] as u32) << 8) | c[i + 1] as u32;
            i += 2;
        }
        if i < c.len() {
            s += (c[i] as u32) << 8;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
    }
    s as u16
}

/// A frame decoded with plain offsets.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub ethertype: u16,
    /// The IP datagram (up to its length field).
    pub ip: Vec<u8>,
}

pub fn decode(f: &[u8]) -> Decoded {
    let mut dst_mac = [0; 6];
    let mut src_mac = [0; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    let mut off = 14;
    let mut vlan = None;
    if et == 0x8100 {
        vlan = Some(u16::from_be_bytes([f[14], f[15]]));
        et = u16::from_be_bytes([f[16], f[17]]);
        off = 18;
    }
    let ip = &f[off..];
    let len = if et == 0x0800 {
        u16::from_be_bytes([ip[2], ip[3]]) as usize
    } else {
        40 + u16::from_be_bytes([ip[4], ip[5]]) as usize
    };
    Decoded {
        dst_mac,
        src_mac,
        vlan,
        ethertype: et,
        ip: ip[..len].to_vec(),
    }
}

/// Fields of an IP datagram (no IPv6 extension headers in test traffic).
#[derive(Debug, Clone, PartialEq)]
pub struct Ip {
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: u8,
    pub header_len: usize,
}

pub fn ip_fields(d: &[u8]) -> Ip {
    if d[0] >> 4 == 4 {
        Ip {
            v6: false,
            src: IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15])),
            dst: IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19])),
            ttl: d[8],
            proto: d[9],
            header_len: (d[0] & 15) as usize * 4,
        }
    } else {
        let a = |o: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(b))
        };
        Ip {
            v6: true,
            src: a(8),
            dst: a(24),
            ttl: d[7],
            proto: d[6],
            header_len: 40,
        }
    }
}

/// True when the IPv4 header checksum verifies (always true for IPv6, which has none).
pub fn ip_checksum_ok(d: &[u8]) -> bool {
    let ip = ip_fields(d);
    ip.v6 || ones_sum(&[&d[..ip.header_len]]) == 0xffff
}

fn pseudo(ip: &Ip, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let push = |p: &mut Vec<u8>, a: IpAddr| match a {
        IpAddr::V4(v) => p.extend_from_slice(&v.octets()),
        IpAddr::V6(v) => p.extend_from_slice(&v.octets()),
    };
    push(&mut p, ip.src);
    push(&mut p, ip.dst);
    if ip.v6 {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, ip.proto]);
    } else {
        p.extend_from_slice(&[0, ip.proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    }
    p
}

/// True when the transport checksum (TCP, UDP, ICMP, ICMPv6) of a whole datagram verifies.
/// A zero UDP checksum over IPv4 means "none" and passes.
pub fn l4_checksum_ok(d: &[u8]) -> bool {
    let ip = ip_fields(d);
    let l4 = &d[ip.header_len..];
    match ip.proto {
        1 => ones_sum(&[l4]) == 0xffff,
        17 if !ip.v6 && l4[6..8] == [0, 0] => true,
        _ => ones_sum(&[&pseudo(&ip, l4.len()), l4]) == 0xffff,
    }
}

/// (src port, dst port) of the transport header.
pub fn ports(d: &[u8]) -> (u16, u16) {
    let h = ip_fields(d).header_len;
    (
        u16::from_be_bytes([d[h], d[h + 1]]),
        u16::from_be_bytes([d[h + 2], d[h + 3]]),
    )
}

/// The transport header and payload.
pub fn l4(d: &[u8]) -> &[u8] {
    &d[ip_fields(d).header_len..]
}

/// The Grafana dashboard's queries (packaging/grafana/sluice-dashboard.json), as (panel
/// title, PromQL expression).
pub fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/sluice-dashboard.json"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("").to_string(),
                t["expr"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

/// Checks the dashboard's queries against a metrics document a running sluice served: every
/// metric a query names (of those `family` selects) is in it, and every label the query
/// groups or filters by is one that metric carries. Returns how many metric names it checked.
pub fn check_dashboard_against(metrics: &str, family: impl Fn(&str) -> bool) -> usize {
    use std::collections::{BTreeMap, BTreeSet};
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = exported.entry(line[..end].to_string()).or_default();
        if let Some(inner) = line[end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            for pair in inner.0.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    let ident = |s: &str, at: usize| -> String {
        s[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for (title, expr) in dashboard_queries() {
        let names: BTreeSet<String> = expr
            .match_indices("sluice_")
            .map(|(i, _)| ident(&expr, i))
            .filter(|n| family(n))
            .collect();
        if names.is_empty() {
            continue;
        }
        // Labels used: `by (a, b)` and `{a="…"}` matchers (the instance variable aside).
        let mut labels = BTreeSet::new();
        for (i, _) in expr.match_indices("by (") {
            let inner = &expr[i + 4..];
            let inner = &inner[..inner.find(')').unwrap_or(0)];
            labels.extend(inner.split(',').map(|l| l.trim().to_string()));
        }
        for (i, _) in expr.match_indices('{') {
            let inner = &expr[i + 1..];
            let inner = &inner[..inner.find('}').unwrap_or(0)];
            for m in inner.split(',') {
                let k: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !k.is_empty() && !m.trim_start().starts_with('{') {
                    labels.insert(k);
                }
            }
        }
        labels.retain(|l| !l.is_empty() && l != "instance");
        for n in &names {
            checked += 1;
            if !exported.contains_key(n) {
                problems.push(format!("panel {title:?}: {n} is not exported"));
            }
        }
        for l in &labels {
            if !names
                .iter()
                .any(|n| exported.get(n).is_some_and(|ls| ls.contains(l)))
            {
                problems.push(format!(
                    "panel {title:?}: no metric of {names:?} has the label {l:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nexported:\n{metrics}",
        problems.join("\n")
    );
    checked
}
