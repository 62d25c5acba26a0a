//! The control socket: a Unix-domain socket (mode 0600, or 0660 with `[control] group`), one
//! JSON request per line and one JSON response per line (see the `ctl` crate). Each client
//! gets a thread; requests are served one at a time against the [`Plane`]. A line longer than
//! [`ctl::MAX_LINE`] is refused and the connection closed; a client that disconnects
//! mid-line has sent nothing.

use crate::health::HealthChecks;
use crate::plane::Plane;
use crate::{ProbeLink, WorkerLink};
use arc_swap::ArcSwap;
use config::Config;
use ctl::{decode_request, ErrorBody, Response, MAX_LINE};
use dataplane::Snapshot;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chown, geteuid, Gid, Group};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clients served at once; more are told to retry.
const MAX_CLIENTS: usize = 64;

/// The running control plane: socket, health checks, metrics, and the state they share.
pub struct ControlPlane {
    pub plane: Arc<Mutex<Plane>>,
    health: HealthChecks,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    seen_generation: u64,
    ticks: u64,
}

/// Makes the shared snapshot, the worker links and the control plane, and starts serving.
pub fn start(
    cfg: &Config,
    config_path: &Path,
    driver: &str,
    first: Snapshot,
    workers: usize,
    quiet: bool,
) -> Result<(ControlPlane, Vec<WorkerLink>), String> {
    let (cell, links, worker_links): (Arc<ArcSwap<Snapshot>>, Vec<ProbeLink>, Vec<WorkerLink>) =
        crate::links(Arc::new(first), workers);
    let plane = Arc::new(Mutex::new(Plane::new(
        cfg.clone(),
        config_path.to_path_buf(),
        driver,
        cell,
        links,
        quiet,
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let socket = cfg.control.socket.clone();
    let listener = bind(&socket, cfg.control.group.as_deref())?;
    {
        let (plane, stop) = (Arc::clone(&plane), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("sluice-control".into())
            .spawn(move || accept_loop(listener, plane, stop))
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
    }
    if let Some(m) = &cfg.metrics {
        crate::metrics::serve(m.listen, Arc::clone(&plane), Arc::clone(&stop))?;
    }
    let mut health = HealthChecks::default();
    health.reconcile(cfg, &plane);
    if !quiet {
        log::info!("control socket {}", socket.display());
    }
    let seen_generation = plane.lock().map(|p| p.generation).unwrap_or(0);
    Ok((
        ControlPlane {
            plane,
            health,
            socket,
            stop,
            seen_generation,
            ticks: 0,
        },
        worker_links,
    ))
}

impl ControlPlane {
    /// Called by the daemon's main loop every 50 ms: every fifth call collects counters and
    /// acts on drains; after any change, health checks follow the configuration.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let Ok(mut p) = self.plane.lock() else { return };
        if self.ticks.is_multiple_of(5) {
            p.tick();
        }
        if p.generation != self.seen_generation {
            self.seen_generation = p.generation;
            let cfg = p.cfg.clone();
            drop(p);
            self.health.reconcile(&cfg, &self.plane);
        }
    }

    /// `[bgp] shutdown_grace_ms` of the running configuration, with `[bgp]`.
    pub fn shutdown_grace(&self) -> Option<Duration> {
        let p = self.plane.lock().ok()?;
        p.cfg
            .bgp
            .as_ref()
            .map(|b| Duration::from_millis(b.shutdown_grace_ms))
    }

    /// Withdraws every VIP route for a stop (see [`Plane::begin_stop`]).
    pub fn begin_stop(&self) {
        if let Ok(mut p) = self.plane.lock() {
            p.begin_stop();
        }
    }

    /// Whether the ExaBGP feed has asked since `t`.
    pub fn feed_polled_since(&self, t: std::time::Instant) -> bool {
        self.plane.lock().is_ok_and(|p| p.feed_polled_since(t))
    }

    /// Whether the ExaBGP feed asked within the last `secs` seconds.
    pub fn feed_alive(&self, secs: u64) -> bool {
        self.plane.lock().is_ok_and(|p| p.feed_alive(secs))
    }

    /// An event for the log and `sluicectl status`.
    pub fn log(&self, text: String) {
        if let Ok(mut p) = self.plane.lock() {
            p.log(text);
        }
    }

    /// Re-reads the configuration file and applies the difference, exactly as `sluicectl
    /// reload` does (the same validation and the same notes in the log); a file that does
    /// not validate is refused, logged, and the running configuration stays. For SIGHUP.
    pub fn reload(&mut self) -> Result<(), String> {
        let mut p = match self.plane.lock() {
            Ok(p) => p,
            Err(e) => e.into_inner(),
        };
        match p.handle(&ctl::Op::Reload) {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = format!("reload on SIGHUP refused: {}", e.message);
                p.warn(why.clone());
                Err(why)
            }
        }
    }

    /// Runs `f` on every snapshot published from now on (on the control thread).
    pub fn on_publish(&self, f: impl FnMut(&Snapshot) -> Result<(), String> + Send + 'static) {
        if let Ok(mut p) = self.plane.lock() {
            p.on_publish.push(Box::new(f));
        }
    }

    /// Where the L7 pool's shards publish their counters (read for `stats` and metrics).
    pub fn set_l7_stats(&self, s: Arc<Vec<std::sync::Mutex<l7_offload::ShardStats>>>) {
        if let Ok(mut p) = self.plane.lock() {
            p.l7_stats = Some(s);
        }
    }

    /// Gives `f` the L7 pool's setup now and every time the running configuration or a
    /// backend's state changes.
    pub fn on_l7(&self, mut f: impl FnMut(l7_offload::L7Setup) + Send + 'static) {
        if let Ok(mut p) = self.plane.lock() {
            f(p.l7_setup());
            p.on_l7.push(Box::new(f));
        }
    }

    /// The snapshot workers are (or are about to be) using.
    pub fn latest(&self) -> Arc<Snapshot> {
        match self.plane.lock() {
            Ok(p) => p.current(),
            Err(e) => e.into_inner().current(),
        }
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.health.stop_all();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the socket: its directory is made if missing; a stale socket file (nothing
/// listening) is replaced, a live one is an error (another daemon owns it).
fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    let shown = path.display();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("control.socket: cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("control.socket: {shown} is in use by another process (another sluice?); stop it or set [control] socket to another path"));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("control.socket: cannot remove the stale {shown}: {e}"))?;
    }
    // Created with no access for others from the start: no window where anyone can connect.
    let old = umask(Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    umask(old);
    let l = l.map_err(|e| format!("control.socket: cannot listen on {shown}: {e}"))?;
    let mode = match group {
        Some(g) => {
            let gid = group_id(g)
                .ok_or_else(|| format!("control.group: no group `{g}` on this machine"))?;
            chown(path, None, Some(Gid::from_raw(gid)))
                .map_err(|e| format!("control.group: cannot give {shown} to group `{g}`: {e}"))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("control.socket: cannot set the mode of {shown}: {e}"))?;
    Ok(l)
}

fn group_id(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The peer's (uid, gid), from the kernel (`SO_PEERCRED`).
fn peer(s: &UnixStream) -> Option<(u32, u32)> {
    let c = getsockopt(s, PeerCredentials).ok()?;
    Some((c.uid(), c.gid()))
}

fn accept_loop(l: UnixListener, plane: Arc<Mutex<Plane>>, stop: Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    let _ = l.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        let s = match l.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = s.set_nonblocking(false);
        if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let mut s = s;
            let _ = writeln!(
                s,
                "{}",
                Response::err(ErrorBody::new(
                    "failed",
                    format!("{MAX_CLIENTS} clients are connected; try again")
                ))
                .to_line()
            );
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let (plane, clients2) = (Arc::clone(&plane), Arc::clone(&clients));
        let group = plane
            .lock()
            .ok()
            .and_then(|p| p.cfg.control.group.clone())
            .and_then(|g| group_id(&g));
        let ok = std::thread::Builder::new()
            .name("sluice-control-client".into())
            .spawn(move || {
                serve_client(s, &plane, group);
                clients2.fetch_sub(1, Ordering::Relaxed);
            })
            .is_ok();
        if !ok {
            clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads one line of at most `MAX_LINE` bytes. `Ok(None)` at end of stream (a partial line
/// at the end is discarded: the client went away mid-request); `Err` for an overlong line.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> Result<Option<()>, ()> {
    line.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(None),
        };
        if buf.is_empty() {
            return Ok(None);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE + 1 {
            return Err(());
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(()));
        }
    }
}

fn serve_client(s: UnixStream, plane: &Mutex<Plane>, group: Option<u32>) {
    let me = geteuid().as_raw();
    let allowed = match peer(&s) {
        Some((uid, gid)) => uid == 0 || uid == me || group.is_some_and(|g| g == gid),
        None => false,
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::with_capacity(8192, s);
    let mut line = Vec::with_capacity(1024);
    loop {
        let resp = match read_line(&mut r, &mut line) {
            Ok(None) => return,
            Err(()) => {
                let e = Response::err(ErrorBody::new(
                    "too_long",
                    format!("the request line is longer than {MAX_LINE} bytes; nothing was done"),
                ));
                let _ = writeln!(w, "{}", e.to_line());
                return;
            }
            Ok(Some(())) if line.iter().all(|b| b.is_ascii_whitespace()) => continue,
            Ok(Some(())) => {
                let text = String::from_utf8_lossy(&line);
                match decode_request(&text) {
                    Err(e) => Response::err(e),
                    Ok(_) if !allowed => Response::err(ErrorBody::new("unauthorised", "this user may not use the control socket; run as root or as a member of [control] group")),
                    Ok(op) => match plane.lock() {
                        Ok(mut p) => match p.handle(&op) {
                            Ok(v) => Response::ok(v),
                            Err(e) => Response::err(e),
                        },
                        Err(_) => Response::err(ErrorBody::new("failed", "the control plane is unavailable")),
                    },
                }
            }
        };
        if writeln!(w, "{}", resp.to_line()).is_err() {
            return;
        }
    }
}
