//! `sluicectl`: the operator's command line for a running sluice, over its control socket.
//! Human tables by default, `--json` for scripts. Exit codes: 0 done, 1 refused or failed
//! (including when the daemon cannot be reached), 2 usage.

use clap::{Parser, Subcommand};
use ctl::human::{self, count};
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
    ///
    /// Example: sluicectl status     # "running vs file: same" after a reload that applied
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
    ///
    /// Rates and sizes are shown in units (5.54 Mpps, 1.09 Gbit/s, 3.2 GiB); --json gives the
    /// exact numbers.
    ///
    /// Example: sluicectl stats      # or: sluicectl --json stats | jq .drops
    Stats,
    /// A sample of tracked flows with their backend and age.
    ///
    /// Example: sluicectl flows --backend 10.1.0.2:8080 --limit 5   # who is still on it
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
    /// The client sources a per-source rate limit ([service.rate_limit]) is refusing now.
    ///
    /// A source shows while it had a new flow refused in the last 10 s, with the flows
    /// refused since it was given its slot (all workers). The source table has a fixed size;
    /// "slots recycled" counts the sources that took another's slot (a flood of sources).
    ///
    /// Example: sluicectl limits web
    Limits {
        /// Only this service's sources.
        service: Option<String>,
    },
    /// Re-read the configuration file and apply the difference (or refuse and keep the running one).
    ///
    /// The same as SIGHUP (`systemctl reload sluice`); the changes it made are printed, and a
    /// file that does not validate is refused with the line and key at fault.
    ///
    /// Example: sluice check --config /etc/sluice/sluice.toml && sluicectl reload
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
    /// A refreshing view of stats, redrawn in place, each count with its change since the
    /// last refresh (Ctrl-C to stop).
    ///
    /// Example: sluicectl watch --interval 2
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
    ///
    /// Example: sluicectl service list
    List,
    /// One service and its backends.
    ///
    /// Example: sluicectl service show web
    Show { service: String },
    /// Add a service (validated like a [[service]] table in the file).
    ///
    /// Example: sluicectl service add dns --vip 198.51.100.53:53 --protocol udp --forwarding nat --backend 10.1.0.7:53 --backend 10.1.0.8:53*2
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
        /// SYN proxy (nat and snat TCP services): off, on, or auto (on above 10,000 SYNs/s;
        /// set other rates in the file).
        #[arg(long, value_name = "off|on|auto")]
        syn_proxy: Option<String>,
    },
    /// Remove a service (its tracked flows are dropped).
    ///
    /// Example: sluicectl service remove dns
    Remove { service: String },
}

#[derive(Subcommand)]
enum BackendCmd {
    /// Backends with admin state, health, weight, active flows and last check.
    ///
    /// Example: sluicectl backend list web
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
    ///
    /// Example: sluicectl backend remove web 10.1.0.2:8080
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
    ///
    /// Example: sluicectl backend set-weight web 10.1.0.3:8080 3
    SetWeight {
        service: String,
        address: String,
        weight: u32,
        #[arg(long)]
        pool: Option<String>,
    },
    /// Take no new flows; tracked flows continue until they end or the drain timeout.
    ///
    /// Example: sluicectl backend drain web 10.1.0.2:8080
    Drain { service: String, address: String },
    /// Return a drained or disabled backend to service.
    ///
    /// Example: sluicectl backend enable web 10.1.0.2:8080
    Enable { service: String, address: String },
    /// Take no new flows and move tracked flows now.
    ///
    /// Example: sluicectl backend disable web 10.1.0.2:8080   # it stopped answering
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
    ///
    /// Example: sluicectl route remove site 0
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
    ///
    /// Example: sluicectl pool remove site canary
    Remove { service: String, name: String },
}

