//! Numbers as `sluicectl` shows them to people: rates and sizes scaled to a unit
//! (`5.54 Mpps`, `1.09 Mbit/s`, `3.2 GiB`), counts with thousands separated, durations in the
//! largest units that fit. `--json` keeps the exact values.

/// Three significant figures with an SI prefix: `950`, `12.3 k`, `5.54 M`.
fn si(x: f64, unit: &str) -> String {
    if !x.is_finite() || x <= 0.0 {
        return format!("0 {unit}");
    }
    let prefixes = ["", "k", "M", "G", "T", "P"];
    let mut v = x;
    let mut i = 0;
    while v >= 999.5 && i + 1 < prefixes.len() {
        v /= 1000.0;
        i += 1;
    }
    let digits = if i == 0 {
        0
    } else if v < 9.995 {
        2
    } else if v < 99.95 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}{unit}", prefixes[i])
}

/// Packets per second: `5.54 Mpps`.
pub fn pps(x: f64) -> String {
    si(x, "pps")
}

/// Bits per second: `1.09 Mbit/s`.
pub fn bits(x: f64) -> String {
    si(x, "bit/s")
}

/// Bytes in binary units: `512 B`, `15.0 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// A count with its thousands separated: `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A change in a count since the last look: `+1,234`, `0`.
pub fn delta(now: u64, before: u64) -> String {
    if now >= before {
        if now == before {
            "0".into()
        } else {
            format!("+{}", count(now - before))
        }
    } else {
        // A counter that went back (the daemon restarted).
        format!("-{}", count(before - now))
    }
}

/// Seconds in the two largest units that matter: `0.42 s`, `45.2 s`, `3 min 12 s`,
/// `2 h 05 min`, `3 d 04 h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 10.0 {
        return format!("{secs:.2} s");
    }
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let s = secs as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d} d {h:02} h")
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else {
        format!("{m} min {sec:02} s")
    }
}

/// Milliseconds, as a latency: `250 µs`, `1.25 ms`, `1.20 s`.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".into()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `yes` / `no`.
pub fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_three_significant_figures_and_a_prefix() {
        assert_eq!(pps(5_543_210.0), "5.54 Mpps");
        assert_eq!(pps(950.0), "950 pps");
        assert_eq!(pps(999.6), "1.00 kpps");
        assert_eq!(pps(12_345.0), "12.3 kpps");
        assert_eq!(pps(123_456.0), "123 kpps");
        assert_eq!(pps(0.0), "0 pps");
        assert_eq!(pps(f64::NAN), "0 pps");
        assert_eq!(bits(1_090_000.0), "1.09 Mbit/s");
        assert_eq!(bits(9_999_000_000.0), "10.0 Gbit/s");
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3_435_973_837), "3.2 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn counts_and_deltas_read_at_a_glance() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(delta(1_500, 500), "+1,000");
        assert_eq!(delta(7, 7), "0");
        assert_eq!(delta(3, 10), "-7");
    }

    #[test]
    fn durations_use_the_largest_units() {
        assert_eq!(duration(0.421), "0.42 s");
        assert_eq!(duration(45.25), "45.2 s");
        assert_eq!(duration(192.0), "3 min 12 s");
        assert_eq!(duration(7_500.0), "2 h 05 min");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 5.0), "3 d 04 h");
        assert_eq!(millis(0.25), "250 µs");
        assert_eq!(millis(1.254), "1.25 ms");
        assert_eq!(millis(1_200.0), "1.20 s");
    }
}
