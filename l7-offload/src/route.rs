//! Which pool a request goes to: the service's routes in order, first match wins, every
//! condition a route gives must hold; then the default pool; else none (404).

use crate::http::Request;
use crate::setup::{HostMatch, L7Service, PathMatch, Route};

/// Where a request goes: the route that matched (none for the default pool) and the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub route: Option<usize>,
    pub pool: usize,
}

fn host_matches(m: &HostMatch, host: Option<&str>) -> bool {
    let Some(h) = host else { return false };
    match m {
        HostMatch::Exact(e) => h == e,
        // "*.example" is any subdomain, not "example" itself.
        HostMatch::Suffix(s) => h.len() > s.len() && h.ends_with(s.as_str()),
    }
}

fn matches(r: &Route, req: &Request<'_>, host: Option<&str>) -> bool {
    r.host.as_ref().is_none_or(|m| host_matches(m, host))
        && r.path.as_ref().is_none_or(|p| match p {
            PathMatch::Exact(e) => req.path() == e,
            PathMatch::Prefix(pre) => req.path().starts_with(pre.as_str()),
        })
        && r.method.as_ref().is_none_or(|m| req.method == m)
        && r.header.as_ref().is_none_or(|(n, v)| {
            req.fields
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(n) && f.value == v.as_bytes())
        })
}

/// The pool for `req` on `svc`, or `None` for 404.
pub fn choose(svc: &L7Service, req: &Request<'_>) -> Option<Choice> {
    let host = req.host();
    svc.routes
        .iter()
        .position(|r| matches(r, req, host.as_deref()))
        .map(|i| Choice {
            route: Some(i),
            pool: svc.routes[i].pool,
        })
        .or(svc.default_pool.map(|pool| Choice { route: None, pool }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;
    use crate::setup::*;

    fn svc() -> L7Service {
        let route = |host: Option<HostMatch>, path: Option<PathMatch>, pool| Route {
            host,
            path,
            pool,
            ..Route::default()
        };
        let mut canary = route(None, None, 3);
        canary.header = Some(("x-canary".into(), "1".into()));
        canary.method = Some("GET".into());
        L7Service {
            name: "site".into(),
            vip: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Http,
            default_pool: Some(9),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            routes: vec![
                canary,
                route(
                    Some(HostMatch::Exact("api.example".into())),
                    Some(PathMatch::Prefix("/v1/".into())),
                    0,
                ),
                route(Some(HostMatch::Suffix(".example".into())), None, 1),
                route(None, Some(PathMatch::Exact("/exact".into())), 2),
            ],
            pools: vec![],
            tls: None,
        }
    }

    fn pool_of(raw: &str) -> Option<usize> {
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(raw.as_bytes(), &mut f, 4096).unwrap();
        choose(&svc(), &r).map(|c| c.pool)
    }

    #[test]
    fn first_matching_route_wins_and_every_condition_holds() {
        assert_eq!(
            pool_of("GET /v1/x HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            Some(0)
        );
        assert_eq!(
            pool_of("GET /v1/x HTTP/1.1\r\nHost: API.example:80\r\n\r\n"),
            Some(0)
        );
        assert_eq!(
            pool_of("GET /v2/x HTTP/1.1\r\nHost: api.example\r\n\r\n"),
            Some(1),
            "path fails: the wildcard"
        );
        assert_eq!(
            pool_of("GET / HTTP/1.1\r\nHost: a.b.example\r\n\r\n"),
            Some(1)
        );
        assert_eq!(
            pool_of("GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
            Some(9),
            "*.example is not example"
        );
        assert_eq!(
            pool_of("GET /exact HTTP/1.1\r\nHost: other\r\n\r\n"),
            Some(2)
        );
        assert_eq!(
            pool_of("GET /exact/ HTTP/1.1\r\nHost: other\r\n\r\n"),
            Some(9)
        );
        assert_eq!(
            pool_of("GET / HTTP/1.1\r\nHost: a.example\r\nX-Canary: 1\r\n\r\n"),
            Some(3)
        );
        assert_eq!(
            pool_of("POST / HTTP/1.1\r\nHost: a.example\r\nX-Canary: 1\r\n\r\n"),
            Some(1),
            "method fails"
        );
        assert_eq!(
            pool_of("GET / HTTP/1.1\r\nHost: x\r\nX-Canary: 2\r\n\r\n"),
            Some(9)
        );
    }

    #[test]
    fn without_a_default_pool_nothing_matches() {
        let mut s = svc();
        s.default_pool = None;
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut f, 4096).unwrap();
        assert_eq!(choose(&s, &r), None);
    }
}
