//! Which VIP routes this instance asks routers for (`[bgp]`): a VIP address is announced
//! while the node is active and at least one service on it has a usable backend — admin
//! `ready`, weight above zero, and, where it is health-checked, `up` (a checked backend not
//! yet checked does not count: a starting instance attracts traffic only once its backends
//! have passed). The ExaBGP feed (`sluicectl bgp feed`) asks for these and writes them as
//! `announce route` / `withdraw route` lines; what it was last told is kept for `status` and
//! the metrics.

use super::Plane;
use config::Service;
use ctl::views::{BgpRoute, BgpRoutes, BgpSummary};
use dataplane::snapshot::{Admin, Health};
use std::net::IpAddr;
use std::time::Instant;

/// What the instance as a whole is doing about its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Announcing every VIP that has a usable backend.
    Active,
    /// `sluicectl node drain`: every route withdrawn, forwarding continues.
    Drained,
    /// SIGTERM: every route withdrawn, forwarding continues through the grace time.
    Stopping,
    /// VRRP backup (`sluicectl node standby`, from keepalived): no ARP / ND answers and no
    /// forwarding for the VIPs, every route withdrawn.
    Standby,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Drained => "drained",
            NodeState::Stopping => "stopping",
            NodeState::Standby => "standby",
        }
    }
}

/// What the feed was last told: when, and the prefixes to announce.
#[derive(Debug, Clone)]
pub struct FeedPoll {
    pub at: Instant,
    pub announced: Vec<String>,
}

/// A VIP address as the prefix a router installs.
pub fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

impl Plane {
    /// Backends of `s` that can take new flows now, and how many it has.
    fn usable_backends(&self, s: &Service) -> (usize, usize) {
        let all = s.unique_backends();
        let usable = all
            .iter()
            .filter(|b| {
                let st = self.backends.get(&(s.name.clone(), b.address));
                let admin = st.map_or(Admin::Ready, |st| st.admin);
                let health = st.map_or(Health::Unknown, |st| st.health);
                let checked = s.health_of(b.address).is_some();
                b.weight > 0
                    && admin == Admin::Ready
                    && if checked {
                        health == Health::Up
                    } else {
                        health != Health::Down
                    }
            })
            .count();
        (usable, all.len())
    }

    /// Every VIP address's route, in the order the services first name it.
    pub fn bgp_routes(&self) -> BgpRoutes {
        let mut ips: Vec<IpAddr> = Vec::new();
        for s in &self.cfg.services {
            if !ips.contains(&s.vip.ip()) {
                ips.push(s.vip.ip());
            }
        }
        let routes = ips
            .into_iter()
            .map(|ip| {
                let services: Vec<&Service> =
                    self.cfg.services.iter().filter(|s| s.vip.ip() == ip).collect();
                let usable: Vec<(usize, usize)> =
                    services.iter().map(|s| self.usable_backends(s)).collect();
                let counts: Vec<String> = services
                    .iter()
                    .zip(&usable)
                    .map(|(s, (u, n))| format!("{} {u} of {n} backends usable", s.name))
                    .collect();
                let serving = usable.iter().any(|&(u, _)| u > 0);
                let (announce, reason) = match (&self.cfg.bgp, self.node) {
                    (None, _) => (false, "not announced: the configuration has no [bgp] section".to_string()),
                    (_, NodeState::Drained) => (false, "withdrawn: the node is drained (`sluicectl node activate` announces again)".into()),
                    (_, NodeState::Stopping) => (false, "withdrawn: the daemon is stopping".into()),
                    (_, NodeState::Standby) => (false, "withdrawn: the node is a standby (`sluicectl node activate` makes it active)".into()),
                    (_, NodeState::Active) if !serving => (false, format!("withdrawn: no usable backend ({})", counts.join("; "))),
                    (_, NodeState::Active) => (true, format!("announced: {}", counts.join("; "))),
                };
                BgpRoute {
                    prefix: prefix(ip),
                    next_hop: self
                        .cfg
                        .bgp
                        .as_ref()
                        .map_or("self".into(), |b| b.next_hop.for_family(ip.is_ipv6())),
                    announce,
                    reason,
                    services: services.iter().map(|s| s.name.clone()).collect(),
                }
            })
            .collect();
        BgpRoutes {
            node: self.node.name().into(),
            routes,
        }
    }