#[derive(Subcommand)]
enum HealthCmd {
    /// Each backend's health, consecutive results and last check.
    ///
    /// Example: sluicectl health show web
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
    ///
    /// Example, by hand, to see what it would tell ExaBGP (Ctrl-C to stop):
    ///   sluicectl bgp feed --interval-ms 1000
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
            return match ctl::manual::write_man_pages_and_say(
                <Cli as clap::CommandFactory>::command(),
                out,
            ) {
                Ok(()) => ExitCode::SUCCESS,
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
                syn_proxy,
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
                        syn_proxy: syn_proxy.clone(),
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
        Command::Limits { service } => Op::Limits {
            service: service.clone(),
        },
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

/// A page drawn over the previous one: cursor home, each line cleared to its end as it is
/// written, and what is left of a longer previous page cleared below (no blank flash between
/// refreshes, as clearing the whole screen gives). The first page clears the screen once.
fn redraw(page: &str, first: bool) -> String {
    let mut out = String::with_capacity(page.len() + 64);
    out += if first { "\x1b[2J\x1b[H" } else { "\x1b[H" };
    for line in page.lines() {
        out += line;
        out += "\x1b[K\n";
    }
    out += "\x1b[J";
    out
}

fn watch(client: &mut Client, interval: f64, count: Option<u64>, json: bool) -> ExitCode {
    let mut n = 0u64;
    let mut previous: Option<Stats> = None;
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
                    match serde_json::from_value::<Stats>(r.result.clone().unwrap_or(Value::Null)) {
                        Ok(st) => {
                            let page = format!(
                                "sluicectl watch: every {}, refresh {}{}\n\n{}",
                                human::duration(interval),
                                n + 1,
                                if previous.is_some() {
                                    "; (+N) is the change since the last refresh"
                                } else {
                                    ""
                                },
                                stats_view(&st, previous.as_ref())
                            );
                            print!("{}", redraw(&page, n == 0));
                            previous = Some(st);
                        }
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
                    ("PROTOCOL", &|s| s.protocol.clone()),
                    ("VIP", &|s| s.vip.clone()),
                    ("MODE", &|s| s.forwarding.clone()),
                    ("BACKENDS", &|s| s.backends.to_string()),
                    ("TAKING NEW FLOWS", &|s| {
                        format!("{} of {}", s.taking_new_flows, s.backends)
                    }),
                    ("WHEN ALL DOWN", &|s| s.all_down.clone()),
                    ("SYN PROXY", &|s| s.syn_proxy.clone()),
                    ("PACKETS", &|s| count(s.packets)),
                    ("BYTES", &|s| human::bytes(s.bytes)),
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
                (
                    "Maglev table",
                    format!("{} entries", count(s.table_size.into())),
                ),
                ("when all down", s.all_down.clone()),
                ("failing open now", human::yes(s.all_down_active)),
                ("flows failed open", count(s.all_down_flows)),
                ("SYN proxy", s.syn_proxy.clone()),
                ("health check", opt(&s.health_check)),
                ("packets", count(s.packets)),
                (
                    "bytes",
                    format!("{} ({})", human::bytes(s.bytes), count(s.bytes)),
                ),
            ] {
                t += &format!("{k:<18} {val}\n");
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
                    ("PASSED IN A ROW", &|h| h.successes.to_string()),
                    ("FAILED IN A ROW", &|h| h.failures.to_string()),
                    ("LAST CHECK", &|h| {
                        opt(&h.last.as_ref().map(|c| c.message.clone()))
                    }),
                    ("TOOK", &|h| {
                        h.last
                            .as_ref()
                            .map_or("-".into(), |c| human::millis(c.latency_ms))
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
                    ("EXPIRES IN", &|c| {
                        if c.seconds_left < 0 {
                            format!("expired {} ago", human::duration(-c.seconds_left as f64))
                        } else {
                            human::duration(c.seconds_left as f64)
                        }
                    }),
                    ("FILE", &|c| c.file.clone()),
                ],
            )
        }
        Command::Stats => stats_text(&serde_json::from_value(v)?),
        Command::Limits { .. } => {
            let l: ctl::views::LimitList = serde_json::from_value(v)?;
            let mut t = if l.sources.is_empty() {
                "no source is being rate-limited now\n".to_string()
            } else {
                table(
                    &l.sources,
                    &[
                        ("SERVICE", &|s: &ctl::views::LimitedSourceView| {
                            s.service.clone()
                        }),
                        ("SOURCE", &|s| s.source.clone()),
                        ("FLOWS REFUSED", &|s| count(s.refused)),
                        ("LAST REFUSED", &|s| {
                            format!("{} ago", human::duration(s.last_refused_s))
                        }),
                    ],
                )
            };
            t += &format!(
                "source table: {} slots per worker, {} recycled for new sources ({} worker(s) answered)\n",
                count(l.table_capacity as u64),
                count(l.sources_recycled),
                l.workers_answered
            );
            t
        }
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
                        ("NEXT HOP", &|x| x.next_hop.clone()),
                        ("ANNOUNCED", &|x| human::yes(x.announce)),
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
                    ("CONNECTIONS", &|r| count(r.requests)),
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
                    ("REQUESTS", &|r| count(r.requests)),
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
                        ("PROTOCOL", &|f| f.protocol.clone()),
                        ("SERVICE", &|f| opt(&f.service)),
                        ("BACKEND", &|f| f.backend.clone()),
                        ("STATE", &|f| f.state.clone()),
                        ("AGE", &|f| human::duration(f.age_s)),
                        ("IDLE FOR", &|f| human::duration(f.idle_s)),
                    ]
                ),
                count(l.tracked as u64),
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
            ("TAKES NEW FLOWS", &|b| human::yes(b.takes_new_flows)),
            ("ACTIVE FLOWS", &|b| count(b.active_flows)),
            ("PACKETS", &|b| count(b.packets)),
            ("BYTES", &|b| human::bytes(b.bytes)),
            ("LAST CHECK", &|b| {
                opt(&b.last_check.as_ref().map(|c| c.message.clone()))
            }),
            ("CHECK TOOK", &|b| {
                b.last_check
                    .as_ref()
                    .map_or("-".into(), |c| human::millis(c.latency_ms))
            }),
            ("DRAIN ENDS IN", &|b| {
                b.drain_left_s.map_or("-".into(), human::duration)
            }),
        ],
    )
}

