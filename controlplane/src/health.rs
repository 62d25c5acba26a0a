//! Health checks on kernel sockets, one thread per checked backend (never on a worker core):
//! `tcp` connects; `http` sends a GET and judges the status line and, if configured, the
//! body. Results feed [`Plane::health_result`], whose rise/fall counting moves backends up
//! and down. After every configuration change the daemon calls [`HealthChecks::reconcile`],
//! which starts checks for new backends and stops those of removed ones.

use crate::plane::{CheckResult, Plane};
use config::{CheckKind, Config, HealthCheck};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

type Key = (String, SocketAddr, String);

#[derive(Default)]
pub struct HealthChecks {
    running: HashMap<Key, Arc<AtomicBool>>,
}

impl HealthChecks {
    /// Makes the running checks match `cfg`.
    pub fn reconcile(&mut self, cfg: &Config, plane: &Arc<Mutex<Plane>>) {
        let mut want: HashMap<Key, (HealthCheck, SocketAddr)> = HashMap::new();
        for s in &cfg.services {
            for b in s.unique_backends() {
                let Some(h) = s.health_of(b.address) else {
                    continue;
                };
                let target = SocketAddr::new(b.address.ip(), h.port.unwrap_or(b.address.port()));
                want.insert(
                    (s.name.clone(), b.address, format!("{h:?}")),
                    (h.clone(), target),
                );
            }
        }
        self.running.retain(|k, stop| {
            let keep = want.contains_key(k);
            if !keep {
                stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for (k, (h, target)) in want {
            if self.running.contains_key(&k) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (plane, stop2, key) = (Arc::clone(plane), Arc::clone(&stop), k.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-health-{}", k.1))
                .stack_size(256 * 1024)
                .spawn(move || check_loop(&plane, &key.0, key.1, target, &h, &stop2));
            if spawned.is_ok() {
                self.running.insert(k, stop);
            }
        }
    }

    pub fn stop_all(&mut self) {
        for s in self.running.values() {
            s.store(true, Ordering::Relaxed);
        }
        self.running.clear();
    }
}

fn check_loop(
    plane: &Arc<Mutex<Plane>>,
    service: &str,
    backend: SocketAddr,
    target: SocketAddr,
    h: &HealthCheck,
    stop: &AtomicBool,
) {
    // A per-backend offset, so checks of many backends spread over the interval.
    let mut seed = (backend.port() as u64) << 32
        ^ u64::from(match backend.ip() {
            std::net::IpAddr::V4(a) => u32::from(a),
            std::net::IpAddr::V6(a) => a.segments().iter().map(|s| *s as u32).sum(),
        });
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let r = check_once(target, h);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut p) = plane.lock() {
            p.health_result(service, backend, r);
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = if h.jitter_ms > 0 {
            (seed >> 33) % (h.jitter_ms + 1)
        } else {
            0
        };
        let until = Instant::now() + Duration::from_millis(h.interval_ms + jitter);
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(
                Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
            );
        }
    }
}

/// Runs one check against `target`.
pub fn check_once(target: SocketAddr, h: &HealthCheck) -> CheckResult {
    let start = Instant::now();
    let timeout = Duration::from_millis(h.timeout_ms.max(1));
    let (ok, message) = match &h.kind {
        CheckKind::Tcp => match TcpStream::connect_timeout(&target, timeout) {
            Ok(_) => (true, "connected".to_string()),
            Err(e) => (false, format!("connect: {e}")),
        },
        CheckKind::Http {
            path,
            status,
            body,
            host,
        } => http_check(
            target,
            timeout,
            path,
            status,
            body.as_deref(),
            host.as_deref(),
        ),
    };
    CheckResult {
        ok,
        latency: start.elapsed(),
        message,
        at: SystemTime::now(),
    }
}

fn http_check(
    target: SocketAddr,
    timeout: Duration,
    path: &str,
    status: &[(u16, u16)],
    want_body: Option<&str>,
    host: Option<&str>,
) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    let mut s = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => return (false, format!("connect: {e}")),
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = s.set_write_timeout(Some(left()));
    let host = host.map_or_else(|| target.to_string(), str::to_string);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (false, format!("send: {e}"));
    }
    // Read until the server closes, the buffer cap, or the deadline.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            if buf.is_empty() {
                return (
                    false,
                    format!("no response within {} ms", timeout.as_millis()),
                );
            }
            break;
        }
        let _ = s.set_read_timeout(Some(left()));
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 256 * 1024 {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return (
                        false,
                        format!("no response within {} ms", timeout.as_millis()),
                    );
                }
                break;
            }
            Err(e) => return (false, format!("receive: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let code: Option<u16> = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok());
    let Some(code) = code else {
        return (
            false,
            format!(
                "not an HTTP response: `{}`",
                line.chars().take(60).collect::<String>()
            ),
        );
    };
    if !status.iter().any(|(a, b)| (*a..=*b).contains(&code)) {
        return (false, format!("status {code}"));
    }
    if let Some(w) = want_body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(w) {
            return (false, format!("status {code}, body lacks `{w}`"));
        }
    }
    (true, format!("status {code}"))
}