    /// The routes, recorded as what the feed now tells the routers.
    pub fn feed_poll(&mut self) -> BgpRoutes {
        let r = self.bgp_routes();
        let announced: Vec<String> = r
            .routes
            .iter()
            .filter(|x| x.announce)
            .map(|x| x.prefix.clone())
            .collect();
        let before = self.feed.as_ref().map(|f| f.announced.clone());
        if before.as_ref() != Some(&announced) {
            let all: Vec<&str> = announced.iter().map(String::as_str).collect();
            self.log(format!(
                "bgp: the feed now announces {}",
                if all.is_empty() {
                    "nothing".to_string()
                } else {
                    all.join(", ")
                }
            ));
        }
        self.feed = Some(FeedPoll {
            at: self.now(),
            announced,
        });
        r
    }

    /// `status`'s summary, with `[bgp]`.
    pub fn bgp_summary(&self) -> Option<BgpSummary> {
        self.cfg.bgp.as_ref()?;
        let all = self.bgp_routes();
        let announced = self
            .feed
            .as_ref()
            .map(|f| f.announced.clone())
            .unwrap_or_default();
        Some(BgpSummary {
            feed_last_poll_s: self
                .feed
                .as_ref()
                .map(|f| self.now().saturating_duration_since(f.at).as_secs_f64()),
            withdrawn: all
                .routes
                .into_iter()
                .map(|r| r.prefix)
                .filter(|p| !announced.contains(p))
                .collect(),
            announced,
        })
    }

    /// `node drain` / `node standby` / `node activate`. Draining is refused without `[bgp]`
    /// (there is nothing to withdraw), every change while stopping. A change to or from
    /// standby republishes the snapshot (the workers stop or start answering for the VIPs;
    /// on becoming active they announce them).
    pub fn set_node(&mut self, to: NodeState) -> Result<String, ctl::ErrorBody> {
        if to == NodeState::Drained && self.cfg.bgp.is_none() {
            return Err(super::refused(
                "node drain withdraws the VIP routes, and this configuration has no [bgp] section (see docs/ha.md); for VRRP, use node standby",
            ));
        }
        if self.node == NodeState::Stopping {
            return Err(super::refused(
                "the daemon is stopping; its routes stay withdrawn",
            ));
        }
        let from = self.node;
        if from == to {
            return Ok(format!("the node is already {}", to.name()));
        }
        let note = match to {
            NodeState::Drained => "node drained: every VIP route withdrawn; forwarding continues for what still arrives".to_string(),
            NodeState::Standby => "node standby: no ARP / neighbour answers and no forwarding for the VIPs; VIP routes withdrawn".into(),
            _ if from == NodeState::Standby => "node active: answering and forwarding for the VIPs, each announced by gratuitous ARP / unsolicited neighbour advertisement; VIP routes with a usable backend announced".into(),
            _ => "node active: VIP routes with a usable backend announced again".into(),
        };
        self.node = to;
        if from == NodeState::Standby || to == NodeState::Standby {
            if from == NodeState::Standby {
                self.announce_epoch += 1;
            }
            if let Err(e) = self.republish() {
                self.node = from;
                return Err(ctl::ErrorBody::new(
                    "failed",
                    format!("the node stays {}: {e}", from.name()),
                ));
            }
        }
        self.log(note.clone());
        Ok(note)
    }

    /// SIGTERM with `[bgp]`: withdraw everything; the daemon stops after the grace time.
    pub fn begin_stop(&mut self) {
        if self.node != NodeState::Stopping {
            self.node = NodeState::Stopping;
            self.log(
                "stopping: every VIP route withdrawn; forwarding continues through the grace time"
                    .into(),
            );
        }
    }

    /// Whether the feed has asked since `t` (it has then been told to withdraw).
    pub fn feed_polled_since(&self, t: Instant) -> bool {
        self.feed.as_ref().is_some_and(|f| f.at >= t)
    }

    /// Whether a feed has asked within the last `secs` seconds.
    pub fn feed_alive(&self, secs: u64) -> bool {
        self.feed
            .as_ref()
            .is_some_and(|f| self.now().saturating_duration_since(f.at).as_secs() < secs)
    }
}