fn status_text(s: &Status) -> String {
    let mut t = String::new();
    for (label, val) in [
        ("version", s.version.clone()),
        ("protocol", s.protocol.to_string()),
        ("uptime", human::duration(s.uptime_s)),
        ("driver", s.driver.clone()),
        ("workers", s.workers.to_string()),
        ("config file", s.config_file.clone()),
        ("running vs file", s.config_vs_file.clone()),
        ("generation", s.generation.to_string()),
        ("services", s.services.to_string()),
        ("backends", s.backends.to_string()),
        (
            "last build took",
            s.last_build_ms.map_or("-".into(), human::millis),
        ),
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
                |s| format!("asked {} ago", human::duration(s))
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
        count(l.requests),
        count(class("2xx")),
        count(class("3xx")),
        count(class("4xx")),
        count(class("5xx")),
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
            ("REQUESTS", &|b| count(b.requests)),
            ("IN FLIGHT", &|b| count(b.in_flight)),
            ("FAILED", &|b| count(b.failures)),
            ("TIMES EJECTED", &|b| count(b.ejections)),
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
    stats_view(v, None)
}

/// `stats` as a page; under `watch`, `before` is the previous refresh and each count shows its
/// change since then.
fn stats_view(v: &Stats, before: Option<&Stats>) -> String {
    // "1,234 (+56)" under watch, "1,234" otherwise.
    let with_delta = |now: u64, then: Option<u64>| match then {
        Some(t) => format!("{} ({})", count(now), human::delta(now, t)),
        None => count(now),
    };
    let mut t = format!(
        "total: {} packets in, {} out; {}, {} (over the last {})\n\n",
        with_delta(v.packets_in, before.map(|b| b.packets_in)),
        with_delta(v.packets_out, before.map(|b| b.packets_out)),
        human::pps(v.packets_per_s),
        human::bits(v.bits_per_s),
        human::duration(v.interval_s)
    );
    let worker_before =
        |w: &WorkerStatsView| before.and_then(|b| b.workers.iter().find(|x| x.worker == w.worker));
    t += &table(
        &v.workers,
        &[
            ("WORKER", &|w: &WorkerStatsView| w.worker.to_string()),
            ("PACKETS IN", &|w| {
                with_delta(w.packets_in, worker_before(w).map(|b| b.packets_in))
            }),
            ("PACKETS OUT", &|w| {
                with_delta(w.packets_out, worker_before(w).map(|b| b.packets_out))
            }),
            ("DROPPED", &|w| {
                with_delta(w.drops, worker_before(w).map(|b| b.drops))
            }),
            ("RATE", &|w| human::pps(w.packets_per_s)),
            ("THROUGHPUT", &|w| human::bits(w.bits_per_s)),
            ("CONFIG SWAPS", &|w| count(w.snapshot_swaps)),
            ("LONGEST SWAP", &|w| {
                if w.snapshot_swaps == 0 {
                    "-".into()
                } else {
                    human::millis(w.swap_max_us / 1000.0)
                }
            }),
        ],
    );
    t += "\n";
    let service_before = |s: &ServiceStatsView| {
        before.and_then(|b| b.services.iter().find(|x| x.service == s.service))
    };
    t += &table(
        &v.services,
        &[
            ("SERVICE", &|s: &ServiceStatsView| s.service.clone()),
            ("PACKETS", &|s| {
                with_delta(s.packets, service_before(s).map(|b| b.packets))
            }),
            ("BYTES", &|s| human::bytes(s.bytes)),
            ("RATE", &|s| human::pps(s.packets_per_s)),
            ("THROUGHPUT", &|s| human::bits(s.bits_per_s)),
            ("FLOWS FAILED OPEN", &|s| count(s.all_down_flows)),
            ("SYN PROXY", &|s| {
                if s.syn_proxy.is_empty() {
                    "off".into()
                } else {
                    s.syn_proxy.clone()
                }
            }),
        ],
    );
    let sp = &v.syn_proxy;
    if sp.cookies > 0 || sp.accepted > 0 {
        t += &format!(
            "\nSYN proxy: {} SYNs answered with a cookie, {} returned (connections opened to backends: {}, refused by them: {}); first data held {} times, sent {}, not held for want of room {}\n",
            with_delta(sp.cookies, before.map(|b| b.syn_proxy.cookies)),
            with_delta(sp.accepted, before.map(|b| b.syn_proxy.accepted)),
            count(sp.opened),
            count(sp.refused),
            count(sp.held),
            count(sp.held_sent),
            count(sp.hold_full)
        );
    }
    let c = &v.conntrack;
    t += &format!(
        "\nconntrack: {} of {} flows ({:.1}%), hits {}, misses {}, evictions {}, expiries {}; half-open {} of {} at most, {} evicted\n",
        count(c.active as u64),
        count(c.capacity as u64),
        c.occupancy * 100.0,
        count(c.hits),
        count(c.misses),
        count(c.evictions),
        count(c.expiries),
        count(c.half_open as u64),
        count(c.half_open_capacity as u64),
        count(c.half_open_evictions)
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
                ("REQUESTS SENT", &|n| count(n.requests)),
                ("EXPIRED", &|n| count(n.expiries)),
                ("DROPPED UNRESOLVED", &|n| count(n.unresolved_drops)),
            ],
        );
    }
    if v.drops.is_empty() {
        t += "drops: none\n";
    } else {
        t += "drops by reason:\n";
        for (k, n) in &v.drops {
            let then = before.map(|b| b.drops.get(k).copied().unwrap_or(0));
            t += &format!("  {k:<24} {}\n", with_delta(*n, then));
        }
    }
    if let Some(l) = &v.l7 {
        t += &l7_text(l);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every verb a user can run, as its path (`backend drain`).
    fn verbs(c: &clap::Command, path: String, out: &mut Vec<(String, String)>) {
        for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = format!("{path} {}", sub.get_name()).trim().to_string();
            if sub.has_subcommands() {
                verbs(sub, p, out);
            } else {
                let help = sub
                    .get_long_about()
                    .or(sub.get_about())
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                out.push((p, help));
            }
        }
    }

    #[test]
    fn every_verb_has_an_example_in_its_help() {
        let mut all = Vec::new();
        verbs(&Cli::command(), String::new(), &mut all);
        assert!(all.len() > 25, "{all:?}");
        let missing: Vec<&String> = all
            .iter()
            .filter(|(p, help)| !help.contains(&format!("sluicectl {p}")))
            .map(|(p, _)| p)
            .collect();
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    }

    #[test]
    fn watch_redraws_over_the_last_page() {
        let first = redraw("a\nb\n", true);
        assert!(first.starts_with("\x1b[2J\x1b[H") && first.ends_with("\x1b[J"));
        let next = redraw("a\n", false);
        assert_eq!(next, "\x1b[Ha\x1b[K\n\x1b[J");
    }
}
