//! Picking a backend per request, from one shard's view of a pool: weighted round-robin
//! (smooth, as nginx does it), least in-flight requests (per weight), power of two random
//! choices, or a consistent hash (Maglev) of a header, a cookie or the client address; and
//! the sticky cookie that pins a client to a backend while it is up and not draining.

use crate::http::Request;
use crate::setup::{Algorithm, HashOn, Pool};
use maglev::{MaglevBackend, MaglevTable};
use std::net::IpAddr;

/// A backend's name in a sticky cookie: a hash of its address, so the cookie does not
/// reveal the address, and is the same on every shard and instance.
pub fn sticky_id(addr: std::net::SocketAddr) -> u64 {
    hash_bytes(addr.to_string().as_bytes())
}

/// FNV-1a, finished with a mixer: the same on every shard and instance (no random seed).
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &c in b {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
    }
    packet::flow::mix64(h)
}

/// One shard's balancing state for one pool.
#[derive(Debug)]
pub struct PoolState {
    current: Vec<i64>,
    /// Requests sent and not yet answered, per backend.
    pub in_flight: Vec<u32>,
    ids: Vec<u64>,
    table: Option<MaglevTable>,
    rng: u64,
    cursor: usize,
    /// Consecutive failed requests per backend, and until when (ms) each is ejected.
    failures: Vec<u32>,
    ejected_until: Vec<u64>,
    now: u64,
}

/// The pick, and whether a sticky cookie must be (re)set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub backend: usize,
    pub set_cookie: bool,
}

impl PoolState {
    pub fn new(pool: &Pool, seed: u64) -> Self {
        let up: Vec<usize> = (0..pool.backends.len())
            .filter(|&i| pool.backends[i].takes_requests())
            .collect();
        let table = match pool.algorithm {
            Algorithm::Hash(_) if !up.is_empty() => {
                let ids: Vec<String> = up
                    .iter()
                    .map(|&i| pool.backends[i].address.to_string())
                    .collect();
                let mb: Vec<MaglevBackend> = ids
                    .iter()
                    .zip(&up)
                    .map(|(id, &i)| MaglevBackend {
                        identity: id.as_bytes(),
                        weight: pool.backends[i].weight,
                    })
                    .collect();
                MaglevTable::build(&mb, 65537).ok().map(|mut t| {
                    let labels: Vec<u16> = up.iter().map(|&i| i as u16).collect();
                    t.relabel(&labels);
                    t
                })
            }
            _ => None,
        };
        PoolState {
            current: vec![0; pool.backends.len()],
            in_flight: vec![0; pool.backends.len()],
            ids: pool.backends.iter().map(|b| sticky_id(b.address)).collect(),
            table,
            rng: packet::flow::mix64(seed | 1),
            cursor: 0,
            failures: vec![0; pool.backends.len()],
            ejected_until: vec![0; pool.backends.len()],
            now: 0,
        }
    }

    /// The time picks are made at (ms): ejections end by it.
    pub fn at(&mut self, now: u64) -> &mut Self {
        self.now = now;
        self
    }

    /// Whether backend `b` is ejected now.
    pub fn ejected(&self, b: usize) -> bool {
        self.ejected_until.get(b).is_some_and(|&t| t > self.now)
    }

    /// Records how a request to backend `b` ended; returns true when this failure ejects it.
    pub fn record(&mut self, pool: &Pool, b: usize, failed: bool) -> bool {
        let (Some(f), Some(until)) = (self.failures.get_mut(b), self.ejected_until.get_mut(b))
        else {
            return false;
        };
        if !failed {
            *f = 0;
            return false;
        }
        *f = f.saturating_add(1);
        if pool.eject_after > 0 && *f >= pool.eject_after && *until <= self.now {
            *until = self.now + pool.eject_for_ms;
            *f = 0;
            return true;
        }
        false
    }

    /// The next pseudo-random number (a free function of the generator's state, so a pick
    /// can draw while it reads the other fields).
    fn random(rng: &mut u64) -> u64 {
        *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        packet::flow::mix64(*rng)
    }

