//! The Debian package as an operator meets it: `scripts/build-deb.sh` builds it (the test
//! command runs that before the tests), and this test inspects it, installs it with dpkg,
//! checks the unit with `systemd-analyze verify` and `security`, reads the manual pages, then
//! runs the installed daemon the way the unit does — its ExecStartPre and ExecStart, as root
//! under the unit's capability bounding set, no-new-privileges, umask and limits, in its
//! runtime, state and working directories, with a stand-in for systemd's notify socket —
//! and reloads it with the unit's ExecReload (an edited file applied; a broken one refused
//! with the running configuration kept), stops it with its KillSignal, and purges the package.
//!
//! This machine's init is not systemd, so the unit's namespaces and seccomp filter are
//! checked only by `systemd-analyze`; everything else the unit sets is applied here.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "/etc/sluice/sluice.toml";
const UNIT: &str = "/lib/systemd/system/sluice.service";

fn deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let found = std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: run scripts/build-deb.sh first (scripts/test.sh does)",
                dir.display()
            )
        });
    found
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text += &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// The `[Service]` settings of a unit file, by key (repeated keys joined by a space).
fn service_section(unit: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let mut on = false;
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            on = line == "[Service]";
            continue;
        }
        if !on || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let e = out.entry(k.to_string()).or_default();
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str(v);
        }
    }
    out
}

/// Puts the installed configuration back and removes the package, whatever the test did.
struct Installed {
    original: Option<String>,
    daemon: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(o) = &self.original {
            let _ = std::fs::write(CONFIG, o);
        }
        let _ = Command::new("dpkg")
            .args(["--purge", "sluice"])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all("/run/sluice");
    }
}

struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl Notifications {
    fn new() -> Notifications {
        let path = std::env::temp_dir().join(format!("sluice-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notifications {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a message holding `line` (such as `READY=1`) and returns it.
    fn wait(&mut self, line: &str, timeout: Duration) -> String {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(m.clone());
                if m.lines().any(|l| l == line) {
                    return m;
                }
            }
            assert!(
                t.elapsed() < timeout,
                "no {line} from sluice within {timeout:?}; it sent {:?}",
                self.seen
            );
        }
    }
}

/// A configuration on the test's veth (no traffic: the point is the calls it makes).
const XDP_CONFIG: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"

[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"

[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"

[control]
socket = "/tmp/sluice-pkg-xdp.sock"

[dataplane]
driver = "xdp"
cores = [0]

[dataplane.xdp]
interface = "pkg0"
"#;

/// The system calls a `SystemCallFilter=` line allows, its groups expanded as
/// `systemd-analyze syscall-filter` lists them.
fn syscall_filter(filter: &str) -> std::collections::HashSet<String> {
    let (ok, text) = run("systemd-analyze", &["syscall-filter"]);
    assert!(ok, "{text}");
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.insert(line.trim().to_string(), Vec::new());
        } else if let Some(g) = &current {
            let item = line.trim();
            if line.starts_with("    ") && !item.starts_with('#') && !item.is_empty() {
                groups.get_mut(g).unwrap().push(item.to_string());
            }
        }
    }
    fn expand(
        x: &str,
        groups: &HashMap<String, Vec<String>>,
        out: &mut std::collections::HashSet<String>,
    ) {
        if x.starts_with('@') {
            for m in groups.get(x).into_iter().flatten() {
                expand(m, groups, out);
            }
        } else {
            out.insert(x.to_string());
        }
    }
    let mut out = std::collections::HashSet::new();
    for x in filter.split_whitespace() {
        expand(x, &groups, &mut out);
    }
    assert!(out.len() > 100, "the filter {filter:?} expanded to {out:?}");
    out
}

fn capability_bounding_set(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|s| u64::from_str_radix(s.trim(), 16).unwrap())
        .unwrap()
}

