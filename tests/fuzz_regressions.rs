//! The fuzz targets' inputs as ordinary tests: every committed seed (fuzz/corpus/TARGET) and
//! every crash the fuzzer found (fuzz/regressions/TARGET) goes through the same target body
//! the fuzzer runs (fuzz/src/lib.rs), so a fixed crash stays fixed. `scripts/fuzz.sh` does
//! the fuzzing itself, for a bounded time, in the test command.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            let name = p.display().to_string();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{target}: {name} fails again");
            n += 1;
        }
    }
    n
}

#[test]
fn every_frame_seed_and_regression_passes() {
    assert!(replay("frame", targets::frame) >= 50);
}

#[test]
fn every_burst_seed_and_regression_passes() {
    assert!(replay("burst", targets::burst) >= 20);
}

#[test]
fn every_control_seed_and_regression_passes() {
    assert!(replay("control", targets::control) >= 5);
}

#[test]
fn every_cookie_seed_and_regression_passes() {
    assert!(replay("cookie", targets::cookie) >= 3);
}

#[test]
fn every_config_seed_and_regression_passes() {
    assert!(replay("config", targets::config) >= 3);
}
