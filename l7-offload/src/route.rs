//! Which pool a request goes to: the service's routes in order, first match wins, every
//! condition a route gives must hold; then the default pool; else none (404). A
//! tls-passthrough connection goes by its ClientHello instead ([`choose_hello`]).

use crate::hello::ClientHello;
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

/// The pool for a tls-passthrough connection whose ClientHello is `hello`: routes whose
/// `sni` is the exact name first, then those whose wildcard covers it, then those without
/// `sni` (each in order, and each route's `alpn`, if it has one, must be offered); then the
/// default pool; else none (refused). A ClientHello without SNI matches only routes without
/// `sni`.
pub fn choose_hello(svc: &L7Service, hello: &ClientHello<'_>) -> Option<Choice> {
    let name = hello.server_name();
    let alpn_ok = |r: &Route| r.alpn.as_ref().is_none_or(|a| hello.offers(a.as_bytes()));
    let rank = |r: &Route| -> Option<u8> {
        match (&r.sni, name) {
            (None, _) => Some(2),
            (Some(HostMatch::Exact(e)), Some(n)) => n.eq_ignore_ascii_case(e).then_some(0),
            (Some(HostMatch::Suffix(s)), Some(n)) => (n.len() > s.len()
                && n.as_bytes()[n.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes()))
            .then_some(1),
            (Some(_), None) => None,
        }
    };
    (0..3u8)
        .find_map(|want| {
            svc.routes
                .iter()
                .position(|r| rank(r) == Some(want) && alpn_ok(r))
        })
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

    /// The wire form of a ClientHello with `sni` and `alpn` (made by rustls, as a client
    /// would send it).
    fn hello_bytes(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.into())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        // An IP address as the server name: rustls then sends no SNI.
        cfg.enable_sni = sni.is_some();
        let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("x.invalid"))
            .unwrap()
            .to_owned();
        let mut conn = rustls::ClientConnection::new(cfg.into(), name).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn passthrough_picks_exact_then_wildcard_then_any_then_default() {
        let route = |sni: Option<HostMatch>, alpn: Option<&str>, pool| Route {
            sni,
            alpn: alpn.map(String::from),
            pool,
            ..Route::default()
        };
        let mut s = svc();
        s.protocol = Protocol::TlsPassthrough;
        s.routes = vec![
            route(None, Some("acme-tls/1"), 5),
            route(Some(HostMatch::Suffix(".example".into())), None, 1),
            route(Some(HostMatch::Exact("db.example".into())), None, 0),
            route(Some(HostMatch::Exact("h2.example".into())), Some("h2"), 2),
        ];
        let pool = |s: &L7Service, sni: Option<&str>, alpn: &[&str]| {
            let mut wire = hello_bytes(sni, alpn);
            let h = crate::hello::read_client_hello(&mut wire, 16384).unwrap();
            choose_hello(s, &h).map(|c| c.pool)
        };
        assert_eq!(
            pool(&s, Some("db.example"), &[]),
            Some(0),
            "exact before wildcard"
        );
        assert_eq!(
            pool(&s, Some("DB.Example"), &[]),
            Some(0),
            "without regard to case"
        );
        assert_eq!(pool(&s, Some("www.example"), &[]), Some(1));
        assert_eq!(pool(&s, Some("h2.example"), &["h2"]), Some(2));
        assert_eq!(
            pool(&s, Some("h2.example"), &["http/1.1"]),
            Some(1),
            "alpn fails"
        );
        assert_eq!(pool(&s, Some("db.example"), &["acme-tls/1"]), Some(0));
        assert_eq!(pool(&s, Some("other.test"), &["acme-tls/1"]), Some(5));
        assert_eq!(pool(&s, Some("other.test"), &[]), Some(9), "default pool");
        assert_eq!(pool(&s, None, &[]), Some(9), "no SNI: default pool");
        assert_eq!(
            pool(&s, Some("example"), &[]),
            Some(9),
            "*.example is not example"
        );
        s.default_pool = None;
        assert_eq!(pool(&s, None, &[]), None, "no SNI and no default: refused");
        assert_eq!(pool(&s, None, &["acme-tls/1"]), Some(5));
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
