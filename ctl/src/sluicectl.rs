//! `sluicectl`: the operator's command line for a running sluice, over its control socket.
//! Human tables by default, `--json` for scripts. Exit codes: 0 done, 1 refused or failed
//! (including when the daemon cannot be reached), 2 usage.

use clap::{Parser, Subcommand};
use ctl::views::{
    BackendList, BackendView, Changed, FlowList, FlowView, HealthList, HealthView, NeighbourView,
    ServiceList, ServiceStatsView, ServiceView, Stats, Status, WorkerStatsView,
};
use ctl::{encode_request, BackendSpec, Op, Response, ServiceSpec, DEFAULT_SOCKET};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sluicectl",
    version,
    about = "Control a running sluice: services, backends, weights, draining, health, stats",
    long_about = "Control a running sluice over its control socket.\n\n\
A backend maintenance, step by step:\n  \
sluicectl backend drain web 10.1.0.2:8080        # no new flows; tracked flows continue\n  \
sluicectl backend list web                       # watch active_flows fall to 0\n  \
sluicectl backend remove web 10.1.0.2:8080       # (waits for flows; --force moves them now)\n  \
sluicectl backend add web 10.1.0.2:8080 --mac 02:00:00:00:01:02 --weight 1\n  \
sluicectl backend set-weight web 10.1.0.2:8080 3 # restore its weight\n\n\
Exit status: 0 done, 1 refused or failed, 2 usage error."
)]
struct Cli {
    /// The daemon's control socket ([control] socket in its configuration).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "SLUICE_SOCKET")]
    socket: PathBuf,
    /// Print the daemon's JSON response instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, uptime, driver, workers, and whether the running configuration differs from its file.
    Status,
    /// Services: list, show, add, remove.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Backends: list, add, remove, set-weight, drain, enable, disable.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// An L7 service's routes: list, add, remove.
    #[command(subcommand)]
    Route(RouteCmd),
    /// An L7 service's pools: add, remove (their backends: `backend ... --pool`).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Health checks.
    #[command(subcommand)]
    Health(HealthCmd),
    /// TLS certificates: list (names, issuer, expiry).
    #[command(subcommand, visible_alias = "cert")]
    Certificate(CertificateCmd),
    /// Packets/s and bits/s per worker and service, drops by reason, conntrack occupancy.
    Stats,
    /// A sample of tracked flows with their backend and age.
    Flows {
        /// Only flows to this service.
        #[arg(long)]
        service: Option<String>,
        /// Only flows to this backend (address:port).
        #[arg(long)]
        backend: Option<String>,
        /// At most this many flows.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
    /// Re-read the configuration file and apply the difference (or refuse and keep the running one).
    Reload,
    /// This instance as a whole: drain (withdraw its VIP routes, keep forwarding), standby
    /// (VRRP backup), activate.
    #[command(subcommand)]
    Node(NodeCmd),
    /// VIP routes announced through ExaBGP ([bgp]): routes, feed (the program ExaBGP runs).
    #[command(subcommand)]
    Bgp(BgpCmd),
    /// Print the completion script for a shell (the Debian package installs them).
    ///
    /// Example: sluicectl completions bash > ~/.local/share/bash-completion/completions/sluicectl
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (sluicectl.1 and one per verb) into a directory.
    #[command(hide = true)]
    Manual {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A refreshing view of stats (Ctrl-C to stop).
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Every service with its VIP, mode and backends taking new flows.
    List,
    /// One service and its backends.
    Show { service: String },
    /// Add a service (validated like a [[service]] table in the file).
    Add {
        /// Service name.
        name: String,
        /// VIP with port, such as 198.51.100.10:80.
        #[arg(long)]
        vip: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// nat, snat, dsr, ipip or gue.
        #[arg(long)]
        forwarding: String,
        /// A backend as ADDRESS, ADDRESS=MAC, ADDRESS*WEIGHT or ADDRESS=MAC*WEIGHT (repeat for
        /// each); without a MAC sluice resolves the address by ARP / neighbour discovery.
        #[arg(long = "backend", value_name = "ADDR=MAC[*WEIGHT]", required = true)]
        backends: Vec<String>,
        /// Maglev table size (a prime).
        #[arg(long)]
        table_size: Option<u32>,
        /// When every backend is down: drop or all.
        #[arg(long)]
        all_down: Option<String>,
    },
    /// Remove a service (its tracked flows are dropped).
    Remove { service: String },
}

#[derive(Subcommand)]
enum BackendCmd {
    /// Backends with admin state, health, weight, active flows and last check.
    List { service: Option<String> },
    /// Add a backend to a service (to an L7 service's pool with --pool).
    ///
    /// Example: sluicectl backend add site 10.99.0.14:8080 --pool api --weight 2
    Add {
        service: String,
        address: String,
        /// The backend's MAC (or its router's); leave it out to have sluice resolve the
        /// on-link address by ARP / neighbour discovery.
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        weight: Option<u32>,
        /// The most flows tracked to it at once (an L4 service's backend; split between the
        /// workers); at it, new flows go to the next backend Maglev would pick.
        #[arg(long, value_name = "N")]
        max_flows: Option<u32>,
        /// The pool of an L7 service the backend joins.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Drain, then remove once its flows end (or the drain timeout passes); from an L7
    /// service's pool with --pool (at once: its requests in flight finish).
    Remove {
        service: String,
        address: String,
        /// Remove now; its tracked flows move to other backends on their next packet.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Change a backend's weight (1 to 65535); in an L7 service's pool with --pool.
    SetWeight {
        service: String,
        address: String,
        weight: u32,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Take no new flows; tracked flows continue until they end or the drain timeout.
    Drain { service: String, address: String },
    /// Return a drained or disabled backend to service.
    Enable { service: String, address: String },
    /// Take no new flows and move tracked flows now.
    Disable { service: String, address: String },
}

#[derive(Subcommand)]
enum RouteCmd {
    /// The routes in the order they are matched, with their requests.
    ///
    /// Example: sluicectl route list site
    List { service: String },
    /// Add a route (every condition given must hold); first match wins. A tls-passthrough
    /// service routes by --sni and --alpn only (exact names before wildcards).
    ///
    /// Example: sluicectl route add site --host api.example --path-prefix /v2/ --pool api --position 0
    ///
    /// Example: sluicectl route add relay --sni "*.db.example" --pool db
    Add {
        service: String,
        /// The pool requests matching the route go to.
        #[arg(long)]
        pool: String,
        /// Exact host, or "*.example" for any subdomain.
        #[arg(long)]
        host: Option<String>,
        #[arg(long, conflicts_with = "path")]
        path_prefix: Option<String>,
        #[arg(long)]
        path: Option<String>,
        /// "name: value".
        #[arg(long)]
        header: Option<String>,
        #[arg(long)]
        method: Option<String>,
        /// tls-passthrough: the ClientHello's server name, exact or "*.example".
        #[arg(long)]
        sni: Option<String>,
        /// tls-passthrough: an ALPN protocol the ClientHello offers (such as "acme-tls/1").
        #[arg(long)]
        alpn: Option<String>,
        /// Where it goes in the order (0 is first); last when left out.
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove route INDEX (as `route list` numbers them).
    Remove { service: String, index: usize },
}

#[derive(Subcommand)]
enum PoolCmd {
    /// Add a pool with its backends (ADDRESS or ADDRESS=WEIGHT).
    ///
    /// Example: sluicectl pool add site canary 10.99.0.15:8080 10.99.0.16:8080=2 --algorithm least-requests
    Add {
        service: String,
        name: String,
        /// Backends: ADDRESS or ADDRESS=WEIGHT.
        #[arg(required = true)]
        backends: Vec<String>,
        /// round-robin (default), least-requests, p2c or hash.
        #[arg(long)]
        algorithm: Option<String>,
        /// With --algorithm hash: header:NAME, cookie:NAME or source.
        #[arg(long)]
        hash_on: Option<String>,
        #[arg(long)]
        sticky_cookie: Option<String>,
    },
    /// Remove a pool that no route (and not default_pool) names.
    Remove { service: String, name: String },
}

#[derive(Subcommand)]
enum HealthCmd {
    /// Each backend's health, consecutive results and last check.
    Show { service: Option<String> },
}

#[derive(Subcommand)]
enum CertificateCmd {
    /// The certificates the L7 services present to clients (and the client certificates of
    /// pools that re-encrypt): names, issuer, expiry, file. `reload` swaps them live.
    ///
    /// Example: sluicectl certificate list secure
    List {
        /// Only this service's.
        service: Option<String>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Withdraw every VIP route this instance announces ([bgp]): routers send new flows to
    /// the other instances, and this one keeps forwarding what still reaches it (established
    /// flows, until the routers have moved them). For maintenance without a stop.
    ///
    /// Example: sluicectl node drain && sleep 30 && sluicectl stats   # traffic falls away
    Drain,
    /// Make the node active: announce the VIP routes again (each that has a usable backend);
    /// from standby, answer and forward for the VIPs again, announcing each by gratuitous ARP
    /// / unsolicited neighbour advertisement. keepalived's notify_master runs this.
    ///
    /// Example: sluicectl node activate && sluicectl bgp routes
    Activate,
    /// Make the node a standby (VRRP backup): it answers no ARP / neighbour solicitation for
    /// a VIP and forwards nothing for one (counted as `standby` drops), and withdraws its VIP
    /// routes. keepalived's notify_backup and notify_fault run this.
    ///
    /// Example: sluicectl node standby && sluicectl status
    Standby,
}

#[derive(Subcommand)]
enum BgpCmd {
    /// Each VIP route: whether it is announced now, its next hop, and why.
    ///
    /// Example: sluicectl bgp routes
    Routes,
    /// The program ExaBGP runs (its process API): asks the daemon for the routes every
    /// --interval-ms and writes `announce route` / `withdraw route` lines on standard output;
    /// while the daemon cannot be reached, everything it announced is withdrawn. Logs go to
    /// standard error (ExaBGP's log).
    ///
    /// In exabgp.conf:
    ///   process sluice { run /usr/bin/sluicectl --socket /run/sluice/control.sock bgp feed; encoder text; }
    ///   neighbor 10.99.0.254 { ...; api { processes [ sluice ]; } }
    Feed {
        /// Milliseconds between asks (a withdrawal reaches ExaBGP within this).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60000))]
        interval_ms: u64,
    },
}

struct Client {
    socket: PathBuf,
    conn: Option<(BufReader<UnixStream>, UnixStream)>,
}

impl Client {
    fn call(&mut self, op: &Op) -> Result<Response, String> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.socket).map_err(|e| {
                format!(
                    "cannot reach sluice at {}: {e} (is `sluice run` running? pass its [control] socket with --socket)",
                    self.socket.display()
                )
            })?;
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let w = s.try_clone().map_err(|e| e.to_string())?;
            self.conn = Some((BufReader::new(s), w));
        }
        let Some((r, w)) = self.conn.as_mut() else {
            return Err("not connected".into());
        };
        writeln!(w, "{}", encode_request(op)).map_err(|e| format!("sending the request: {e}"))?;
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("reading the response: {e}"))?;
        if line.is_empty() {
            return Err("the daemon closed the connection without answering".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("the daemon's response is not valid: {e}"))
    }
}

/// `ADDRESS[=MAC][*WEIGHT]` (without a MAC, sluice resolves the address itself).
fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    let (rest, weight) = match s.rsplit_once('*') {
        Some((r, w)) => (
            r,
            Some(
                w.parse::<u32>()
                    .map_err(|_| format!("--backend `{s}`: weight `{w}` is not a number"))?,
            ),
        ),
        None => (s, None),
    };
    let (addr, mac) = match rest.split_once('=') {
        Some((a, m)) => (a, Some(m.to_string())),
        None => (rest, None),
    };
    if addr.is_empty() {
        return Err(format!(
            "--backend `{s}`: write ADDRESS, ADDRESS=MAC, or either followed by *WEIGHT"
        ));
    }
    Ok(BackendSpec {
        address: addr.into(),
        mac,
        weight,
        max_flows: None,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut client = Client {
        socket: cli.socket.clone(),
        conn: None,
    };
    let op = match &cli.command {
        Command::Completions { shell } => {
            ctl::manual::print_completions(*shell, <Cli as clap::CommandFactory>::command());
            return ExitCode::SUCCESS;
        }
        Command::Manual { out } => {
            return match ctl::manual::write_man_pages(<Cli as clap::CommandFactory>::command(), out)
            {
                Ok(files) => {
                    println!("{} manual page(s) in {}", files.len(), out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluicectl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status => Op::Status,
        Command::Service(c) => match c {
            ServiceCmd::List => Op::ServiceList,
            ServiceCmd::Show { service } => Op::ServiceShow {
                service: service.clone(),
            },
            ServiceCmd::Add {
                name,
                vip,
                protocol,
                forwarding,
                backends,
                table_size,
                all_down,
            } => {
                let mut list = Vec::new();
                for b in backends {
                    match parse_backend(b) {
                        Ok(x) => list.push(x),
                        Err(e) => {
                            eprintln!("sluicectl: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                Op::ServiceAdd {
                    spec: ServiceSpec {
                        name: name.clone(),
                        vip: vip.clone(),
                        protocol: protocol.clone(),
                        forwarding: forwarding.clone(),
                        table_size: *table_size,
                        gue_port: None,
                        all_down: all_down.clone(),
                        backends: list,
                    },
                }
            }
            ServiceCmd::Remove { service } => Op::ServiceRemove {
                service: service.clone(),
            },
        },
        Command::Backend(c) => match c.clone_op() {
            Some(op) => op,
            None => return ExitCode::from(2),
        },
        Command::Route(RouteCmd::List { service }) => Op::RouteList {
            service: service.clone(),
        },
        Command::Route(RouteCmd::Add {
            service,
            pool,
            host,
            path_prefix,
            path,
            header,
            method,
            sni,
            alpn,
            position,
        }) => Op::RouteAdd {
            service: service.clone(),
            route: ctl::RouteSpec {
                host: host.clone(),
                path_prefix: path_prefix.clone(),
                path: path.clone(),
                header: header.clone(),
                method: method.clone(),
                sni: sni.clone(),
                alpn: alpn.clone(),
                pool: pool.clone(),
            },
            position: *position,
        },
        Command::Route(RouteCmd::Remove { service, index }) => Op::RouteRemove {
            service: service.clone(),
            index: *index,
        },
        Command::Pool(PoolCmd::Add {
            service,
            name,
            backends,
            algorithm,
            hash_on,
            sticky_cookie,
        }) => {
            let mut list = Vec::with_capacity(backends.len());
            for b in backends {
                let (address, weight) = match b.split_once('=') {
                    Some((a, w)) => match w.parse() {
                        Ok(w) => (a.to_string(), Some(w)),
                        Err(_) => {
                            eprintln!("sluicectl: `{b}`: the weight after '=' is not a number (write ADDRESS=WEIGHT, like 10.1.0.1:8080=2)");
                            return ExitCode::from(2);
                        }
                    },
                    None => (b.clone(), None),
                };
                list.push(BackendSpec {
                    address,
                    mac: None,
                    weight,
                    max_flows: None,
                });
            }
            Op::PoolAdd {
                service: service.clone(),
                pool: ctl::PoolSpec {
                    name: name.clone(),
                    algorithm: algorithm.clone(),
                    hash_on: hash_on.clone(),
                    sticky_cookie: sticky_cookie.clone(),
                    sticky_max_age: None,
                    backends: list,
                },
            }
        }
        Command::Pool(PoolCmd::Remove { service, name }) => Op::PoolRemove {
            service: service.clone(),
            pool: name.clone(),
        },
        Command::Health(HealthCmd::Show { service }) => Op::HealthShow {
            service: service.clone(),
        },
        Command::Certificate(CertificateCmd::List { service }) => Op::CertificateList {
            service: service.clone(),
        },
        Command::Stats => Op::Stats,
        Command::Flows {
            service,
            backend,
            limit,
        } => Op::Flows {
            service: service.clone(),
            backend: backend.clone(),
            limit: Some(*limit),
        },
        Command::Reload => Op::Reload,
        Command::Node(NodeCmd::Drain) => Op::NodeDrain,
        Command::Node(NodeCmd::Activate) => Op::NodeActivate,
        Command::Node(NodeCmd::Standby) => Op::NodeStandby,
        Command::Bgp(BgpCmd::Routes) => Op::BgpRoutes { feed: false },
        Command::Bgp(BgpCmd::Feed { interval_ms }) => {
            return feed(&mut client, Duration::from_millis(*interval_ms));
        }
        Command::Watch { interval, count } => {
            if !(interval.is_finite() && *interval >= 0.1) {
                eprintln!("sluicectl: --interval takes at least 0.1 seconds (got {interval})");
                return ExitCode::from(2);
            }
            return watch(&mut client, *interval, *count, cli.json);
        }
    };
    match client.call(&op) {
        Err(e) => {
            eprintln!("sluicectl: {e}");
            ExitCode::FAILURE
        }
        Ok(r) => show(&cli.command, &r, cli.json),
    }
}

impl BackendCmd {
    fn clone_op(&self) -> Option<Op> {
        let sa = |s: &String, a: &String| (s.clone(), a.clone());
        Some(match self {
            BackendCmd::List { service } => Op::BackendList {
                service: service.clone(),
            },
            BackendCmd::Add {
                service,
                address,
                mac,
                weight,
                max_flows,
                pool,
            } => Op::BackendAdd {
                service: service.clone(),
                backend: BackendSpec {
                    address: address.clone(),
                    mac: mac.clone(),
                    weight: *weight,
                    max_flows: *max_flows,
                },
                pool: pool.clone(),
            },
            BackendCmd::Remove {
                service,
                address,
                force,
                pool,
            } => Op::BackendRemove {
                service: service.clone(),
                address: address.clone(),
                force: *force,
                pool: pool.clone(),
            },
            BackendCmd::SetWeight {
                service,
                address,
                weight,
                pool,
            } => Op::BackendSetWeight {
                service: service.clone(),
                address: address.clone(),
                weight: *weight,
                pool: pool.clone(),
            },
            BackendCmd::Drain { service, address } => {
                let (service, address) = sa(service, address);
                Op::BackendDrain { service, address }
            }
            BackendCmd::Enable { service, address } => {
                let (service, address) = sa(service, address);
                Op::BackendEnable { service, address }
            }
            BackendCmd::Disable { service, address } => {
                let (service, address) = sa(service, address);
                Op::BackendDisable { service, address }
            }
        })
    }
}

/// `bgp feed`: the ExaBGP process-API loop. Exits when ExaBGP closes our standard input or
/// output (it is stopping, or restarting us).
fn feed(client: &mut Client, interval: Duration) -> ExitCode {
    // ExaBGP acknowledges each command on our standard input ("done" or "error"); read them
    // so its pipe never fills, and say the errors.
    std::thread::spawn(|| {
        for line in std::io::stdin().lines() {
            match line {
                Ok(l) if l.trim() == "done" => {}
                Ok(l) => eprintln!("sluicectl bgp feed: ExaBGP says: {l}"),
                Err(_) => break,
            }
        }
        eprintln!("sluicectl bgp feed: ExaBGP closed our input; exiting");
        std::process::exit(0);
    });
    let mut state = ctl::feed::Feed::default();
    let mut reasons: std::collections::HashMap<String, String> = Default::default();
    let mut unreachable = false;
    let mut out = std::io::stdout().lock();
    loop {
        let lines = match client.call(&Op::BgpRoutes { feed: true }) {
            Ok(r) if r.ok => {
                let routes: Result<ctl::views::BgpRoutes, _> =
                    serde_json::from_value(r.result.unwrap_or(Value::Null));
                match routes {
                    Ok(routes) => {
                        if unreachable {
                            eprintln!(
                                "sluicectl bgp feed: sluice reachable again at {}",
                                client.socket.display()
                            );
                            unreachable = false;
                        }
                        for x in &routes.routes {
                            if reasons.get(&x.prefix) != Some(&x.reason) {
                                eprintln!("sluicectl bgp feed: {}: {}", x.prefix, x.reason);
                                reasons.insert(x.prefix.clone(), x.reason.clone());
                            }
                        }
                        state.update(&routes.routes)
                    }
                    Err(e) => {
                        eprintln!("sluicectl bgp feed: the daemon's routes are not what this sluicectl expects ({e}); withdrawing");
                        state.withdraw_all()
                    }
                }
            }
            Ok(r) => {
                let e = r.error.map_or("no reason given".into(), |e| e.message);
                eprintln!("sluicectl bgp feed: the daemon refused: {e}; withdrawing");
                state.withdraw_all()
            }
            Err(e) => {
                client.conn = None;
                if !unreachable {
                    eprintln!(
                        "sluicectl bgp feed: {e}; withdrawing every route until it answers again"
                    );
                    unreachable = true;
                    reasons.clear();
                }
                state.withdraw_all()
            }
        };
        for l in &lines {
            eprintln!("sluicectl bgp feed: {l}");
            if writeln!(out, "{l}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
        if out.flush().is_err() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(interval);
    }
}

fn watch(client: &mut Client, interval: f64, count: Option<u64>, json: bool) -> ExitCode {
    let mut n = 0u64;
    loop {
        match client.call(&Op::Stats) {
            Err(e) => {
                eprintln!("sluicectl: {e}");
                return ExitCode::FAILURE;
            }
            Ok(r) => {
                if !r.ok {
                    return show(&Command::Stats, &r, json);
                }
                if json {
                    println!("{}", r.to_line());
                } else {
                    // Clear the screen and home the cursor, like watch(1).
                    print!("\x1b[2J\x1b[H");
                    match serde_json::from_value::<Stats>(r.result.clone().unwrap_or(Value::Null)) {
                        Ok(st) => print!("{}", stats_text(&st)),
                        Err(e) => {
                            eprintln!("sluicectl: the daemon's stats are not what this sluicectl expects ({e})");
                            return ExitCode::FAILURE;
                        }
                    }
                    let _ = std::io::stdout().flush();
                }
            }
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
}

fn show(cmd: &Command, r: &Response, json: bool) -> ExitCode {
    if json {
        println!("{}", r.to_line());
        return if r.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if !r.ok {
        let e = r
            .error
            .clone()
            .unwrap_or(ctl::ErrorBody::new("failed", "no reason given"));
        eprintln!("sluicectl: {} ({})", e.message, e.code);
        return ExitCode::FAILURE;
    }
    let v = r.result.clone().unwrap_or(Value::Null);
    match render(cmd, v) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sluicectl: the daemon's answer is not what this sluicectl expects ({e}); is it the same version? --json prints it as it is"
            );
            ExitCode::FAILURE
        }
    }
}

/// The table or summary for one command's result, read as its type from `ctl::views`.
fn render(cmd: &Command, v: Value) -> Result<String, serde_json::Error> {
    Ok(match cmd {
        Command::Status => status_text(&serde_json::from_value(v)?),
        Command::Service(ServiceCmd::List) => {
            let l: ServiceList = serde_json::from_value(v)?;
            table(
                &l.services,
                &[
                    ("NAME", &|s: &ServiceView| s.name.clone()),
                    ("PROTO", &|s| s.protocol.clone()),
                    ("VIP", &|s| s.vip.clone()),
                    ("MODE", &|s| s.forwarding.clone()),
                    ("BACKENDS", &|s| s.backends.to_string()),
                    ("TAKING_NEW", &|s| s.taking_new_flows.to_string()),
                    ("ALL_DOWN", &|s| s.all_down.clone()),
                    ("PACKETS", &|s| s.packets.to_string()),
                ],
            )
        }
        Command::Service(ServiceCmd::Show { .. }) => {
            let s: ServiceView = serde_json::from_value(v)?;
            let mut t = String::new();
            for (k, val) in [
                ("name", s.name.clone()),
                ("protocol", s.protocol.clone()),
                ("vip", s.vip.clone()),
                ("forwarding", s.forwarding.clone()),
                ("table_size", s.table_size.to_string()),
                ("all_down", s.all_down.clone()),
                ("all_down_active", s.all_down_active.to_string()),
                ("all_down_flows", s.all_down_flows.to_string()),
                ("health_check", opt(&s.health_check)),
                ("packets", s.packets.to_string()),
                ("bytes", s.bytes.to_string()),
            ] {
                t += &format!("{k:<16} {val}\n");
            }
            t + "\n" + &backend_table(s.backend_list.as_deref().unwrap_or_default())
        }
        Command::Backend(BackendCmd::List { .. }) => {
            let l: BackendList = serde_json::from_value(v)?;
            backend_table(&l.backends)
        }
        Command::Health(_) => {
            let l: HealthList = serde_json::from_value(v)?;
            table(
                &l.backends,
                &[
                    ("SERVICE", &|h: &HealthView| h.service.clone()),
                    ("BACKEND", &|h| h.address.clone()),
                    ("HEALTH", &|h| h.health.clone()),
                    ("OK_RUN", &|h| h.successes.to_string()),
                    ("FAIL_RUN", &|h| h.failures.to_string()),
                    ("LAST", &|h| {
                        opt(&h.last.as_ref().map(|c| c.message.clone()))
                    }),
                    ("LATENCY_MS", &|h| {
                        opt_f(h.last.as_ref().map(|c| c.latency_ms))
                    }),
                    ("CHECK", &|h| opt(&h.check)),
                ],
            )
        }
        Command::Certificate(_) => {
            let l: ctl::views::CertificateList = serde_json::from_value(v)?;
            table(
                &l.certificates,
                &[
                    ("SERVICE", &|c: &ctl::views::CertificateView| {
                        c.service.clone()
                    }),
                    ("ROLE", &|c| c.role.clone()),
                    ("SLOT", &|c| c.slot.clone()),
                    ("NAMES", &|c| {
                        if c.names.is_empty() {
                            "-".into()
                        } else {
                            c.names.join(",")
                        }
                    }),
                    ("DEFAULT", &|c| if c.default { "yes" } else { "no" }.into()),
                    ("ISSUER", &|c| c.issuer.clone()),
                    ("EXPIRES", &|c| c.expires.clone()),
                    ("DAYS_LEFT", &|c| {
                        c.seconds_left.div_euclid(86_400).to_string()
                    }),
                    ("FILE", &|c| c.file.clone()),
                ],
            )
        }
        Command::Stats => stats_text(&serde_json::from_value(v)?),
        Command::Node(_) => {
            let c: Changed = serde_json::from_value(v)?;
            c.changed.iter().map(|l| format!("{l}\n")).collect()
        }
        Command::Bgp(_) => {
            let r: ctl::views::BgpRoutes = serde_json::from_value(v)?;
            format!("node: {}\n", r.node)
                + &table(
                    &r.routes,
                    &[
                        ("PREFIX", &|x: &ctl::views::BgpRoute| x.prefix.clone()),
                        ("NEXT_HOP", &|x| x.next_hop.clone()),
                        ("ANNOUNCE", &|x| {
                            if x.announce { "yes" } else { "no" }.into()
                        }),
                        ("SERVICES", &|x| x.services.join(",")),
                        ("REASON", &|x| x.reason.clone()),
                    ],
                )
        }
        Command::Route(RouteCmd::List { .. }) => {
            let l: ctl::views::RouteList = serde_json::from_value(v)?;
            type Col<'a> = Column<'a, ctl::views::RouteView>;
            let hello = l.routes.iter().any(|r| r.sni.is_some() || r.alpn.is_some());
            let index: Col = ("INDEX", &|r| r.index.to_string());
            let pool: Col = ("POOL", &|r| r.pool.clone());
            let class = |k: &'static str| {
                move |r: &ctl::views::RouteView| r.status.get(k).copied().unwrap_or(0).to_string()
            };
            let (c2, c4, c5) = (class("2xx"), class("4xx"), class("5xx"));
            let cols: Vec<Col> = if hello {
                // tls-passthrough: connections, no responses.
                vec![
                    index,
                    ("SNI", &|r| opt(&r.sni)),
                    ("ALPN", &|r| opt(&r.alpn)),
                    pool,
                    ("CONNECTIONS", &|r| r.requests.to_string()),
                ]
            } else {
                vec![
                    index,
                    ("HOST", &|r| opt(&r.host)),
                    ("PATH", &|r| opt(&r.path)),
                    ("HEADER", &|r| opt(&r.header)),
                    ("METHOD", &|r| opt(&r.method)),
                    pool,
                    ("2XX", &c2),
                    ("4XX", &c4),
                    ("5XX", &c5),
                    ("REQUESTS", &|r| r.requests.to_string()),
                ]
            };
            table(&l.routes, &cols)
                + &format!(
                    "{} no route matches: {}\n",
                    if hello { "connections" } else { "requests" },
                    match &l.default_pool {
                        Some(p) => format!("pool `{p}`"),
                        None if hello => "refused (TLS alert unrecognized_name)".into(),
                        None => "404".into(),
                    }
                )
        }
        Command::Flows { .. } => {
            let l: FlowList = serde_json::from_value(v)?;
            format!(
                "{}\n{} flow(s) tracked in all; {} shown\n",
                table(
                    &l.flows,
                    &[
                        ("WORKER", &|f: &FlowView| f.worker.to_string()),
                        ("CLIENT", &|f| f.client.clone()),
                        ("VIP", &|f| f.vip.clone()),
                        ("PROTO", &|f| f.protocol.clone()),
                        ("SERVICE", &|f| opt(&f.service)),
                        ("BACKEND", &|f| f.backend.clone()),
                        ("STATE", &|f| f.state.clone()),
                        ("AGE_S", &|f| f2(f.age_s)),
                        ("IDLE_S", &|f| f2(f.idle_s)),
                    ]
                ),
                l.tracked,
                l.flows.len()
            )
        }
        _ => {
            // Changes: what changed, and how long the rebuild took.
            let c: Changed = serde_json::from_value(v)?;
            let mut t = String::new();
            for line in &c.changed {
                t += &format!("{line}\n");
            }
            t += &format!(
                "applied as configuration generation {} (built in {} ms)\n",
                c.generation,
                f2(c.build_ms)
            );
            t
        }
    })
}

/// A measured value as the tables print it.
fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn opt_f(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), f2)
}

/// A column: its heading and how a row gives its cell.
type Column<'a, T> = (&'a str, &'a dyn Fn(&T) -> String);

fn table<T>(rows: &[T], cols: &[Column<'_, T>]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, f)| f(r)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let mut t = String::new();
    let line = |vals: Vec<&str>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    t += &line(cols.iter().map(|(h, _)| *h).collect());
    for r in &cells {
        t += &line(r.iter().map(String::as_str).collect());
    }
    t
}

fn backend_table(rows: &[BackendView]) -> String {
    table(
        rows,
        &[
            ("SERVICE", &|b: &BackendView| b.service.clone()),
            ("BACKEND", &|b| b.address.clone()),
            ("WEIGHT", &|b| b.weight.to_string()),
            ("ADMIN", &|b| b.admin.clone()),
            ("HEALTH", &|b| b.health.clone()),
            ("NEW_FLOWS?", &|b| b.takes_new_flows.to_string()),
            ("ACTIVE_FLOWS", &|b| b.active_flows.to_string()),
            ("PACKETS", &|b| b.packets.to_string()),
            ("LAST_CHECK", &|b| {
                opt(&b.last_check.as_ref().map(|c| c.message.clone()))
            }),
            ("CHECK_MS", &|b| {
                opt_f(b.last_check.as_ref().map(|c| c.latency_ms))
            }),
            ("DRAIN_LEFT_S", &|b| opt_f(b.drain_left_s)),
        ],
    )
}

fn status_text(s: &Status) -> String {
    let mut t = String::new();
    for (label, val) in [
        ("version", s.version.clone()),
        ("protocol", s.protocol.to_string()),
        ("uptime (s)", f2(s.uptime_s)),
        ("driver", s.driver.clone()),
        ("workers", s.workers.to_string()),
        ("config file", s.config_file.clone()),
        ("running vs file", s.config_vs_file.clone()),
        ("generation", s.generation.to_string()),
        ("services", s.services.to_string()),
        ("backends", s.backends.to_string()),
        ("last build (ms)", opt_f(s.last_build_ms)),
        ("node", s.node.clone()),
    ] {
        t += &format!("{label:<16} {val}\n");
    }
    if let Some(b) = &s.bgp {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        t += &format!(
            "{:<16} {}\n{:<16} {}\n{:<16} {}\n",
            "bgp feed",
            b.feed_last_poll_s.map_or(
                "never asked (is ExaBGP running `sluicectl bgp feed`?)".into(),
                |s| format!("asked {} s ago", f2(s))
            ),
            "announced",
            list(&b.announced),
            "withdrawn",
            list(&b.withdrawn)
        );
    }
    if !s.recent_events.is_empty() {
        t += "recent events:\n";
        for e in &s.recent_events {
            t += &format!("  {}\n", e.event);
        }
    }
    t
}

/// The L7 pool's part of `stats`.
fn l7_text(l: &ctl::views::L7StatsView) -> String {
    let class = |k: &str| l.status.get(k).copied().unwrap_or(0);
    let ms = |k: &str| {
        l.latency_ms
            .get(k)
            .copied()
            .flatten()
            .map_or("-".into(), |v| format!("<= {v} ms"))
    };
    let errors: Vec<String> = l
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let mut t = format!(
        "\nL7 pool: {} requests (2xx {}, 3xx {}, 4xx {}, 5xx {}); latency p50 {}, p90 {}, p99 {}\n",
        l.requests,
        class("2xx"),
        class("3xx"),
        class("4xx"),
        class("5xx"),
        ms("p50"),
        ms("p90"),
        ms("p99")
    );
    t += &format!(
        "  connections: {} from clients ({} accepted in all), {} to backends; upstream requests on reused connections {:.1}% ({} opened, {} reused); retries {}, ejections {}\n",
        l.client_connections,
        l.clients_accepted,
        l.upstream_connections,
        100.0 * l.reuse_ratio,
        l.upstream_opened,
        l.upstream_reused,
        l.retries,
        l.ejections
    );
    let handshakes: u64 = l.tls_handshakes.values().sum();
    if handshakes > 0 {
        t += &format!(
            "  TLS handshakes: {} ({}), {} resumed\n",
            handshakes,
            l.tls_handshakes
                .iter()
                .map(|(v, n)| format!("TLS {v}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            l.tls_resumed
        );
    }
    if l.upstream_tls_handshakes > 0 {
        t += &format!(
            "  TLS to backends (re-encrypted): {} handshakes, {} resumed\n",
            l.upstream_tls_handshakes, l.upstream_tls_resumed
        );
    }
    if l.tls_passthrough > 0 {
        t += &format!(
            "  TLS passed through (by SNI): {} connections\n",
            l.tls_passthrough
        );
    }
    t += &format!(
        "  errors by reason: {}\n\n",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    t + &table(
        &l.backends,
        &[
            ("SERVICE", &|b: &ctl::views::L7BackendView| {
                b.service.clone()
            }),
            ("POOL", &|b| b.pool.clone()),
            ("BACKEND", &|b| b.backend.clone()),
            ("REQUESTS", &|b| b.requests.to_string()),
            ("IN_FLIGHT", &|b| b.in_flight.to_string()),
            ("FAILED", &|b| b.failures.to_string()),
            ("EJECTED", &|b| b.ejections.to_string()),
            ("2XX", &|b| {
                b.status.get("2xx").copied().unwrap_or(0).to_string()
            }),
            ("4XX", &|b| {
                b.status.get("4xx").copied().unwrap_or(0).to_string()
            }),
            ("5XX", &|b| {
                b.status.get("5xx").copied().unwrap_or(0).to_string()
            }),
        ],
    )
}

fn stats_text(v: &Stats) -> String {
    let mut t = format!(
        "total: {} packets in, {} out; {} packets/s, {} bits/s (over {} s)\n\n",
        v.packets_in,
        v.packets_out,
        f2(v.packets_per_s),
        f2(v.bits_per_s),
        f2(v.interval_s)
    );
    t += &table(
        &v.workers,
        &[
            ("WORKER", &|w: &WorkerStatsView| w.worker.to_string()),
            ("PACKETS_IN", &|w| w.packets_in.to_string()),
            ("PACKETS_OUT", &|w| w.packets_out.to_string()),
            ("DROPS", &|w| w.drops.to_string()),
            ("PACKETS/S", &|w| f2(w.packets_per_s)),
            ("BITS/S", &|w| f2(w.bits_per_s)),
            ("SWAPS", &|w| w.snapshot_swaps.to_string()),
            ("SWAP_MAX_US", &|w| f2(w.swap_max_us)),
        ],
    );
    t += "\n";
    t += &table(
        &v.services,
        &[
            ("SERVICE", &|s: &ServiceStatsView| s.service.clone()),
            ("PACKETS", &|s| s.packets.to_string()),
            ("PACKETS/S", &|s| f2(s.packets_per_s)),
            ("BITS/S", &|s| f2(s.bits_per_s)),
            ("ALL_DOWN_FLOWS", &|s| s.all_down_flows.to_string()),
        ],
    );
    let c = &v.conntrack;
    t += &format!(
        "\nconntrack: {} of {} flows ({:.1}%), hits {}, misses {}, evictions {}, expiries {}; half-open {} of {} at most, {} evicted\n",
        c.active,
        c.capacity,
        c.occupancy * 100.0,
        c.hits,
        c.misses,
        c.evictions,
        c.expiries,
        c.half_open,
        c.half_open_capacity,
        c.half_open_evictions
    );
    if !v.neighbours.is_empty() {
        t += "\nnext hops resolved by sluice:\n";
        t += &table(
            &v.neighbours,
            &[
                ("ADDRESS", &|n: &NeighbourView| n.address.clone()),
                ("MAC", &|n| opt(&n.mac)),
                ("STATE", &|n| n.state.clone()),
                ("UNANSWERED", &|n| n.unanswered.to_string()),
                ("REQUESTS", &|n| n.requests.to_string()),
                ("EXPIRIES", &|n| n.expiries.to_string()),
                ("DROPPED", &|n| n.unresolved_drops.to_string()),
            ],
        );
    }
    if v.drops.is_empty() {
        t += "drops: none\n";
    } else {
        t += "drops:\n";
        for (k, n) in &v.drops {
            t += &format!("  {k:<24} {n}\n");
        }
    }
    if let Some(l) = &v.l7 {
        t += &l7_text(l);
    }
    t
}
