//! The ExaBGP feed's bookkeeping: what ExaBGP was told so far, and the process-API lines
//! (`announce route P next-hop N` / `withdraw route P next-hop N`) that bring it to what the
//! daemon asks for now. `sluicectl bgp feed` runs the loop around it.

use crate::views::BgpRoute;
use std::collections::BTreeMap;

/// The routes ExaBGP was told to announce: prefix → next hop.
#[derive(Debug, Default)]
pub struct Feed {
    announced: BTreeMap<String, String>,
}

impl Feed {
    /// The lines that take ExaBGP from what it was told to `routes`: a withdrawal for each
    /// announced prefix no longer wanted, an announcement for each new one (or one whose next
    /// hop changed: an announcement replaces the route).
    pub fn update(&mut self, routes: &[BgpRoute]) -> Vec<String> {
        let want: BTreeMap<&str, &str> = routes
            .iter()
            .filter(|r| r.announce)
            .map(|r| (r.prefix.as_str(), r.next_hop.as_str()))
            .collect();
        let mut lines = Vec::new();
        let gone: Vec<(String, String)> = self
            .announced
            .iter()
            .filter(|(p, _)| !want.contains_key(p.as_str()))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (p, n) in gone {
            lines.push(format!("withdraw route {p} next-hop {n}"));
            self.announced.remove(&p);
        }
        for (p, n) in want {
            if self.announced.get(p).map(String::as_str) != Some(n) {
                lines.push(format!("announce route {p} next-hop {n}"));
                self.announced.insert(p.to_string(), n.to_string());
            }
        }
        lines
    }

    /// Withdrawals for everything announced (the daemon cannot be reached: it serves nothing).
    pub fn withdraw_all(&mut self) -> Vec<String> {
        self.update(&[])
    }

    /// Prefixes announced now.
    pub fn announced(&self) -> impl Iterator<Item = &str> {
        self.announced.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, next_hop: &str, announce: bool) -> BgpRoute {
        BgpRoute {
            prefix: prefix.into(),
            next_hop: next_hop.into(),
            announce,
            reason: String::new(),
            services: vec![],
        }
    }

    #[test]
    fn lines_announce_once_withdraw_what_went_and_follow_next_hop_changes() {
        let mut f = Feed::default();
        let a = route("10.99.0.100/32", "self", true);
        let b = route("2001:db8::100/128", "self", false);
        assert_eq!(
            f.update(&[a.clone(), b.clone()]),
            ["announce route 10.99.0.100/32 next-hop self"]
        );
        assert!(
            f.update(&[a.clone(), b.clone()]).is_empty(),
            "nothing twice"
        );
        let b_up = route("2001:db8::100/128", "self", true);
        assert_eq!(
            f.update(&[a.clone(), b_up.clone()]),
            ["announce route 2001:db8::100/128 next-hop self"]
        );
        let a_moved = route("10.99.0.100/32", "10.99.0.1", true);
        assert_eq!(
            f.update(&[a_moved.clone(), b_up.clone()]),
            ["announce route 10.99.0.100/32 next-hop 10.99.0.1"]
        );
        // A route that is withdrawn, and one the daemon no longer lists at all.
        assert_eq!(
            f.update(&[route("10.99.0.100/32", "10.99.0.1", false)]),
            [
                "withdraw route 10.99.0.100/32 next-hop 10.99.0.1",
                "withdraw route 2001:db8::100/128 next-hop self"
            ]
        );
        assert_eq!(f.announced().count(), 0);
        f.update(&[a]);
        assert_eq!(
            f.withdraw_all(),
            ["withdraw route 10.99.0.100/32 next-hop self"]
        );
        assert!(f.withdraw_all().is_empty());
    }
}
