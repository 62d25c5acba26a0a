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
const PFX: &str = "ha";
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

fn ns(name: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{PFX}-{name}")]);
    c
}

fn run(name: &str, args: &[&str]) -> String {
    let o = ns(name).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The namespaces and every process in them; torn down on drop.
struct Site {
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
        let _ = Command::new("bash").args([TOPOLOGY, "down", PFX]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Site {
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
        let child = ns(&format!("lb{i}"))
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
        let r = run("rtr", &["ip", "route", "show", "10.99.0.100"]);
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
                run(
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

fn set_up() -> Site {
    let dir = std::env::temp_dir().join(format!("sluice-ha-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = Command::new("bash")
        .args([TOPOLOGY, "up", PFX, "2", "2", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "topology: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut site = Site {
        dir: dir.clone(),
        sluice: vec![None, None],
        others: Vec::new(),
    };
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
    let ok = ns("rtr")
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
    let core = core_affinity::get_core_ids().map_or(0, |c| c.len().saturating_sub(1));
    for i in 1..=2 {
        let sock = site.socket(i);
        write(
            &dir.join(format!("lb{i}.toml")),
            &format!(
                "[node]\nmac = \"02:00:00:00:00:0{i}\"\nipv4 = \"10.99.0.{i}\"\ngateway = \"10.99.0.254\"\n\
                 [dataplane]\ndriver = \"xdp\"\ncores = [{core}]\n[dataplane.xdp]\ninterface = \"eth0\"\n\
                 [control]\nsocket = \"{}\"\n\
                 [bgp]\nshutdown_grace_ms = {GRACE_MS}\n\
                 [[service]]\nname = \"web\"\nvip = \"10.99.0.100:80\"\nprotocol = \"tcp\"\nforwarding = \"dsr\"\n\
                 [service.health]\ntype = \"tcp\"\ninterval = 0.5\ntimeout = 0.5\nrise = 1\nfall = 2\n\
                 [[service.backend]]\naddress = \"10.99.0.11:80\"\n[[service.backend]]\naddress = \"10.99.0.12:80\"\n",
                sock.display()
            ),
        );
        let exa = dir.join(format!("exabgp{i}.conf"));
        write(
            &exa,
            &format!(
                "process sluice {{\n  run {} --socket {} bgp feed --interval-ms 200;\n  encoder text;\n}}\n\
                 neighbor 10.99.0.254 {{\n  router-id 10.99.0.2{i};\n  local-address 10.99.0.2{i};\n  local-as 65001;\n  peer-as 65000;\n  hold-time {HOLD_S};\n  api {{ processes [ sluice ]; }}\n}}\n",
                sluicectl().display(),
                sock.display()
            ),
        );
        site.start_sluice(i);
        let log = std::fs::File::create(dir.join(format!("exabgp{i}.log"))).unwrap();
        // ExaBGP runs until the site is torn down.
        let exabgp = ns(&format!("lb{i}"))
            .args([
                "env",
                "exabgp.daemon.user=root",
                "exabgp.daemon.daemonize=false",
                "exabgp.log.destination=stdout",
                "exabgp.api.cli=false",
                "exabgp",
            ])
            .arg(&exa)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        site.others.push(exabgp);
    }
    site
}

/// `n` downloads of /big (12 MB at 1 MB/s: 12 s each) started now; join for each
/// (status, bytes).
fn downloads(n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            ns("cli")
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
    let mut site = set_up();
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
        let out = run("cli", &["curl", "-s", "-m", "2", "http://10.99.0.100/"]);
        assert!(out == "b1\n" || out == "b2\n", "answer {out:?}");
    }
    let gained = [
        site.packets_in(1) - before[0],
        site.packets_in(2) - before[1],
    ];
    eprintln!("ha: 40 requests, packets in per instance {gained:?}");
    assert!(gained[0] > 20 && gained[1] > 20, "spread {gained:?}");

    // Every backend down: withdrawn from both; one back: announced again.
    run("b1", &["pkill", "-f", "http.server"]);
    run("b2", &["pkill", "-f", "http.server"]);
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
        let server = ns(b)
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
    let running = downloads(100);
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
    let running = downloads(100);
    std::thread::sleep(Duration::from_secs(3));
    let cut = Instant::now();
    run("lan", &["ip", "link", "set", &format!("{PFX}lb1"), "down"]);
    if let Some(mut c) = site.sluice[0].take() {
        let _ = c.kill();
        let _ = c.wait();
    }
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
