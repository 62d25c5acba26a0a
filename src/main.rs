//! The sluice daemon and tools. `sluice run` is the daemon; `sluice replay` runs a capture
//! through the data path; `sluice check` validates a configuration.

mod l7;
mod logging;
mod notify;
mod replay;
mod report;
mod run;
#[cfg(feature = "dpdk")]
mod run_dpdk;
#[cfg(feature = "xdp")]
mod run_xdp;
mod workers;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Userspace L4 packet balancer: Maglev steering, NAT and DSR forwarding", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines look on stderr: `text` (`sluice: warning: …`), `journal` (a syslog
    /// priority prefix journald reads), `json` (one object per line), or `auto`: `journal`
    /// when stderr is the journal's stream, `text` otherwise.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Auto)]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a capture through the data path and write what it would transmit.
    ///
    /// Every input frame goes through the same worker loop a live port uses, at its capture
    /// timestamp (so flow expiry is reproducible). Each transmitted frame is written in input
    /// order with the timestamp of the frame that caused it. Frames that are not the
    /// balancer's (ARP, traffic to other hosts) are dropped as `not_ours`, or written to
    /// --host-output when given.
    ///
    /// Example:
    ///   sluice replay --config examples/sluice.toml --input examples/sample.pcap --output out.pcap --stats stats.json
    #[command(verbatim_doc_comment)]
    Replay {
        /// Configuration file (TOML; see README.md for the keys).
        #[arg(long, value_name = "FILE.toml")]
        config: PathBuf,
        /// Capture to replay: pcap (micro- or nanosecond) or pcapng, Ethernet link type.
        #[arg(long, value_name = "IN.pcap")]
        input: PathBuf,
        /// The format --output and --host-output are written in.
        #[arg(long, value_enum, default_value_t = OutputFormat::Pcap)]
        output_format: OutputFormat,
        /// Where to write the frames sluice transmits.
        #[arg(long, value_name = "OUT.pcap")]
        output: PathBuf,
        /// Write counters as JSON: packets in/out, drops by reason, per-backend traffic, conntrack.
        #[arg(long, value_name = "STATS.json")]
        stats: Option<PathBuf>,
        /// Worker count. Frames are spread over workers by their RSS hash, as a NIC would;
        /// backend choices are the same for any count.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
        /// Write frames that are not the balancer's (the kernel exception path) here.
        #[arg(long, value_name = "FILE.pcap")]
        host_output: Option<PathBuf>,
        /// Print nothing on success.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the balancer on the ports in [dataplane] until SIGINT or SIGTERM.
    ///
    /// One worker thread per core in `dataplane.cores`, pinned, each polling its own RX/TX
    /// queue pair with its own connection tracking. On exit it prints final counters (and
    /// writes them with --stats).
    ///
    /// Example (DPDK virtual devices, no NIC needed):
    ///   sluice run --config examples/dpdk-vdev.toml --idle-exit 1 --stats stats.json
    #[command(verbatim_doc_comment)]
    Run {
        /// Configuration file with a [dataplane] section.
        #[arg(long, value_name = "FILE.toml")]
        config: PathBuf,
        /// Write final counters as JSON (the replay stats, plus port and buffer-pool figures).
        #[arg(long, value_name = "STATS.json")]
        stats: Option<PathBuf>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Stop once no packet has arrived for this many seconds (for finite inputs).
        #[arg(long, value_name = "SECONDS")]
        idle_exit: Option<f64>,
        /// Print a progress line every this many seconds.
        #[arg(long, value_name = "SECONDS")]
        progress: Option<f64>,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate a configuration file and print the services it defines.
    ///
    /// The same validation `sluice run`, SIGHUP and `sluicectl reload` apply; errors name the
    /// file, line and key, and say how to fix it. Exit status 0 when valid.
    ///
    /// Example:
    ///   sluice check --config /etc/sluice/sluice.toml
    #[command(verbatim_doc_comment)]
    Check {
        /// Configuration file (TOML; `man sluice.toml` has every key).
        #[arg(long, value_name = "FILE.toml")]
        config: PathBuf,
    },
    /// Print the completion script for a shell (the Debian package installs them).
    ///
    /// Example:
    ///   sluice completions bash > ~/.local/share/bash-completion/completions/sluice
    #[command(verbatim_doc_comment)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (sluice.1 and one per verb) into a directory.
    #[command(hide = true)]
    Manual {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// Classic libpcap: what tcpdump writes.
    Pcap,
    /// pcapng: what Wireshark writes.
    Pcapng,
}

/// Writes the stats file (if asked) and prints the summary (unless quiet).
fn finish(
    report: &report::Report,
    stats: Option<&std::path::Path>,
    quiet: bool,
) -> Result<(), String> {
    if let Some(path) = stats {
        let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write the stats file {}: {e}", path.display()))?;
    }
    if !quiet {
        print!("{}", report.summary());
    }
    Ok(())
}

fn main() -> ExitCode {
    notify::init();
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Replay { quiet, .. } | Command::Run { quiet, .. } => *quiet,
        _ => false,
    };
    logging::init(cli.log_format, quiet);
    let result = match cli.command {
        Command::Replay {
            config,
            input,
            output,
            stats,
            workers,
            host_output,
            quiet,
            output_format,
        } => {
            let opts = replay::ReplayOptions {
                config,
                input,
                output,
                output_format: match output_format {
                    OutputFormat::Pcap => pcap::CaptureFormat::Pcap,
                    OutputFormat::Pcapng => pcap::CaptureFormat::Pcapng,
                },
                host_output,
                workers: workers as usize,
            };
            replay::replay(&opts).and_then(|report| finish(&report, stats.as_deref(), quiet))
        }
        Command::Run {
            config,
            stats,
            duration,
            idle_exit,
            progress,
            quiet,
        } => {
            let secs =
                |v: Option<f64>, flag: &str| -> Result<Option<std::time::Duration>, String> {
                    match v {
                        Some(s) if !(s.is_finite() && s > 0.0) => Err(format!(
                            "{flag} takes a positive number of seconds (got {s})"
                        )),
                        Some(s) => Ok(Some(std::time::Duration::from_secs_f64(s))),
                        None => Ok(None),
                    }
                };
            (|| {
                let opts = workers::RunOptions {
                    config,
                    duration: secs(duration, "--duration")?,
                    idle_exit: secs(idle_exit, "--idle-exit")?,
                    progress: secs(progress, "--progress")?,
                    quiet,
                };
                let report = run::run(&opts)?;
                finish(&report, stats.as_deref(), quiet)
            })()
        }
        Command::Completions { shell } => {
            ctl::manual::print_completions(shell, <Cli as clap::CommandFactory>::command());
            Ok(())
        }
        Command::Manual { out } => {
            ctl::manual::write_man_pages_and_say(<Cli as clap::CommandFactory>::command(), &out)
        }
        Command::Check { config } => config::Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                controlplane::snapshot::build(&cfg).map_err(|e| e.to_string())?;
                println!(
                    "{}: valid, {} service(s)",
                    config.display(),
                    cfg.services.len()
                );
                for s in &cfg.services {
                    println!(
                        "  {:<12} {} {:<24} {:<5} {} backend(s), table {}",
                        s.name,
                        s.protocol.name(),
                        s.vip,
                        s.forwarding.name(),
                        s.backends.len(),
                        s.table_size
                    );
                }
                Ok(())
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_verb_has_an_example_in_its_help() {
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let help = sub
                .get_long_about()
                .map(|s| s.to_string())
                .unwrap_or_default();
            assert!(
                help.contains(&format!("sluice {}", sub.get_name())),
                "`sluice {} --help` has no example:\n{help}",
                sub.get_name()
            );
        }
    }
}
