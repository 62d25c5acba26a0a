//! The control plane's state: the running configuration, each backend's admin state (ready,
//! drain, disabled) and health state (up, down, unknown), and the counters last collected from
//! the workers. Every change is made on a copy, validated exactly as a configuration file is
//! (written out and read back), turned into a new snapshot — Maglev tables rebuilt here, off
//! the workers — and only then swapped in; a change that fails leaves everything as it was.
//!
//! One job per file: [`change`] applies operator changes and batches to a candidate,
//! [`reload`] diffs the file against the running configuration, [`drain`] moves drains past
//! their deadline and removes drained backends, [`checks`] turns health results into
//! transitions, [`telemetry`] folds worker probes into totals, and [`views`] answers queries.
//! Time comes from the plane's [`Clock`], so drain deadlines are testable without waiting.

mod announce;
mod change;
mod checks;
mod drain;
mod reload;
mod telemetry;
#[cfg(test)]
mod tests;
mod views;

pub use announce::{FeedPoll, NodeState};
pub use telemetry::Totals;
pub use views::check_desc;

use crate::ProbeLink;
use arc_swap::ArcSwap;
use config::{Backend, Config, Service};
use ctl::{ErrorBody, Op};
use dataplane::snapshot::{Admin, Health};
use dataplane::Snapshot;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where the plane reads the time: drain deadlines, rates and uptime. The daemon uses
/// [`SystemClock`]; tests move a clock of their own.
pub trait Clock: Send {
    fn now(&self) -> Instant;
}

/// The monotonic clock of the system.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A backend's identity across changes: service name and address.
pub type BackendId = (String, SocketAddr);

/// The last health check of a backend.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub ok: bool,
    pub latency: Duration,
    pub message: String,
    pub at: SystemTime,
}

/// Run-time state of one backend, beside its configuration.
#[derive(Debug, Clone)]
pub struct BackendState {
    pub admin: Admin,
    /// When a drain passes its timeout.
    pub drain_deadline: Option<Instant>,
    /// Remove the backend once its flows end or the drain times out (`backend remove`, or a
    /// reload that dropped it).
    pub remove_when_drained: bool,
    pub health: Health,
    /// Consecutive successes / failures.
    pub successes: u32,
    pub failures: u32,
    pub last_check: Option<CheckResult>,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            admin: Admin::Ready,
            drain_deadline: None,
            remove_when_drained: false,
            health: Health::Unknown,
            successes: 0,
            failures: 0,
            last_check: None,
        }
    }
}

/// Called with each snapshot as it is published.
pub type PublishHook = Box<dyn FnMut(&Snapshot) -> Result<(), String> + Send>;
/// Called with the L7 pool's setup whenever the running configuration or a backend's state
/// changes.
pub type L7Hook = Box<dyn FnMut(l7_offload::L7Setup) + Send>;

/// A recent event for the log and `sluicectl status`.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: SystemTime,
    pub text: String,
}

pub struct Plane {
    pub cfg: Config,
    pub config_path: PathBuf,
    pub started: Instant,
    pub driver: String,
    pub workers: usize,
    pub backends: HashMap<BackendId, BackendState>,
    pub generation: u64,
    cell: Arc<ArcSwap<Snapshot>>,
    /// Recently published snapshots, to read probes of workers that have not caught up.
    history: VecDeque<Arc<Snapshot>>,
    links: Vec<ProbeLink>,
    pub totals: Totals,
    pub previous: Totals,
    pub events: VecDeque<Event>,
    /// Time the last change took to validate and build, and to publish.
    pub last_build: Option<Duration>,
    pub quiet: bool,
    /// Called with every snapshot published (the AF_XDP driver keeps its XDP program's maps
    /// in step this way), on the control thread.
    pub on_publish: Vec<PublishHook>,
    pub on_l7: Vec<L7Hook>,
    /// The L7 pool's counters, one per shard, when the daemon runs one.
    pub l7_stats: Option<Arc<Vec<std::sync::Mutex<l7_offload::ShardStats>>>>,
    /// The rustls configurations of the running `l7 = "tls"` services.
    tls: crate::l7::TlsConfigs,
    clock: Box<dyn Clock>,
    /// Whether the VIP routes are announced at all (`node drain`, SIGTERM).
    pub node: NodeState,
    /// What the ExaBGP feed was last told.
    pub feed: Option<FeedPoll>,
    /// Raised on every standby -> active change: the workers announce the VIPs once per value.
    pub announce_epoch: u64,
}
fn now_wall() -> SystemTime {
    SystemTime::now()
}

