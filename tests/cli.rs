//! The command-line contract: `sluice replay` and `sluice check` fail with a non-zero exit
//! and a message that names the problem and the fix, for bad configs, unreadable or
//! unsupported captures, and bad arguments; `--help` teaches the flags.

mod common;

use common::*;

fn run_replay(dir: &std::path::Path, cfg_text: &str, input: &[u8]) -> std::process::Output {
    let (cfg, inp) = (dir.join("c.toml"), dir.join("in.pcap"));
    std::fs::write(&cfg, cfg_text).unwrap();
    std::fs::write(&inp, input).unwrap();
    sluice(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        inp.to_str().unwrap(),
        "--output",
        dir.join("out.pcap").to_str().unwrap(),
    ])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn good_capture() -> Vec<u8> {
    let f = builder(false, 1, None).frame(&tcp(1, VIP_PORT, 2, b""));
    pcap::to_bytes([(T0, f.as_slice())])
}

#[test]
fn bad_config_names_file_line_key_and_fix() {
    let dir = scratch("cli-bad-config");
    let text = config("nat", false, "tcp", &[1, 1], "").replace(
        "forwarding = \"nat\"",
        "forwarding = \"nat\"\ntable_size = 65536",
    );
    let o = run_replay(&dir, &text, &good_capture());
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("c.toml:")
            && e.contains("table_size")
            && e.contains("65537")
            && e.contains("fix:"),
        "{e}"
    );
    assert!(
        !dir.join("out.pcap").exists(),
        "nothing written on a bad config"
    );
    let o = sluice(&["check", "--config", dir.join("c.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("table_size"));
    let o = sluice(&[
        "check",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("cannot read the configuration file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_accepts_the_example_config() {
    let o = sluice(&[
        "check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sluice.toml"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("3 service(s)") && out.contains("web6"),
        "{out}"
    );
}

#[test]
fn unreadable_and_unsupported_captures_are_refused_clearly() {
    let dir = scratch("cli-bad-capture");
    let cfg = config("nat", false, "tcp", &[1], "");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"this is not a capture file at all".to_vec(),
            "not a pcap or pcapng file",
        ),
        (
            [0x0a, 0x0d, 0x0d, 0x0a]
                .iter()
                .chain([0u8; 28].iter())
                .copied()
                .collect(),
            "pcapng",
        ),
        (
            {
                let mut c = good_capture();
                c[20] = 113; // Linux cooked capture
                c
            },
            "unsupported link type 113",
        ),
        (
            {
                let c = good_capture();
                c[..c.len() - 3].to_vec()
            },
            "cut short inside record 0",
        ),
    ];
    for (bytes, want) in cases {
        let o = run_replay(&dir, &cfg, &bytes);
        assert_eq!(o.status.code(), Some(1), "{want}");
        assert!(stderr(&o).contains(want), "want {want:?} in {}", stderr(&o));
    }
    let o = sluice(&[
        "replay",
        "--config",
        dir.join("c.toml").to_str().unwrap(),
        "--input",
        "/nonexistent/in.pcap",
        "--output",
        "/tmp/x.pcap",
    ]);
    assert!(
        stderr(&o).contains("cannot open the input capture /nonexistent/in.pcap"),
        "{}",
        stderr(&o)
    );
    let o = sluice(&[
        "replay",
        "--config",
        dir.join("c.toml").to_str().unwrap(),
        "--input",
        dir.join("in.pcap").to_str().unwrap(),
        "--output",
        "/nonexistent/dir/out.pcap",
    ]);
    assert!(
        stderr(&o).contains("cannot create the output capture"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_arguments_exit_2_and_help_teaches() {
    let o = sluice(&[
        "replay",
        "--config",
        "c.toml",
        "--input",
        "i.pcap",
        "--output",
        "o.pcap",
        "--workers",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--workers"), "{}", stderr(&o));
    let o = sluice(&["replay", "--input", "i.pcap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--config"));
    let o = sluice(&["replay", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--config",
        "--input",
        "--output",
        "--stats",
        "--workers",
        "--host-output",
        "Example",
    ] {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
}

#[test]
fn summary_reports_per_backend_traffic() {
    let dir = scratch("cli-summary");
    let root = env!("CARGO_MANIFEST_DIR");
    let o = sluice(&[
        "replay",
        "--config",
        &format!("{root}/examples/sluice.toml"),
        "--input",
        &format!("{root}/examples/sample.pcap"),
        "--output",
        dir.join("o.pcap").to_str().unwrap(),
        "--stats",
        dir.join("s.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "10.1.0.3:8080",
        "[2001:db8:1::2]:80",
        "10.2.0.1:53",
        "NEW FLOWS",
        "drops by reason",
    ] {
        assert!(out.contains(want), "summary lacks {want}: {out}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
    let total_in = s["packets_in"].as_u64().unwrap();
    let accounted = s["packets_out"].as_u64().unwrap()
        + s["to_host"].as_u64().unwrap()
        + s["dropped"].as_u64().unwrap();
    assert_eq!(
        total_in, accounted,
        "every packet is forwarded, given to the host, or dropped with a reason"
    );
    assert_eq!(total_in, s["frames_read"].as_u64().unwrap());
}

/// Every `sluice` command answers `--help` (exit 0, a description and its flags), and every
/// file its examples name exists in the repository, so a reader can paste them.
#[test]
fn every_help_runs_and_its_examples_name_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for cmd in [&[][..], &["replay"], &["run"], &["check"]] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = sluice(&args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(out.contains("Usage:"), "{args:?}: {out}");
        for word in out.split_whitespace() {
            if word.starts_with("examples/") {
                assert!(
                    root.join(word).exists(),
                    "`sluice {}` names {word}, which does not exist",
                    args.join(" ")
                );
            }
        }
    }
}

/// `--log-format json` writes each event as one JSON object on its own line (here the error
/// a bad path gives), `text` as `sluice: LEVEL: message`.
#[test]
fn log_lines_come_in_the_format_asked_for() {
    let o = sluice(&[
        "check",
        "--config",
        "/nonexistent/x.toml",
        "--log-format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line per event: {err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    assert_eq!(v["level"], "error", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cannot read the configuration file"),
        "{v}"
    );
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    let o = sluice(&[
        "check",
        "--config",
        "/nonexistent/x.toml",
        "--log-format",
        "text",
    ]);
    assert!(
        stderr(&o).starts_with("sluice: error: /nonexistent/x.toml: cannot read"),
        "{}",
        stderr(&o)
    );
    let o = sluice(&["check", "--config", "/x.toml", "--log-format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("possible values: auto, text, journal, json"),
        "{}",
        stderr(&o)
    );
}
