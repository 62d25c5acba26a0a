//! High availability end to end (tests/e2e/ecmp.sh): two sluice instances on AF_XDP, each
//! announcing the VIP through its own ExaBGP (`sluicectl bgp feed` as the process ExaBGP
//! runs) to a router running BIRD with multipath and a 5-tuple hash; a real client behind
//! the router and real HTTP backends (DSR) on the instances' segment. Checks: one next hop
//! per instance; connections spread over both; a service whose backends are all down is
//! withdrawn and comes back with one; `node drain` / `node activate`; a graceful stop
//! (SIGTERM: withdraw, grace, stop) breaks none of 100 running downloads; an instance that
//! vanishes (link cut and SIGKILL, so only the BGP hold timer tells the router) loses no
//! download either, its flows moving to the other instance, which picks the same backends.
//! Measured times and counts are printed (run with --nocapture). Needs root, exabgp and bird2.

mod common;

use common::sluicectl;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ecmp.sh");
/// BGP hold time on both sides, seconds (3 is the least BGP allows).
const HOLD_S: u64 = 3;
const GRACE_MS: u64 = 3000;

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The two scenarios share the machine's cores and its timing: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The namespaces and every process in them; torn down on drop.
struct Site {
    pfx: &'static str,
    dir: PathBuf,
    sluice: Vec<Option<Child>>,
    /// ExaBGP and restarted backend servers.
    others: Vec<Child>,
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in self
            .sluice
            .iter_mut()
            .flatten()
            .chain(self.others.iter_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .args([TOPOLOGY, "down", self.pfx])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Site {
    fn ns(&self, name: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{name}", self.pfx)]);
        c
    }

    fn run(&self, name: &str, args: &[&str]) -> String {
        let o = self.ns(name).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{i}.sock"))
    }

    fn ctl(&self, i: usize, args: &[&str]) -> Value {
        let o = Command::new(sluicectl())
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        assert_eq!(v["ok"], true, "lb{i} {args:?}: {v}");
        v["result"].clone()
    }

    fn start_sluice(&mut self, i: usize) {
        let cfg = self.dir.join(format!("lb{i}.toml"));
        let log = std::fs::File::create(self.dir.join(format!("lb{i}.log"))).unwrap();
        let child = self
            .ns(&format!("lb{i}"))
            .args([env!("CARGO_BIN_EXE_sluice"), "run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.sluice[i - 1] = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket(i)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "lb{i} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The router's next hops for the VIP (the kernel's table, as BIRD installed it).
    fn next_hops(&self) -> Vec<String> {
        let r = self.run("rtr", &["ip", "route", "show", "10.99.0.100"]);
        let mut hops: Vec<String> = r
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router's next hops are `want`; the time it took.
    fn await_hops(&self, want: &[&str], limit: Duration) -> Duration {
        self.await_hops_since(Instant::now(), want, limit)
    }

    /// As [`Site::await_hops`], timed from `start`.
    fn await_hops_since(&self, start: Instant, want: &[&str], limit: Duration) -> Duration {
        loop {
            let hops = self.next_hops();
            if hops == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "next hops {hops:?}, waited {limit:?} for {want:?}; bird: {}",
                self.run(
                    "rtr",
                    &[
                        "birdc",
                        "-s",
                        self.dir.join("bird.ctl").to_str().unwrap(),
                        "show",
                        "protocols"
                    ]
                )
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn packets_in(&self, i: usize) -> u64 {
        self.ctl(i, &["stats"])["packets_in"].as_u64().unwrap_or(0)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

impl Site {
    /// The topology of tests/e2e/ecmp.sh (two instances, two backends) under prefix `pfx`.
    fn up(pfx: &'static str) -> Site {
        let dir = std::env::temp_dir().join(format!("sluice-{pfx}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("bash")
            .args([TOPOLOGY, "up", pfx, "2", "2", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "topology: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Site {
            pfx,
            dir,
            sluice: vec![None, None],
            others: Vec::new(),
        }
    }

    /// Instance `i`'s configuration: DSR to both backends, with `extra` in `[node]` and
    /// `sections` after `[control]`.
    fn write_sluice_config(&self, i: usize, extra_node: &str, sections: &str, health: &str) {
        let core = core_affinity::get_core_ids().map_or(0, |c| c.len().saturating_sub(1));
        write(
            &self.dir.join(format!("lb{i}.toml")),
            &format!(
                "[node]\nmac = \"02:00:00:00:00:0{i}\"\nipv4 = \"10.99.0.{i}\"\ngateway = \"10.99.0.254\"\n{extra_node}\
                 [dataplane]\ndriver = \"xdp\"\ncores = [{core}]\n[dataplane.xdp]\ninterface = \"eth0\"\n\
                 [control]\nsocket = \"{}\"\n{sections}\
                 [[service]]\nname = \"web\"\nvip = \"10.99.0.100:80\"\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n{health}\
                 [[service.backend]]\naddress = \"10.99.0.11:80\"\n[[service.backend]]\naddress = \"10.99.0.12:80\"\n",
                self.socket(i).display()
            ),
        );
    }

    /// Runs `args` in namespace `name` until the site is torn down, its output in `log`.
    fn keep_running(&mut self, name: &str, args: &[&str], log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = self
            .ns(name)
            .args(args)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.others.push(child);
    }

    /// `n` downloads of /big (12 MB at 1 MB/s: 12 s each) started now.
    fn downloads(&self, n: usize) -> Vec<Child> {
        (0..n)
            .map(|_| {
                self.ns("cli")
                    .args([
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-m",
                        "60",
                        "--limit-rate",
                        "1M",
                        "-w",
                        "%{http_code} %{size_download}",
                        "http://10.99.0.100/big",
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }

    /// Cuts instance `i` off (its link down, then SIGKILL): it sends nothing more, as a
    /// machine that died would.
    fn crash(&mut self, i: usize) {
        self.run(
            "lan",
            &["ip", "link", "set", &format!("{}lb{i}", self.pfx), "down"],
        );
        if let Some(mut c) = self.sluice[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The ECMP site: BIRD on the router, each instance with `[bgp]` and its own ExaBGP.
fn bgp_site() -> Site {
    let mut site = Site::up("ha");
    let dir = site.dir.clone();
    let bird = dir.join("bird.conf");
    write(
        &bird,
        &format!(
            "router id 10.99.0.254;\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths yes; }}\n\
             template bgp sluice {{\n  local 10.99.0.254 as 65000;\n  passive yes;\n  hold time {HOLD_S};\n  keepalive time 1;\n  ipv4 {{ import all; export none; }};\n}}\n\
             protocol bgp lb1 from sluice {{ neighbor 10.99.0.21 as 65001; }}\n\
             protocol bgp lb2 from sluice {{ neighbor 10.99.0.22 as 65001; }}\n"
        ),
    );
    let ok = site
        .ns("rtr")
        .args(["bird", "-c"])
        .arg(&bird)
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "bird did not start");
    for i in 1..=2 {
        site.write_sluice_config(
            i,
            "",
            &format!("[bgp]\nshutdown_grace_ms = {GRACE_MS}\n"),
            "[service.health]\ntype = \"tcp\"\ninterval = 0.5\ntimeout = 0.5\nrise = 1\nfall = 2\n",
        );
        let exa = dir.join(format!("exabgp{i}.conf"));
        write(
            &exa,
            &format!(
                "process sluice {{\n  run {} --socket {} bgp feed --interval-ms 200;\n  encoder text;\n}}\n\
                 neighbor 10.99.0.254 {{\n  router-id 10.99.0.2{i};\n  local-address 10.99.0.2{i};\n  local-as 65001;\n  peer-as 65000;\n  hold-time {HOLD_S};\n  api {{ processes [ sluice ]; }}\n}}\n",
                sluicectl().display(),
                site.socket(i).display()
            ),
        );
        site.start_sluice(i);
        site.keep_running(
            &format!("lb{i}"),
            &[
                "env",
                "exabgp.daemon.user=root",
                "exabgp.daemon.daemonize=false",
                "exabgp.log.destination=stdout",
                "exabgp.api.cli=false",
                "exabgp",
                exa.to_str().unwrap(),
            ],
            &format!("exabgp{i}.log"),
        );
    }
    site
}

/// How many downloads delivered the whole file.
fn completed(children: Vec<Child>) -> usize {
    children
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned())
        .filter(|out| out == "200 12000000")
        .count()
}

#[test]
fn ecmp_instances_announce_withdraw_and_keep_connections_through_a_stop_and_a_crash() {
    if !root() || !have("exabgp") || !have("bird") {
        eprintln!("skipped: needs root, exabgp and bird2 (scripts/test.sh installs them)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = bgp_site();
    let both = ["10.99.0.21", "10.99.0.22"];
    let t = site.await_hops(&both, Duration::from_secs(30));
    eprintln!("ha: both instances announced, the router has two next hops after {t:?} (health checks, BGP open)");
    for i in 1..=2 {
        let s = site.ctl(i, &["status"]);
        assert_eq!(s["node"], "active");
        assert_eq!(s["bgp"]["announced"][0], "10.99.0.100/32", "{s}");
    }

    // New connections spread over both instances.
    let before = [site.packets_in(1), site.packets_in(2)];
    for _ in 0..40 {
        let out = site.run("cli", &["curl", "-s", "-m", "2", "http://10.99.0.100/"]);
        assert!(out == "b1\n" || out == "b2\n", "answer {out:?}");
    }
    let gained = [
        site.packets_in(1) - before[0],
        site.packets_in(2) - before[1],
    ];
    eprintln!("ha: 40 requests, packets in per instance {gained:?}");
    assert!(gained[0] > 20 && gained[1] > 20, "spread {gained:?}");

    // Every backend down: withdrawn from both; one back: announced again.
    site.run("b1", &["pkill", "-f", "http.server"]);
    site.run("b2", &["pkill", "-f", "http.server"]);
    let t = site.await_hops(&[], Duration::from_secs(10));
    eprintln!("ha: all backends down -> withdrawn after {t:?}");
    let r = site.ctl(1, &["bgp", "routes"]);
    assert!(
        r["routes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no usable backend"),
        "{r}"
    );
    for b in ["b1", "b2"] {
        let server = site
            .ns(b)
            .args([
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                "0.0.0.0",
                "--directory",
            ])
            .arg(site.dir.join(b))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        site.others.push(server);
    }
    let t = site.await_hops(&both, Duration::from_secs(10));
    eprintln!("ha: backends back -> announced again after {t:?}");

    // The operator drains one instance and activates it again.
    site.ctl(1, &["node", "drain"]);
    let t = site.await_hops(&["10.99.0.22"], Duration::from_secs(5));
    eprintln!("ha: node drain -> withdrawn after {t:?}");
    assert_eq!(site.ctl(1, &["status"])["node"], "drained");
    site.ctl(1, &["node", "activate"]);
    site.await_hops(&both, Duration::from_secs(5));

    // A graceful stop: 100 downloads running over both instances, SIGTERM to one.
    let running = site.downloads(100);
    std::thread::sleep(Duration::from_secs(3));
    let on = [site.ctl(1, &["stats"]), site.ctl(2, &["stats"])];
    eprintln!(
        "ha: conntrack before the stop: {} and {} flows",
        on[0]["conntrack"]["active"], on[1]["conntrack"]["active"]
    );
    let pid = site.sluice[0].as_ref().unwrap().id();
    let term = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let t = site.await_hops(&["10.99.0.22"], Duration::from_secs(5));
    let status = site.sluice[0].take().unwrap().wait().unwrap();
    let stopped = term.elapsed();
    eprintln!("ha: SIGTERM -> withdrawn after {t:?}, process ended after {stopped:?} (grace {GRACE_MS} ms)");
    assert!(status.success(), "lb1 exit {status:?}");
    assert!(
        stopped >= Duration::from_millis(GRACE_MS),
        "stopped before the grace: {stopped:?}"
    );
    let done = completed(running);
    eprintln!("ha: graceful stop: {done} of 100 downloads completed");
    assert_eq!(done, 100, "downloads broken by a graceful stop");

    // Back: the feed, still running under ExaBGP, announces the restarted instance.
    site.start_sluice(1);
    let t = site.await_hops(&both, Duration::from_secs(15));
    eprintln!("ha: lb1 restarted -> announced after {t:?}");

    // A crash: the instance vanishes (its link cut, then SIGKILL) with no BGP message;
    // the router's hold timer ends the session.
    let running = site.downloads(100);
    std::thread::sleep(Duration::from_secs(3));
    let cut = Instant::now();
    site.crash(1);
    let t = site.await_hops_since(cut, &["10.99.0.22"], Duration::from_secs(HOLD_S + 5));
    eprintln!("ha: crash -> the router dropped lb1 after {t:?} (hold time {HOLD_S} s)");
    // The last keepalive came at most a second before the cut: the session ends between
    // HOLD_S - 1 and HOLD_S seconds after it (a closed session would end at once).
    assert!(
        t >= Duration::from_millis(HOLD_S * 1000 - 1500),
        "gone before the hold timer: {t:?}"
    );
    let done = completed(running);
    eprintln!("ha: crash: {done} of 100 downloads completed");
    assert!(
        done >= 95,
        "only {done} of 100 downloads survived the crash"
    );
}

/// The VRRP site: the router reaches the VIP on-link (by ARP); each instance starts as a
/// standby and runs keepalived, whose notify hooks make it active or standby.
fn vrrp_site() -> Site {
    let mut site = Site::up("hv");
    site.run(
        "rtr",
        &["ip", "route", "add", "10.99.0.100/32", "dev", "eth1"],
    );
    let ctl = sluicectl();
    for i in 1..=2 {
        site.write_sluice_config(i, "start_as = \"standby\"\n", "", "");
        let sock = site.socket(i);
        let hook = |verb: &str| {
            format!(
                "\"{} --socket {} node {verb}\"",
                ctl.display(),
                sock.display()
            )
        };
        let conf = site.dir.join(format!("keepalived{i}.conf"));
        write(
            &conf,
            &format!(
                "global_defs {{\n  router_id lb{i}\n  script_user root\n  enable_script_security\n  vrrp_version 3\n}}\n\
                 vrrp_instance sluice {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {}\n  advert_int {VRRP_ADVERT}\n\
                 \x20 virtual_ipaddress {{\n    169.254.51.1/32 dev lo\n  }}\n\
                 \x20 notify_master {}\n  notify_backup {}\n  notify_fault {}\n}}\n",
                200 - 50 * i,
                hook("activate"),
                hook("standby"),
                hook("standby")
            ),
        );
        site.start_sluice(i);
        let pid = site.dir.join(format!("keepalived{i}.pid"));
        let vrrp_pid = site.dir.join(format!("keepalived{i}-vrrp.pid"));
        site.keep_running(
            &format!("lb{i}"),
            &[
                "keepalived",
                "-n",
                "-l",
                "-D",
                "--vrrp",
                "-f",
                conf.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-r",
                vrrp_pid.to_str().unwrap(),
            ],
            &format!("keepalived{i}.log"),
        );
    }
    site
}

/// VRRP advertisement interval, seconds (keepalived with VRRP version 3 takes fractions).
const VRRP_ADVERT: f64 = 0.2;

#[test]
fn vrrp_pair_with_keepalived_takes_over_the_vip_and_keeps_connections() {
    if !root() || !have("keepalived") {
        eprintln!("skipped: needs root and keepalived (scripts/test.sh installs it)");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut site = vrrp_site();
    let start = Instant::now();
    let state = |site: &Site, i: usize| {
        site.ctl(i, &["status"])["node"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    while state(&site, 1) != "active" {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "keepalived never made lb1 active"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "hv: lb1 active after {:?} (keepalived's first election)",
        start.elapsed()
    );
    assert_eq!(state(&site, 2), "standby");
    assert!(
        site.ctl(1, &["stats"])["vip_announcements"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // The router resolves the VIP to the active instance only; the standby answers nothing
    // for it and forwards nothing.
    site.run("rtr", &["ip", "neigh", "flush", "dev", "eth1"]);
    for _ in 0..10 {
        let out = site.run("cli", &["curl", "-s", "-m", "2", "http://10.99.0.100/"]);
        assert!(out == "b1\n" || out == "b2\n", "answer {out:?}");
    }
    let neigh = site.run("rtr", &["ip", "neigh", "show", "10.99.0.100"]);
    assert!(neigh.contains("02:00:00:00:00:01"), "the VIP at {neigh}");
    let standby = site.ctl(2, &["stats"]);
    assert_eq!(standby["neighbour_answers"], 0, "{standby}");
    assert_eq!(standby["services"][0]["packets"], 0, "{standby}");

    // The active instance dies; keepalived on the other takes over and sluice there
    // announces the VIP by gratuitous ARP.
    let running = site.downloads(50);
    std::thread::sleep(Duration::from_secs(3));
    let cut = Instant::now();
    site.crash(1);
    // (pkill by this site's file: namespaces share the process table.)
    let conf = site.dir.join("keepalived1.conf");
    site.run("lb1", &["pkill", "-KILL", "-f", conf.to_str().unwrap()]);
    loop {
        let out = site.run("cli", &["curl", "-s", "-m", "0.5", "http://10.99.0.100/"]);
        if out == "b1\n" || out == "b2\n" {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "no takeover within 15 s"
        );
    }
    let takeover = cut.elapsed();
    eprintln!("hv: takeover: new connections served again {takeover:?} after the active instance died (advert {VRRP_ADVERT} s)");
    assert_eq!(state(&site, 2), "active");
    let neigh = site.run("rtr", &["ip", "neigh", "show", "10.99.0.100"]);
    assert!(
        neigh.contains("02:00:00:00:00:02"),
        "the VIP at {neigh} after the takeover"
    );
    let done = completed(running);
    eprintln!("hv: takeover: {done} of 50 downloads completed");
    assert!(
        done >= 48,
        "only {done} of 50 downloads survived the takeover"
    );
}
