//! Drain deadlines and removals: what the control loop's tick does besides collecting.

use super::{Candidate, Plane};
use dataplane::snapshot::Admin;

impl Plane {
    /// Collects counters from the workers, and acts on drains: a drained backend past its
    /// timeout has its flows moved, and one awaiting removal is removed when its flows have
    /// ended or the timeout passed. Called by the daemon's control loop a few times a second.
    pub fn tick(&mut self) {
        self.collect();
        self.settle_drains();
    }

    /// Acts on drains as of the plane's clock, with the active-flow counts last collected:
    /// a drain past its deadline becomes drain-expired (its flows move on their next packet);
    /// a backend awaiting removal is removed once its flows ended or its deadline passed (a
    /// service's last backend stays, drained). Publishes one snapshot if anything changed.
    pub fn settle_drains(&mut self) {
        let now = self.now();
        let mut expire = Vec::new();
        let mut remove = Vec::new();
        for ((s, a), st) in &self.backends {
            let timed_out = st.admin == Admin::Drain && st.drain_deadline.is_some_and(|d| now >= d);
            let ended = st.remove_when_drained && self.active_flows(s, *a) == 0;
            if st.remove_when_drained && (timed_out || ended) {
                remove.push((s.clone(), *a, ended));
            } else if timed_out {
                expire.push((s.clone(), *a));
            }
        }
        if expire.is_empty() && remove.is_empty() {
            return;
        }
        let mut c = Candidate {
            cfg: self.cfg.clone(),
            backends: self.backends.clone(),
            notes: vec![],
        };
        for (s, a) in &expire {
            if let Some(st) = c.backends.get_mut(&(s.clone(), *a)) {
                st.admin = Admin::DrainExpired;
            }
            c.notes.push(format!("backend {a} of `{s}`: drain timeout passed; its remaining flows move to other backends"));
        }
        for (s, a, ended) in &remove {
            if let Some(svc) = c.cfg.services.iter_mut().find(|x| &x.name == s) {
                if svc.backends.len() > 1 {
                    svc.backends.retain(|b| b.address != *a);
                    c.backends.remove(&(s.clone(), *a));
                    c.notes.push(format!(
                        "backend {a} removed from `{s}` ({})",
                        if *ended {
                            "its flows ended"
                        } else {
                            "drain timeout passed"
                        }
                    ));
                } else if let Some(st) = c.backends.get_mut(&(s.clone(), *a)) {
                    // The last backend stays, drained, rather than leave the service empty.
                    st.remove_when_drained = false;
                    c.notes.push(format!(
                        "backend {a} of `{s}` kept (drained) as the service's last backend"
                    ));
                }
            }
        }
        match self.build(&c) {
            Ok(built) => {
                let notes = c.notes.clone();
                match self.commit(c, built) {
                    Ok(()) => {
                        for n in notes {
                            self.log(n);
                        }
                    }
                    Err(e) => self.warn(format!("could not publish drain changes: {e}")),
                }
            }
            Err(e) => self.warn(format!("could not apply drain changes: {}", e.message)),
        }
    }
}
