//! Readiness notifications for systemd's `Type=notify` (sd_notify(3)): `READY=1` once the
//! data path forwards, `RELOADING=1` / `READY=1` around a SIGHUP reload, `STOPPING=1` when a
//! stop begins, and a `STATUS=` line for `systemctl status`.
//!
//! The protocol is one datagram per message to the Unix socket `NOTIFY_SOCKET` names (a path,
//! or `@name` for the abstract namespace); without the variable (not started by systemd)
//! every call does nothing. Written here rather than taken from a crate because it is these
//! few lines.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` from the environment; call once, first thing in `main`.
pub fn init() {
    let _ = NOTIFIER.set(Notifier::from_env());
}

/// The process's notifier (one that does nothing before `init`).
pub fn get() -> &'static Notifier {
    NOTIFIER.get_or_init(|| Notifier { socket: None })
}

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET` (the unit's `NotifyAccess=main` keeps any child
    /// from speaking for sluice; it starts none).
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { socket: None };
        };
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            use std::os::unix::ffi::OsStrExt;
            let b = path.as_bytes();
            match b.first() {
                Some(b'@') => std::os::unix::net::SocketAddr::from_abstract_name(&b[1..]),
                _ => std::os::unix::net::SocketAddr::from_pathname(&path),
            }
        };
        let socket = match (UnixDatagram::unbound(), addr) {
            (Ok(s), Ok(a)) => Some((s, a)),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: cannot use it ({e}); systemd will not hear that sluice is ready",
                    path.to_string_lossy()
                );
                None
            }
        };
        Notifier { socket }
    }

    /// Sends one notification (`KEY=value` lines); failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Some((s, a)) = &self.socket {
            if let Err(e) = s.send_to_addr(message.as_bytes(), a) {
                log::warn!("cannot notify systemd ({message:?}): {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration file");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_named_by_notify_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.ready("forwarding");
        n.stopping();
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        let first = std::str::from_utf8(&buf[..k]).unwrap().to_string();
        assert!(
            first.starts_with("READY=1\nSTATUS=forwarding\nMAINPID="),
            "{first}"
        );
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STOPPING=1\nSTATUS=stopping");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
