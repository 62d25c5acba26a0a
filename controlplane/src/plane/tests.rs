//! The plane with no daemon: changes, batches, reloads, drain deadlines on a clock the test
//! moves, health transitions and publish failures, each checked against the snapshot the
//! workers would read.

use super::*;
use ctl::BackendSpec;
use dataplane::Probe;
use std::sync::Mutex;

const BASE: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"
[control]
socket = "/nonexistent/sluice-test.sock"
drain_timeout = 30
[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = 1009
[service.health]
type = "tcp"
interval = 1
timeout = 1
rise = 2
fall = 3
[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
[[service.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
"#;

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn plane_from(text: &str, path: PathBuf) -> (Plane, ManualClock) {
    let cfg = Config::from_toml(text, None).unwrap();
    let snap = crate::snapshot::build(&cfg).unwrap();
    let (cell, links, _workers) = crate::links(Arc::new(snap), 0);
    let clock = ManualClock::new();
    let p = Plane::new(cfg, path, "test", cell, links, true).with_clock(Box::new(clock.clone()));
    (p, clock)
}

fn plane() -> (Plane, ManualClock) {
    plane_from(BASE, PathBuf::from("/nonexistent/sluice.toml"))
}

fn b2() -> SocketAddr {
    "10.1.0.2:8080".parse().unwrap()
}

fn drain(addr: &str) -> Op {
    Op::BackendDrain {
        service: "web".into(),
        address: addr.into(),
    }
}

/// The snapshot entry the workers would read for backend `addr` of `web`.
fn entry(p: &Plane, addr: SocketAddr) -> dataplane::snapshot::BackendEntry {
    let snap = p.current();
    snap.services[0]
        .backends
        .iter()
        .find(|b| b.addr == addr)
        .cloned()
        .expect("backend in the snapshot")
}

/// Counters as if one worker tracked `flows` flows to `addr`.
fn collected(p: &mut Plane, addr: SocketAddr, flows: u64) {
    let snap = p.current();
    let mut probe = Probe::new(&snap, 0);
    probe.generation = snap.generation;
    let bi = snap.backend_of(0, addr).unwrap() as usize;
    probe.stats.backends[0][bi].active_flows = flows;
    p.fold(vec![probe]);
}

#[test]
fn a_drain_expires_when_the_plane_clock_passes_its_deadline() {
    let (mut p, clock) = plane();
    let g0 = p.generation;
    p.handle(&drain("10.1.0.2:8080")).unwrap();
    let e = entry(&p, b2());
    assert!(!e.takes_new_flows && e.keeps_flows, "draining: {e:?}");
    assert!(p.generation > g0);
    let g1 = p.generation;
    clock.advance(Duration::from_secs(29));
    p.settle_drains();
    assert_eq!(p.backends[&("web".into(), b2())].admin, Admin::Drain);
    assert_eq!(p.generation, g1, "nothing to publish before the deadline");
    clock.advance(Duration::from_secs(2));
    p.settle_drains();
    assert_eq!(p.backends[&("web".into(), b2())].admin, Admin::DrainExpired);
    let e = entry(&p, b2());
    assert!(!e.takes_new_flows && !e.keeps_flows, "expired: {e:?}");
    assert!(p.generation > g1);
    assert!(p
        .events
        .iter()
        .any(|e| e.text.contains("drain timeout passed")));
    // Draining again does not move the deadline of a drain already running.
    p.handle(&Op::BackendEnable {
        service: "web".into(),
        address: "10.1.0.2:8080".into(),
    })
    .unwrap();
    p.handle(&drain("10.1.0.2:8080")).unwrap();
    clock.advance(Duration::from_secs(20));
    p.handle(&drain("10.1.0.2:8080")).unwrap();
    clock.advance(Duration::from_secs(11));
    p.settle_drains();
    assert_eq!(p.backends[&("web".into(), b2())].admin, Admin::DrainExpired);
}

#[test]
fn a_removed_backend_with_flows_drains_and_goes_when_they_end_or_at_the_deadline() {
    let (mut p, clock) = plane();
    collected(&mut p, b2(), 5);
    let out = p
        .handle(&Op::BackendRemove {
            service: "web".into(),
            address: "10.1.0.2:8080".into(),
            force: false,
            pool: None,
        })
        .unwrap();
    assert!(out["changed"][0]
        .as_str()
        .unwrap()
        .contains("draining: 5 tracked flow(s)"));
    assert_eq!(
        p.cfg.services[0].backends.len(),
        2,
        "kept while its flows last"
    );
    assert!(p.backends[&("web".into(), b2())].remove_when_drained);
    p.settle_drains();
    assert_eq!(p.cfg.services[0].backends.len(), 2);
    collected(&mut p, b2(), 0);
    p.settle_drains();
    assert_eq!(
        p.cfg.services[0].backends.len(),
        1,
        "removed once its flows ended"
    );
    assert!(p.current().backend_of(0, b2()).is_none());
    assert!(!p.backends.contains_key(&("web".into(), b2())));

    // The same with flows that never end: removed at the deadline.
    let (mut p, clock2) = plane();
    collected(&mut p, b2(), 3);
    p.handle(&Op::BackendRemove {
        service: "web".into(),
        address: "10.1.0.2:8080".into(),
        force: false,
        pool: None,
    })
    .unwrap();
    clock2.advance(Duration::from_secs(31));
    collected(&mut p, b2(), 3);
    p.settle_drains();
    assert_eq!(p.cfg.services[0].backends.len(), 1);
    assert!(p
        .events
        .iter()
        .any(|e| e.text.contains("drain timeout passed")));
    let _ = clock;
}

#[test]
fn a_batch_applies_all_of_its_changes_or_none() {
    let (mut p, _) = plane();
    let g0 = p.generation;
    let set = Op::BackendSetWeight {
        service: "web".into(),
        address: "10.1.0.1:8080".into(),
        weight: 7,
        pool: None,
    };
    let bad = Op::BackendAdd {
        service: "web".into(),
        backend: BackendSpec {
            address: "10.1.0.3".into(),
            mac: None,
            weight: None,
            max_flows: None,
        },
        pool: None,
    };
    let e = p
        .handle(&Op::Batch {
            ops: vec![set.clone(), bad],
        })
        .unwrap_err();
    assert!(
        e.message.starts_with("batch entry 1 (backend-add)"),
        "{}",
        e.message
    );
    assert!(e.message.contains("10.1.0.3"), "{}", e.message);
    assert_eq!(
        p.cfg.services[0].backends[0].weight, 1,
        "the first change was not kept"
    );
    assert_eq!(p.generation, g0, "nothing was published");
    assert_eq!(p.current().generation, g0);
    let add = Op::BackendAdd {
        service: "web".into(),
        backend: BackendSpec {
            address: "10.1.0.3:8080".into(),
            mac: Some("02:00:00:00:01:03".into()),
            weight: Some(2),
            max_flows: None,
        },
        pool: None,
    };
    p.handle(&Op::Batch {
        ops: vec![set, add],
    })
    .unwrap();
    assert_eq!(p.cfg.services[0].backends[0].weight, 7);
    assert_eq!(p.cfg.services[0].backends.len(), 3);
    assert_eq!(p.current().services[0].backends.len(), 3);
    assert_eq!(p.generation, p.current().generation);
    assert!(p.generation > g0);
    // A batch may not hold a reload or another batch, and may not be empty.
    assert_eq!(
        p.handle(&Op::Batch { ops: vec![] }).unwrap_err().code,
        "bad_request"
    );
    let nested = p
        .handle(&Op::Batch {
            ops: vec![Op::Batch {
                ops: vec![drain("10.1.0.1:8080")],
            }],
        })
        .unwrap_err();
    assert!(
        nested.message.contains("batch entry 0"),
        "{}",
        nested.message
    );
}

#[test]
fn a_reload_reports_its_diff_and_keeps_sections_that_need_a_restart() {
    let dir = std::env::temp_dir().join(format!("sluice-plane-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reload.toml");
    std::fs::write(&path, BASE).unwrap();
    let (mut p, _) = plane_from(BASE, path.clone());
    collected(&mut p, b2(), 4);
    let changed = BASE
        .replace("ipv4 = \"192.0.2.1\"", "ipv4 = \"192.0.2.9\"")
        .replace(
            "address = \"10.1.0.2:8080\"\nmac = \"02:00:00:00:01:02\"",
            "address = \"10.1.0.3:8080\"\nmac = \"02:00:00:00:01:03\"",
        )
        .replace(
            "address = \"10.1.0.1:8080\"\nmac = \"02:00:00:00:01:01\"",
            "address = \"10.1.0.1:8080\"\nmac = \"02:00:00:00:01:01\"\nweight = 4",
        );
    std::fs::write(&path, &changed).unwrap();
    let out = p.handle(&Op::Reload).unwrap();
    let out: ctl::views::Changed = serde_json::from_value(out).unwrap();
    let r = out.reload.expect("a reload says what it found");
    assert_eq!(r.added, ["backend web 10.1.0.3:8080"]);
    assert_eq!(r.changed, ["backend web 10.1.0.1:8080 (weight 1 -> 4)"]);
    assert!(r.removed.is_empty());
    assert!(r.draining[0].starts_with("backend web 10.1.0.2:8080 (4 flow(s)"));
    assert_eq!(r.needs_restart, ["node"]);
    assert_eq!(
        p.cfg.node.ipv4,
        Some("192.0.2.1".parse().unwrap()),
        "[node] is kept"
    );
    let st = &p.backends[&("web".into(), b2())];
    assert!(st.remove_when_drained && st.admin == Admin::Drain);
    assert_eq!(p.current().services[0].backends.len(), 3);
    // A file that does not validate is refused, and the running configuration stays.
    let g = p.generation;
    std::fs::write(
        &path,
        BASE.replace("table_size = 1009", "table_size = 1000"),
    )
    .unwrap();
    let e = p.handle(&Op::Reload).unwrap_err();
    assert!(
        e.message.contains("the running configuration is kept"),
        "{}",
        e.message
    );
    assert!(e.message.contains("table_size"), "{}", e.message);
    assert_eq!(p.generation, g);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check(ok: bool) -> CheckResult {
    CheckResult {
        ok,
        latency: Duration::from_millis(1),
        message: if ok { "connected" } else { "refused" }.into(),
        at: SystemTime::now(),
    }
}

#[test]
fn health_results_move_a_backend_after_rise_successes_and_fall_failures() {
    let (mut p, _) = plane();
    assert!(entry(&p, b2()).takes_new_flows, "unknown counts as up");
    assert!(!p.health_result("web", b2(), check(true)));
    assert!(
        p.health_result("web", b2(), check(true)),
        "up after rise = 2"
    );
    assert_eq!(entry(&p, b2()).health, Health::Up);
    let g = p.generation;
    assert!(!p.health_result("web", b2(), check(false)));
    assert!(!p.health_result("web", b2(), check(false)));
    assert_eq!(p.generation, g, "no transition, no publish");
    // A success in between starts the count again.
    assert!(!p.health_result("web", b2(), check(true)));
    assert!(!p.health_result("web", b2(), check(false)));
    assert!(!p.health_result("web", b2(), check(false)));
    assert!(
        p.health_result("web", b2(), check(false)),
        "down after fall = 3"
    );
    let e = entry(&p, b2());
    assert_eq!(e.health, Health::Down);
    assert!(!e.takes_new_flows && e.keeps_flows, "down: {e:?}");
    assert!(p.generation > g);
    assert_eq!(p.backends[&("web".into(), b2())].failures, 3);
    // Unknown backends and services are ignored.
    assert!(!p.health_result("web", "10.9.9.9:1".parse().unwrap(), check(false)));
    assert!(!p.health_result("nope", b2(), check(false)));
}

#[test]
fn a_failed_publish_hook_fails_the_change_and_keeps_the_running_state() {
    let (mut p, _) = plane();
    let g0 = p.generation;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (s, f) = (Arc::clone(&seen), Arc::clone(&fail));
    p.on_publish.push(Box::new(move |snap: &Snapshot| {
        s.lock().unwrap().push(snap.generation);
        if f.load(std::sync::atomic::Ordering::Relaxed) {
            Err("map update refused".into())
        } else {
            Ok(())
        }
    }));
    let set = Op::BackendSetWeight {
        service: "web".into(),
        address: "10.1.0.1:8080".into(),
        weight: 3,
        pool: None,
    };
    let e = p.handle(&set).unwrap_err();
    assert_eq!(e.code, "failed");
    assert!(e.message.contains("map update refused"), "{}", e.message);
    assert!(
        e.message.contains("running configuration is kept"),
        "{}",
        e.message
    );
    assert_eq!(p.cfg.services[0].backends[0].weight, 1);
    assert_eq!((p.generation, p.current().generation), (g0, g0));
    // The hook was tried with the new snapshot, then put back on the running one.
    let seen_now = seen.lock().unwrap().clone();
    assert_eq!(seen_now.len(), 2);
    assert!(seen_now[0] > g0);
    assert_eq!(seen_now[1], g0);
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    p.handle(&set).unwrap();
    assert_eq!(p.cfg.services[0].backends[0].weight, 3);
    assert_eq!(p.current().generation, p.generation);
    assert!(p.generation > g0);
}

#[test]
fn rates_use_the_plane_clock() {
    let (mut p, clock) = plane();
    let snap = p.current();
    let mut probe = Probe::new(&snap, 0);
    probe.generation = snap.generation;
    probe.stats.packets_in = 100;
    p.fold(vec![probe.clone()]);
    clock.advance(Duration::from_secs(2));
    probe.stats.packets_in = 500;
    p.fold(vec![probe]);
    assert_eq!(p.status().uptime_s, 2.0);
    let t: &Totals = &p.totals;
    assert_eq!(t.counters.packets_in, 500);
    let s = p.stats();
    assert_eq!((s.interval_s, s.packets_per_s), (2.0, 200.0));
}

const L7: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"
[control]
socket = "/nonexistent/sluice-test.sock"
drain_timeout = 30
[[service]]
name = "site"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"
[[service.pool]]
name = "www"
[service.pool.health]
type = "tcp"
interval = 1
rise = 1
fall = 2
[[service.pool.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
[[service.pool.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
[[service.pool]]
name = "api"
[[service.pool.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
"#;

/// The L7 setup's view of backend `addr` in every pool that lists it.
fn l7_states(p: &Plane, addr: SocketAddr) -> Vec<(Admin, Health)> {
    p.l7_setup().services[0]
        .pools
        .iter()
        .flat_map(|pool| pool.backends.iter())
        .filter(|b| b.address == addr)
        .map(|b| (b.admin, b.health))
        .collect()
}

/// A backend of an L7 pool is drained, enabled and health-checked by address, in every pool
/// that lists it, and each change reaches the L7 pool through its hook; changes only a
/// service's own backends take are refused with what to do instead.
#[test]
fn l7_backends_drain_and_fail_health_checks_by_address_in_every_pool() {
    let (mut p, _) = plane_from(L7, PathBuf::from("/nonexistent/sluice.toml"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    p.on_l7.push(Box::new(move |s: l7_offload::L7Setup| {
        s2.lock().unwrap().push(s);
    }));
    let drain_site = Op::BackendDrain {
        service: "site".into(),
        address: "10.1.0.2:8080".into(),
    };
    p.handle(&drain_site).unwrap();
    assert_eq!(
        l7_states(&p, b2()),
        vec![
            (Admin::Drain, Health::Unknown),
            (Admin::Drain, Health::Unknown)
        ]
    );
    let published = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        !published.services[0].pools[1].backends[0].takes_requests(),
        "the hook got the drained state"
    );
    p.handle(&Op::BackendEnable {
        service: "site".into(),
        address: "10.1.0.2:8080".into(),
    })
    .unwrap();
    assert_eq!(l7_states(&p, b2())[0].0, Admin::Ready);
    // The www pool's check applies to its backends; fall = 2.
    assert!(!p.health_result("site", b2(), check(false)));
    assert!(p.health_result("site", b2(), check(false)));
    assert_eq!(l7_states(&p, b2())[1].1, Health::Down);
    assert!(
        seen.lock().unwrap().last().unwrap().services[0].pools[0].backends[1].health
            == Health::Down
    );
    // `backend list` shows each address once.
    let list = p
        .handle(&Op::BackendList {
            service: Some("site".into()),
        })
        .unwrap();
    assert_eq!(list["backends"].as_array().unwrap().len(), 2, "{list}");
    let e = p
        .handle(&Op::BackendSetWeight {
            service: "site".into(),
            address: "10.1.0.2:8080".into(),
            weight: 3,
            pool: None,
        })
        .unwrap_err();
    assert!(
        e.message.contains("L7 pool") && e.message.contains("--pool"),
        "{}",
        e.message
    );
    let e = p
        .handle(&Op::BackendDrain {
            service: "site".into(),
            address: "10.9.9.9:1".into(),
        })
        .unwrap_err();
    assert_eq!(e.code, "not_found");
}

/// Routes and pools change live, held to the file's rules, one by one or in a batch; a
/// refused change leaves the running configuration as it was.
#[test]
fn l7_routes_and_pools_change_live_and_refusals_change_nothing() {
    let (mut p, _) = plane_from(L7, PathBuf::from("/nonexistent/sluice.toml"));
    let l7 = |p: &Plane| p.cfg.services[0].l7.clone().unwrap();
    // A route to a pool that does not exist is refused by the rules a file meets.
    let e = p
        .handle(&Op::RouteAdd {
            service: "site".into(),
            route: ctl::RouteSpec {
                host: Some("api.example".into()),
                pool: "nope".into(),
                ..Default::default()
            },
            position: None,
        })
        .unwrap_err();
    assert!(
        e.message.contains("route[0].pool") && e.message.contains("api, www")
            || e.message.contains("www, api"),
        "{}",
        e.message
    );
    assert!(l7(&p).routes.is_empty(), "nothing changed");
    // A new pool and a route to it, in one batch.
    let g = p.generation;
    p.handle(&Op::Batch {
        ops: vec![
            Op::PoolAdd {
                service: "site".into(),
                pool: ctl::PoolSpec {
                    name: "canary".into(),
                    algorithm: Some("least-requests".into()),
                    hash_on: None,
                    sticky_cookie: None,
                    sticky_max_age: None,
                    backends: vec![BackendSpec {
                        address: "10.1.0.3:8080".into(),
                        mac: Some("02:00:00:00:01:03".into()),
                        weight: Some(2),
                        max_flows: None,
                    }],
                },
            },
            Op::RouteAdd {
                service: "site".into(),
                route: ctl::RouteSpec {
                    header: Some("x-canary: 1".into()),
                    pool: "canary".into(),
                    ..Default::default()
                },
                position: Some(0),
            },
        ],
    })
    .unwrap();
    assert!(p.generation > g);
    let setup = p.l7_setup();
    let svc = &setup.services[0];
    assert_eq!(svc.routes[0].pool, 2, "the route points at the new pool");
    assert_eq!(
        svc.pools[2].algorithm,
        l7_offload::setup::Algorithm::LeastRequests
    );
    assert_eq!(svc.pools[2].backends[0].weight, 2);
    assert!(p
        .backends
        .contains_key(&("site".into(), "10.1.0.3:8080".parse().unwrap())));
    // The data path resolves the new backend too.
    assert!(p.current().services[0]
        .backends
        .iter()
        .any(|b| b.addr == "10.1.0.3:8080".parse().unwrap()));
    // A pool a route names cannot go; the route first, then the pool.
    let e = p
        .handle(&Op::PoolRemove {
            service: "site".into(),
            pool: "canary".into(),
        })
        .unwrap_err();
    assert!(e.message.contains("no pool `canary`"), "{}", e.message);
    assert_eq!(l7(&p).pools.len(), 3);
    p.handle(&Op::RouteRemove {
        service: "site".into(),
        index: 0,
    })
    .unwrap();
    p.handle(&Op::PoolRemove {
        service: "site".into(),
        pool: "canary".into(),
    })
    .unwrap();
    assert_eq!(l7(&p).pools.len(), 2);
    assert!(!p
        .backends
        .contains_key(&("site".into(), "10.1.0.3:8080".parse().unwrap())));
    // Pool backends: added, reweighted and removed with a pool named; without one, refused.
    p.handle(&Op::BackendAdd {
        service: "site".into(),
        backend: BackendSpec {
            address: "10.1.0.4:8080".into(),
            mac: None,
            weight: None,
            max_flows: None,
        },
        pool: Some("api".into()),
    })
    .unwrap();
    assert_eq!(l7(&p).pools[1].backends.len(), 2);
    p.handle(&Op::BackendSetWeight {
        service: "site".into(),
        address: "10.1.0.4:8080".into(),
        weight: 9,
        pool: Some("api".into()),
    })
    .unwrap();
    assert_eq!(l7(&p).pools[1].backends[1].weight, 9);
    let e = p
        .handle(&Op::BackendAdd {
            service: "site".into(),
            backend: BackendSpec {
                address: "10.1.0.5:8080".into(),
                mac: None,
                weight: None,
                max_flows: None,
            },
            pool: None,
        })
        .unwrap_err();
    assert!(
        e.message.contains("--pool") && e.message.contains("www, api"),
        "{}",
        e.message
    );
    // The last backend of a pool cannot go (a pool needs one), by the file's rules.
    p.handle(&Op::BackendRemove {
        service: "site".into(),
        address: "10.1.0.1:8080".into(),
        force: false,
        pool: Some("www".into()),
    })
    .unwrap();
    let e = p
        .handle(&Op::BackendRemove {
            service: "site".into(),
            address: "10.1.0.2:8080".into(),
            force: false,
            pool: Some("www".into()),
        })
        .unwrap_err();
    assert!(
        e.message.contains("pool `www` has no backends"),
        "{}",
        e.message
    );
    assert_eq!(
        l7(&p).pools[0].backends.len(),
        1,
        "the refused change left it"
    );
    p.handle(&Op::BackendRemove {
        service: "site".into(),
        address: "10.1.0.4:8080".into(),
        force: false,
        pool: Some("api".into()),
    })
    .unwrap();
    assert_eq!(l7(&p).pools[1].backends.len(), 1);
    // Routes and pools of an L4 service do not exist.
    let (mut l4, _) = plane();
    let e = l4
        .handle(&Op::RouteList {
            service: "web".into(),
        })
        .unwrap_err();
    assert!(e.message.contains("not an L7 service"), "{}", e.message);
}

#[test]
fn a_reload_with_a_key_that_is_not_its_certificates_is_refused_and_tls_keeps_running() {
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/../l7-offload/tests/tls");
    let dir = std::env::temp_dir().join(format!("sluice-plane-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["www.pem", "www.key", "img.pem", "img.key"] {
        std::fs::copy(format!("{certs}/{f}"), dir.join(f)).unwrap();
    }
    let text = crate::l7::tests::secure_toml("cert.pem", "cert.key");
    let use_cert = |name: &str| {
        std::fs::copy(dir.join(format!("{name}.pem")), dir.join("cert.pem")).unwrap();
    };
    let use_key = |name: &str| {
        std::fs::copy(dir.join(format!("{name}.key")), dir.join("cert.key")).unwrap();
    };
    use_cert("www");
    use_key("www");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let snap = crate::snapshot::build(&cfg).unwrap();
    let (cell, links, _workers) = crate::links(Arc::new(snap), 0);
    let mut p = Plane::new(cfg, path.clone(), "test", cell, links, true);
    let running = p.l7_setup().services[0].tls.clone().unwrap();
    // A reload of the same files keeps the same rustls configuration (and its sessions).
    p.handle(&Op::Reload).unwrap();
    assert_eq!(p.l7_setup().services[0].tls, Some(running.clone()));
    // A certificate whose key is another's: refused by name, the running one kept.
    use_cert("img");
    let e = p.handle(&Op::Reload).unwrap_err();
    assert!(
        e.message.contains("certificate[0]") && e.message.contains("not the certificate's"),
        "{}",
        e.message
    );
    assert_eq!(p.l7_setup().services[0].tls, Some(running.clone()));
    // Both replaced: a new configuration.
    use_key("img");
    p.handle(&Op::Reload).unwrap();
    let now = p.l7_setup().services[0].tls.clone().unwrap();
    assert_ne!(now, running);
    // The listing shows what is served now: its file, issuer and time left.
    let v = p
        .handle(&Op::CertificateList {
            service: Some("secure".into()),
        })
        .unwrap();
    let list: ctl::views::CertificateList = serde_json::from_value(v).unwrap();
    let first = &list.certificates[0];
    assert_eq!(
        (first.role.as_str(), first.slot.as_str()),
        ("server", "certificate[0]")
    );
    assert!(
        first.file.ends_with("cert.pem") && first.default,
        "{first:?}"
    );
    assert_eq!(first.issuer, "CN=sluice test CA");
    assert!(first.seconds_left > 99 * 365 * 86_400, "{first:?}");
    assert_eq!(list.certificates.len(), 1);
    let e = p
        .handle(&Op::CertificateList {
            service: Some("nope".into()),
        })
        .unwrap_err();
    assert_eq!(e.code, "not_found", "{}", e.message);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The route announcement follows the node and the backends: withdrawn until a checked
/// backend is up, announced while one is usable, withdrawn when none is, on `node drain`
/// and on stopping; the feed's polls are what `status` reports as announced.
#[test]
fn vip_routes_are_announced_only_while_a_backend_is_usable_and_the_node_active() {
    let with_bgp = format!("{BASE}[bgp]\nnext_hop = \"192.0.2.1\"\nshutdown_grace_ms = 1000\n");
    let (mut p, clock) = plane_from(&with_bgp, PathBuf::from("/nonexistent/sluice.toml"));
    let b1: SocketAddr = "10.1.0.1:8080".parse().unwrap();
    let route = |p: &mut Plane| {
        let r = p.feed_poll();
        assert_eq!(r.routes.len(), 1, "{r:?}");
        let x = r.routes[0].clone();
        assert_eq!(
            (x.prefix.as_str(), x.next_hop.as_str()),
            ("198.51.100.10/32", "192.0.2.1")
        );
        (x.announce, x.reason)
    };
    // Checked backends not yet checked do not count.
    let (up, why) = route(&mut p);
    assert!(!up && why.contains("web 0 of 2 backends usable"), "{why}");
    p.health_result("web", b1, check(true));
    p.health_result("web", b1, check(true));
    let (up, why) = route(&mut p);
    assert!(up && why.contains("web 1 of 2"), "{why}");
    let s = p.status();
    assert_eq!(s.node, "active");
    let bgp = s.bgp.unwrap();
    assert_eq!(bgp.announced, vec!["198.51.100.10/32".to_string()]);
    assert!(bgp.withdrawn.is_empty());
    assert!(crate::metrics::render(&p)
        .contains("sluice_bgp_route_announced{prefix=\"198.51.100.10/32\"} 1"));
    // A drained (or disabled) backend is not usable: no backend left, the route goes.
    p.handle(&drain("10.1.0.1:8080")).unwrap();
    let (up, why) = route(&mut p);
    assert!(
        !up && why.starts_with("withdrawn: no usable backend"),
        "{why}"
    );
    p.handle(&Op::BackendEnable {
        service: "web".into(),
        address: "10.1.0.1:8080".into(),
    })
    .unwrap();
    assert!(route(&mut p).0);
    // Down after `fall` failures: withdrawn.
    for _ in 0..3 {
        p.health_result("web", b1, check(false));
    }
    assert!(!route(&mut p).0);
    for _ in 0..2 {
        p.health_result("web", b1, check(true));
    }
    assert!(route(&mut p).0);
    // The node: drained withdraws, activate announces; a second drain says so.
    p.handle(&Op::NodeDrain).unwrap();
    let (up, why) = route(&mut p);
    assert!(!up && why.contains("node activate"), "{why}");
    assert_eq!(
        p.status().bgp.unwrap().withdrawn,
        vec!["198.51.100.10/32".to_string()]
    );
    assert!(crate::metrics::render(&p).contains("sluice_node_state{state=\"drained\"} 1"));
    let again = p.handle(&Op::NodeDrain).unwrap();
    assert!(again.to_string().contains("already drained"), "{again}");
    p.handle(&Op::NodeActivate).unwrap();
    assert!(route(&mut p).0);
    // Node verbs are not configuration changes.
    let e = p
        .handle(&Op::Batch {
            ops: vec![Op::NodeDrain],
        })
        .unwrap_err();
    assert_eq!(e.code, "bad_request", "{e:?}");
    assert_eq!(p.node, NodeState::Active);
    // Stopping: withdrawn for good; the feed's next poll is seen.
    let t = clock.now();
    clock.advance(Duration::from_millis(10));
    assert!(!p.feed_polled_since(clock.now()));
    p.begin_stop();
    assert!(!route(&mut p).0);
    assert!(p.feed_polled_since(t));
    assert!(p
        .handle(&Op::NodeActivate)
        .unwrap_err()
        .message
        .contains("stopping"));
    // Without [bgp], node verbs are refused and nothing is announced.
    let (mut q, _) = plane();
    assert!(q
        .handle(&Op::NodeDrain)
        .unwrap_err()
        .message
        .contains("[bgp]"));
    let r = q.feed_poll();
    assert!(!r.routes[0].announce && r.routes[0].reason.contains("[bgp]"));
    assert!(q.status().bgp.is_none());
}

/// `node standby` publishes a snapshot that answers and forwards for no VIP; `node activate`
/// publishes one that does again, with a new announcement epoch (the workers send gratuitous
/// ARP once per epoch); a file's `start_as = "standby"` starts that way. No [bgp] needed.
#[test]
fn standby_and_activate_republish_and_raise_the_announcement_epoch() {
    let (mut p, _) = plane();
    assert!(!p.current().node.standby);
    let g = p.generation;
    p.handle(&Op::NodeStandby).unwrap();
    assert!(p.current().node.standby && p.generation > g);
    assert_eq!(p.status().node, "standby");
    let epoch = p.current().node.announce_epoch;
    // A configuration change keeps the node a standby.
    p.handle(&drain("10.1.0.1:8080")).unwrap();
    assert!(p.current().node.standby);
    p.handle(&Op::NodeActivate).unwrap();
    let snap = p.current();
    assert!(!snap.node.standby);
    assert_eq!(snap.node.announce_epoch, epoch + 1);
    // Active again from active: no new epoch, no republish.
    let g = p.generation;
    let again = p.handle(&Op::NodeActivate).unwrap();
    assert!(again.to_string().contains("already active"), "{again}");
    assert_eq!(p.generation, g);
    let r = p.feed_poll();
    assert!(r.routes[0].reason.contains("[bgp]"), "{:?}", r.routes[0]);
    let text = BASE.replacen("[node]\n", "[node]\nstart_as = \"standby\"\n", 1);
    let (mut q, _) = plane_from(&text, PathBuf::from("/nonexistent/sluice.toml"));
    assert_eq!(q.node, NodeState::Standby);
    let with_bgp = format!("{text}[bgp]\n");
    let (mut b, _) = plane_from(&with_bgp, PathBuf::from("/nonexistent/sluice.toml"));
    let reason = b.feed_poll().routes[0].reason.clone();
    assert!(reason.contains("standby"), "{reason}");
    q.handle(&Op::NodeActivate).unwrap();
    assert_eq!(q.current().node.announce_epoch, 1);
}
