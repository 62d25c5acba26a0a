//! Every `sluicectl` command answers `--help` with a description, exit 0, and examples that
//! name only commands that exist; a daemon that cannot be reached is an error naming the
//! socket and the fix, with exit status 1; a usage error exits 2.

use std::process::Command;

fn sluicectl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(args)
        .output()
        .unwrap()
}

const COMMANDS: &[&[&str]] = &[
    &[],
    &["status"],
    &["service"],
    &["service", "list"],
    &["service", "show"],
    &["service", "add"],
    &["service", "remove"],
    &["backend"],
    &["backend", "list"],
    &["backend", "add"],
    &["backend", "remove"],
    &["backend", "set-weight"],
    &["backend", "drain"],
    &["backend", "enable"],
    &["backend", "disable"],
    &["health"],
    &["health", "show"],
    &["stats"],
    &["flows"],
    &["reload"],
    &["watch"],
];

#[test]
fn every_command_has_help() {
    for c in COMMANDS {
        let mut args = c.to_vec();
        args.push("--help");
        let o = sluicectl(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("Usage:"), "{args:?}: {out}");
        // The first line describes the command (clap prints the about text first).
        assert!(
            out.lines().next().is_some_and(|l| l.len() > 10),
            "{args:?}: {out}"
        );
    }
    // The examples in the top-level help are commands this binary knows.
    let o = sluicectl(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let examples: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("sluicectl "))
        .collect();
    assert!(examples.len() >= 4, "{out}");
    for e in examples {
        let words: Vec<&str> = e.split_whitespace().take(3).collect();
        let known = COMMANDS
            .iter()
            .any(|c| c.len() == 2 && words[1] == c[0] && words[2] == c[1]);
        assert!(known, "the help's example `{e}` names no command");
    }
}

#[test]
fn an_unreachable_daemon_and_bad_usage_say_what_to_do() {
    let o = sluicectl(&["--socket", "/nonexistent/sluice.sock", "status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/sluice.sock"), "{err}");
    assert!(err.contains("--socket"), "{err}");
    let o = sluicectl(&["backend", "set-weight", "web"]);
    assert_eq!(o.status.code(), Some(2));
    let o = sluicectl(&["watch", "--interval", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--interval"));
}