fn refused(m: impl Into<String>) -> ErrorBody {
    ErrorBody::new("refused", m)
}

fn not_found(m: impl Into<String>) -> ErrorBody {
    ErrorBody::new("not_found", m)
}

/// A configuration error as one line for a control client (no file or line: the change did
/// not come from a file).
fn config_error(e: &config::ConfigError) -> ErrorBody {
    let mut m = String::new();
    if !e.key.is_empty() {
        m.push_str(&format!("`{}`: ", e.key));
    }
    m.push_str(&e.message);
    if !e.fix.is_empty() {
        m.push_str(&format!(" (fix: {})", e.fix));
    }
    refused(m)
}

/// What a candidate builds into: the workers' snapshot and the L7 pool's TLS configurations.
struct Built {
    snap: Snapshot,
    tls: crate::l7::TlsConfigs,
}

/// A pending change: the configuration and backend states it would leave.
#[derive(Clone)]
struct Candidate {
    cfg: Config,
    backends: HashMap<BackendId, BackendState>,
    notes: Vec<String>,
}

impl Candidate {
    fn service_index(&self, name: &str) -> Result<usize, ErrorBody> {
        self.cfg
            .services
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.services.iter().map(|s| s.name.as_str()).collect();
                not_found(format!(
                    "no service `{name}`; the services are: {}",
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })
    }

    /// Service `service`'s backend `address`: the service's index, the backend's index among
    /// the service's own backends (`None` for a backend of an L7 pool, whose state is kept by
    /// address like any other's), and the address.
    fn backend_ref(
        &self,
        service: &str,
        address: &str,
    ) -> Result<(usize, Option<usize>, SocketAddr), ErrorBody> {
        let si = self.service_index(service)?;
        let addr: SocketAddr = address.parse().map_err(|_| {
            ErrorBody::new(
                "bad_request",
                format!("`{address}` is not an address with a port (like 10.1.0.1:8080)"),
            )
        })?;
        let svc = &self.cfg.services[si];
        match svc.backends.iter().position(|b| b.address == addr) {
            Some(bi) => Ok((si, Some(bi), addr)),
            None if svc.all_backends().any(|b| b.address == addr) => Ok((si, None, addr)),
            None => Err(not_found(format!(
                "service `{service}` has no backend {addr}"
            ))),
        }
    }

    /// The L7 part of service `service`, to change.
    fn l7_service(&mut self, service: &str) -> Result<&mut config::L7Service, ErrorBody> {
        let si = self.service_index(service)?;
        self.cfg.services[si].l7.as_mut().ok_or_else(|| {
            refused(format!(
                "`{service}` is not an L7 service: routes and pools belong to forwarding = \"l7\" services"
            ))
        })
    }

    /// Pool `pool` of L7 service `service`, to change.
    fn l7_pool(&mut self, service: &str, pool: &str) -> Result<&mut config::L7Pool, ErrorBody> {
        let l7 = self.l7_service(service)?;
        let names: Vec<String> = l7.pools.iter().map(|p| p.name.clone()).collect();
        l7.pools.iter_mut().find(|p| p.name == pool).ok_or_else(|| {
            not_found(format!(
                "`{service}` has no pool `{pool}`; its pools: {}",
                names.join(", ")
            ))
        })
    }