/// capability(7) numbers of the capabilities a unit may name.
fn capability_number(name: &str) -> u32 {
    const NAMES: [&str; 41] = [
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "kill",
        "setgid",
        "setuid",
        "setpcap",
        "linux_immutable",
        "net_bind_service",
        "net_broadcast",
        "net_admin",
        "net_raw",
        "ipc_lock",
        "ipc_owner",
        "sys_module",
        "sys_rawio",
        "sys_chroot",
        "sys_ptrace",
        "sys_pacct",
        "sys_admin",
        "sys_boot",
        "sys_nice",
        "sys_resource",
        "sys_time",
        "sys_tty_config",
        "mknod",
        "lease",
        "audit_write",
        "audit_control",
        "setfcap",
        "mac_override",
        "mac_admin",
        "syslog",
        "wake_alarm",
        "block_suspend",
        "audit_read",
        "perfmon",
        "bpf",
        "checkpoint_restore",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown capability {name}")) as u32
}

fn ctl(args: &[&str]) -> Value {
    let mut all = vec!["--socket", "/run/sluice/control.sock", "--json"];
    all.extend_from_slice(args);
    let (ok, text) = run("/usr/bin/sluicectl", &all);
    assert!(ok, "sluicectl {args:?}: {text}");
    let v: Value = serde_json::from_str(text.lines().next().unwrap_or("")).unwrap();
    v["result"].clone()
}

fn weight_of(addr: &str) -> Option<u64> {
    ctl(&["backend", "list", "web"])["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == addr)?["weight"]
        .as_u64()
}

#[test]
fn the_package_installs_a_unit_that_starts_reloads_and_stops_sluice() {
    let deb = deb();
    let deb = deb.to_str().unwrap();

    // What the package holds.
    let (ok, list) = run("dpkg-deb", &["-c", deb]);
    assert!(ok, "{list}");
    for f in [
        "./usr/bin/sluice",
        "./usr/bin/sluicectl",
        "./lib/systemd/system/sluice.service",
        "./etc/sluice/sluice.toml",
        "./usr/lib/sluice/sluice_xdp.o",
        "./usr/share/sluice/sample.pcap",
        "./usr/share/sluice/grafana/sluice-dashboard.json",
        "./usr/share/doc/sluice/examples/dpdk-vdev.toml",
        "./usr/share/man/man1/sluice.1.gz",
        "./usr/share/man/man1/sluice-run.1.gz",
        "./usr/share/man/man1/sluicectl.1.gz",
        "./usr/share/man/man1/sluicectl-backend-drain.1.gz",
        "./usr/share/man/man5/sluice.toml.5.gz",
        "./usr/share/bash-completion/completions/sluicectl",
        "./usr/share/zsh/vendor-completions/_sluice",
        "./usr/share/fish/vendor_completions.d/sluicectl.fish",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {f}"))),
            "the package lacks {f}:\n{list}"
        );
    }
    let (_, depends) = run("dpkg-deb", &["-f", deb, "Depends"]);
    for lib in ["librte-eal", "librte-ethdev", "libxdp1", "libbpf1", "libc6"] {
        assert!(depends.contains(lib), "Depends lacks {lib}: {depends}");
    }
    let (_, conffiles) = run("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), CONFIG);

    // Installed as an operator would.
    let (ok, text) = run("dpkg", &["-i", deb]);
    let mut guard = Installed {
        original: None,
        daemon: None,
    };
    assert!(ok, "dpkg -i: {text}");
    guard.original = Some(std::fs::read_to_string(CONFIG).expect("the installed configuration"));

    let (ok, text) = run("systemd-analyze", &["verify", UNIT]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    let (_, text) = run("systemd-analyze", &["security", "--offline=true", UNIT]);
    let score: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for sluice.service: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score} (0 is the most locked down, 10 none)");
    assert!(score <= 4.5, "the unit's exposure rose to {score}:\n{text}");

    let (ok, page) = run("sh", &["-c", "MANWIDTH=100 man -P cat sluice.toml"]);
    assert!(
        ok && page.contains("[dataplane.dpdk]") && page.contains("half_open_percent"),
        "man sluice.toml: {page}"
    );
    let (ok, page) = run(
        "sh",
        &["-c", "MANWIDTH=100 man -P cat sluicectl-backend-drain"],
    );
    assert!(ok && page.contains("sluicectl backend drain"), "{page}");
    let completion =
        std::fs::read_to_string("/usr/share/bash-completion/completions/sluicectl").unwrap();
    assert!(completion.contains("set-weight") && completion.contains("complete -F"));

    // The unit, as systemd would run it.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let svc = service_section(&unit);
    assert_eq!(svc["Type"], "notify");
    assert_eq!(svc["Restart"], "on-failure");
    assert_eq!(svc["RuntimeDirectory"], "sluice");
    let caps: Vec<String> = svc["CapabilityBoundingSet"]
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    for dir in ["/run/sluice", "/var/lib/sluice"] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut n = Notifications::new();
    // The unit's limits, or this test's own hard limits where it may not raise them (a
    // sandbox without CAP_SYS_RESOURCE); systemd, as init, can.
    let limit = |name: &str, key: &str| -> String {
        let want = svc[key].replace("infinity", "unlimited");
        let arg = format!("--{name}={want}:{want}");
        if run("prlimit", &[&arg, "true"]).0 {
            arg
        } else {
            let (_, hard) = run(
                "prlimit",
                &["--noheadings", "--output=HARD", &format!("--{name}")],
            );
            eprintln!(
                "{key}={want} cannot be set here; using this machine's hard limit {}",
                hard.trim()
            );
            format!("--{name}={0}:{0}", hard.trim())
        }
    };
    let (memlock, nofile) = (
        limit("memlock", "LimitMEMLOCK"),
        limit("nofile", "LimitNOFILE"),
    );
    let wrap = |exec: &str| -> Command {
        let mut c = Command::new("prlimit");
        c.args([
            &memlock,
            &nofile,
            "--",
            "setpriv",
            &format!(
                "--bounding-set=-all,{}",
                caps.iter()
                    .map(|c| format!("+{c}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
            "sh",
            "-c",
            &format!("umask {} && exec {exec}", svc["UMask"]),
        ])
        .current_dir(&svc["WorkingDirectory"])
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &n.path);
        c
    };
    assert_eq!(svc["NoNewPrivileges"], "yes");
    let pre = wrap(&svc["ExecStartPre"]).output().unwrap();
    assert!(
        pre.status.success(),
        "ExecStartPre: {}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let stderr_log = std::env::temp_dir().join(format!("sluice-unit-{}.log", std::process::id()));
    let daemon = wrap(&svc["ExecStart"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    guard.daemon = Some(daemon);
    let ready = n.wait("READY=1", Duration::from_secs(30));
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={pid}")),
        "READY names another process: {ready:?} (sluice is {pid})"
    );
    // The unit's set, less any this test itself does not hold.
    let ours = capability_bounding_set(std::process::id());
    let want = caps
        .iter()
        .map(|c| 1u64 << capability_number(c))
        .fold(0, |a, b| a | b)
        & ours;
    assert_eq!(
        capability_bounding_set(pid),
        want,
        "sluice's bounding set is not the unit's {caps:?}"
    );
    let st = ctl(&["status"]);
    assert_eq!(st["driver"], "pcap", "{st}");
    assert_eq!(weight_of("10.1.0.3:8080"), Some(2));

    // `systemctl reload`: ExecReload with $MAINPID.
    let reload = || {
        let cmd = svc["ExecReload"].replace("$MAINPID", &pid.to_string());
        let (ok, text) = run("sh", &["-c", &cmd]);
        assert!(ok, "ExecReload {cmd}: {text}");
    };
    let original = guard.original.clone().unwrap();
    let edited = original.replacen(
        "address = \"10.1.0.3:8080\"\nmac = \"02:00:00:00:01:03\"\nweight = 2",
        "address = \"10.1.0.3:8080\"\nmac = \"02:00:00:00:01:03\"\nweight = 5",
        1,
    );
    assert_ne!(edited, original, "the packaged configuration changed shape");
    std::fs::write(CONFIG, &edited).unwrap();
    reload();
    n.wait("RELOADING=1", Duration::from_secs(10));
    n.wait("READY=1", Duration::from_secs(10));
    assert_eq!(
        weight_of("10.1.0.3:8080"),
        Some(5),
        "the edit was not applied"
    );
    // A file that does not validate: refused, the running configuration kept.
    std::fs::write(CONFIG, edited.replace("weight = 5", "weight = 0")).unwrap();
    reload();
    n.wait("RELOADING=1", Duration::from_secs(10));
    n.wait("READY=1", Duration::from_secs(10));
    assert_eq!(weight_of("10.1.0.3:8080"), Some(5));
    let vs = ctl(&["status"])["config_vs_file"].to_string();
    assert!(vs.contains("weight 0 is out of range"), "{vs}");

    // `systemctl stop`: KillSignal, then STOPPING=1 and a clean exit.
    assert_eq!(svc["KillSignal"], "SIGTERM");
    let (ok, text) = run("kill", &["-TERM", &pid.to_string()]);
    assert!(ok, "{text}");
    n.wait("STOPPING=1", Duration::from_secs(10));
    let mut daemon = guard.daemon.take().unwrap();
    let t = Instant::now();
    let code = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "sluice did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&stderr_log).unwrap();
    let _ = std::fs::remove_file(&stderr_log);
    assert!(code.success(), "sluice exited with {code}:\n{log}");
    // --log-format journal: every line carries a syslog priority for journald.
    assert!(
        log.lines()
            .all(|l| l.starts_with('<') && l[1..].starts_with(|c: char| c.is_ascii_digit())),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4>") && l.contains("refused")),
        "the refused reload is not a warning in the log:\n{log}"
    );
    let out = std::fs::read("/var/lib/sluice/out.pcap").expect("the pcap driver's output");
    assert!(
        out.len() > 24
            && (out[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || out[..4] == [0x4d, 0x3c, 0xb2, 0xa1])
    );

    // The unit's system-call filter lets every call sluice makes through, on each driver:
    // the calls strace sees against the filter's groups as systemd-analyze expands them.
    std::fs::write(CONFIG, &original).unwrap();
    let allowed = syscall_filter(&svc["SystemCallFilter"]);
    let xdp_config =
        std::env::temp_dir().join(format!("sluice-pkg-xdp-{}.toml", std::process::id()));
    std::fs::write(&xdp_config, XDP_CONFIG).unwrap();
    let _ = run("ip", &["netns", "del", "sluice-pkg"]);
    for (ns, cmd) in [
        ("", "ip link"),
        ("sluice-pkg", "ip netns add sluice-pkg && ip -n sluice-pkg link add pkg0 type veth peer name pkg1 && ip -n sluice-pkg link set pkg0 up && ip -n sluice-pkg link set pkg1 up"),
    ] {
        let (ok, text) = run("sh", &["-c", cmd]);
        assert!(ok, "{ns}: {text}");
    }
    let repo = env!("CARGO_MANIFEST_DIR");
    let dpdk_out =
        std::env::temp_dir().join(format!("sluice-pkg-dpdk-{}.pcap", std::process::id()));
    let dpdk_config = std::fs::read_to_string(format!("{repo}/examples/dpdk-vdev.toml"))
        .unwrap()
        .replace("rx_pcap=examples/", &format!("rx_pcap={repo}/examples/"))
        .replace(
            "tx_pcap=target/dpdk-out.pcap",
            &format!("tx_pcap={}", dpdk_out.display()),
        );
    let dpdk_path =
        std::env::temp_dir().join(format!("sluice-pkg-dpdk-{}.toml", std::process::id()));
    std::fs::write(&dpdk_path, dpdk_config).unwrap();
    for (driver, prefix, config, stop) in [
        ("pcap", "", CONFIG.to_string(), "--duration=1"),
        ("dpdk", "", dpdk_path.display().to_string(), "--idle-exit=1"),
        (
            "xdp",
            "ip netns exec sluice-pkg",
            xdp_config.display().to_string(),
            "--duration=1",
        ),
    ] {
        let trace =
            std::env::temp_dir().join(format!("sluice-pkg-{driver}-{}.strace", std::process::id()));
        let cmd = format!(
            "cd /var/lib/sluice && {prefix} strace -f -c -o {} /usr/bin/sluice run --config {config} {stop} -q",
            trace.display()
        );
        let (ok, text) = run("sh", &["-c", &cmd]);
        assert!(ok, "{driver}: {cmd}: {text}");
        let summary = std::fs::read_to_string(&trace).unwrap();
        let _ = std::fs::remove_file(&trace);
        let used: Vec<&str> = summary
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter(|w| {
                w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .filter(|w| !w.is_empty() && *w != "total" && *w != "syscall")
            .collect();
        assert!(used.len() > 20, "{driver}: strace saw only {used:?}");
        // iopl: DPDK's EAL probes port I/O at start, for drivers this machine does not use;
        // it fails outside the filter as well, and EPERM is what the filter answers.
        let denied: Vec<&&str> = used
            .iter()
            .filter(|c| !allowed.contains(**c) && **c != "iopl")
            .collect();
        assert!(
            denied.is_empty(),
            "{driver}: SystemCallFilter would deny {denied:?}"
        );
        eprintln!(
            "{driver}: {} distinct system calls, all allowed by the unit's filter",
            used.len()
        );
    }
    let _ = run("ip", &["netns", "del", "sluice-pkg"]);
    let _ = std::fs::remove_file(&xdp_config);
    let _ = std::fs::remove_file(&dpdk_path);
    let _ = std::fs::remove_file(&dpdk_out);

    // Purged: binaries and state gone.
    drop(guard);
    assert!(!Path::new("/usr/bin/sluice").exists());
    assert!(!Path::new("/var/lib/sluice").exists());
}