    /// The backend for `req` from `client`, never `avoid` (a retry's failed backend) unless
    /// it is the only one; `None` when no backend takes requests (503). Without a request
    /// (a retry), no cookie or header steers the pick: the pool's algorithm does.
    pub fn pick(
        &mut self,
        pool: &Pool,
        req: Option<&Request<'_>>,
        client: IpAddr,
        avoid: Option<usize>,
    ) -> Option<Pick> {
        // Ejected backends are passed over, unless every one that takes requests is ejected
        // (then ejection is ignored: a pool is never emptied by passive health alone).
        let all_ejected = (0..pool.backends.len())
            .filter(|&i| pool.backends[i].takes_requests())
            .all(|i| self.ejected(i));
        let (until, now) = (&self.ejected_until, self.now);
        let ejected = |i: usize| !all_ejected && until.get(i).is_some_and(|&t| t > now);
        let ok = |i: usize| pool.backends[i].takes_requests() && Some(i) != avoid && !ejected(i);
        if let (Some(name), Some(req)) = (&pool.sticky_cookie, req) {
            if let Some(v) = req.cookie(name) {
                let id = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                if let Some(i) = id.and_then(|id| self.ids.iter().position(|&x| x == id)) {
                    if ok(i) {
                        return Some(Pick {
                            backend: i,
                            set_cookie: false,
                        });
                    }
                }
            }
        }
        let n = pool.backends.len();
        let choice = match &pool.algorithm {
            Algorithm::RoundRobin => {
                let total: i64 = (0..n)
                    .filter(|&i| ok(i))
                    .map(|i| pool.backends[i].weight as i64)
                    .sum();
                let best = (0..n).filter(|&i| ok(i)).max_by_key(|&i| {
                    self.current[i] += pool.backends[i].weight as i64;
                    // Ties go to the first listed.
                    (self.current[i], std::cmp::Reverse(i))
                });
                if let Some(b) = best {
                    self.current[b] -= total;
                }
                best
            }
            Algorithm::LeastRequests => {
                // in_flight / weight, compared without division; ties go round in turn
                // (from after the last pick), so idle backends share the load.
                let start = self.cursor;
                let best = (0..n)
                    .map(|k| (start + k) % n.max(1))
                    .filter(|&i| ok(i))
                    .min_by(|&a, &b| {
                        let l = (self.in_flight[a] as u64 + 1) * pool.backends[b].weight as u64;
                        let r = (self.in_flight[b] as u64 + 1) * pool.backends[a].weight as u64;
                        l.cmp(&r)
                    });
                if let Some(b) = best {
                    self.cursor = (b + 1) % n.max(1);
                }
                best
            }
            Algorithm::PowerOfTwo => {
                let up: u64 = (0..n).filter(|&i| ok(i)).count() as u64;
                if up == 0 {
                    None
                } else {
                    let nth = |k: u64| (0..n).filter(|&i| ok(i)).nth(k as usize);
                    // Two different backends (when there are two).
                    let ka = Self::random(&mut self.rng) % up;
                    let kb = if up > 1 {
                        (ka + 1 + Self::random(&mut self.rng) % (up - 1)) % up
                    } else {
                        ka
                    };
                    let (a, b) = (nth(ka), nth(kb));
                    match (a, b) {
                        (Some(a), Some(b)) => Some(if self.in_flight[b] < self.in_flight[a] {
                            b
                        } else {
                            a
                        }),
                        (a, b) => a.or(b),
                    }
                }
            }
            Algorithm::Hash(on) => {
                let key = match on {
                    HashOn::Header(h) => req.and_then(|r| r.field(h)).map(hash_bytes),
                    HashOn::Cookie(c) => req.and_then(|r| r.cookie(c)).map(hash_bytes),
                    HashOn::Source => Some(hash_bytes(client.to_string().as_bytes())),
                };
                let hashed = key
                    .and_then(|k| self.table.as_ref().map(|t| t.lookup(k) as usize))
                    .filter(|&i| i < n && ok(i));
                // Without the key (or with its backend avoided): the next one up.
                hashed.or_else(|| {
                    let start = (Self::random(&mut self.rng) % n.max(1) as u64) as usize;
                    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
                })
            }
        };
        let choice = choice
            .or_else(|| avoid.filter(|&a| pool.backends[a].takes_requests() && !ejected(a)))?;
        Some(Pick {
            backend: choice,
            set_cookie: pool.sticky_cookie.is_some(),
        })
    }

    /// The `Set-Cookie` value naming backend `b`.
    pub fn cookie(&self, pool: &Pool, b: usize) -> Option<String> {
        let name = pool.sticky_cookie.as_ref()?;
        let mut c = format!("{name}={:016x}; Path=/; HttpOnly", self.ids[b]);
        if let Some(age) = pool.sticky_max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;
    use crate::setup::{Admin, Health, L7Backend};

    fn pool(algorithm: Algorithm, weights: &[u32]) -> Pool {
        Pool {
            name: "p".into(),
            algorithm,
            sticky_cookie: None,
            sticky_max_age: None,
            eject_after: 3,
            eject_for_ms: 1000,
            eject_on_5xx: false,
            tls: None,
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| L7Backend {
                    address: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                    weight: w,
                    admin: Admin::Ready,
                    health: Health::Up,
                })
                .collect(),
        }
    }

