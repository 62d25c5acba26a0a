//! The control plane's state: the running configuration, each backend's admin state (ready,
//! drain, disabled) and health state (up, down, unknown), and the counters last collected from
//! the workers. Every change is made on a copy, validated exactly as a configuration file is
//! (written out and read back), turned into a new snapshot — Maglev tables rebuilt here, off
//! the workers — and only then swapped in; a change that fails leaves everything as it was.

use super::{probe_all, ProbeLink};
use arc_swap::ArcSwap;
use config::{Backend, Config, Service};
use ctl::{BackendSpec, ErrorBody, Op, ServiceSpec};
use dataplane::conntrack::ConnTrackCounters;
use dataplane::snapshot::{Admin, Health};
use dataplane::stats::BackendCounters;
use dataplane::{DropReason, FlowQuery, Probe, Snapshot};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

/// Counters summed over workers, keyed by identity so they survive configuration changes.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub at: Option<Instant>,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub neighbour_answers: u64,
    pub neighbour_requests: u64,
    pub neighbours_learned: u64,
    pub drops: Vec<(&'static str, u64)>,
    pub conntrack: ConnTrackCounters,
    pub active_flows: usize,
    pub backends: HashMap<BackendId, BackendCounters>,
    pub services: HashMap<String, (u64, u64, u64)>,
    /// Per worker: (packets in, packets out, bytes in, drops).
    pub workers: Vec<(usize, u64, u64, u64, u64)>,
    /// Per worker: (snapshots swapped in, longest swap in ns).
    pub swaps: Vec<(usize, u64, u64)>,
}

/// Called with each snapshot as it is published.
pub type PublishHook = Box<dyn FnMut(&Snapshot) -> Result<(), String> + Send>;

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

    fn backend_index(&self, service: &str, address: &str) -> Result<(usize, usize), ErrorBody> {
        let si = self.service_index(service)?;
        let addr: SocketAddr = address.parse().map_err(|_| {
            ErrorBody::new(
                "bad_request",
                format!("`{address}` is not an address with a port (like 10.1.0.1:8080)"),
            )
        })?;
        let bi = self.cfg.services[si]
            .backends
            .iter()
            .position(|b| b.address == addr)
            .ok_or_else(|| not_found(format!("service `{service}` has no backend {addr}")))?;
        Ok((si, bi))
    }

    fn state(&mut self, service: &str, addr: SocketAddr) -> &mut BackendState {
        self.backends
            .entry((service.to_string(), addr))
            .or_default()
    }
}

fn backend_from_spec(b: &BackendSpec) -> Result<Backend, ErrorBody> {
    let address: SocketAddr = b.address.parse().map_err(|_| {
        refused(format!(
            "backend address `{}` is not an address with a port (like 10.1.0.1:8080)",
            b.address
        ))
    })?;
    let mac = match &b.mac {
        Some(m) => Some(m.parse().map_err(|e| {
            refused(format!(
                "backend MAC `{m}` is not a MAC address ({e}); write six hex octets like 02:00:00:00:01:01, or leave it out to have sluice resolve it"
            ))
        })?),
        None => None,
    };
    Ok(Backend {
        address,
        mac,
        weight: b.weight.unwrap_or(1),
    })
}

/// The TOML of a `service add` request, appended to the running configuration's TOML so the
/// new service is validated by the same code as a file.
fn service_toml(s: &ServiceSpec) -> String {
    let q = |v: &str| toml_string(v);
    let mut t = format!(
        "\n[[service]]\nname = {}\nvip = {}\nprotocol = {}\nforwarding = {}\n",
        q(&s.name),
        q(&s.vip),
        q(&s.protocol),
        q(&s.forwarding)
    );
    if let Some(n) = s.table_size {
        t += &format!("table_size = {n}\n");
    }
    if let Some(n) = s.gue_port {
        t += &format!("gue_port = {n}\n");
    }
    if let Some(a) = &s.all_down {
        t += &format!("all_down = {}\n", q(a));
    }
    for b in &s.backends {
        t += &format!(
            "[[service.backend]]\naddress = {}\nweight = {}\n",
            q(&b.address),
            b.weight.unwrap_or(1)
        );
        if let Some(m) = &b.mac {
            t += &format!("mac = {}\n", q(m));
        }
    }
    t
}

