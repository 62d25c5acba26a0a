//! The control plane against a running daemon: `sluice run` on the `pcap` driver (a capture
//! played in real time) with its control socket, driven by the real `sluicectl` binary, with
//! health checks against real HTTP servers this test starts, stops, hangs and breaks.

mod common;

use common::*;
use fixtures::{FrameBuilder, Transport};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A daemon for one test, killed (SIGTERM) when dropped.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-ctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Daemon {
    /// Starts `sluice run` on `services` (TOML) with the pcap driver playing `frames`.
    fn start(name: &str, services: &str, frames: &[(u64, Vec<u8>)], extra: &str) -> Daemon {
        // Built (if it must be) before the capture starts playing in real time.
        sluicectl();
        let dir = temp_dir(name);
        let input = dir.join("in.pcap");
        std::fs::write(
            &input,
            pcap::to_bytes(frames.iter().map(|(t, f)| (*t, f.as_slice()))),
        )
        .unwrap();
        let socket = dir.join("control.sock");
        let config = dir.join("sluice.toml");
        let text = format!(
            "[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"192.0.2.1\"\ngateway_mac = \"02:00:00:00:00:fe\"\n\n[conntrack]\ncapacity = 4096\ntcp_closing_timeout = 1\n\n[control]\nsocket = \"{}\"\ndrain_timeout = 30\n{extra}\n[dataplane]\ndriver = \"pcap\"\ncores = [0]\n\n[dataplane.pcap]\ninput = \"{}\"\noutput = \"{}\"\n{services}",
            socket.display(),
            input.display(),
            dir.join("out.pcap").display()
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--stats",
                dir.join("stats.json").to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            socket,
            config,
            dir,
        };
        let t = Instant::now();
        while UnixStream::connect(&d.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the control socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(sluicectl())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a sluicectl command with --json and returns (exit code, response).
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.ctl(&a);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: {e}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert_eq!(
            v["version"], 1,
            "every response carries the protocol version"
        );
        (o.status.code().unwrap_or(-1), v)
    }

    /// The result of a command that must succeed.
    fn ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.json(args);
        assert!(code == 0 && v["ok"] == true, "{args:?} failed: {v}");
        v["result"].clone()
    }

    fn backends(&self, service: &str) -> Vec<Value> {
        self.ok(&["backend", "list", service])["backends"]
            .as_array()
            .cloned()
            .unwrap()
    }

    fn backend(&self, service: &str, addr: &str) -> Option<Value> {
        self.backends(service)
            .into_iter()
            .find(|b| b["address"] == addr)
    }

    /// Sends a raw line and reads one response line.
    fn raw(&self, line: &[u8]) -> Option<Value> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(line).unwrap();
        let mut r = BufReader::new(s);
        let mut out = String::new();
        r.read_line(&mut out).ok()?;
        serde_json::from_str(&out).ok()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// SIGTERM, then the daemon's output and the frames it sent.
    fn stop(mut self) -> (Output, Vec<(u64, Vec<u8>)>) {
        let child = self.child.take().unwrap();
        unsafe_sigterm(child.id());
        let o = child.wait_with_output().unwrap();
        let out = std::fs::read(self.dir.join("out.pcap")).unwrap_or_default();
        let frames = if out.is_empty() {
            vec![]
        } else {
            pcap::read_all(&out[..]).unwrap()
        };
        (o, frames)
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The metrics document a daemon serves on `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut m = String::new();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    s.read_to_string(&mut m).unwrap();
    m
}

/// The committed dashboard is what its generator writes.
#[test]
fn the_grafana_dashboard_is_its_generators_output() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("python3")
        .arg(format!("{root}/packaging/grafana/make-dashboard.py"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed =
        std::fs::read_to_string(format!("{root}/packaging/grafana/sluice-dashboard.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout) == committed,
        "packaging/grafana/sluice-dashboard.json is stale: run python3 packaging/grafana/make-dashboard.py > packaging/grafana/sluice-dashboard.json"
    );
    assert!(common::dashboard_queries().len() >= 30);
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn web_service(backends: &[(&str, usize, u32)], health: &str) -> String {
    let mut t = format!("\n[[service]]\nname = \"web\"\nvip = \"198.51.100.10:80\"\nprotocol = \"tcp\"\nforwarding = \"nat\"\n{health}\n");
    for (addr, mac, w) in backends {
        t += &format!("[[service.backend]]\naddress = \"{addr}\"\nmac = \"02:00:00:00:01:{mac:02x}\"\nweight = {w}\n");
    }
    t
}

const NODE: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn client(i: u32) -> IpAddr {
    IpAddr::V4(
        Ipv4Addr::new(203, 0, 113, 0)
            .to_bits()
            .wrapping_add(i)
            .into(),
    )
}

/// One TCP segment from client `i` (port 40000 + i) to the VIP.
fn seg(i: u32, flags: u8) -> Vec<u8> {
    let b = FrameBuilder::new(
        packet::MacAddr(GW_MAC),
        packet::MacAddr(NODE),
        client(i),
        IpAddr::V4(VIP_V4),
    );
    b.frame(&Transport::Tcp {
        src_port: 40000 + i as u16,
        dst_port: 80,
        flags,
        seq: 1,
        ack: 1,
        payload: b"x",
    })
}

/// (client address, client port) -> the backend each output frame went to.
fn backends_by_client(out: &[(u64, Vec<u8>)]) -> HashMap<(IpAddr, u16), HashSet<SocketAddr>> {
    let mut m: HashMap<(IpAddr, u16), HashSet<SocketAddr>> = HashMap::new();
    for (_, f) in out {
        let d = decode(f);
        let ip = ip_fields(&d.ip);
        let (sp, dp) = ports(&d.ip);
        m.entry((ip.src, sp))
            .or_default()
            .insert(SocketAddr::new(ip.dst, dp));
    }
    m
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;

/// Drain with traffic, then the whole maintenance with sluicectl alone: drain, wait for the
/// flows to end, remove, add back, restore the weight.
#[test]
fn backend_maintenance_with_sluicectl_alone_keeps_established_flows() {
    let s = 1_000_000_000u64;
    let mut frames = Vec::new();
    // Phase A (t = 0): 60 flows open.
    for i in 0..60 {
        frames.push((T0 + i as u64 * 1_000_000, seg(i, SYN)));
        frames.push((T0 + i as u64 * 1_000_000 + 500_000, seg(i, ACK)));
    }
    // Phase B (t = 3 s): the phase-A flows send data and close; 60 new flows open.
    for i in 0..60 {
        frames.push((T0 + 3 * s + i as u64 * 1_000_000, seg(i, ACK)));
        frames.push((T0 + 3 * s + i as u64 * 1_000_000 + 500_000, seg(i, FIN_ACK)));
        frames.push((
            T0 + 3 * s + i as u64 * 1_000_000 + 700_000,
            seg(100 + i, SYN),
        ));
    }
    // Phase C (t = 9 s): 90 more new flows, after the backend is back with weight 2.
    for i in 0..90 {
        frames.push((T0 + 9 * s + i as u64 * 1_000_000, seg(200 + i, SYN)));
    }
    let d = Daemon::start(
        "maint",
        &web_service(
            &[
                ("10.1.0.1:8080", 1, 1),
                ("10.1.0.2:8080", 2, 1),
                ("10.1.0.3:8080", 3, 1),
            ],
            "",
        ),
        &frames,
        "",
    );
    let x = "10.1.0.2:8080";
    wait_for("phase A", Duration::from_secs(5), || {
        d.ok(&["stats"])["packets_in"].as_u64() >= Some(120)
    });
    let before = d.backend("web", x).unwrap();
    let established = before["active_flows"].as_u64().unwrap();
    assert!(established > 5, "the backend to drain has flows: {before}");

    // Drain: no new flows, established ones continue.
    let r = d.ok(&["backend", "drain", "web", x]);
    assert!(
        r["changed"][0].as_str().unwrap().contains("draining"),
        "{r}"
    );
    let b = d.backend("web", x).unwrap();
    assert_eq!(
        (b["admin"].as_str(), b["takes_new_flows"].as_bool()),
        (Some("drain"), Some(false)),
        "{b}"
    );
    // Remove without --force waits for the flows.
    let r = d.ok(&["backend", "remove", "web", x]);
    assert!(
        r["changed"][0].as_str().unwrap().contains("draining"),
        "{r}"
    );
    assert!(
        d.backend("web", x).is_some(),
        "not removed while it has flows"
    );
    // Phase B closes the flows; the closing timeout (1 s) ends them; removal follows.
    wait_for(
        "the drained backend's flows to end and the backend to go",
        Duration::from_secs(10),
        || d.backend("web", x).is_none(),
    );
    let status = d.ok(&["status"]);
    assert_eq!(status["config_vs_file"], "differs", "{status}");
    assert!(
        status["recent_events"]
            .to_string()
            .contains("its flows ended"),
        "{status}"
    );

    // Add it back and restore its weight (2 here, so phase C gives it a clear share).
    d.ok(&["backend", "add", "web", x, "--mac", "02:00:00:00:01:02"]);
    let r = d.ok(&["backend", "set-weight", "web", x, "2"]);
    assert!(
        r["changed"][0].as_str().unwrap().contains("weight 1 -> 2"),
        "{r}"
    );
    let b = d.backend("web", x).unwrap();
    assert_eq!(
        (
            b["admin"].as_str(),
            b["weight"].as_u64(),
            b["takes_new_flows"].as_bool()
        ),
        (Some("ready"), Some(2), Some(true)),
        "{b}"
    );
    wait_for("phase C", Duration::from_secs(15), || {
        d.ok(&["stats"])["packets_in"].as_u64() >= Some(390)
    });

    let (o, out) = d.stop();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by = backends_by_client(&out);
    let x: SocketAddr = x.parse().unwrap();
    let mut kept = 0;
    for i in 0..60u32 {
        let seen = &by[&(client(i), 40000 + i as u16)];
        assert_eq!(
            seen.len(),
            1,
            "flow {i} stayed on one backend through the drain: {seen:?}"
        );
        kept += seen.contains(&x) as u32;
    }
    assert_eq!(
        kept as u64, established,
        "every flow of the drained backend continued to it"
    );
    for i in 100..160u32 {
        assert!(
            !by[&(client(i), 40000 + i as u16)].contains(&x),
            "a flow opened while draining went to the drained backend"
        );
    }
    let back = (200..290u32)
        .filter(|i| by[&(client(*i), 40000 + *i as u16)].contains(&x))
        .count();
    assert!(
        (25..=65).contains(&back),
        "after add + set-weight 2 of 4, the backend takes about half of new flows: {back} of 90"
    );
}

/// A test HTTP server whose behaviour can be switched: answer 200 "ok", answer 500, accept and
/// never answer, or stop listening.
struct TestServer {
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    port: u16,
}

const OK: u8 = 0;
const ERR500: u8 = 1;
const HANG: u8 = 2;
const CLOSED: u8 = 3;

impl TestServer {
    fn start() -> TestServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(OK));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (Arc::clone(&mode), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut l = Some(l);
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let mode = m.load(Ordering::Relaxed);
                if mode == CLOSED {
                    l = None;
                    held.clear();
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let lis = l.get_or_insert_with(|| TcpListener::bind(("127.0.0.1", port)).unwrap());
                lis.set_nonblocking(true).unwrap();
                match lis.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        match mode {
                            OK => {
                                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                            }
                            ERR500 => {
                                let _ = c.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail");
                            }
                            _ => held.push(c),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer { mode, stop, port }
    }
    fn set(&self, m: u8) {
        self.mode.store(m, Ordering::Relaxed);
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn health_checks_follow_real_servers_with_rise_and_fall() {
    let a = TestServer::start();
    let b = TestServer::start();
    let health = "[service.health]\ntype = \"http\"\npath = \"/healthz\"\nstatus = [\"200-299\"]\nbody = \"ok\"\ninterval = 0.1\ntimeout = 0.08\nrise = 2\nfall = 3";
    let mut svc = web_service(&[(&a.addr(), 1, 1), (&b.addr(), 2, 1)], health);
    // A second service checked by TCP connect, with the fail-open policy.
    // A backend without a MAC: sluice resolves it (the neighbour metrics).
    svc += "\n[[service]]\nname = \"arp\"\nvip = \"198.51.100.10:9999\"\nprotocol = \"tcp\"\nforwarding = \"nat\"\n[[service.backend]]\naddress = \"192.0.2.77:9999\"\n";
    svc += &format!("\n[[service]]\nname = \"db\"\nvip = \"198.51.100.10:5432\"\nprotocol = \"tcp\"\nforwarding = \"nat\"\nall_down = \"all\"\n[service.health]\ntype = \"tcp\"\ninterval = 0.1\ntimeout = 0.08\nrise = 1\nfall = 2\n[[service.backend]]\naddress = \"{}\"\nmac = \"02:00:00:00:01:01\"\n", a.addr());
    let metrics = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut d = Daemon::start(
        "health",
        &svc,
        &[(T0, seg(0, SYN))],
        &format!("[metrics]\nlisten = \"{metrics}\"\n"),
    );

    let health_of = |d: &Daemon, addr: &str| -> Value {
        d.ok(&["health", "show", "web"])["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == addr)
            .cloned()
            .unwrap()
    };
    // Polls until `want`, checking that "down" is never reported before `fall` failures and
    // "up" never before `rise` successes.
    let until = |d: &Daemon, addr: &str, want: &str| -> Value {
        let t = Instant::now();
        loop {
            let h = health_of(d, addr);
            match h["health"].as_str().unwrap() {
                "down" => assert!(
                    h["failures"].as_u64() >= Some(3) || h["successes"].as_u64() >= Some(1),
                    "down after fewer than fall=3 failures: {h}"
                ),
                "up" => assert!(
                    h["successes"].as_u64() >= Some(2) || h["failures"].as_u64() >= Some(1),
                    "up after fewer than rise=2 successes: {h}"
                ),
                _ => {}
            }
            if h["health"] == want {
                return h;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{addr} never became {want}: {h}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let aa = a.addr();
    until(&d, &aa, "up");
    until(&d, &b.addr(), "up");

    a.set(ERR500);
    let h = until(&d, &aa, "down");
    assert!(
        h["last"]["message"]
            .as_str()
            .unwrap()
            .contains("status 500"),
        "{h}"
    );
    let be = d.backend("web", &aa).unwrap();
    assert_eq!(
        (
            be["health"].as_str(),
            be["admin"].as_str(),
            be["takes_new_flows"].as_bool()
        ),
        (Some("down"), Some("ready"), Some(false)),
        "health shown apart from admin state: {be}"
    );
    a.set(OK);
    until(&d, &aa, "up");

    a.set(HANG);
    let h = until(&d, &aa, "down");
    assert!(
        h["last"]["message"]
            .as_str()
            .unwrap()
            .contains("no response"),
        "{h}"
    );
    a.set(OK);
    until(&d, &aa, "up");

    a.set(CLOSED);
    let h = until(&d, &aa, "down");
    assert!(
        h["last"]["message"].as_str().unwrap().contains("connect"),
        "{h}"
    );
    // The TCP-checked service's only backend is down too: all_down = "all" keeps it in use.
    wait_for("db's backend down", Duration::from_secs(10), || {
        d.backend("db", &aa).unwrap()["health"] == "down"
    });
    let db = d.ok(&["service", "show", "db"]);
    assert_eq!(
        (
            db["all_down_active"].as_bool(),
            db["taking_new_flows"].as_u64()
        ),
        (Some(true), Some(1)),
        "{db}"
    );
    // Metrics show health, admin state and check latency.
    let m = scrape(metrics);
    // The Grafana dashboard asks only for what is exported (L7 in e2e_l7.rs, BGP in the feed
    // test).
    let checked = common::check_dashboard_against(&m, |n| {
        !n.starts_with("sluice_l7_") && !n.starts_with("sluice_bgp_")
    });
    assert!(checked >= 20, "only {checked} dashboard metrics checked");
    assert!(
        m.contains(&format!(
            "sluice_backend_health_state{{service=\"web\",backend=\"{aa}\",state=\"down\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "sluice_backend_admin_state{{service=\"web\",backend=\"{aa}\",state=\"ready\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains("sluice_backend_check_latency_seconds{service=\"web\""),
        "{m}"
    );
    a.set(OK);
    until(&d, &aa, "up");
    // Transitions are logged and shown by status.
    let st = d.ok(&["status"]);
    assert!(
        st["recent_events"].to_string().contains("health: backend"),
        "{st}"
    );
    let text = String::from_utf8(d.ctl(&["health", "show"]).stdout).unwrap();
    assert!(text.contains("HEALTH") && text.contains(&aa), "{text}");
    assert!(d.alive());
}

#[test]
fn every_verb_and_every_refusal_leave_a_consistent_daemon() {
    let mut d = Daemon::start(
        "verbs",
        &web_service(&[("10.1.0.1:8080", 1, 1), ("10.1.0.2:8080", 2, 1)], ""),
        &(0..20)
            .map(|i| (T0 + i as u64 * 10_000_000, seg(i, SYN)))
            .collect::<Vec<_>>(),
        "",
    );
    let listing = |d: &Daemon| d.ok(&["backend", "list"]).to_string().len();
    wait_for("traffic", Duration::from_secs(5), || {
        d.ok(&["stats"])["packets_in"].as_u64() >= Some(20)
    });

    // Queries, in tables and JSON.
    let st = d.ok(&["status"]);
    assert_eq!(
        (
            st["driver"].as_str(),
            st["workers"].as_u64(),
            st["config_vs_file"].as_str()
        ),
        (Some("pcap"), Some(1), Some("same")),
        "{st}"
    );
    let t = String::from_utf8(d.ctl(&["status"]).stdout).unwrap();
    assert!(t.contains("running vs file") && t.contains("same"), "{t}");
    assert_eq!(d.ok(&["service", "list"])["services"][0]["name"], "web");
    assert_eq!(
        d.ok(&["service", "show", "web"])["backend_list"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let stats = d.ok(&["stats"]);
    assert_eq!(stats["conntrack"]["active"], 20, "{stats}");
    assert!(
        stats["workers"][0]["packets_per_s"].is_number()
            && stats["services"][0]["bits_per_s"].is_number(),
        "{stats}"
    );
    let f = d.ok(&["flows", "--backend", "10.1.0.1:8080", "--limit", "50"]);
    let flows = f["flows"].as_array().unwrap();
    assert!(
        !flows.is_empty()
            && flows
                .iter()
                .all(|x| x["backend"] == "10.1.0.1:8080" && x["service"] == "web"),
        "{f}"
    );
    assert_eq!(
        d.ok(&["flows", "--limit", "3"])["flows"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let t = String::from_utf8(d.ctl(&["flows", "--service", "web"]).stdout).unwrap();
    assert!(
        t.contains("BACKEND") && t.contains("20 flow(s) tracked"),
        "{t}"
    );
    let w = d.ctl(&["watch", "--count", "2", "--interval", "0.1"]);
    assert!(
        w.status.success()
            && String::from_utf8_lossy(&w.stdout)
                .matches("conntrack:")
                .count()
                == 2
    );

    // Changes.
    d.ok(&[
        "backend",
        "add",
        "web",
        "10.1.0.3:8080",
        "--mac",
        "02:00:00:00:01:03",
        "--weight",
        "2",
    ]);
    d.ok(&["backend", "disable", "web", "10.1.0.3:8080"]);
    assert_eq!(
        d.backend("web", "10.1.0.3:8080").unwrap()["admin"],
        "disabled"
    );
    d.ok(&["backend", "enable", "web", "10.1.0.3:8080"]);
    assert_eq!(d.backend("web", "10.1.0.3:8080").unwrap()["admin"], "ready");
    d.ok(&["backend", "remove", "web", "10.1.0.3:8080", "--force"]);
    assert!(d.backend("web", "10.1.0.3:8080").is_none());
    d.ok(&[
        "service",
        "add",
        "dns",
        "--vip",
        "198.51.100.53:53",
        "--protocol",
        "udp",
        "--forwarding",
        "nat",
        "--backend",
        "10.2.0.1:53=02:00:00:00:02:01*3",
    ]);
    assert_eq!(d.ok(&["service", "show", "dns"])["protocol"], "udp");
    d.ok(&["service", "remove", "dns"]);
    // A service with the SYN proxy on, shown as such.
    d.ok(&[
        "service",
        "add",
        "guarded",
        "--vip",
        "198.51.100.11:80",
        "--forwarding",
        "snat",
        "--syn-proxy",
        "auto",
        "--backend",
        "10.2.0.2:80=02:00:00:00:02:02",
    ]);
    assert_eq!(
        d.ok(&["service", "show", "guarded"])["syn_proxy"],
        "auto (off)"
    );
    d.ok(&["service", "remove", "guarded"]);

    // Refusals: each names the problem, exits 1, and changes nothing.
    let gen = d.ok(&["status"])["generation"].clone();
    let before = listing(&d);
    for (args, needle) in [
        (
            vec!["backend", "set-weight", "web", "10.1.0.1:8080", "0"],
            "weight 0",
        ),
        (
            vec![
                "backend",
                "add",
                "web",
                "10.1.0.1:8080",
                "--mac",
                "02:00:00:00:01:01",
            ],
            "already has backend",
        ),
        (
            vec![
                "backend",
                "add",
                "web",
                "[2001:db8::1]:8080",
                "--mac",
                "02:00:00:00:01:01",
            ],
            "IPv6",
        ),
        (
            vec!["backend", "add", "web", "10.1.0.9:8080", "--mac", "zz"],
            "MAC",
        ),
        (
            vec!["backend", "drain", "nope", "10.1.0.1:8080"],
            "no service `nope`",
        ),
        (
            vec!["backend", "drain", "web", "10.9.9.9:1"],
            "has no backend",
        ),
        (
            vec![
                "service",
                "add",
                "web2",
                "--vip",
                "198.51.100.10:80",
                "--forwarding",
                "nat",
                "--backend",
                "10.1.0.1:8080=02:00:00:00:01:01",
            ],
            "already the VIP",
        ),
        (
            vec![
                "service",
                "add",
                "direct",
                "--vip",
                "198.51.100.12:80",
                "--forwarding",
                "dsr",
                "--syn-proxy",
                "on",
                "--backend",
                "10.1.0.1:80=02:00:00:00:01:01",
            ],
            "do not pass through sluice",
        ),
        (
            vec![
                "service",
                "add",
                "odd",
                "--vip",
                "198.51.100.13:80",
                "--forwarding",
                "nat",
                "--syn-proxy",
                "sometimes",
                "--backend",
                "10.1.0.1:80=02:00:00:00:01:01",
            ],
            "syn_proxy",
        ),
        (
            vec![
                "service",
                "add",
                "x",
                "--vip",
                "198.51.100.11:80",
                "--forwarding",
                "teleport",
                "--backend",
                "10.1.0.1:8080=02:00:00:00:01:01",
            ],
            "teleport",
        ),
    ] {
        let (code, v) = d.json(&args);
        assert_eq!(code, 1, "{args:?}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{args:?}: {v}"
        );
    }
    // A batch is atomic: the valid first change is not applied when the second is refused.
    let batch = r#"{"version":1,"op":"batch","ops":[{"op":"backend-set-weight","service":"web","address":"10.1.0.1:8080","weight":5},{"op":"backend-remove","service":"web","address":"10.9.9.9:1"}]}"#;
    let v = d.raw(format!("{batch}\n").as_bytes()).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("batch entry 1"),
        "{v}"
    );
    assert_eq!(d.backend("web", "10.1.0.1:8080").unwrap()["weight"], 1);
    // Malformed, unknown, wrong version, oversized, and a client that leaves mid-request.
    for (line, code) in [
        (&b"{not json\n"[..], "bad_request"),
        (b"{\"version\":1,\"op\":\"explode\"}\n", "bad_request"),
        (b"{\"version\":2,\"op\":\"status\"}\n", "version"),
        (b"[1,2]\n", "bad_request"),
    ] {
        assert_eq!(
            d.raw(line).unwrap()["error"]["code"],
            code,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let mut huge = vec![b' '; ctl::MAX_LINE + 10];
    huge.push(b'\n');
    assert_eq!(d.raw(&huge).unwrap()["error"]["code"], "too_long");
    {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(
            br#"{"version":1,"op":"backend-drain","service":"web","address":"10.1.0.1:8080""#,
        )
        .unwrap();
    }
    // Several clients at once.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let sock = d.socket.clone();
            std::thread::spawn(move || {
                let o = Command::new(sluicectl())
                    .arg("--socket")
                    .arg(&sock)
                    .args(["--json", "status"])
                    .output()
                    .unwrap();
                o.status.success()
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    // A bad reload file is refused with its reason, and the running configuration stays.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("weight = 1\n", "weight = 0\n")).unwrap();
    let (code, v) = d.json(&["reload"]);
    assert_eq!(code, 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running configuration is kept")
            && v["error"]["message"].as_str().unwrap().contains("weight"),
        "{v}"
    );
    assert!(d.ok(&["status"])["config_vs_file"]
        .as_str()
        .unwrap()
        .starts_with("unreadable"));
    assert_eq!(
        d.ok(&["status"])["generation"],
        gen,
        "refusals changed nothing"
    );
    assert_eq!(listing(&d), before);
    assert_eq!(
        d.backend("web", "10.1.0.1:8080").unwrap()["admin"],
        "ready",
        "the half-sent drain was not applied"
    );
    // A good reload applies the difference and says what changed.
    std::fs::write(&d.config, good.replace("weight = 1\n", "weight = 4\n")).unwrap();
    let r = d.ok(&["reload"]);
    assert_eq!(r["reload"]["changed"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(d.ok(&["status"])["config_vs_file"], "same");
    // SIGHUP reloads the file as `reload` does: a good file is applied, a bad one refused
    // (logged in the events) with the running configuration kept.
    let pid = d.child.as_ref().unwrap().id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };
    std::fs::write(&d.config, good.replace("weight = 1\n", "weight = 6\n")).unwrap();
    hup();
    wait_for("SIGHUP to reload the file", Duration::from_secs(5), || {
        d.backend("web", "10.1.0.1:8080").unwrap()["weight"] == 6
    });
    assert_eq!(d.ok(&["status"])["config_vs_file"], "same");
    let gen = d.ok(&["status"])["generation"].clone();
    std::fs::write(&d.config, good.replace("weight = 1\n", "weight = 0\n")).unwrap();
    hup();
    wait_for(
        "SIGHUP's refusal in the log",
        Duration::from_secs(5),
        || {
            d.ok(&["status"])["recent_events"]
                .to_string()
                .contains("reload on SIGHUP refused")
        },
    );
    assert!(d.alive(), "SIGHUP does not end the daemon");
    assert_eq!(
        d.ok(&["status"])["generation"],
        gen,
        "the refused file changed nothing"
    );
    assert_eq!(d.backend("web", "10.1.0.1:8080").unwrap()["weight"], 6);
    // Every one of these changes reached the worker with counters shaped for it.
    let w = &d.ok(&["stats"])["workers"][0];
    assert!(w["snapshot_swaps"].as_u64().unwrap() >= 5, "{w}");
    assert_eq!(w["swaps_allocating"], 0, "{w}");
    std::fs::write(&d.config, &good).unwrap();
    // Usage errors exit 2; an unreachable daemon exits 1 and says where it looked.
    assert_eq!(
        d.ctl(&["backend", "set-weight", "web"]).status.code(),
        Some(2)
    );
    let o = Command::new(sluicectl())
        .args(["--socket", "/nonexistent/x.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.sock"));
    // Only root or the daemon's user (or [control] group) may use the socket.
    assert_eq!(
        std::fs::metadata(&d.socket)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
    if unsafe_is_root() && Path::new("/usr/bin/setpriv").exists() {
        std::fs::set_permissions(
            &d.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let ctl = sluicectl();
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                ctl.to_str().unwrap(),
                "--json",
                "--socket",
                d.socket.to_str().unwrap(),
                "status",
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("unauthorised"),
            "{o:?}"
        );
    }
    assert!(d.alive());
    let (o, _) = d.stop();
    assert!(o.status.success());
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// `sluicectl bgp feed` as ExaBGP runs it, against real daemons: it announces the VIP, follows
/// `node drain` / `node activate`, withdraws when the daemon dies (SIGKILL) and announces
/// again when one answers on the socket; a SIGTERM withdraws and then waits the grace time
/// before the daemon exits; the feed exits when its input closes.
#[test]
fn the_bgp_feed_follows_the_daemon_and_a_sigterm_waits_out_the_grace() {
    use std::sync::mpsc;
    let metrics = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bgp = format!("\n[bgp]\nshutdown_grace_ms = 1500\n\n[metrics]\nlisten = \"{metrics}\"\n");
    let bgp = bgp.as_str();
    let frames = vec![(T0, seg(1, SYN))];
    let service = web_service(&[("10.1.0.1:8080", 1, 1)], "");
    let mut first = Daemon::start("bgp", &service, &frames, bgp);
    let mut feed = Command::new(sluicectl())
        .arg("--socket")
        .arg(&first.socket)
        .args(["bgp", "feed", "--interval-ms", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let out = feed.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next = |what: &str| {
        let l = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line from the feed; waited for {what}"));
        assert_eq!(l, what);
    };
    let announce = "announce route 198.51.100.10/32 next-hop self";
    let withdraw = "withdraw route 198.51.100.10/32 next-hop self";
    next(announce);
    let checked =
        common::check_dashboard_against(&scrape(metrics), |n| n.starts_with("sluice_bgp_"));
    assert!(checked >= 1);
    let s = first.ok(&["status"]);
    assert_eq!(s["bgp"]["announced"][0], "198.51.100.10/32", "{s}");
    assert!(s["bgp"]["feed_last_poll_s"].as_f64().unwrap() < 5.0, "{s}");
    let text = String::from_utf8_lossy(&first.ctl(&["node", "drain"]).stdout).into_owned();
    assert!(text.contains("withdrawn"), "{text}");
    next(withdraw);
    assert_eq!(first.ok(&["bgp", "routes"])["routes"][0]["announce"], false);
    first.ok(&["node", "activate"]);
    next(announce);
    // The daemon dies without a word: the feed withdraws what it announced.
    let mut c = first.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    next(withdraw);
    drop(first);
    // A daemon on the same socket: announced again.
    let mut second = Daemon::start("bgp", &service, &frames, bgp);
    next(announce);
    // SIGTERM: withdrawn, then the grace time, then the exit.
    let child = second.child.take().unwrap();
    let term = Instant::now();
    unsafe_sigterm(child.id());
    next(withdraw);
    let o = child.wait_with_output().unwrap();
    let took = term.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        took >= Duration::from_millis(1500),
        "stopped after {took:?}, before the grace"
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("grace time over"), "{log}");
    // ExaBGP closing the feed's input ends it.
    drop(feed.stdin.take());
    wait_for("the feed to exit", Duration::from_secs(5), || {
        matches!(feed.try_wait(), Ok(Some(_)))
    });
}

/// A SYN from `src` port `port` to the VIP.
fn syn_from(src: IpAddr, port: u16) -> Vec<u8> {
    FrameBuilder::new(
        packet::MacAddr(GW_MAC),
        packet::MacAddr(NODE),
        src,
        IpAddr::V4(VIP_V4),
    )
    .frame(&Transport::Tcp {
        src_port: port,
        dst_port: 80,
        flags: SYN,
        seq: 1,
        ack: 0,
        payload: b"",
    })
}

/// `[service.rate_limit] new_flows_per_source` against a running daemon: a client opening
/// flows far faster than its rate is cut to it while a slow client is not, the refusals are
/// counted as `source_rate_limited`, and `sluicectl limits` shows the fast source (and only
/// it) as limited now.
#[test]
fn a_source_over_its_rate_is_shown_limited_and_others_are_not() {
    let fast: IpAddr = "203.0.113.200".parse().unwrap();
    let slow: IpAddr = "203.0.113.201".parse().unwrap();
    let mut frames = Vec::new();
    // 0.5 s: the fast client opens 500 flows (1,000/s), the slow one 5 (10/s).
    for i in 0..500u64 {
        frames.push((T0 + i * 1_000_000, syn_from(fast, 10_000 + i as u16)));
        if i % 100 == 0 {
            frames.push((T0 + i * 1_000_000 + 1, syn_from(slow, 20_000 + i as u16)));
        }
    }
    let svc = web_service(&[("10.1.0.1:8080", 1, 1)], "")
        + "[service.rate_limit]\nnew_flows_per_source = 20\nsource_burst = 10\n";
    let d = Daemon::start("limits", &svc, &frames, "");
    wait_for("the capture", Duration::from_secs(10), || {
        d.ok(&["stats"])["packets_in"].as_u64() >= Some(505)
    });
    let stats = d.ok(&["stats"]);
    let refused = stats["drops"]["source_rate_limited"].as_u64().unwrap_or(0);
    // Burst 10 and 20/s over 0.5 s: about 20 admitted of 500.
    assert!((475..=492).contains(&refused), "{stats}");
    let l = d.ok(&["limits"]);
    let rows = l["sources"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the fast client is limited: {l}");
    assert_eq!(rows[0]["source"], "203.0.113.200");
    assert_eq!(rows[0]["service"], "web");
    assert_eq!(rows[0]["refused"].as_u64(), Some(refused), "{l}");
    assert_eq!(
        d.ok(&["limits", "web"])["sources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let text = String::from_utf8(d.ctl(&["limits"]).stdout).unwrap();
    assert!(
        text.contains("203.0.113.200") && text.contains("FLOWS REFUSED"),
        "{text}"
    );
    // The slow client's flows are all tracked.
    let flows = d.ok(&["flows", "--limit", "1000"]);
    let from_slow = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["client"].as_str().unwrap().starts_with("203.0.113.201:"))
        .count();
    assert_eq!(from_slow, 5, "{flows}");
}