    /// Refuses `verb` without a pool on an L7 service (whose backends are in pools).
    fn not_l7(&self, si: usize, verb: &str) -> Result<(), ErrorBody> {
        match &self.cfg.services[si].l7 {
            Some(l) => Err(refused(format!(
                "`{}` is an L7 service: {verb} needs --pool (one of: {})",
                self.cfg.services[si].name,
                l.pools
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// As [`Candidate::backend_ref`], for changes only a service's own backends take.
    fn backend_index(&self, service: &str, address: &str) -> Result<(usize, usize), ErrorBody> {
        match self.backend_ref(service, address)? {
            (si, Some(bi), _) => Ok((si, bi)),
            (_, None, addr) => Err(refused(format!(
                "{addr} is a backend of an L7 pool of `{service}`: give --pool to change it in one pool (drain, enable and disable act on every pool)"
            ))),
        }
    }

    fn state(&mut self, service: &str, addr: SocketAddr) -> &mut BackendState {
        self.backends
            .entry((service.to_string(), addr))
            .or_default()
    }
}

impl Plane {
    /// The L7 pool's counters summed over its shards, if it runs.
    pub fn l7_totals(&self) -> Option<l7_offload::ShardStats> {
        let all = self.l7_stats.as_ref()?;
        Some(l7_offload::ShardStats::sum_published(all))
    }

    pub fn new(
        cfg: Config,
        config_path: PathBuf,
        driver: &str,
        cell: Arc<ArcSwap<Snapshot>>,
        links: Vec<ProbeLink>,
        quiet: bool,
    ) -> Plane {
        let mut backends = HashMap::new();
        for s in &cfg.services {
            for b in s.all_backends() {
                backends.insert((s.name.clone(), b.address), BackendState::default());
            }
        }
        let workers = links.len();
        let first = cell.load_full();
        let node = if cfg.node.start_standby {
            NodeState::Standby
        } else {
            NodeState::Active
        };
        // The daemon has built these once already (and refused to start on an error).
        let tls = crate::l7::tls_configs(&cfg, &Default::default()).unwrap_or_default();
        Plane {
            cfg,
            config_path,
            started: Instant::now(),
            clock: Box::new(SystemClock),
            driver: driver.into(),
            workers,
            backends,
            generation: first.generation,
            history: VecDeque::from([first]),
            cell,
            links,
            totals: Totals::default(),
            previous: Totals::default(),
            events: VecDeque::new(),
            last_build: None,
            quiet,
            on_publish: Vec::new(),
            on_l7: Vec::new(),
            l7_stats: None,
            tls,
            node,
            feed: None,
            announce_epoch: 0,
        }
    }

    /// The snapshot most recently published.
    pub fn current(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    /// An event: written to the log (at info) and kept for `sluicectl status`.
    pub fn log(&mut self, text: String) {
        if !self.quiet {
            log::info!("{text}");
        }
        self.remember(text);
    }

    /// An event that says something did not work (logged at warning).
    pub fn warn(&mut self, text: String) {
        log::warn!("{text}");
        self.remember(text);
    }

    fn remember(&mut self, text: String) {
        self.events.push_back(Event {
            at: now_wall(),
            text,
        });
        while self.events.len() > 100 {
            self.events.pop_front();
        }
    }

    /// The admin and health state the snapshot gives a backend.
    fn snapshot_state(
        backends: &HashMap<BackendId, BackendState>,
        s: &Service,
        b: &Backend,
    ) -> (Admin, Health) {
        match backends.get(&(s.name.clone(), b.address)) {
            Some(st) => (
                st.admin,
                if s.health_of(b.address).is_some() {
                    st.health
                } else {
                    Health::Unknown
                },
            ),
            None => (Admin::Ready, Health::Unknown),
        }
    }

    /// Validates a candidate by the rules a file is held to (`Config::validate`) and builds
    /// its snapshot and its TLS configurations (certificates that do not load refuse the
    /// change; unchanged services keep theirs).
    fn build(&self, c: &Candidate) -> Result<Built, ErrorBody> {
        c.cfg.validate().map_err(|e| config_error(&e))?;
        let tls = crate::l7::tls_configs(&c.cfg, &self.tls).map_err(refused)?;
        let neighbours = Arc::clone(&self.cell.load().neighbours);
        let mut snap = crate::snapshot::build_with(&c.cfg, &neighbours, |s, b| {
            Plane::snapshot_state(&c.backends, s, b)
        })
        .map_err(|e| refused(e.to_string()))?;
        snap.node.standby = self.node == NodeState::Standby;
        snap.node.announce_epoch = self.announce_epoch;
        Ok(Built { snap, tls })
    }

    /// Publishes what was built and makes `c` the running state; if publishing fails,
    /// neither changes.
    fn commit(&mut self, c: Candidate, built: Built) -> Result<(), String> {
        self.publish(built.snap)?;
        self.cfg = c.cfg;
        self.tls = built.tls;
        // States of backends no longer configured are forgotten.
        let live: std::collections::HashSet<BackendId> = self
            .cfg
            .services
            .iter()
            .flat_map(|s| s.all_backends().map(|b| (s.name.clone(), b.address)))
            .collect();
        self.backends = c.backends;
        self.backends.retain(|k, _| live.contains(k));
        for k in live {
            self.backends.entry(k).or_default();
        }
        self.publish_l7();
        Ok(())
    }

    /// Runs the publish hooks on `snap`, then stores it for the workers. A hook that fails
    /// (the XDP program's maps could not be updated, say) fails the publish: every hook is
    /// put back in step with the running snapshot, which stays.
    fn publish(&mut self, snap: Snapshot) -> Result<(), String> {
        let mut failure = None;
        for f in self.on_publish.iter_mut() {
            if let Err(e) = f(&snap) {
                failure = Some(e);
                break;
            }
        }
        if let Some(e) = failure {
            let running = self.cell.load_full();
            for f in self.on_publish.iter_mut() {
                if let Err(again) = f(&running) {
                    self.events.push_back(Event {
                        at: now_wall(),
                        text: format!(
                            "could not restore a publish hook to generation {}: {again}",
                            running.generation
                        ),
                    });
                }
            }
            return Err(e);
        }
        self.generation = snap.generation;
        for l in &self.links {
            l.prepare(&snap);
        }
        let snap = Arc::new(snap);
        self.cell.store(Arc::clone(&snap));
        self.history.push_back(snap);
        while self.history.len() > 16 {
            self.history.pop_front();
        }
        // Next hops no snapshot a worker may still hold resolves give their slots back.
        let keep: std::collections::HashSet<std::net::IpAddr> = self
            .history
            .iter()
            .flat_map(|s| s.next_hops.iter().map(|h| h.0))
            .collect();
        if let Some(s) = self.history.back() {
            s.neighbours.release_unused(|a| keep.contains(&a));
        }
        Ok(())
    }

    /// The next hops the running snapshot resolves, with what is known of each.
    pub fn neighbours(&self) -> Vec<dataplane::neighbour::NeighbourState> {
        let snap = self.cell.load();
        snap.next_hops
            .iter()
            .filter_map(|&(a, i)| snap.neighbours.state(a, i))
            .collect()
    }

    /// Rebuilds the snapshot from the running state (after a health or drain transition).
    pub fn republish(&mut self) -> Result<(), String> {
        let c = Candidate {
            cfg: self.cfg.clone(),
            backends: self.backends.clone(),
            notes: vec![],
        };
        let t = Instant::now();
        let built = self.build(&c).map_err(|e| e.message)?;
        self.last_build = Some(t.elapsed());
        self.publish(built.snap)?;
        self.publish_l7();
        Ok(())
    }

    /// The L7 pool's setup from the running configuration and backend state.
    pub fn l7_setup(&self) -> l7_offload::L7Setup {
        crate::l7::setup(&self.cfg, &self.tls, |service, _pool, addr| {
            let st = self.backends.get(&(service.to_string(), addr));
            let svc = self.cfg.services.iter().find(|s| s.name == service);
            let checked = svc.is_some_and(|s| s.health_of(addr).is_some());
            match st {
                Some(st) => (st.admin, if checked { st.health } else { Health::Unknown }),
                None => (Admin::Ready, Health::Unknown),
            }
        })
    }

    /// Gives the L7 hooks the setup of the running state.
    fn publish_l7(&mut self) {
        if self.on_l7.is_empty() {
            return;
        }
        let s = self.l7_setup();
        for f in self.on_l7.iter_mut() {
            f(s.clone());
        }
    }

    /// Serves one request.
    pub fn handle(&mut self, op: &Op) -> Result<Value, ErrorBody> {
        if let Op::NodeDrain | Op::NodeActivate | Op::NodeStandby = op {
            let to = match op {
                Op::NodeDrain => NodeState::Drained,
                Op::NodeStandby => NodeState::Standby,
                _ => NodeState::Active,
            };
            let note = self.set_node(to)?;
            return Ok(views::to_json(&ctl::views::Changed {
                changed: vec![note],
                generation: self.generation,
                build_ms: 0.0,
                reload: None,
            }));
        }
        if !op.is_change() {
            return self.query(op);
        }
        let t = Instant::now();
        let mut c = Candidate {
            cfg: self.cfg.clone(),
            backends: self.backends.clone(),
            notes: vec![],
        };
        let mut reload_diff = None;
        if let Op::Reload = op {
            reload_diff = Some(self.reload_into(&mut c)?);
        } else {
            self.apply(&mut c, op)?;
        }
        let next = self.build(&c)?;
        let built = t.elapsed();
        let notes = c.notes.clone();
        self.commit(c, next).map_err(|e| {
            ErrorBody::new(
                "failed",
                format!(
                    "the change could not be published ({e}); the running configuration is kept"
                ),
            )
        })?;
        self.last_build = Some(built);
        for n in &notes {
            self.log(n.clone());
        }
        Ok(views::to_json(&ctl::views::Changed {
            changed: notes,
            generation: self.generation,
            build_ms: built.as_secs_f64() * 1e3,
            reload: reload_diff,
        }))
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.control.drain_timeout_s)
    }

    /// Tracked flows to a backend, as last collected.
    pub fn active_flows(&self, service: &str, addr: SocketAddr) -> u64 {
        self.totals
            .backends
            .get(&(service.to_string(), addr))
            .map_or(0, |c| c.active_flows)
    }

    /// Reads the time from `clock` from now on (tests).
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.started = clock.now();
        self.clock = clock;
        self
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}

pub fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