fn neighbour_json(n: &dataplane::neighbour::NeighbourState) -> Value {
    json!({
        "address": n.addr.to_string(),
        "mac": n.mac.map(|m| m.to_string()),
        "state": if n.mac.is_some() { "resolved" } else { "unresolved" },
        "unanswered": n.probes,
        "requests": n.requests,
        "expiries": n.expiries,
        "unresolved_drops": n.unresolved_drops,
    })
}

fn toml_string(v: &str) -> String {
    // A JSON string is a valid TOML basic string for everything JSON escapes.
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

impl Plane {
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
            for b in &s.backends {
                backends.insert((s.name.clone(), b.address), BackendState::default());
            }
        }
        let workers = links.len();
        let first = cell.load_full();
        Plane {
            cfg,
            config_path,
            started: Instant::now(),
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
        }
    }

    /// The snapshot most recently published.
    pub fn current(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    pub fn log(&mut self, text: String) {
        if !self.quiet {
            eprintln!("sluice: {text}");
        }
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
                if s.health.is_some() {
                    st.health
                } else {
                    Health::Unknown
                },
            ),
            None => (Admin::Ready, Health::Unknown),
        }
    }

    /// Validates a candidate the way a file is validated and builds its snapshot.
    fn build(&self, c: &Candidate) -> Result<Snapshot, ErrorBody> {
        let text = c.cfg.to_toml();
        let back = Config::from_toml(&text, None).map_err(|e| config_error(&e))?;
        if back != c.cfg {
            return Err(ErrorBody::new(
                "failed",
                "internal error: the changed configuration does not read back equal; nothing was changed",
            ));
        }
        let neighbours = Arc::clone(&self.cell.load().neighbours);
        Snapshot::build_with(&c.cfg, &neighbours, |s, b| {
            Plane::snapshot_state(&c.backends, s, b)
        })
        .map_err(|e| refused(e.to_string()))
    }

    /// Makes `c` the running state and publishes its snapshot.
    fn commit(&mut self, c: Candidate, snap: Snapshot) {
        self.cfg = c.cfg;
        // States of backends no longer configured are forgotten.
        let live: std::collections::HashSet<BackendId> = self
            .cfg
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (s.name.clone(), b.address)))
            .collect();
        self.backends = c.backends;
        self.backends.retain(|k, _| live.contains(k));
        for k in live {
            self.backends.entry(k).or_default();
        }
        self.publish(snap);
    }

    fn publish(&mut self, snap: Snapshot) {
        self.generation = snap.generation;
        let mut failures = Vec::new();
        for f in self.on_publish.iter_mut() {
            if let Err(e) = f(&snap) {
                failures.push(e);
            }
        }
        for e in failures {
            self.log(format!(
                "while publishing configuration generation {}: {e}",
                snap.generation
            ));
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
        let snap = self.build(&c).map_err(|e| e.message)?;
        self.last_build = Some(t.elapsed());
        self.publish(snap);
        Ok(())
    }

    /// Serves one request.
    pub fn handle(&mut self, op: &Op) -> Result<Value, ErrorBody> {
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
        let snap = self.build(&c)?;
        let built = t.elapsed();
        let notes = c.notes.clone();
        self.commit(c, snap);
        self.last_build = Some(built);
        for n in &notes {
            self.log(n.clone());
        }
        let mut out = json!({
            "changed": notes,
            "generation": self.generation,
            "build_ms": built.as_secs_f64() * 1e3,
        });
        if let Some(d) = reload_diff {
            out["reload"] = d;
        }
        Ok(out)
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.control.drain_timeout_s)
    }

    /// Applies one change (or a batch) to the candidate.
    fn apply(&self, c: &mut Candidate, op: &Op) -> Result<(), ErrorBody> {
        match op {
            Op::Batch { ops } => {
                if ops.is_empty() {
                    return Err(ErrorBody::new("bad_request", "the batch is empty"));
                }
                for (i, o) in ops.iter().enumerate() {
                    if matches!(o, Op::Batch { .. } | Op::Reload) {
                        return Err(ErrorBody::new(
                            "bad_request",
                            format!("batch entry {i}: a batch holds changes only (no batch or reload inside)"),
                        ));
                    }
                    self.apply(c, o).map_err(|e| ErrorBody {
                        code: e.code,
                        message: format!("batch entry {i} ({}): {}", op_name(o), e.message),
                    })?;
                }
            }
            Op::ServiceAdd { spec } => {
                if c.cfg.services.iter().any(|s| s.name == spec.name) {
                    return Err(refused(format!(
                        "service `{}` exists; remove it first or choose another name",
                        spec.name
                    )));
                }
                let text = c.cfg.to_toml() + &service_toml(spec);
                let cfg = Config::from_toml(&text, None).map_err(|e| config_error(&e))?;
                c.cfg = cfg;
                c.notes.push(format!(
                    "service `{}` added ({} {} {}, {} backend(s))",
                    spec.name,
                    spec.protocol,
                    spec.vip,
                    spec.forwarding,
                    spec.backends.len()
                ));
            }
            Op::ServiceRemove { service } => {
                let si = c.service_index(service)?;
                c.cfg.services.remove(si);
                c.backends.retain(|(s, _), _| s != service);
                c.notes.push(format!(
                    "service `{service}` removed (its tracked flows are dropped as no_service)"
                ));
            }
            Op::BackendAdd { service, backend } => {
                let si = c.service_index(service)?;
                let b = backend_from_spec(backend)?;
                if c.cfg.services[si]
                    .backends
                    .iter()
                    .any(|o| o.address == b.address)
                {
                    return Err(refused(format!(
                        "service `{service}` already has backend {}; use set-weight or enable to change it",
                        b.address
                    )));
                }
                c.notes.push(format!(
                    "backend {} added to `{service}` (weight {})",
                    b.address, b.weight
                ));
                *c.state(service, b.address) = BackendState::default();
                c.cfg.services[si].backends.push(b);
            }
            Op::BackendRemove {
                service,
                address,
                force,
            } => {
                let (si, bi) = c.backend_index(service, address)?;
                let addr = c.cfg.services[si].backends[bi].address;
                if c.cfg.services[si].backends.len() == 1 {
                    return Err(refused(format!(
                        "{addr} is the last backend of `{service}`; a service needs at least one (remove the service instead)"
                    )));
                }
                let active = self.active_flows(service, addr);
                if *force || active == 0 {
                    c.cfg.services[si].backends.remove(bi);
                    c.backends.remove(&(service.clone(), addr));
                    c.notes.push(format!(
                        "backend {addr} removed from `{service}`{}",
                        if active > 0 {
                            format!(" with force: its {active} tracked flow(s) move on their next packet")
                        } else {
                            String::new()
                        }
                    ));
                } else {
                    let timeout = self.drain_timeout();
                    let st = c.state(service, addr);
                    st.admin = Admin::Drain;
                    st.drain_deadline.get_or_insert(Instant::now() + timeout);
                    st.remove_when_drained = true;
                    c.notes.push(format!(
                        "backend {addr} of `{service}` draining: {active} tracked flow(s); removed when they end or in {} s at most (use --force to remove now)",
                        timeout.as_secs()
                    ));
                }
            }
            Op::BackendSetWeight {
                service,
                address,
                weight,
            } => {
                let (si, bi) = c.backend_index(service, address)?;
                let b = &mut c.cfg.services[si].backends[bi];
                let old = b.weight;
                b.weight = *weight;
                c.notes.push(format!(
                    "backend {} of `{service}`: weight {old} -> {weight}",
                    b.address
                ));
            }
            Op::BackendDrain { service, address } => {
                let (si, bi) = c.backend_index(service, address)?;
                let addr = c.cfg.services[si].backends[bi].address;
                let timeout = self.drain_timeout();
                let st = c.state(service, addr);
                if st.admin != Admin::Drain {
                    st.admin = Admin::Drain;
                    st.drain_deadline = Some(Instant::now() + timeout);
                }
                c.notes.push(format!(
                    "backend {addr} of `{service}` draining: no new flows; tracked flows continue for {} s at most",
                    timeout.as_secs()
                ));
            }
            Op::BackendEnable { service, address } => {
                let (si, bi) = c.backend_index(service, address)?;
                let addr = c.cfg.services[si].backends[bi].address;
                let st = c.state(service, addr);
                let was = st.admin;
                st.admin = Admin::Ready;
                st.drain_deadline = None;
                st.remove_when_drained = false;
                c.notes.push(format!(
                    "backend {addr} of `{service}`: {} -> ready",
                    was.name()
                ));
            }
            Op::BackendDisable { service, address } => {
                let (si, bi) = c.backend_index(service, address)?;
                let addr = c.cfg.services[si].backends[bi].address;
                let st = c.state(service, addr);
                st.admin = Admin::Disabled;
                st.drain_deadline = None;
                c.notes.push(format!(
                    "backend {addr} of `{service}` disabled: no new flows, tracked flows move on their next packet"
                ));
            }
            Op::Reload => {
                return Err(ErrorBody::new("bad_request", "reload cannot be batched"));
            }
            other => {
                return Err(ErrorBody::new(
                    "bad_request",
                    format!("`{}` changes nothing", op_name(other)),
                ))
            }
        }
        Ok(())
    }

    /// Loads the configuration file into the candidate: services and backends as the file
    /// says, except that backends the file no longer lists drain first (they take no new
    /// flows and are removed when their flows end or the drain times out). Sections that
    /// cannot change live (`[dataplane]`, `[control]`, `[metrics]`, `[node]`, `[conntrack]`)
    /// keep their running values and are reported.
    fn reload_into(&self, c: &mut Candidate) -> Result<Value, ErrorBody> {
        let file = Config::load(&self.config_path).map_err(|e| {
            refused(format!(
                "the running configuration is kept: {}",
                e.to_string().replace('\n', " ")
            ))
        })?;
        let mut restart = Vec::new();
        if file.dataplane != self.cfg.dataplane {
            restart.push("dataplane");
        }
        if file.control != self.cfg.control {
            restart.push("control");
        }
        if file.metrics != self.cfg.metrics {
            restart.push("metrics");
        }
        if file.node != self.cfg.node {
            restart.push("node");
        }
        if file.conntrack != self.cfg.conntrack {
            restart.push("conntrack");
        }
        let mut new = self.cfg.clone();
        new.services = file.services.clone();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        let mut draining = Vec::new();
        for s in &file.services {
            match self.cfg.services.iter().find(|o| o.name == s.name) {
                None => added.push(format!("service {}", s.name)),
                Some(o) => {
                    if (
                        o.vip,
                        o.protocol,
                        o.forwarding,
                        o.table_size,
                        o.gue_port,
                        &o.health,
                        o.all_down,
                    ) != (
                        s.vip,
                        s.protocol,
                        s.forwarding,
                        s.table_size,
                        s.gue_port,
                        &s.health,
                        s.all_down,
                    ) {
                        changed.push(format!("service {}", s.name));
                    }
                    for b in &s.backends {
                        match o.backends.iter().find(|ob| ob.address == b.address) {
                            None => added.push(format!("backend {} {}", s.name, b.address)),
                            Some(ob) if ob != b => changed.push(format!(
                                "backend {} {} (weight {} -> {}{})",
                                s.name,
                                b.address,
                                ob.weight,
                                b.weight,
                                if ob.mac != b.mac { ", new MAC" } else { "" }
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        let timeout = self.drain_timeout();
        for o in &self.cfg.services {
            let Some(si) = new.services.iter().position(|s| s.name == o.name) else {
                removed.push(format!("service {}", o.name));
                continue;
            };
            for ob in &o.backends {
                if new.services[si]
                    .backends
                    .iter()
                    .any(|b| b.address == ob.address)
                {
                    continue;
                }
                let active = self.active_flows(&o.name, ob.address);
                if active == 0 {
                    removed.push(format!("backend {} {}", o.name, ob.address));
                    continue;
                }
                // Kept, draining, until its flows end.
                new.services[si].backends.push(ob.clone());
                let st = c.backends.entry((o.name.clone(), ob.address)).or_default();
                if st.admin != Admin::Drain {
                    st.admin = Admin::Drain;
                    st.drain_deadline = Some(Instant::now() + timeout);
                }
                st.remove_when_drained = true;
                draining.push(format!(
                    "backend {} {} ({active} flow(s); removed when they end, {} s at most)",
                    o.name,
                    ob.address,
                    timeout.as_secs()
                ));
            }
        }
        c.cfg = new;
        let mut notes = Vec::new();
        for (what, list) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
            ("draining before removal", &draining),
        ] {
            for x in list.iter() {
                notes.push(format!("reload: {what}: {x}"));
            }
        }
        if notes.is_empty() {
            notes.push("reload: no change".into());
        }
        for r in &restart {
            notes.push(format!("reload: [{r}] differs from the running one and needs a restart; the running values are kept"));
        }
        c.notes = notes;
        Ok(
            json!({"added": added, "removed": removed, "changed": changed, "draining": draining, "needs_restart": restart}),
        )
    }

    /// Tracked flows to a backend, as last collected.
    pub fn active_flows(&self, service: &str, addr: SocketAddr) -> u64 {
        self.totals
            .backends
            .get(&(service.to_string(), addr))
            .map_or(0, |c| c.active_flows)
    }

    /// Collects counters from the workers, and acts on drains: a drained backend past its
    /// timeout has its flows moved, and one awaiting removal is removed when its flows have
    /// ended or the timeout passed. Called by the daemon's control loop a few times a second.
    pub fn tick(&mut self) {
        self.collect();
        let now = Instant::now();
        let mut expire = Vec::new();
        let mut remove = Vec::new();
        for ((s, a), st) in &self.backends {
            let timed_out = st.admin == Admin::Drain && st.drain_deadline.is_some_and(|d| now >= d);
            let ended = st.remove_when_drained && self.active_flows(s, *a) == 0;
            if st.remove_when_drained && (timed_out || ended) {
                remove.push((s.clone(), *a, ended));
            } else if timed_out {
                expire.push((s.clone(), *a));
            }
        }
        if expire.is_empty() && remove.is_empty() {
            return;
        }
        for (s, a) in &expire {
            if let Some(st) = self.backends.get_mut(&(s.clone(), *a)) {
                st.admin = Admin::DrainExpired;
            }
        }
        for (s, a) in &expire {
            self.log(format!("backend {a} of `{s}`: drain timeout passed; its remaining flows move to other backends"));
        }
        let mut c = Candidate {
            cfg: self.cfg.clone(),
            backends: self.backends.clone(),
            notes: vec![],
        };
        for (s, a, ended) in &remove {
            if let Some(svc) = c.cfg.services.iter_mut().find(|x| &x.name == s) {
                if svc.backends.len() > 1 {
                    svc.backends.retain(|b| b.address != *a);
                    c.backends.remove(&(s.clone(), *a));
                    c.notes.push(format!(
                        "backend {a} removed from `{s}` ({})",
                        if *ended {
                            "its flows ended"
                        } else {
                            "drain timeout passed"
                        }
                    ));
                } else if let Some(st) = c.backends.get_mut(&(s.clone(), *a)) {
                    // The last backend stays, drained, rather than leave the service empty.
                    st.remove_when_drained = false;
                    c.notes.push(format!(
                        "backend {a} of `{s}` kept (drained) as the service's last backend"
                    ));
                }
            }
        }
        match self.build(&c) {
            Ok(snap) => {
                let notes = c.notes.clone();
                self.commit(c, snap);
                for n in notes {
                    self.log(n);
                }
            }
            Err(e) => self.log(format!("could not apply drain changes: {}", e.message)),
        }
    }

    fn snapshot_of(&self, generation: u64) -> Option<&Arc<Snapshot>> {
        self.history
            .iter()
            .rev()
            .find(|s| s.generation == generation)
    }

    /// Asks every worker for its counters and sums them by identity.
    pub fn collect(&mut self) {
        let shape = self.cell.load_full();
        let probes = probe_all(
            &self.links,
            || Probe::new(&shape, 0),
            Duration::from_millis(200),
        );
        self.fold(probes);
    }

    fn fold(&mut self, probes: Vec<Probe>) {
        let mut t = Totals {
            at: Some(Instant::now()),
            ..Default::default()
        };
        let mut drops = vec![0u64; DropReason::COUNT];
        for p in &probes {
            let s = &p.stats;
            t.packets_in += s.packets_in;
            t.neighbour_answers += s.neighbour_answers;
            t.neighbour_requests += s.neighbour_requests;
            t.neighbours_learned += s.neighbours_learned;
            t.packets_out += s.packets_out;
            t.bytes_in += s.bytes_in;
            for (a, b) in drops.iter_mut().zip(s.drops.iter()) {
                *a += b;
            }
            t.conntrack.merge(&p.conntrack);
            t.active_flows += p.active_flows;
            t.workers.push((
                p.worker,
                s.packets_in,
                s.packets_out,
                s.bytes_in,
                s.total_drops(),
            ));
            t.swaps.push((p.worker, p.swaps, p.swap_max_ns));
            let Some(snap) = self.snapshot_of(p.generation) else {
                continue;
            };
            for (si, svc) in snap.services.iter().enumerate() {
                let e = t.services.entry(svc.name.clone()).or_default();
                for (bi, b) in svc.backends.iter().enumerate() {
                    let c = s
                        .backends
                        .get(si)
                        .and_then(|v| v.get(bi))
                        .copied()
                        .unwrap_or_default();
                    e.0 += c.packets;
                    e.1 += c.bytes;
                    let k = t.backends.entry((svc.name.clone(), b.addr)).or_default();
                    k.packets += c.packets;
                    k.bytes += c.bytes;
                    k.new_flows += c.new_flows;
                    k.active_flows += c.active_flows;
                }
                e.2 += s.services.get(si).map_or(0, |x| x.all_down_flows);
            }
        }
        t.drops = DropReason::all()
            .map(|r| (r.name(), drops[r.index()]))
            .collect();
        t.workers.sort();
        self.previous = std::mem::replace(&mut self.totals, t);
    }

    /// Records a health check result; returns true when the backend's health changed.
    pub fn health_result(&mut self, service: &str, addr: SocketAddr, r: CheckResult) -> bool {
        let Some(svc) = self.cfg.services.iter().find(|s| s.name == service) else {
            return false;
        };
        let Some(hc) = svc.health.clone() else {
            return false;
        };
        let Some(st) = self.backends.get_mut(&(service.to_string(), addr)) else {
            return false;
        };
        let ok = r.ok;
        let msg = r.message.clone();
        st.last_check = Some(r);
        if ok {
            st.successes = st.successes.saturating_add(1);
            st.failures = 0;
        } else {
            st.failures = st.failures.saturating_add(1);
            st.successes = 0;
        }
        let was = st.health;
        let now = if ok && st.successes >= hc.rise && was != Health::Up {
            Health::Up
        } else if !ok && st.failures >= hc.fall && was != Health::Down {
            Health::Down
        } else {
            was
        };
        if now == was {
            return false;
        }
        st.health = now;
        self.log(format!(
            "health: backend {addr} of `{service}` {} -> {} ({})",
            was.name(),
            now.name(),
            msg
        ));
        if let Err(e) = self.republish() {
            self.log(format!("could not apply the health change: {e}"));
        }
        true
    }

    // ---- queries ---------------------------------------------------------------------

    fn query(&mut self, op: &Op) -> Result<Value, ErrorBody> {
        match op {
            Op::Status => Ok(self.status()),
            Op::ServiceList => Ok(
                json!({"services": self.cfg.services.iter().map(|s| self.service_json(s, false)).collect::<Vec<_>>()}),
            ),
            Op::ServiceShow { service } => {
                let s = self.find_service(service)?;
                Ok(self.service_json(s, true))
            }
            Op::BackendList { service } => {
                let mut rows = Vec::new();
                for s in &self.cfg.services {
                    if service.as_ref().is_some_and(|n| n != &s.name) {
                        continue;
                    }
                    for b in &s.backends {
                        rows.push(self.backend_json(s, b));
                    }
                }
                if let Some(n) = service {
                    self.find_service(n)?;
                }
                Ok(json!({"backends": rows}))
            }
            Op::HealthShow { service } => {
                if let Some(n) = service {
                    self.find_service(n)?;
                }
                let mut rows = Vec::new();
                for s in &self.cfg.services {
                    if service.as_ref().is_some_and(|n| n != &s.name) {
                        continue;
                    }
                    for b in &s.backends {
                        let st = self
                            .backends
                            .get(&(s.name.clone(), b.address))
                            .cloned()
                            .unwrap_or_default();
                        rows.push(json!({
                            "service": s.name,
                            "address": b.address.to_string(),
                            "check": s.health.as_ref().map(check_desc),
                            "health": if s.health.is_some() { st.health.name() } else { "unchecked" },
                            "successes": st.successes,
                            "failures": st.failures,
                            "last": st.last_check.as_ref().map(check_json),
                        }));
                    }
                }
                Ok(json!({"backends": rows}))
            }
            Op::Stats => {
                self.collect();
                Ok(self.stats_json())
            }
            Op::Flows {
                service,
                backend,
                limit,
            } => self.flows(service.as_deref(), backend.as_deref(), limit.unwrap_or(20)),
            _ => Err(ErrorBody::new("bad_request", "not a query")),
        }
    }

    fn find_service(&self, name: &str) -> Result<&Service, ErrorBody> {
        self.cfg
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.services.iter().map(|s| s.name.as_str()).collect();
                not_found(format!(
                    "no service `{name}`; the services are: {}",
                    names.join(", ")
                ))
            })
    }

    fn status(&self) -> Value {
        let file = match Config::load(&self.config_path) {
            Ok(f) => {
                if f == self.cfg {
                    json!("same")
                } else {
                    json!("differs")
                }
            }
            Err(e) => json!(format!("unreadable: {}", e.to_string().replace('\n', " "))),
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": ctl::PROTOCOL_VERSION,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "driver": self.driver,
            "workers": self.workers,
            "config_file": self.config_path.display().to_string(),
            "config_vs_file": file,
            "generation": self.generation,
            "services": self.cfg.services.len(),
            "backends": self.cfg.services.iter().map(|s| s.backends.len()).sum::<usize>(),
            "last_build_ms": self.last_build.map(|d| d.as_secs_f64() * 1e3),
            "recent_events": self.events.iter().rev().take(10).map(|e| json!({"at": unix(e.at), "event": e.text})).collect::<Vec<_>>(),
        })
    }

    fn service_json(&self, s: &Service, with_backends: bool) -> Value {
        let snap = self.cell.load();
        let entry = snap.services.iter().find(|e| e.name == s.name);
        let ready = entry.map_or(0, |e| {
            e.backends.iter().filter(|b| b.takes_new_flows).count()
        });
        let (packets, bytes, all_down_flows) = self
            .totals
            .services
            .get(&s.name)
            .copied()
            .unwrap_or_default();
        let mut v = json!({
            "name": s.name,
            "vip": s.vip.to_string(),
            "protocol": s.protocol.name(),
            "forwarding": s.forwarding.name(),
            "table_size": s.table_size,
            "backends": s.backends.len(),
            "taking_new_flows": ready,
            "all_down": s.all_down.name(),
            "all_down_active": entry.is_some_and(|e| e.all_down_fallback),
            "all_down_flows": all_down_flows,
            "health_check": s.health.as_ref().map(check_desc),
            "packets": packets,
            "bytes": bytes,
        });
        if with_backends {
            v["backend_list"] =
                Value::Array(s.backends.iter().map(|b| self.backend_json(s, b)).collect());
        }
        v
    }

    fn backend_json(&self, s: &Service, b: &Backend) -> Value {
        let st = self
            .backends
            .get(&(s.name.clone(), b.address))
            .cloned()
            .unwrap_or_default();
        let c = self
            .totals
            .backends
            .get(&(s.name.clone(), b.address))
            .copied()
            .unwrap_or_default();
        let snap = self.cell.load();
        let takes = snap
            .services
            .iter()
            .find(|e| e.name == s.name)
            .and_then(|e| e.backends.iter().find(|x| x.addr == b.address))
            .is_some_and(|x| x.takes_new_flows);
        json!({
            "service": s.name,
            "address": b.address.to_string(),
            "mac": b.mac.map(|m| m.to_string()),
            "weight": b.weight,
            "admin": st.admin.name(),
            "health": if s.health.is_some() { st.health.name() } else { "unchecked" },
            "takes_new_flows": takes,
            "remove_when_drained": st.remove_when_drained,
            "drain_left_s": st.drain_deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64()),
            "active_flows": c.active_flows,
            "new_flows": c.new_flows,
            "packets": c.packets,
            "bytes": c.bytes,
            "last_check": st.last_check.as_ref().map(check_json),
        })
    }

    fn stats_json(&self) -> Value {
        let t = &self.totals;
        let p = &self.previous;
        let dt = match (t.at, p.at) {
            (Some(a), Some(b)) if a > b => (a - b).as_secs_f64(),
            _ => 0.0,
        };
        let rate = |now: u64, before: u64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let workers: Vec<Value> = t
            .workers
            .iter()
            .map(|w| {
                let before = p.workers.iter().find(|x| x.0 == w.0).copied().unwrap_or_default();
                let sw = t.swaps.iter().find(|x| x.0 == w.0).copied().unwrap_or_default();
                json!({"worker": w.0, "packets_in": w.1, "packets_out": w.2, "bytes_in": w.3, "drops": w.4,
                       "packets_per_s": rate(w.1, before.1), "bits_per_s": rate(w.3, before.3) * 8.0,
                       "snapshot_swaps": sw.1, "swap_max_us": sw.2 as f64 / 1e3})
            })
            .collect();
        let services: Vec<Value> = self
            .cfg
            .services
            .iter()
            .map(|s| {
                let (pk, by, ad) = t.services.get(&s.name).copied().unwrap_or_default();
                let (pk0, by0, _) = p.services.get(&s.name).copied().unwrap_or_default();
                json!({"service": s.name, "packets": pk, "bytes": by, "packets_per_s": rate(pk, pk0), "bits_per_s": rate(by, by0) * 8.0, "all_down_flows": ad})
            })
            .collect();
        let drops: serde_json::Map<String, Value> = t
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let c = &t.conntrack;
        let capacity = self.cfg.conntrack.capacity * self.workers;
        json!({
            "interval_s": dt,
            "packets_in": t.packets_in,
            "neighbour_answers": t.neighbour_answers,
            "neighbour_requests": t.neighbour_requests,
            "neighbours_learned": t.neighbours_learned,
            "neighbours": self.neighbours().iter().map(neighbour_json).collect::<Vec<_>>(),
            "packets_out": t.packets_out,
            "bytes_in": t.bytes_in,
            "packets_per_s": rate(t.packets_in, p.packets_in),
            "bits_per_s": rate(t.bytes_in, p.bytes_in) * 8.0,
            "workers": workers,
            "services": services,
            "drops": drops,
            "conntrack": {"active": t.active_flows, "capacity": capacity,
                          "occupancy": if capacity > 0 { t.active_flows as f64 / capacity as f64 } else { 0.0 },
                          "hits": c.hits, "misses": c.misses, "inserts": c.inserts, "evictions": c.evictions, "expiries": c.expiries},
        })
    }

    fn flows(
        &mut self,
        service: Option<&str>,
        backend: Option<&str>,
        limit: u32,
    ) -> Result<Value, ErrorBody> {
        let limit = limit.clamp(1, 10_000) as usize;
        let vip = match service {
            Some(n) => {
                let s = self.find_service(n)?;
                Some((s.vip, s.protocol.number()))
            }
            None => None,
        };
        let backend = match backend {
            Some(b) => Some(b.parse::<SocketAddr>().map_err(|_| {
                ErrorBody::new(
                    "bad_request",
                    format!("`{b}` is not an address with a port (like 10.1.0.1:8080)"),
                )
            })?),
            None => None,
        };
        let shape = self.cell.load_full();
        let q = FlowQuery {
            vip,
            backend,
            scan: 1 << 20,
        };
        let probes = probe_all(
            &self.links,
            || {
                let mut p = Probe::new(&shape, limit);
                p.flow_query = Some(q);
                p
            },
            Duration::from_millis(500),
        );
        let mut rows = Vec::new();
        for p in &probes {
            let snap = self
                .snapshot_of(p.generation)
                .cloned()
                .unwrap_or_else(|| Arc::clone(&shape));
            for (k, f) in &p.flows {
                if rows.len() >= limit {
                    break;
                }
                let svc = snap
                    .service_for(k.dst, k.dst_port, k.proto)
                    .map(|i| snap.services[i as usize].name.clone());
                rows.push(json!({
                    "worker": p.worker,
                    "client": SocketAddr::new(k.src, k.src_port).to_string(),
                    "vip": SocketAddr::new(k.dst, k.dst_port).to_string(),
                    "protocol": if k.proto == 6 { "tcp" } else { "udp" },
                    "service": svc,
                    "backend": f.backend_addr.to_string(),
                    "state": format!("{:?}", f.state),
                    "age_s": p.now_ns.saturating_sub(f.created_ns) as f64 / 1e9,
                    "idle_s": p.now_ns.saturating_sub(f.last_seen_ns) as f64 / 1e9,
                }));
            }
        }
        let total: usize = probes.iter().map(|p| p.active_flows).sum();
        Ok(json!({"flows": rows, "tracked": total, "workers_answered": probes.len()}))
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn check_json(c: &CheckResult) -> Value {
    json!({"ok": c.ok, "latency_ms": c.latency.as_secs_f64() * 1e3, "message": c.message, "at": unix(c.at)})
}

pub fn check_desc(h: &config::HealthCheck) -> String {
    let what = match &h.kind {
        config::CheckKind::Tcp => "tcp connect".to_string(),
        config::CheckKind::Http { path, .. } => format!("http GET {path}"),
    };
    format!(
        "{what} every {} ms, timeout {} ms, rise {}, fall {}",
        h.interval_ms, h.timeout_ms, h.rise, h.fall
    )
}

pub fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
