//! The daemon's log: one line per event on stderr, in the format `--log-format` names.
//!
//! - `text`: `sluice: warning: backend 10.1.0.2:8080 of `web` up -> down (…)` — for a
//!   terminal; info lines carry no level word, so a tool's output reads as it did.
//! - `journal`: the message behind a syslog priority (`<4>backend …`), which journald turns
//!   into the entry's priority (`journalctl -p warning` finds it); its own timestamp and unit
//!   name make a prefix redundant.
//! - `json`: one object per line, `{"time":"2026-12-01T23:01:36.120Z","level":"warning",
//!   "target":"controlplane::plane","message":"…"}`, for log shippers.
//!
//! `auto` (the default) is `journal` when stderr is the journal's stream (systemd sets
//! `JOURNAL_STREAM` to its device and inode) and `text` otherwise.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Journal,
    Json,
}

struct StderrLog {
    format: LogFormat,
}

/// Installs the logger; `quiet` keeps info lines out (warnings and errors still show).
pub fn init(format: LogFormat, quiet: bool) {
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    // Only fails if a logger is already set, which keeps that one.
    if log::set_boxed_logger(Box::new(StderrLog { format })).is_ok() {
        log::set_max_level(if quiet {
            LevelFilter::Warn
        } else {
            LevelFilter::Info
        });
    }
}

/// Whether fd 2 is the stream systemd connected to the journal (`JOURNAL_STREAM` is
/// `device:inode` of it; a child whose stderr was redirected elsewhere inherits the variable
/// but not the stream, hence the comparison).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One log line (with its newline) for `record`'s level, target and message.
pub fn line(format: LogFormat, level: Level, target: &str, message: &str, now_ms: u64) -> String {
    match format {
        LogFormat::Journal => {
            // One event, one entry: a message with newlines would otherwise split.
            format!("<{}>{}\n", priority(level), message.replace('\n', " | "))
        }
        LogFormat::Json => {
            let obj = serde_json::json!({
                "time": rfc3339_ms(now_ms),
                "level": level_word(level),
                "target": target,
                "message": message,
            });
            format!("{obj}\n")
        }
        LogFormat::Text | LogFormat::Auto => match level {
            Level::Info => format!("sluice: {message}\n"),
            l => format!("sluice: {}: {message}\n", level_word(l)),
        },
    }
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let text = line(
            self.format,
            r.level(),
            r.target(),
            &r.args().to_string(),
            now_ms,
        );
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn flush(&self) {}
}

/// `2026-12-01T23:01:36.120Z` for milliseconds since the Unix epoch (UTC, proleptic
/// Gregorian; the days-to-date step is Howard Hinnant's `civil_from_days`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        // 2024 is a leap year: 29 February exists, and 1 March follows it.
        assert_eq!(rfc3339_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_796_166_096_120), "2026-12-01T23:01:36.120Z");
    }

    #[test]
    fn each_format_writes_one_line_with_its_level() {
        let t = line(LogFormat::Text, Level::Warn, "x", "backend down", 0);
        assert_eq!(t, "sluice: warning: backend down\n");
        assert_eq!(
            line(LogFormat::Text, Level::Info, "x", "started", 0),
            "sluice: started\n"
        );
        assert_eq!(
            line(LogFormat::Journal, Level::Error, "x", "a\nb", 0),
            "<3>a | b\n"
        );
        let j = line(LogFormat::Json, Level::Warn, "cp", "say \"hi\"\n", 1_000);
        assert_eq!(j.matches('\n').count(), 1, "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["target"], "cp");
        assert_eq!(v["message"], "say \"hi\"\n");
        assert_eq!(v["time"], "1970-01-01T00:00:01.000Z");
    }
}
