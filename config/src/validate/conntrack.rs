//! `[conntrack]`: read from the file ([`parse_conntrack`]), then checked on the model
//! ([`check_conntrack`]).
use crate::error::{invalid, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use toml::Spanned;

/// Reads `[conntrack]`, recording where its keys are.
pub(crate) fn parse_conntrack(c: &RawConntrack, spans: &mut Spans) -> Conntrack {
    let d = Conntrack::default();
    let mut take = |v: &Option<Spanned<u64>>, key: &str, default: u64| match v {
        Some(s) => {
            spans.put(format!("conntrack.{key}"), s.span());
            *s.get_ref()
        }
        None => default,
    };
    Conntrack {
        capacity: take(&c.capacity, "capacity", d.capacity as u64) as usize,
        tcp_syn_timeout: take(&c.tcp_syn_timeout, "tcp_syn_timeout", d.tcp_syn_timeout),
        tcp_established_timeout: take(
            &c.tcp_established_timeout,
            "tcp_established_timeout",
            d.tcp_established_timeout,
        ),
        tcp_closing_timeout: take(
            &c.tcp_closing_timeout,
            "tcp_closing_timeout",
            d.tcp_closing_timeout,
        ),
        udp_timeout: take(&c.udp_timeout, "udp_timeout", d.udp_timeout),
        half_open_percent: take(
            &c.half_open_percent,
            "half_open_percent",
            d.half_open_percent as u64,
        )
        .min(u32::MAX as u64) as u32,
        rate_limit_sources: take(
            &c.rate_limit_sources,
            "rate_limit_sources",
            d.rate_limit_sources as u64,
        ) as usize,
    }
}

/// The rules `[conntrack]` must follow.
pub(crate) fn check_conntrack(c: &Conntrack) -> Result<(), Invalid> {
    if c.capacity == 0 || c.capacity > 100_000_000 {
        return invalid(
            "conntrack.capacity",
            format!("{} flows per worker is out of range", c.capacity),
            "give between 1 and 100000000 flows per worker (each costs about 190 bytes)",
        );
    }
    if c.rate_limit_sources < 64 || c.rate_limit_sources > 16_777_216 {
        return invalid(
            "conntrack.rate_limit_sources",
            format!(
                "{} sources per worker is out of range",
                c.rate_limit_sources
            ),
            "give between 64 and 16777216 (each costs 48 bytes per worker; 65536 by default)",
        );
    }
    if c.half_open_percent == 0 || c.half_open_percent > 100 {
        return invalid(
            "conntrack.half_open_percent",
            format!("{}% of the table is out of range", c.half_open_percent),
            "give a whole percentage from 1 to 100 (25 by default: a SYN flood can then hold a quarter of the table at most)",
        );
    }
    for (key, v) in [
        ("tcp_syn_timeout", c.tcp_syn_timeout),
        ("tcp_established_timeout", c.tcp_established_timeout),
        ("tcp_closing_timeout", c.tcp_closing_timeout),
        ("udp_timeout", c.udp_timeout),
    ] {
        if v == 0 || v > 604_800 {
            return invalid(
                format!("conntrack.{key}"),
                format!("timeout {v} s is out of range"),
                "give whole seconds between 1 and 604800 (a week)",
            );
        }
    }
    Ok(())
}
