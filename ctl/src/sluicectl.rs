//! `sluicectl`: the operator's command line for a running sluice, over its control socket.
//! Human tables by default, `--json` for scripts. Exit codes: 0 done, 1 refused or failed
//! (including when the daemon cannot be reached), 2 usage.

use clap::{Parser, Subcommand};
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
    /// Health checks.
    #[command(subcommand)]
    Health(HealthCmd),
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
    /// Add a backend to a service.
    Add {
        service: String,
        address: String,
        /// The backend's MAC (or its router's); leave it out to have sluice resolve the
        /// on-link address by ARP / neighbour discovery.
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Drain, then remove once its flows end (or the drain timeout passes).
    Remove {
        service: String,
        address: String,
        /// Remove now; its tracked flows move to other backends on their next packet.
        #[arg(long)]
        force: bool,
    },
    /// Change a backend's weight (1 to 65535).
    SetWeight {
        service: String,
        address: String,
        weight: u32,
    },
    /// Take no new flows; tracked flows continue until they end or the drain timeout.
    Drain { service: String, address: String },
    /// Return a drained or disabled backend to service.
    Enable { service: String, address: String },
    /// Take no new flows and move tracked flows now.
    Disable { service: String, address: String },
}

#[derive(Subcommand)]
enum HealthCmd {
    /// Each backend's health, consecutive results and last check.
    Show { service: Option<String> },
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
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut client = Client {
        socket: cli.socket.clone(),
        conn: None,
    };
    let op = match &cli.command {
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
        Command::Health(HealthCmd::Show { service }) => Op::HealthShow {
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
            } => Op::BackendAdd {
                service: service.clone(),
                backend: BackendSpec {
                    address: address.clone(),
                    mac: mac.clone(),
                    weight: *weight,
                },
            },
            BackendCmd::Remove {
                service,
                address,
                force,
            } => Op::BackendRemove {
                service: service.clone(),
                address: address.clone(),
                force: *force,
            },
            BackendCmd::SetWeight {
                service,
                address,
                weight,
            } => Op::BackendSetWeight {
                service: service.clone(),
                address: address.clone(),
                weight: *weight,
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
                    print!("{}", stats_text(r.result.as_ref().unwrap_or(&Value::Null)));
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
    let text = match cmd {
        Command::Status => status_text(&v),
        Command::Service(ServiceCmd::List) => table(
            &v["services"],
            &[
                ("NAME", "name"),
                ("PROTO", "protocol"),
                ("VIP", "vip"),
                ("MODE", "forwarding"),
                ("BACKENDS", "backends"),
                ("TAKING_NEW", "taking_new_flows"),
                ("ALL_DOWN", "all_down"),
                ("PACKETS", "packets"),
            ],
        ),
        Command::Service(ServiceCmd::Show { .. }) => {
            let mut t = String::new();
            for k in [
                "name",
                "protocol",
                "vip",
                "forwarding",
                "table_size",
                "all_down",
                "all_down_active",
                "all_down_flows",
                "health_check",
                "packets",
                "bytes",
            ] {
                t += &format!("{k:<16} {}\n", cell(&v[k]));
            }
            t + "\n" + &backend_table(&v["backend_list"])
        }
        Command::Backend(BackendCmd::List { .. }) => backend_table(&v["backends"]),
        Command::Health(_) => table(
            &v["backends"],
            &[
                ("SERVICE", "service"),
                ("BACKEND", "address"),
                ("HEALTH", "health"),
                ("OK_RUN", "successes"),
                ("FAIL_RUN", "failures"),
                ("LAST", "last.message"),
                ("LATENCY_MS", "last.latency_ms"),
                ("CHECK", "check"),
            ],
        ),
        Command::Stats => stats_text(&v),
        Command::Flows { .. } => {
            format!(
                "{}\n{} flow(s) tracked in all; {} shown\n",
                table(
                    &v["flows"],
                    &[
                        ("WORKER", "worker"),
                        ("CLIENT", "client"),
                        ("VIP", "vip"),
                        ("PROTO", "protocol"),
                        ("SERVICE", "service"),
                        ("BACKEND", "backend"),
                        ("STATE", "state"),
                        ("AGE_S", "age_s"),
                        ("IDLE_S", "idle_s")
                    ]
                ),
                cell(&v["tracked"]),
                v["flows"].as_array().map_or(0, |a| a.len())
            )
        }
        _ => {
            // Changes: what changed, and how long the rebuild took.
            let mut t = String::new();
            for c in v["changed"].as_array().into_iter().flatten() {
                t += &format!("{}\n", c.as_str().unwrap_or(""));
            }
            t += &format!(
                "applied as configuration generation {} (built in {} ms)\n",
                cell(&v["generation"]),
                cell(&v["build_ms"])
            );
            t
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn table(rows: &Value, cols: &[(&str, &str)]) -> String {
    let rows = rows.as_array().cloned().unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, k)| cell(get(r, k))).collect())
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

fn backend_table(v: &Value) -> String {
    table(
        v,
        &[
            ("SERVICE", "service"),
            ("BACKEND", "address"),
            ("WEIGHT", "weight"),
            ("ADMIN", "admin"),
            ("HEALTH", "health"),
            ("NEW_FLOWS?", "takes_new_flows"),
            ("ACTIVE_FLOWS", "active_flows"),
            ("PACKETS", "packets"),
            ("LAST_CHECK", "last_check.message"),
            ("CHECK_MS", "last_check.latency_ms"),
            ("DRAIN_LEFT_S", "drain_left_s"),
        ],
    )
}

fn status_text(v: &Value) -> String {
    let mut t = String::new();
    for (label, k) in [
        ("version", "version"),
        ("protocol", "protocol"),
        ("uptime (s)", "uptime_s"),
        ("driver", "driver"),
        ("workers", "workers"),
        ("config file", "config_file"),
        ("running vs file", "config_vs_file"),
        ("generation", "generation"),
        ("services", "services"),
        ("backends", "backends"),
        ("last build (ms)", "last_build_ms"),
    ] {
        t += &format!("{label:<16} {}\n", cell(&v[k]));
    }
    let events = v["recent_events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        t += "recent events:\n";
        for e in events {
            t += &format!("  {}\n", cell(&e["event"]));
        }
    }
    t
}

fn stats_text(v: &Value) -> String {
    let mut t = format!(
        "total: {} packets in, {} out; {} packets/s, {} bits/s (over {} s)\n\n",
        cell(&v["packets_in"]),
        cell(&v["packets_out"]),
        cell(&v["packets_per_s"]),
        cell(&v["bits_per_s"]),
        cell(&v["interval_s"])
    );
    t += &table(
        &v["workers"],
        &[
            ("WORKER", "worker"),
            ("PACKETS_IN", "packets_in"),
            ("PACKETS_OUT", "packets_out"),
            ("DROPS", "drops"),
            ("PACKETS/S", "packets_per_s"),
            ("BITS/S", "bits_per_s"),
            ("SWAPS", "snapshot_swaps"),
            ("SWAP_MAX_US", "swap_max_us"),
        ],
    );
    t += "\n";
    t += &table(
        &v["services"],
        &[
            ("SERVICE", "service"),
            ("PACKETS", "packets"),
            ("PACKETS/S", "packets_per_s"),
            ("BITS/S", "bits_per_s"),
            ("ALL_DOWN_FLOWS", "all_down_flows"),
        ],
    );
    let c = &v["conntrack"];
    t += &format!(
        "\nconntrack: {} of {} flows ({:.1}%), hits {}, misses {}, evictions {}, expiries {}\n",
        cell(&c["active"]),
        cell(&c["capacity"]),
        c["occupancy"].as_f64().unwrap_or(0.0) * 100.0,
        cell(&c["hits"]),
        cell(&c["misses"]),
        cell(&c["evictions"]),
        cell(&c["expiries"])
    );
    if v["neighbours"].as_array().is_some_and(|a| !a.is_empty()) {
        t += "\nnext hops resolved by sluice:\n";
        t += &table(
            &v["neighbours"],
            &[
                ("ADDRESS", "address"),
                ("MAC", "mac"),
                ("STATE", "state"),
                ("UNANSWERED", "unanswered"),
                ("REQUESTS", "requests"),
                ("EXPIRIES", "expiries"),
                ("DROPPED", "unresolved_drops"),
            ],
        );
    }
    let drops = v["drops"].as_object().cloned().unwrap_or_default();
    if drops.is_empty() {
        t += "drops: none\n";
    } else {
        t += "drops:\n";
        for (k, n) in drops {
            t += &format!("  {k:<24} {}\n", cell(&n));
        }
    }
    t
}
