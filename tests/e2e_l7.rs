//! The L7 pool end to end: sluice on AF_XDP terminates real curl, wrk and h2load connections
//! in its own TCP stack and proxies HTTP/1.1 to real keep-alive backends
//! (tests/e2e/http_backend.py) over connections it opens from the node's address, in network
//! namespaces. Routing by host, wildcard host, path and header; each algorithm's
//! distribution; sticky cookies; upstream keep-alive reuse seen from the backends; route
//! header rules; Expect: 100-continue; HTTP/1.0 keep-alive; 50 MB chunked bodies both ways
//! checked byte for byte; a WebSocket-style upgrade; 400/404/413/431/502/503/504 from real
//! causes; draining under load; health checks; live route and pool changes; slow clients
//! closed and counted while others are served; 10,000 idle connections held; the counters in
//! `sluicectl stats` and Prometheus; and a shorter run on DPDK. Needs root.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use harness::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/http_backend.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/l7_client.py");
/// The L7 pool's test certificates (l7-offload/tests/tls/make-certs.sh): a CA, and leaves
/// for www.example (+ *.example) and *.img.example.
const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/l7-offload/tests/tls");

fn services() -> String {
    r#"
[metrics]
listen = "127.0.0.1:9100"

[[service]]
name = "site"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"

[service.limits]
body_bytes = 104857600

[[service.route]]
host = "api.example"
path_prefix = "/v1/"
pool = "api"
[service.route.request_headers]
set = { "X-Canary" = "from-route" }
[service.route.response_headers]
add = { "X-Served-By" = "sluice" }
remove = ["x-saw-cookie"]

[[service.route]]
host = "*.img.example"
pool = "img"

[[service.route]]
header = "x-canary: 1"
pool = "canary"

[[service.route]]
path_prefix = "/lr/"
pool = "lr"

[[service.route]]
path_prefix = "/p2c/"
pool = "p2c"

[[service.route]]
path_prefix = "/checked"
pool = "checked"

[[service.route]]
path_prefix = "/healthy"
pool = "healthy"

[[service.pool]]
name = "www"
sticky_cookie = "SLUICE_AFFINITY"
sticky_max_age = 600
[[service.pool.backend]]
address = "10.99.0.11:8081"
[[service.pool.backend]]
address = "10.99.0.12:8081"
[[service.pool.backend]]
address = "10.99.0.13:8081"

[[service.pool]]
name = "api"
[[service.pool.backend]]
address = "10.99.0.11:8081"
[[service.pool.backend]]
address = "10.99.0.12:8081"
[[service.pool.backend]]
address = "10.99.0.13:8081"
weight = 2

[[service.pool]]
name = "img"
algorithm = "hash"
hash_on = "header:x-user"
[[service.pool.backend]]
address = "10.99.0.11:8081"
[[service.pool.backend]]
address = "10.99.0.12:8081"
[[service.pool.backend]]
address = "10.99.0.13:8081"

[[service.pool]]
name = "canary"
[[service.pool.backend]]
address = "10.99.0.13:8081"

[[service.pool]]
name = "lr"
algorithm = "least-requests"
[[service.pool.backend]]
address = "10.99.0.11:8081"
[[service.pool.backend]]
address = "10.99.0.12:8081"

[[service.pool]]
name = "p2c"
algorithm = "p2c"
[[service.pool.backend]]
address = "10.99.0.11:8081"
[[service.pool.backend]]
address = "10.99.0.12:8081"
[[service.pool.backend]]
address = "10.99.0.13:8081"

[[service.pool]]
name = "checked"
[service.pool.health]
type = "tcp"
interval = 0.2
timeout = 0.2
rise = 1
fall = 1
[[service.pool.backend]]
address = "10.99.0.12:9"

[[service.pool]]
name = "healthy"
[service.pool.health]
type = "http"
path = "/stats"
interval = 0.2
timeout = 0.2
rise = 1
fall = 1
[[service.pool.backend]]
address = "10.99.0.11:8081"

[[service]]
name = "edge"
vip = "10.99.0.100:81"
protocol = "tcp"
forwarding = "l7"
l7 = "http"

[service.limits]
header_bytes = 1024
body_bytes = 1000

[service.timeouts]
client_header_ms = 1500
backend_response_ms = 700

[[service.route]]
path_prefix = "/dead"
pool = "dead"

[[service.route]]
path_prefix = "/"
method = "POST"
pool = "slow"

[[service.route]]
path_prefix = "/hang"
pool = "slow"

[[service.route]]
path_prefix = "/ok"
pool = "slow"

[[service.pool]]
name = "slow"
[[service.pool.backend]]
address = "10.99.0.11:8081"

[[service.pool]]
name = "dead"
[[service.pool.backend]]
address = "10.99.0.12:9"
"#
    .to_string()
        + &format!(
            r#"
[[service]]
name = "secure"
vip = "10.99.0.100:443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls"
default_pool = "www"

[service.timeouts]
client_header_ms = 1500

[[service.certificate]]
names = ["www.example", "*.example"]
cert = "{TLS_DIR}/www.pem"
key = "{TLS_DIR}/www.key"
default = true

[[service.certificate]]
names = ["*.img.example"]
cert = "{TLS_DIR}/img.pem"
key = "{TLS_DIR}/img.key"

[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.12:8081"

[[service]]
name = "relay"
vip = "10.99.0.100:8443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls-passthrough"

[[service.route]]
sni = "*.img.example"
pool = "img"

[[service.pool]]
name = "img"
[[service.pool.backend]]
address = "10.99.0.13:9443"

[[service]]
name = "reenc"
vip = "10.99.0.100:8080"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "verified"

[[service.route]]
path_prefix = "/wrong-ca"
pool = "wrong-ca"

[[service.pool]]
name = "verified"
[service.pool.tls]
ca = "{TLS_DIR}/ca.pem"
server_name = "img.example"
[[service.pool.backend]]
address = "10.99.0.13:9443"

[[service.pool]]
name = "wrong-ca"
[service.pool.tls]
ca = "{TLS_DIR}/other-ca.pem"
server_name = "img.example"
[[service.pool.backend]]
address = "10.99.0.13:9443"
"#
        )
}

/// One curl in the client namespace: (status, headers, body).
fn curl(t: &Topology, args: &[&str]) -> (u16, String, String) {
    let mut a = vec!["curl", "-s", "-m", "20", "-D", "-"];
    a.extend_from_slice(args);
    let o = t.exec("cli", &a);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// The first word of each body of `n` requests: which backend answered.
fn answers(t: &Topology, n: usize, args: &[&str]) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let (code, _, body) = curl(t, args);
        let who = if code == 200 {
            body.split(' ').next().unwrap_or("").to_string()
        } else {
            format!("status {code}")
        };
        *by.entry(who).or_default() += 1;
    }
    by
}