    fn picks(p: &Pool, st: &mut PoolState, raw: &str, n: usize) -> Vec<usize> {
        let mut out = vec![0; p.backends.len()];
        for i in 0..n {
            let mut f = [httparse::EMPTY_HEADER; 8];
            let r = parse_request(raw.as_bytes(), &mut f, 4096).unwrap();
            let client = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            out[st.pick(p, Some(&r), client, None).unwrap().backend] += 1;
        }
        out
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn round_robin_follows_weights_exactly() {
        let p = pool(Algorithm::RoundRobin, &[1, 2, 3]);
        let mut st = PoolState::new(&p, 1);
        assert_eq!(picks(&p, &mut st, GET, 600), vec![100, 200, 300]);
    }

    #[test]
    fn least_requests_prefers_the_idle_backend() {
        let p = pool(Algorithm::LeastRequests, &[1, 1, 1]);
        let mut st = PoolState::new(&p, 1);
        st.in_flight = vec![5, 0, 3];
        assert_eq!(picks(&p, &mut st, GET, 3), vec![0, 3, 0]);
        st.in_flight = vec![0, 0, 0];
        assert_eq!(
            picks(&p, &mut st, GET, 30),
            vec![10, 10, 10],
            "idle ones take turns"
        );
    }

    #[test]
    fn power_of_two_spreads_and_avoids_the_busiest() {
        let p = pool(Algorithm::PowerOfTwo, &[1, 1, 1, 1]);
        let mut st = PoolState::new(&p, 7);
        let got = picks(&p, &mut st, GET, 4000);
        assert!(got.iter().all(|&c| c > 700), "{got:?}");
        st.in_flight = vec![100, 0, 0, 0];
        let got = picks(&p, &mut st, GET, 4000);
        assert_eq!(
            got[0], 0,
            "the busiest of two distinct choices is never taken: {got:?}"
        );
    }

    #[test]
    fn hash_on_a_cookie_is_consistent_and_down_backends_are_skipped() {
        let mut p = pool(
            Algorithm::Hash(HashOn::Cookie("session".into())),
            &[1, 1, 1],
        );
        let mut st = PoolState::new(&p, 1);
        let req = "GET / HTTP/1.1\r\nHost: h\r\nCookie: session=abc\r\n\r\n";
        let got = picks(&p, &mut st, req, 50);
        assert_eq!(got.iter().filter(|&&c| c == 50).count(), 1, "{got:?}");
        let chosen = got.iter().position(|&c| c == 50).unwrap();
        p.backends[chosen].health = Health::Down;
        let mut st = PoolState::new(&p, 1);
        let got = picks(&p, &mut st, req, 50);
        assert_eq!(got[chosen], 0);
        let spread = picks(&p, &mut st, GET, 300);
        assert_eq!(spread[chosen], 0);
    }

    #[test]
    fn sticky_cookie_pins_while_the_backend_takes_requests() {
        let mut p = pool(Algorithm::RoundRobin, &[1, 1]);
        p.sticky_cookie = Some("SLUICE_AFFINITY".into());
        p.sticky_max_age = Some(60);
        let mut st = PoolState::new(&p, 1);
        let c = st.cookie(&p, 1).unwrap();
        assert!(
            c.starts_with("SLUICE_AFFINITY=") && c.ends_with("Max-Age=60"),
            "{c}"
        );
        assert!(
            !c.contains("10.0.0"),
            "the cookie does not reveal the address"
        );
        let value = c.split(';').next().unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: {value}\r\n\r\n");
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(req.as_bytes(), &mut f, 4096).unwrap();
        let client = IpAddr::from([1, 1, 1, 1]);
        for _ in 0..5 {
            assert_eq!(
                st.pick(&p, Some(&r), client, None),
                Some(Pick {
                    backend: 1,
                    set_cookie: false
                })
            );
        }
        p.backends[1].admin = Admin::Drain;
        assert_eq!(
            st.pick(&p, Some(&r), client, None),
            Some(Pick {
                backend: 0,
                set_cookie: true
            }),
            "a draining backend's cookie is replaced"
        );
    }

    #[test]
    fn consecutive_failures_eject_a_backend_for_a_while() {
        let p = pool(Algorithm::RoundRobin, &[1, 1]);
        let mut st = PoolState::new(&p, 1);
        st.at(1000);
        assert!(!st.record(&p, 0, true));
        assert!(!st.record(&p, 0, false), "a success resets the count");
        assert!(!st.record(&p, 0, true));
        assert!(!st.record(&p, 0, true));
        assert!(st.record(&p, 0, true), "the third in a row ejects");
        assert!(st.ejected(0));
        assert_eq!(picks(&p, &mut st, GET, 10), vec![0, 10]);
        // Every backend ejected: ejection is ignored rather than failing every request.
        for _ in 0..3 {
            st.record(&p, 1, true);
        }
        assert_eq!(picks(&p, &mut st, GET, 10), vec![5, 5]);
        st.at(2001);
        assert!(!st.ejected(0) && !st.ejected(1), "back after eject_for_ms");
        let never = Pool {
            eject_after: 0,
            ..p.clone()
        };
        for _ in 0..10 {
            assert!(!st.record(&never, 0, true));
        }
    }

    #[test]
    fn a_retry_avoids_the_failed_backend_and_none_up_is_none() {
        let mut p = pool(Algorithm::RoundRobin, &[1, 1]);
        let mut st = PoolState::new(&p, 1);
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(GET.as_bytes(), &mut f, 4096).unwrap();
        let c = IpAddr::from([1, 1, 1, 1]);
        for _ in 0..4 {
            assert_eq!(st.pick(&p, Some(&r), c, Some(0)).unwrap().backend, 1);
        }
        p.backends[1].health = Health::Down;
        assert_eq!(
            st.pick(&p, Some(&r), c, Some(0)).unwrap().backend,
            0,
            "the only one left"
        );
        p.backends[0].admin = Admin::Disabled;
        assert_eq!(st.pick(&p, Some(&r), c, None), None);
    }
}
