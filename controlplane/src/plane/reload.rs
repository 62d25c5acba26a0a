//! `reload`: the configuration file against the running configuration, as a diff.

use super::{refused, Candidate, Plane};
use config::Config;
use ctl::views::ReloadDiff;
use ctl::ErrorBody;
use dataplane::snapshot::Admin;

impl Plane {
    /// Loads the configuration file into the candidate: services and backends as the file
    /// says, except that backends the file no longer lists drain first (they take no new
    /// flows and are removed when their flows end or the drain times out). Sections that
    /// cannot change live (`[dataplane]`, `[control]`, `[metrics]`, `[node]`, `[conntrack]`)
    /// keep their running values and are reported; `[bgp]` takes the file's.
    pub(super) fn reload_into(&self, c: &mut Candidate) -> Result<ReloadDiff, ErrorBody> {
        let file = Config::load(&self.config_path).map_err(|e| {
            refused(format!(
                "the running configuration is kept: {}",
                e.to_string().replace('\n', " ")
            ))
        })?;
        let mut restart = Vec::new();
        if file.dataplane != self.cfg.dataplane {
            restart.push("dataplane");
        }
        if file.control != self.cfg.control {
            restart.push("control");
        }
        if file.metrics != self.cfg.metrics {
            restart.push("metrics");
        }
        if file.node != self.cfg.node {
            restart.push("node");
        }
        if file.conntrack != self.cfg.conntrack {
            restart.push("conntrack");
        }
        let mut new = self.cfg.clone();
        new.services = file.services.clone();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        // [bgp] changes live: the feed's next ask carries it.
        match (&self.cfg.bgp, &file.bgp) {
            (None, Some(_)) => added.push("[bgp]".to_string()),
            (Some(_), None) => removed.push("[bgp] (every VIP route withdrawn)".to_string()),
            (Some(a), Some(b)) if a != b => changed.push("[bgp]".to_string()),
            _ => {}
        }
        new.bgp = file.bgp.clone();
        let mut draining = Vec::new();
        for s in &file.services {
            match self.cfg.services.iter().find(|o| o.name == s.name) {
                None => added.push(format!("service {}", s.name)),
                Some(o) => {
                    if (
                        o.vip,
                        o.protocol,
                        o.forwarding,
                        o.table_size,
                        o.gue_port,
                        &o.health,
                        o.all_down,
                    ) != (
                        s.vip,
                        s.protocol,
                        s.forwarding,
                        s.table_size,
                        s.gue_port,
                        &s.health,
                        s.all_down,
                    ) {
                        changed.push(format!("service {}", s.name));
                    }
                    for b in &s.backends {
                        match o.backends.iter().find(|ob| ob.address == b.address) {
                            None => added.push(format!("backend {} {}", s.name, b.address)),
                            Some(ob) if ob != b => changed.push(format!(
                                "backend {} {} (weight {} -> {}{})",
                                s.name,
                                b.address,
                                ob.weight,
                                b.weight,
                                if ob.mac != b.mac { ", new MAC" } else { "" }
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        let timeout = self.drain_timeout();
        for o in &self.cfg.services {
            let Some(si) = new.services.iter().position(|s| s.name == o.name) else {
                removed.push(format!("service {}", o.name));
                continue;
            };
            for ob in &o.backends {
                if new.services[si]
                    .backends
                    .iter()
                    .any(|b| b.address == ob.address)
                {
                    continue;
                }
                let active = self.active_flows(&o.name, ob.address);
                if active == 0 {
                    removed.push(format!("backend {} {}", o.name, ob.address));
                    continue;
                }
                // Kept, draining, until its flows end.
                new.services[si].backends.push(ob.clone());
                let st = c.backends.entry((o.name.clone(), ob.address)).or_default();
                if st.admin != Admin::Drain {
                    st.admin = Admin::Drain;
                    st.drain_deadline = Some(self.now() + timeout);
                }
                st.remove_when_drained = true;
                draining.push(format!(
                    "backend {} {} ({active} flow(s); removed when they end, {} s at most)",
                    o.name,
                    ob.address,
                    timeout.as_secs()
                ));
            }
        }
        c.cfg = new;
        let mut notes = Vec::new();
        for (what, list) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
            ("draining before removal", &draining),
        ] {
            for x in list.iter() {
                notes.push(format!("reload: {what}: {x}"));
            }
        }
        if notes.is_empty() {
            notes.push("reload: no change".into());
        }
        for r in &restart {
            notes.push(format!("reload: [{r}] differs from the running one and needs a restart; the running values are kept"));
        }
        c.notes = notes;
        Ok(ReloadDiff {
            added,
            removed,
            changed,
            draining,
            needs_restart: restart.into_iter().map(String::from).collect(),
        })
    }
}