/// Connections backend `i` accepted from sluice's node address (health checks come from
/// the host's own address and are not counted).
fn backend_connections(t: &Topology, i: usize) -> u64 {
    let o = t.exec(
        &format!("b{i}"),
        &[
            "curl",
            "-s",
            &format!("http://10.99.0.1{i}:8081/stats?from=10.99.0.1"),
        ],
    );
    let s = String::from_utf8_lossy(&o.stdout);
    s.split_whitespace()
        .find_map(|w| w.strip_prefix("connections="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The blob the backends serve at /blob/N: a SHA-256 chain (as http_backend.py makes it).
fn sha_of_blob(n: usize) -> String {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import hashlib\nn={n}\nout=bytearray()\nh=hashlib.sha256(b'sluice').digest()\nwhile len(out)<n:\n    out+=h\n    h=hashlib.sha256(h).digest()\nprint(hashlib.sha256(out[:n]).hexdigest())"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The L7 counters once `ready` holds of them (the shards publish every 100 ms), or the
/// last ones after 3 s.
fn l7_stats(b: &Balancer, ready: impl Fn(&Value) -> bool) -> Value {
    l7_stats_within(b, Duration::from_secs(3), ready)
}

fn l7_stats_within(b: &Balancer, wait: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = b.ctl(&["stats"])["l7"].clone();
        if ready(&v) || start.elapsed() > wait {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(t: &Topology, args: &[&str]) -> String {
    let mut a = vec!["python3", CLIENT];
    a.extend_from_slice(args);
    let o = t.exec("cli", &a);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The namespaces' worker core is shared: one scenario at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The topology with the keep-alive backends on :8081 running.
fn topology(pfx: &str) -> (Topology, Vec<std::process::Child>) {
    assert!(
        root(),
        "the end-to-end tests need root (network namespaces)"
    );
    let t = Topology::up(pfx, 3, "snat");
    // The host's own address beside sluice's, as on a real server: health checks are the
    // host's connections, from here (the XDP program leaves their replies to the kernel).
    let o = t.exec("lb", &["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let backends: Vec<_> = (1..=3)
        .map(|i| {
            t.spawn(
                &format!("b{i}"),
                &["python3", BACKEND, "8081", &format!("b{i}")],
            )
        })
        .collect();
    for i in 1..=3 {
        let start = Instant::now();
        while !t
            .exec(
                &format!("b{i}"),
                &["curl", "-s", &format!("http://10.99.0.1{i}:8081/stats")],
            )
            .status
            .success()
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "backend b{i} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (t, backends)
}

/// The L7 worker pinned to the poll loop's core, where it runs inside the poll loop's thread.
fn co_run() -> String {
    format!(
        "{}
[l7]
cores = [{}]
",
        services(),
        worker_core()
    )
}

/// The same pool on DPDK (net_af_packet on the veth), its L7 worker run by the poll loop:
/// routing, a body each way, errors.
#[test]
fn l7_http_on_dpdk_af_packet_routes_and_streams() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (t, mut backends) = topology("l7d");
    let b = Balancer::start(&t, &driver_config("dpdk", &co_run()));
    let by = answers(
        &t,
        40,
        &["-H", "Host: api.example", "http://10.99.0.100/v1/items"],
    );
    assert_eq!(
        (by.get("b1"), by.get("b2"), by.get("b3")),
        (Some(&10), Some(&10), Some(&20)),
        "api pool by weight: {by:?}"
    );
    let n = 5_000_000;
    let want = sha_of_blob(n);
    let file = t.dir.join("upload");
    let o = t.exec(
        "cli",
        &["bash", "-c", &format!("curl -s -m 60 http://10.99.0.100/blob/{n} -o {f} && sha256sum {f} && curl -s -m 60 -H 'Transfer-Encoding: chunked' -T {f} http://10.99.0.100/digest", f = file.display())],
    );
    let got = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        got.matches(&want).count(),
        2,
        "download and upload: {got} want {want}"
    );
    assert_eq!(curl(&t, &["http://10.99.0.100:81/nothing"]).0, 404);
    assert_eq!(curl(&t, &["http://10.99.0.100:81/dead"]).0, 502);
    let l7 = l7_stats(&b, |v| {
        v["errors"]["backend_failed"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(l7["requests"], 44, "{l7}");
    assert_eq!(l7["errors"]["no_route"], 1, "{l7}");
    // A backend killed: nothing listens any more, its only pool answers 502.
    let _ = backends[2].kill();
    let _ = backends[2].wait();
    assert_eq!(
        curl(&t, &["-H", "X-Canary: 1", "http://10.99.0.100/any"]).0,
        502
    );
    // The pooled upstream connections are reset at the stop, their RSTs sent by the poll
    // loop that runs the shard.
    let out = b.stop();
    let report = String::from_utf8_lossy(&out.stdout);
    let reset: u64 = report
        .split(" connections reset at stop")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reset >= 1, "{report}");
}

/// 10,000 idle keep-alive client connections are held while wrk's requests still flow, with
/// the L7 worker run by the poll loop.
#[test]
fn l7_holds_ten_thousand_idle_connections_while_requests_flow() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (t, _backends) = topology("l7i");
    let b = Balancer::start(&t, &driver_config("xdp", &co_run()));
    let idle = t.spawn(
        "cli",
        &[
            "python3",
            CLIENT,
            "idle",
            "10.99.0.100",
            "80",
            "10000",
            "12",
        ],
    );
    let l7 = l7_stats_within(&b, Duration::from_secs(90), |v| {
        v["client_connections"].as_u64().unwrap_or(0) >= 10_000
    });
    assert!(
        l7["client_connections"].as_u64().unwrap_or(0) >= 10_000,
        "10,000 client connections open: {l7}"
    );
    let o = t.exec(
        "cli",
        &[
            "wrk",
            "-t1",
            "-c20",
            "-d3",
            "-H",
            "Host: api.example",
            "http://10.99.0.100/v1/wrk",
        ],
    );
    let report = String::from_utf8_lossy(&o.stdout);
    let rps: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        rps > 50.0,
        "requests flow beside the idle connections: {report}"
    );
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "{report}"
    );
    // And h2load's HTTP/1.1 client, pipelining, beside them.
    let o = t.exec(
        "cli",
        &[
            "h2load",
            "--h1",
            "-n",
            "2000",
            "-c",
            "10",
            "-m",
            "4",
            "http://10.99.0.100/h2load",
        ],
    );
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        report.contains("2000 succeeded, 0 failed, 0 errored"),
        "h2load: {report}"
    );
    let out = idle.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "held 10000, answered 100 of 100",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn l7_http_on_af_xdp_routes_balances_streams_and_fails_clearly() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (t, _backends) = topology("l7");
    let b = Balancer::start(&t, &driver_config("xdp", &services()));

    // Host and path: the api pool, weighted round-robin 1:1:2, exactly (one L7 worker).
    let by = answers(
        &t,
        40,
        &["-H", "Host: api.example", "http://10.99.0.100/v1/items"],
    );
    assert_eq!(
        (by.get("b1"), by.get("b2"), by.get("b3")),
        (Some(&10), Some(&10), Some(&20)),
        "api pool by weight: {by:?}"
    );
    // The path must hold too: /v2/ on that host goes to the default pool (sticky, any).
    let (code, _, body) = curl(&t, &["-H", "Host: api.example", "http://10.99.0.100/v2/x"]);
    assert_eq!(code, 200);
    assert!(body.ends_with(" /v2/x\n"), "{body}");
    // Wildcard host, hashed on a header: one user always lands on one backend; users spread.
    let mut homes = std::collections::HashSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let h = format!("x-user: {user}");
        let by = answers(
            &t,
            5,
            &[
                "-H",
                "Host: cdn.img.example",
                "-H",
                &h,
                "http://10.99.0.100/p.png",
            ],
        );
        assert_eq!(by.len(), 1, "{user} always on one backend: {by:?}");
        homes.insert(by.keys().next().unwrap().clone());
    }
    assert!(
        homes.len() >= 2,
        "users spread over the img pool: {homes:?}"
    );
    // Header condition.
    let by = answers(&t, 6, &["-H", "X-Canary: 1", "http://10.99.0.100/any"]);
    assert_eq!(by.get("b3"), Some(&6), "canary header: {by:?}");
    // least-requests (sequential requests: every backend idle, so all get some) and p2c.
    let lr = answers(&t, 20, &["http://10.99.0.100/lr/x"]);
    assert_eq!(
        (lr.get("b1"), lr.get("b2")),
        (Some(&10), Some(&10)),
        "least-requests, idle backends in turn: {lr:?}"
    );
    let p2c = answers(&t, 60, &["http://10.99.0.100/p2c/x"]);
    assert!(
        ["b1", "b2", "b3"]
            .iter()
            .all(|k| p2c.get(*k).is_some_and(|&n| n >= 5)),
        "p2c spreads: {p2c:?}"
    );

    // Draining a backend under load: no request fails, and new ones avoid it.
    let load = t.spawn(
        "cli",
        &[
            "bash",
            "-c",
            "for i in $(seq 150); do curl -s -m 5 -o /dev/null -w '%{http_code}\\n' -H 'Host: api.example' http://10.99.0.100/v1/load; done",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    b.ctl(&["backend", "drain", "site", "10.99.0.13:8081"]);
    let out = load.wait_with_output().unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().count(), 150, "{codes}");
    assert!(
        codes.lines().all(|c| c == "200"),
        "no failed request while draining: {codes}"
    );
    let by = answers(
        &t,
        30,
        &["-H", "Host: api.example", "http://10.99.0.100/v1/after"],
    );
    assert_eq!(
        by.get("b3"),
        None,
        "the drained backend gets no new requests: {by:?}"
    );
    assert_eq!(by.values().sum::<usize>(), 30, "{by:?}");
    b.ctl(&["backend", "enable", "site", "10.99.0.13:8081"]);
    // The pool's health check finds nothing listening: no backend takes requests, 503.
    let start = Instant::now();
    loop {
        let code = curl(&t, &["http://10.99.0.100/checked"]).0;
        if code == 503 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {code}: health never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A pool whose backend passes its check keeps serving, and the check shows it up.
    let health = b.ctl(&["health", "show"]);
    let up = health["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|h| h["address"] == "10.99.0.11:8081" && h["health"] == "up");
    assert!(up, "the healthy pool's backend is up: {health}");
    assert_eq!(curl(&t, &["http://10.99.0.100/healthy"]).0, 200);

    // Routes and pools change live through sluicectl: a new pool, and a route to it put
    // first; then the route goes again.
    b.ctl(&["pool", "add", "site", "extra", "10.99.0.12:8081=3"]);
    b.ctl(&[
        "route",
        "add",
        "site",
        "--host",
        "live.example",
        "--pool",
        "extra",
        "--position",
        "0",
    ]);
    let by = answers(
        &t,
        5,
        &["-H", "Host: live.example", "http://10.99.0.100/new"],
    );
    assert_eq!(
        by.get("b2"),
        Some(&5),
        "the live route to the new pool: {by:?}"
    );
    let text = |args: &[&str]| {
        let o = std::process::Command::new(common::sluicectl())
            .arg("--socket")
            .arg(&b.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // (Counters are published every 100 ms.)
    std::thread::sleep(Duration::from_millis(300));
    let routes = text(&["route", "list", "site"]);
    let first = routes.lines().nth(1).unwrap_or("");
    assert!(
        first.contains("live.example")
            && first.contains("extra")
            && first.trim_end().ends_with(" 5"),
        "route 0 with its 5 requests: {routes}"
    );
    let api = routes
        .lines()
        .find(|l| l.contains("api.example"))
        .unwrap_or("");
    assert!(
        !api.trim_end().ends_with(" 0"),
        "the api route's count survived the live changes: {routes}"
    );
    b.ctl(&["route", "remove", "site", "0"]);
    b.ctl(&["pool", "remove", "site", "extra"]);
    let stats = text(&["stats"]);
    assert!(
        stats.contains("L7 pool:") && stats.contains("latency p50") && stats.contains("POOL"),
        "{stats}"
    );

    // A route's header rules, both ways; Expect: 100-continue through to the backend (curl
    // waits for the interim answer before sending the body); HTTP/1.0 keep-alive.
    let (_, head, _) = curl(
        &t,
        &[
            "-H",
            "Host: api.example",
            "-H",
            "X-Canary: client",
            "http://10.99.0.100/v1/rules",
        ],
    );
    assert!(
        head.contains("X-Saw-X-Canary: from-route"),
        "request rule: {head}"
    );
    assert!(
        head.contains("X-Served-By: sluice") && !head.contains("X-Saw-Cookie"),
        "response rules: {head}"
    );
    let small = t.dir.join("small");
    std::fs::write(&small, vec![b'e'; 4096]).unwrap();
    let o = t.exec(
        "cli",
        &["bash", "-c", &format!("curl -sv -m 20 -H 'Expect: 100-continue' --data-binary @{} http://10.99.0.100/digest 2>&1", small.display())],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("< HTTP/1.1 100 Continue"),
        "the interim answer reached curl: {said}"
    );
    let want = {
        let o = std::process::Command::new("sha256sum")
            .arg(&small)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(said.contains(&want), "the body after it: {said}");
    let o = t.exec(
        "cli",
        &["bash", "-c", "curl -sv -m 10 --http1.0 -H 'Connection: keep-alive' http://10.99.0.100/a http://10.99.0.100/b 2>&1"],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("< Connection: keep-alive") && said.contains("Re-using existing connection"),
        "HTTP/1.0 keep-alive: {said}"
    );

    // Forwarding headers reach the backend.
    let (_, head, _) = curl(&t, &["http://10.99.0.100/fwd"]);
    assert!(head.contains("X-Saw-X-Forwarded-For: 10.98.0.2"), "{head}");
    assert!(head.contains("X-Saw-X-Forwarded-Proto: http"), "{head}");
    assert!(
        head.contains("X-Saw-Forwarded: for=10.98.0.2;proto=http"),
        "{head}"
    );

    // TLS termination (l7 = "tls"): the certificate verified against the test CA, two
    // requests on one TLS connection, and the backend told the client spoke https.
    let ca = format!("{TLS_DIR}/ca.pem");
    let tls = [
        "--cacert",
        ca.as_str(),
        "--resolve",
        "www.example:443:10.99.0.100",
    ];
    let o = t.exec(
        "cli",
        &[
            &["curl", "-sv", "-m", "20"][..],
            &tls,
            &["https://www.example/tls/a", "https://www.example/tls/b"],
        ]
        .concat(),
    );
    let (out, said) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        out.contains("b2 /tls/a\n") && out.contains("b2 /tls/b\n"),
        "{out}\n{said}"
    );
    assert!(said.contains("Re-using existing connection"), "{said}");
    let (code, head, _) = curl(&t, &[&tls[..], &["https://www.example/fwd"]].concat());
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("X-Saw-X-Forwarded-Proto: https"), "{head}");
    // TLS 1.2, and SNI on the wildcard name choosing the other certificate.
    let o = t.exec(
        "cli",
        &["bash", "-c", &format!("echo | openssl s_client -connect 10.99.0.100:443 -servername a.img.example -tls1_2 -CAfile {ca} 2>&1")],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("CN = img")
            && said.contains("TLSv1.2")
            && said.contains("Verify return code: 0 (ok)"),
        "{said}"
    );
    // A client that is not speaking TLS gets no HTTP answer, and the failure is counted.
    let (code, _, _) = curl(&t, &["http://10.99.0.100:443/plain"]);
    assert_eq!(code, 0);
    let l7 = l7_stats(&b, |v| {
        v["errors"]["tls_handshake"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        l7["errors"]["tls_handshake"].as_u64().unwrap_or(0) >= 1,
        "{l7}"
    );
    // Resumption seen from the client: a session saved from one connection is offered on
    // the next, and accepted (stdin stays open a moment so the client reads its ticket).
    let saved = t.dir.join("tls.session");
    let resume = format!(
        "sleep 0.5 | openssl s_client -connect 10.99.0.100:443 -servername www.example -CAfile {ca} -sess_out {s} > /dev/null 2>&1; \
         sleep 0.5 | openssl s_client -connect 10.99.0.100:443 -servername www.example -CAfile {ca} -sess_in {s} 2>&1",
        s = saved.display()
    );
    let o = t.exec("cli", &["bash", "-c", &resume]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("Reused, TLSv1.3"), "{said}");
    // Hostile clients: garbage where a ClientHello belongs, plain HTTP, and a ClientHello
    // that stops halfway (held open: closed after client_header_ms); others are served
    // meanwhile, and each is counted.
    let half = t.spawn(
        "cli",
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.create_connection(('10.99.0.100',443))\ns.settimeout(30)\ns.send(bytes.fromhex('16030102000100') + b'\\x01' * 40)\nt=time.time()\ntry:\n  while s.recv(100): pass\nexcept OSError: pass\nprint('closed after', round(time.time()-t, 1))",
        ],
    );
    let o = t.exec(
        "cli",
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.99.0.100/443; head -c 3000 /dev/urandom >&3; timeout 5 cat <&3 | wc -c",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, _, _) = curl(&t, &[&tls[..], &["https://www.example/meanwhile"]].concat());
    assert_eq!(code, 200, "served while the others fail");
    let out = half.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("closed after"), "{said}");
    let l7 = l7_stats(&b, |v| {
        v["errors"]["tls_handshake"].as_u64().unwrap_or(0) >= 2
            && v["errors"]["client_header_timeout"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        l7["errors"]["tls_handshake"].as_u64().unwrap_or(0) >= 2,
        "{l7}"
    );
    assert!(
        l7["errors"]["client_header_timeout"].as_u64().unwrap_or(0) >= 1,
        "{l7}"
    );
    assert!(l7["tls_resumed"].as_u64().unwrap_or(0) >= 1, "{l7}");
    assert!(
        l7["tls_handshakes"]["1.2"].as_u64().unwrap_or(0) >= 1,
        "{l7}"
    );

    // Certificates swapped live: a slow 2 MB HTTPS download runs while the file's www
    // certificate is replaced by an RSA one for the same names and `sluicectl reload` swaps
    // it; new handshakes get the new one, the download finishes intact on the old session,
    // and `certificate list` shows the new file. An expired certificate is then refused by
    // name, the running one kept.
    let n = 2_000_000;
    let want = sha_of_blob(n);
    let got = t.dir.join("swap.blob");
    let download = t.spawn(
        "cli",
        &[
            "bash",
            "-c",
            &format!(
                "curl -sS -m 60 --limit-rate 400k --cacert {ca} --resolve www.example:443:10.99.0.100 https://www.example/blob/{n} -o {f} -w '%{{http_code}} %{{size_download}}\n' 2>&1; echo rc=$?; sha256sum {f}",
                f = got.display()
            ),
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let file = std::fs::read_to_string(&b.config).unwrap();
    let swapped = file
        .replace(&format!("{TLS_DIR}/www.pem"), &format!("{TLS_DIR}/rsa.pem"))
        .replace(&format!("{TLS_DIR}/www.key"), &format!("{TLS_DIR}/rsa.key"));
    assert_ne!(swapped, file);
    std::fs::write(&b.config, &swapped).unwrap();
    b.ctl(&["reload"]);
    let key_of_new = t.exec(
        "cli",
        &["bash", "-c", &format!("echo | openssl s_client -connect 10.99.0.100:443 -servername www.example -CAfile {ca} 2>&1")],
    );
    let said = String::from_utf8_lossy(&key_of_new.stdout);
    assert!(
        said.contains("Server public key is 2048 bit")
            && said.contains("Verify return code: 0 (ok)"),
        "new handshakes get the new certificate: {said}"
    );
    let out = download.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("200") && said.contains("rc=0") && said.contains(&want),
        "the download that began before the swap finishes intact: {said}"
    );
    let certs = b.ctl(&["certificate", "list", "secure"]);
    let www = &certs["certificates"][0];
    assert_eq!(www["file"], format!("{TLS_DIR}/rsa.pem"), "{certs}");
    assert_eq!(www["issuer"], "CN=sluice test CA", "{certs}");
    assert!(
        www["seconds_left"].as_i64().unwrap_or(0) > 99 * 365 * 86_400,
        "{certs}"
    );
    let expired = swapped
        .replace(&format!("{TLS_DIR}/rsa.pem"), &format!("{TLS_DIR}/old.pem"))
        .replace(&format!("{TLS_DIR}/rsa.key"), &format!("{TLS_DIR}/old.key"));
    std::fs::write(&b.config, &expired).unwrap();
    let o = std::process::Command::new(common::sluicectl())
        .arg("--socket")
        .arg(&b.socket)
        .arg("reload")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && said.contains("old.pem") && said.contains("expired on 2001-01-01"),
        "{said}"
    );
    let (code, _, _) = curl(&t, &[&tls[..], &["https://www.example/still"]].concat());
    assert_eq!(code, 200, "the running certificate still serves");
    std::fs::write(&b.config, &swapped).unwrap();

    // TLS passthrough (l7 = "tls-passthrough"): routed by SNI to an `openssl s_server`
    // that terminates TLS itself, with its own certificate (verified by curl for the name)
    // and its own answer; a name no route takes is refused with an alert; garbage is
    // counted.
    let s_server = t.spawn(
        "b3",
        &[
            "openssl",
            "s_server",
            "-accept",
            "9443",
            "-cert",
            &format!("{TLS_DIR}/img.pem"),
            "-key",
            &format!("{TLS_DIR}/img.key"),
            "-www",
            "-quiet",
        ],
    );
    let relay = [
        "--cacert",
        ca.as_str(),
        "--resolve",
        "a.img.example:8443:10.99.0.100",
    ];
    let start = Instant::now();
    let (code, body) = loop {
        let (code, _, body) = curl(&t, &[&relay[..], &["https://a.img.example:8443/"]].concat());
        if code == 200 || start.elapsed() > Duration::from_secs(10) {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("s_server -accept 9443"), "{body}");
    let o = t.exec(
        "cli",
        &["bash", "-c", &format!("echo | openssl s_client -connect 10.99.0.100:8443 -servername b.img.example -CAfile {ca} 2>&1")],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("CN = img") && said.contains("Verify return code: 0 (ok)"),
        "{said}"
    );
    let o = t.exec(
        "cli",
        &[
            "bash",
            "-c",
            "echo | openssl s_client -connect 10.99.0.100:8443 -servername other.example 2>&1",
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("unrecognized name"), "{said}");
    let o = t.exec(
        "cli",
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.99.0.100/8443; printf 'GET / HTTP/1.1\r\n\r\n' >&3; timeout 5 cat <&3 | wc -c",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    let l7 = l7_stats(&b, |v| {
        v["errors"]["tls_client_hello"].as_u64().unwrap_or(0) >= 1
    });
    assert!(l7["tls_passthrough"].as_u64().unwrap_or(0) >= 2, "{l7}");
    assert!(l7["errors"]["no_route"].as_u64().unwrap_or(0) >= 1, "{l7}");
    assert_eq!(l7["errors"]["tls_client_hello"].as_u64(), Some(1), "{l7}");
    // Re-encryption ([service.pool.tls]): plain HTTP in, TLS to the same s_server, its
    // certificate verified against the test CA for server_name; against a CA that did not
    // sign it, 502 and counted, the request never sent.
    let (code, _, body) = curl(&t, &["http://10.99.0.100:8080/"]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("s_server -accept 9443"), "{body}");
    let (code, _, body) = curl(&t, &["http://10.99.0.100:8080/wrong-ca"]);
    assert_eq!(code, 502, "{body}");
    let l7 = l7_stats(&b, |v| {
        v["errors"]["upstream_tls"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        l7["errors"]["upstream_tls"].as_u64().unwrap_or(0) >= 1,
        "{l7}"
    );
    assert!(
        l7["upstream_tls_handshakes"].as_u64().unwrap_or(0) >= 1,
        "{l7}"
    );
    let routes = b.ctl(&["route", "list", "relay"]);
    assert_eq!(routes["routes"][0]["sni"], "*.img.example", "{routes}");
    assert!(
        routes["routes"][0]["requests"].as_u64().unwrap_or(0) >= 2,
        "{routes}"
    );
    let mut s_server = s_server;
    let _ = s_server.kill();
    let _ = s_server.wait();

    // Sticky cookie: set on the first answer, honoured after it.
    let jar = t.dir.join("cookies");
    let jar = jar.to_str().unwrap();
    let (_, head, body) = curl(&t, &["-c", jar, "http://10.99.0.100/s"]);
    assert!(head.contains("Set-Cookie: SLUICE_AFFINITY="), "{head}");
    assert!(head.contains("Max-Age=600"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("Set-Cookie:"))
        .unwrap_or("");
    assert!(
        !cookie.contains("10.99.0."),
        "the cookie names no address: {cookie}"
    );
    let first = body.split(' ').next().unwrap().to_string();
    let by = answers(&t, 12, &["-b", jar, "http://10.99.0.100/s"]);
    assert_eq!(by.get(&first), Some(&12), "sticky to {first}: {by:?}");

    // Keep-alive to the backends: 60 more requests from 60 client connections open at most
    // a couple of upstream connections per backend.
    let before: Vec<u64> = (1..=3).map(|i| backend_connections(&t, i)).collect();
    let by = answers(
        &t,
        60,
        &["-H", "Host: api.example", "http://10.99.0.100/v1/reuse"],
    );
    assert_eq!(by.values().sum::<usize>(), 60);
    assert!(by.keys().all(|k| k.starts_with('b')), "{by:?}");
    for i in 1..=3 {
        let grew = backend_connections(&t, i) - before[i - 1];
        // One more is the /stats request itself.
        assert!(
            grew <= 3,
            "b{i} got {grew} new connections for 60 requests: no reuse"
        );
    }
    let l7 = l7_stats(&b, |v| v["reuse_ratio"].as_f64().unwrap_or(0.0) > 0.9);
    assert!(
        l7["reuse_ratio"].as_f64().unwrap_or(0.0) > 0.9,
        "upstream reuse: {l7}"
    );

    // 50 MB both ways, chunked, byte for byte.
    let n = 50_000_000;
    let want = sha_of_blob(n);
    let o = t.exec(
        "cli",
        &[
            "bash",
            "-c",
            &format!("curl -s -m 120 http://10.99.0.100/blob/{n} | sha256sum"),
        ],
    );
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(got.starts_with(&want), "download: {got} want {want}");
    let file = t.dir.join("upload");
    let o = t.exec(
        "cli",
        &["bash", "-c", &format!("curl -s -m 120 http://10.99.0.100/blob/{n} -o {} && curl -s -m 120 -H 'Transfer-Encoding: chunked' -T {} http://10.99.0.100/digest", file.display(), file.display())],
    );
    let got = String::from_utf8_lossy(&o.stdout);
    assert_eq!(got.trim(), want, "upload, chunked");
    let o = t.exec(
        "cli",
        &[
            "bash",
            "-c",
            &format!(
                "curl -s -m 120 -X POST --data-binary @{} http://10.99.0.100/digest",
                file.display()
            ),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        want,
        "upload, Content-Length"
    );

    // An upgrade, relayed as a byte stream.
    assert_eq!(client(&t, &["ws", "10.99.0.100", "80"]), "echoed");

    // Errors from real causes, on the edge service.
    let e = |path: &str, extra: &[&str]| {
        let mut a: Vec<&str> = extra.to_vec();
        let url = format!("http://10.99.0.100:81{path}");
        a.push(&url);
        curl(&t, &a).0
    };
    assert_eq!(e("/nothing", &[]), 404, "no route and no default pool");
    assert_eq!(e("/ok", &[]), 200);
    let big = "x".repeat(2000);
    assert_eq!(e("/upload", &["-X", "POST", "--data", &big]), 413);
    let long = format!("X-Long: {}", "y".repeat(2000));
    assert_eq!(e("/ok", &["-H", &long]), 431);
    assert_eq!(e("/dead", &[]), 502, "nothing listens");
    let start = Instant::now();
    assert_eq!(e("/hang", &[]), 504);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "after backend_response_ms"
    );
    for bad in [
        "\\x00\\x01\\x02garbage\\r\\n\\r\\n",
        "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 1\\r\\nContent-Length: 2\\r\\n\\r\\n",
        "POST / HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: chunked, identity\\r\\n\\r\\n",
        "GET / HTTP/1.1\\r\\nHost : a\\r\\n\\r\\n",
    ] {
        let got = client(&t, &["raw", "10.99.0.100", "81", bad]);
        assert!(got.starts_with("HTTP/1.1 400"), "{bad}: {got}");
    }

    // A header flood: an endless head is cut at header_bytes with 431.
    let got = client(&t, &["flood", "10.99.0.100", "81", "5000"]);
    assert!(got.starts_with("HTTP/1.1 431"), "header flood: {got}");

    // Slow clients are closed after client_header_ms while others are served meanwhile.
    let slow = t.spawn(
        "cli",
        &["python3", CLIENT, "slowloris", "10.99.0.100", "81", "30"],
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(e("/ok", &[]), 200, "served beside the slow clients");
    }
    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "closed 30 of 30",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The counters say what happened, by reason.
    let l7 = l7_stats(&b, |v| {
        v["errors"]["client_header_timeout"].as_u64().unwrap_or(0) >= 30
    });
    let l7 = &l7;
    let err = |k: &str| l7["errors"][k].as_u64().unwrap_or(0);
    assert!(
        err("no_route") >= 1 && err("body_too_large") >= 1 && err("head_too_large") >= 1,
        "{l7}"
    );
    assert!(
        err("backend_failed") >= 1 && err("backend_timeout") >= 1,
        "{l7}"
    );
    assert!(err("bad_request") >= 4, "{l7}");
    assert!(err("client_header_timeout") >= 30, "{l7}");
    assert!(l7["status"]["2xx"].as_u64().unwrap_or(0) >= 200, "{l7}");
    let per_backend: Vec<&Value> = l7["backends"].as_array().unwrap().iter().collect();
    assert!(
        per_backend
            .iter()
            .any(|v| v["pool"] == "api" && v["requests"].as_u64().unwrap_or(0) >= 20),
        "{l7}"
    );
    // And Prometheus has them.
    let m = t.exec("lb", &["curl", "-s", "http://127.0.0.1:9100/metrics"]);
    let m = String::from_utf8_lossy(&m.stdout);
    for name in [
        "sluice_l7_requests_total{service=\"site\",status_class=\"2xx\"}",
        "sluice_l7_errors_total{reason=\"backend_timeout\"}",
        "sluice_l7_upstream_requests_total{connection=\"reused\"}",
        "sluice_l7_request_duration_seconds_bucket{service=\"site\",le=\"+Inf\"}",
        "sluice_l7_route_requests_total{service=\"site\",route=\"default\"}",
        "sluice_l7_route_responses_total{service=\"edge\",route=\"default\",status_class=\"4xx\"}",
        "sluice_l7_backend_requests_total{service=\"site\",pool=\"api\"",
        "sluice_l7_tls_handshakes_total{version=\"1.3\"}",
        "sluice_l7_tls_resumed_total",
        "sluice_l7_tls_passthrough_total",
        "sluice_l7_upstream_tls_handshakes_total",
    ] {
        assert!(m.contains(name), "{name} missing from the metrics");
    }
    // The Grafana dashboard's L7 panels ask only for what is exported, by labels it has.
    let checked = common::check_dashboard_against(&m, |n| n.starts_with("sluice_l7_"));
    assert!(checked >= 12, "only {checked} L7 dashboard metrics checked");
    // The test certificates run until 2126: about a hundred years left.
    let left: f64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("sluice_l7_certificate_expiry_seconds{service=\"secure\",certificate=\"1\",names=\"*.img.example\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(left > 99.0 * 365.0 * 86_400.0, "{m}");
    let out = b.stop();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("L7 pool:"),
        "the exit summary covers the L7 pool: {said}"
    );
}
