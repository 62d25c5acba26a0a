//! `[service.health]`: read from the file ([`parse_health`]), then checked on the model
//! ([`check_health`]).
use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;
use toml::Spanned;

/// Parses a status range such as "200", "200-299" or "2xx".
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let ok = |v: u16| (100..=599).contains(&v);
    if let Some(c) = s.strip_suffix("xx") {
        let d: u16 = c.parse().ok()?;
        return ok(d * 100).then_some((d * 100, d * 100 + 99));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (ok(a) && ok(b) && a <= b).then_some((a, b))
        }
        None => {
            let v: u16 = s.parse().ok()?;
            ok(v).then_some((v, v))
        }
    }
}

/// Reads `[service.health]` of the service whose key is `key`, recording where its keys are.
/// What can only be judged in the file is judged here: the check type, keys that belong to
/// another type, status ranges as written, and times that are not numbers of seconds.
pub(crate) fn parse_health(
    ctx: &Ctx,
    key: &str,
    h: &RawHealth,
    spans: &mut Spans,
) -> Result<HealthCheck, ConfigError> {
    let key = format!("{key}.health");
    spans.put(key.clone(), h.kind.span());
    spans.put(format!("{key}.type"), h.kind.span());
    let mut ms =
        |v: &Option<Spanned<f64>>, k: &str, default: u64, min: f64| -> Result<u64, ConfigError> {
            match v {
                Some(x) => {
                    spans.put(format!("{key}.{k}"), x.span());
                    let secs = *x.get_ref();
                    if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
                        return ctx.err(
                            x.span(),
                            format!("{key}.{k}"),
                            format!("{secs} s is out of range"),
                            format!("give seconds from {min} to 3600, such as 2 or 0.5"),
                        );
                    }
                    Ok((secs * 1000.0).round() as u64)
                }
                None => Ok(default),
            }
        };
    let interval_ms = ms(&h.interval, "interval", 2000, 0.05)?;
    let timeout_ms = ms(&h.timeout, "timeout", 1000, 0.01)?;
    let jitter_ms = ms(&h.jitter, "jitter", 0, 0.0)?;
    for (v, k) in [(&h.rise, "rise"), (&h.fall, "fall")] {
        if let Some(x) = v {
            spans.put(format!("{key}.{k}"), x.span());
        }
    }
    if let Some(p) = &h.port {
        spans.put(format!("{key}.port"), p.span());
    }
    for (v, k) in [(&h.path, "path"), (&h.host, "host"), (&h.body, "body")] {
        if let Some(x) = v {
            spans.put(format!("{key}.{k}"), x.span());
        }
    }
    if let Some(v) = &h.status {
        spans.put(format!("{key}.status"), v.span());
    }
    let http_only = [
        (h.path.as_ref().map(|v| v.span()), "path"),
        (h.status.as_ref().map(|v| v.span()), "status"),
        (h.body.as_ref().map(|v| v.span()), "body"),
        (h.host.as_ref().map(|v| v.span()), "host"),
    ];
    let kind = match h.kind.get_ref().as_str() {
        "tcp" => {
            if let Some((Some(span), k)) = http_only.into_iter().find(|(s, _)| s.is_some()) {
                return ctx.err(
                    span,
                    format!("{key}.{k}"),
                    format!("`{k}` applies to type = \"http\" checks only"),
                    "remove it, or set type = \"http\"",
                );
            }
            CheckKind::Tcp
        }
        "http" => {
            let status = match &h.status {
                Some(v) => {
                    let mut out = Vec::new();
                    for r in v.get_ref() {
                        match parse_status_range(r) {
                            Some(x) => out.push(x),
                            None => {
                                return ctx.err(
                                    v.span(),
                                    format!("{key}.status"),
                                    format!("`{r}` is not a status or status range"),
                                    "write statuses as \"200\", \"200-299\" or \"2xx\"",
                                )
                            }
                        }
                    }
                    out
                }
                None => vec![(200, 399)],
            };
            CheckKind::Http {
                path: h.path.as_ref().map_or("/".into(), |p| p.get_ref().clone()),
                status,
                body: h.body.as_ref().map(|b| b.get_ref().clone()),
                host: h.host.as_ref().map(|b| b.get_ref().clone()),
            }
        }
        other => {
            return ctx.err(
                h.kind.span(),
                format!("{key}.type"),
                format!("`{other}` is not a health check type"),
                "use \"tcp\" (connect) or \"http\" (GET with expected status)",
            )
        }
    };
    Ok(HealthCheck {
        kind,
        interval_ms,
        timeout_ms,
        rise: h.rise.as_ref().map_or(2, |x| *x.get_ref()),
        fall: h.fall.as_ref().map_or(3, |x| *x.get_ref()),
        jitter_ms,
        port: h.port.as_ref().map(|p| *p.get_ref()),
    })
}

/// The rules a health check (of the service whose key is `key`) must follow.
pub(crate) fn check_health(key: &str, h: &HealthCheck) -> Result<(), Invalid> {
    let key = format!("{key}.health");
    for (k, ms, min_ms) in [
        ("interval", h.interval_ms, 50),
        ("timeout", h.timeout_ms, 10),
        ("jitter", h.jitter_ms, 0),
    ] {
        if ms < min_ms || ms > 3_600_000 {
            return invalid(
                format!("{key}.{k}"),
                format!("{} s is out of range", ms as f64 / 1000.0),
                format!(
                    "give seconds from {} to 3600, such as 2 or 0.5",
                    min_ms as f64 / 1000.0
                ),
            );
        }
    }
    if h.timeout_ms > h.interval_ms {
        return invalid(
            format!("{key}.timeout"),
            format!(
                "the timeout ({} ms) is longer than the interval ({} ms)",
                h.timeout_ms, h.interval_ms
            ),
            "make the timeout at most the interval",
        );
    }
    for (k, n) in [("rise", h.rise), ("fall", h.fall)] {
        if n == 0 || n > 100 {
            return invalid(
                format!("{key}.{k}"),
                format!("{n} is out of range"),
                "give a count of consecutive results from 1 to 100",
            );
        }
    }
    if h.port == Some(0) {
        return invalid(
            format!("{key}.port"),
            "port 0 cannot be checked",
            "give the port the check connects to, or leave it out to use the backend's",
        );
    }
    if let CheckKind::Http {
        path, status, host, ..
    } = &h.kind
    {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid(
                format!("{key}.path"),
                format!("`{path}` is not a request path"),
                "give a path starting with '/', without spaces, such as \"/healthz\"",
            );
        }
        if status.is_empty() {
            return invalid(
                format!("{key}.status"),
                "no statuses given",
                "list at least one, such as [\"200-399\"]",
            );
        }
        if let Some(hv) = host {
            if hv.is_empty() || hv.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    format!("{key}.host"),
                    format!("`{hv}` is not a Host header value"),
                    "give a host name such as \"www.example.com\"",
                );
            }
        }
    }
    Ok(())
}
