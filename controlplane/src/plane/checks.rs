//! Health check results turned into transitions (rise and fall counting).

use super::{CheckResult, Plane};
use dataplane::snapshot::Health;
use std::net::SocketAddr;

impl Plane {
    /// Records a health check result; returns true when the backend's health changed.
    pub fn health_result(&mut self, service: &str, addr: SocketAddr, r: CheckResult) -> bool {
        let Some(svc) = self.cfg.services.iter().find(|s| s.name == service) else {
            return false;
        };
        let Some(hc) = svc.health_of(addr).cloned() else {
            return false;
        };
        let Some(st) = self.backends.get_mut(&(service.to_string(), addr)) else {
            return false;
        };
        let ok = r.ok;
        let msg = r.message.clone();
        st.last_check = Some(r);
        if ok {
            st.successes = st.successes.saturating_add(1);
            st.failures = 0;
        } else {
            st.failures = st.failures.saturating_add(1);
            st.successes = 0;
        }
        let was = st.health;
        let now = if ok && st.successes >= hc.rise && was != Health::Up {
            Health::Up
        } else if !ok && st.failures >= hc.fall && was != Health::Down {
            Health::Down
        } else {
            was
        };
        if now == was {
            return false;
        }
        st.health = now;
        self.log(format!(
            "health: backend {addr} of `{service}` {} -> {} ({})",
            was.name(),
            now.name(),
            msg
        ));
        if let Err(e) = self.republish() {
            self.warn(format!("could not apply the health change: {e}"));
        }
        true
    }
}
