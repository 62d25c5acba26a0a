//! The L7 keys of a `[[service]]` (`l7`, `default_pool`, `[service.limits]`,
//! `[service.timeouts]`, `[[service.route]]`, `[[service.pool]]` with its backends and
//! health) and the `[l7]` section, read ([`parse_l7_service`], [`parse_l7_workers`]) and
//! then checked on the model ([`check_l7_service`], [`check_l7_workers`]).

use super::health::{check_health, parse_health};
use super::resolver_missing;
use super::service::{parse_backends, weight_problem};
use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;
use toml::Spanned;

fn header_rules(r: &Option<RawHeaderRules>) -> HeaderRules {
    match r {
        Some(r) => HeaderRules {
            set: r.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            add: r.add.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            remove: r.remove.clone(),
        },
        None => HeaderRules::default(),
    }
}

/// Reads a number that must fit `u32`.
fn small(ctx: &Ctx, v: &Spanned<u64>, key: &str) -> Result<u32, ConfigError> {
    u32::try_from(*v.get_ref()).or_else(|_| {
        ctx.err(
            v.span(),
            key,
            format!("{} is too large", v.get_ref()),
            "give a value below 4294967296",
        )
    })
}

/// The L7 part of service `key`, if it has one (`l7`, or any of the L7 keys).
pub(crate) fn parse_l7_service(
    ctx: &Ctx,
    key: &str,
    r: &RawService,
    spans: &mut Spans,
) -> Result<Option<L7Service>, ConfigError> {
    let any = r.l7.is_some()
        || r.default_pool.is_some()
        || r.limits.is_some()
        || r.timeouts.is_some()
        || !r.route.is_empty()
        || !r.pool.is_empty();
    if !any && *r.forwarding.get_ref() != Forwarding::L7 {
        return Ok(None);
    }
    let Some(l7) = &r.l7 else {
        return ctx.err(
            r.forwarding.span(),
            format!("{key}.l7"),
            "an L7 service needs `l7`, the protocol its clients speak",
            "add l7 = \"http\" to the service, with forwarding = \"l7\"",
        );
    };
    spans.put(format!("{key}.l7"), l7.span());
    if let Some(d) = &r.default_pool {
        spans.put(format!("{key}.default_pool"), d.span());
    }
    let mut limits = L7Limits::default();
    if let Some(l) = &r.limits {
        let l = l.get_ref();
        let k = |n: &str| format!("{key}.limits.{n}");
        if let Some(v) = &l.header_bytes {
            spans.put(k("header_bytes"), v.span());
            limits.header_bytes = small(ctx, v, &k("header_bytes"))?;
        }
        if let Some(v) = &l.header_count {
            spans.put(k("header_count"), v.span());
            limits.header_count = small(ctx, v, &k("header_count"))?;
        }
        if let Some(v) = &l.body_bytes {
            spans.put(k("body_bytes"), v.span());
            limits.body_bytes = *v.get_ref();
        }
        if let Some(v) = &l.connections {
            spans.put(k("connections"), v.span());
            limits.connections = small(ctx, v, &k("connections"))?;
        }
    }
    let mut timeouts = L7Timeouts::default();
    if let Some(t) = &r.timeouts {
        let t = t.get_ref();
        for (name, v, slot) in [
            (
                "client_header_ms",
                &t.client_header_ms,
                &mut timeouts.client_header_ms,
            ),
            (
                "client_idle_ms",
                &t.client_idle_ms,
                &mut timeouts.client_idle_ms,
            ),
            (
                "backend_connect_ms",
                &t.backend_connect_ms,
                &mut timeouts.backend_connect_ms,
            ),
            (
                "backend_response_ms",
                &t.backend_response_ms,
                &mut timeouts.backend_response_ms,
            ),
            ("pool_idle_ms", &t.pool_idle_ms, &mut timeouts.pool_idle_ms),
        ] {
            if let Some(v) = v {
                spans.put(format!("{key}.timeouts.{name}"), v.span());
                *slot = *v.get_ref();
            }
        }
    }
    let mut routes = Vec::with_capacity(r.route.len());
    for (j, sr) in r.route.iter().enumerate() {
        let rk = format!("{key}.route[{j}]");
        let x = sr.get_ref();
        spans.put(rk.clone(), sr.span());
        spans.put(format!("{rk}.pool"), x.pool.span());
        for (n, v) in [
            ("host", &x.host),
            ("path_prefix", &x.path_prefix),
            ("path", &x.path),
            ("header", &x.header),
            ("method", &x.method),
            ("sni", &x.sni),
            ("alpn", &x.alpn),
        ] {
            if let Some(v) = v {
                spans.put(format!("{rk}.{n}"), v.span());
            }
        }
        for n in ["request_headers", "response_headers"] {
            spans.put(format!("{rk}.{n}"), sr.span());
        }
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
        routes.push(L7Route {
            host: text(&x.host).map(|h| h.to_ascii_lowercase()),
            path_prefix: text(&x.path_prefix),
            path: text(&x.path),
            header: text(&x.header),
            method: text(&x.method),
            sni: text(&x.sni).map(|h| h.to_ascii_lowercase()),
            alpn: text(&x.alpn),
            pool: x.pool.get_ref().clone(),
            request_headers: header_rules(&x.request_headers),
            response_headers: header_rules(&x.response_headers),
        });
    }
    let mut pools = Vec::with_capacity(r.pool.len());
    for (j, sp) in r.pool.iter().enumerate() {
        let pk = format!("{key}.pool[{j}]");
        let p = sp.get_ref();
        spans.put(pk.clone(), sp.span());
        spans.put(format!("{pk}.name"), p.name.span());
        for (n, v) in [("hash_on", &p.hash_on), ("sticky_cookie", &p.sticky_cookie)] {
            if let Some(v) = v {
                spans.put(format!("{pk}.{n}"), v.span());
            }
        }
        if let Some(a) = &p.algorithm {
            spans.put(format!("{pk}.algorithm"), a.span());
        }
        if let Some(a) = &p.sticky_max_age {
            spans.put(format!("{pk}.sticky_max_age"), a.span());
        }
        if let Some(a) = &p.eject_after {
            spans.put(format!("{pk}.eject_after"), a.span());
        }
        if let Some(a) = &p.eject_for_ms {
            spans.put(format!("{pk}.eject_for_ms"), a.span());
        }
        let health = match &p.health {
            Some(h) => Some(parse_health(ctx, &pk, h.get_ref(), spans)?),
            None => None,
        };
        let tls = match &p.tls {
            Some(t) => Some(parse_pool_tls(ctx, &format!("{pk}.tls"), t, spans)?),
            None => None,
        };
        pools.push(L7Pool {
            name: p.name.get_ref().clone(),
            algorithm: p
                .algorithm
                .as_ref()
                .map_or(L7Algorithm::RoundRobin, |a| *a.get_ref()),
            hash_on: p.hash_on.as_ref().map(|h| h.get_ref().clone()),
            sticky_cookie: p.sticky_cookie.as_ref().map(|c| c.get_ref().clone()),
            sticky_max_age: p.sticky_max_age.as_ref().map(|a| *a.get_ref()),
            eject_after: p
                .eject_after
                .as_ref()
                .map_or(DEFAULT_EJECT_AFTER, |a| *a.get_ref()),
            eject_for_ms: p
                .eject_for_ms
                .as_ref()
                .map_or(DEFAULT_EJECT_FOR_MS, |a| *a.get_ref()),
            eject_on_5xx: p.eject_on_5xx.as_ref().is_some_and(|a| *a.get_ref()),
            health,
            tls,
            backends: parse_backends(ctx, &pk, &p.backend, spans)?,
        });
    }
    let tls = match &r.tls {
        None => None,
        Some(t) => {
            let t = t.get_ref();
            let mut out = L7Tls::default();
            let k = |n: &str| format!("{key}.tls.{n}");
            if let Some(v) = &t.versions {
                spans.put(k("versions"), v.span());
                out.versions = v.get_ref().clone();
            }
            if let Some(v) = &t.alpn {
                spans.put(k("alpn"), v.span());
                out.alpn = v.get_ref().clone();
            }
            if let Some(v) = &t.cipher_suites {
                spans.put(k("cipher_suites"), v.span());
                out.cipher_suites = v.get_ref().clone();
            }
            if let Some(v) = &t.session_tickets {
                spans.put(k("session_tickets"), v.span());
                out.session_tickets = *v.get_ref();
            }
            if let Some(v) = &t.session_cache {
                spans.put(k("session_cache"), v.span());
                out.session_cache = small(ctx, v, &k("session_cache"))?;
            }
            Some(out)
        }
    };
    let tls = match (tls, l7.get_ref()) {
        (None, L7Protocol::Tls) => Some(L7Tls::default()),
        (t, _) => t,
    };
    let mut certificates = Vec::with_capacity(r.certificate.len());
    for (j, sc) in r.certificate.iter().enumerate() {
        let ck = format!("{key}.certificate[{j}]");
        let c = sc.get_ref();
        spans.put(ck.clone(), sc.span());
        spans.put(format!("{ck}.names"), c.names.span());
        if let Some(d) = &c.default {
            spans.put(format!("{ck}.default"), d.span());
        }
        let cert = pem_file(ctx, &c.cert, &format!("{ck}.cert"), PemKind::Chain)?;
        let key_file = pem_file(ctx, &c.key, &format!("{ck}.key"), PemKind::Key)?;
        certificates.push(L7Certificate {
            names: c.names.get_ref().clone(),
            cert: cert.path,
            key: key_file.path,
            default: c.default.as_ref().is_some_and(|d| *d.get_ref()),
            chain_pem: cert.data,
            key_pem: key_file.data,
            not_after: cert.not_after,
            issuer: cert.issuer,
        });
    }
    Ok(Some(L7Service {
        l7: *l7.get_ref(),
        default_pool: r.default_pool.as_ref().map(|d| d.get_ref().clone()),
        limits,
        timeouts,
        routes,
        pools,
        tls,
        certificates,
    }))
}

/// `[service.pool.tls]`, its files read.
fn parse_pool_tls(
    ctx: &Ctx,
    tk: &str,
    t: &Spanned<RawPoolTls>,
    spans: &mut Spans,
) -> Result<L7PoolTls, ConfigError> {
    spans.put(tk.to_string(), t.span());
    let r = t.get_ref();
    let mut out = L7PoolTls {
        verify: r.verify.as_ref().is_none_or(|v| *v.get_ref()),
        server_name: r.server_name.as_ref().map(|s| s.get_ref().clone()),
        ..L7PoolTls::default()
    };
    if let Some(v) = &r.server_name {
        spans.put(format!("{tk}.server_name"), v.span());
    }
    if let Some(v) = &r.verify {
        spans.put(format!("{tk}.verify"), v.span());
    }
    if let Some(v) = &r.ca {
        spans.put(format!("{tk}.ca"), v.span());
        let f = pem_file(ctx, v, &format!("{tk}.ca"), PemKind::Bundle)?;
        out.ca = Some(f.path);
        out.ca_pem = f.data;
    }
    if let Some(v) = &r.client_cert {
        spans.put(format!("{tk}.client_cert"), v.span());
        let f = pem_file(ctx, v, &format!("{tk}.client_cert"), PemKind::Chain)?;
        out.client_cert = Some(f.path);
        out.client_cert_pem = f.data;
        out.client_not_after = f.not_after;
        out.client_issuer = f.issuer;
    }
    if let Some(v) = &r.client_key {
        spans.put(format!("{tk}.client_key"), v.span());
        let f = pem_file(ctx, v, &format!("{tk}.client_key"), PemKind::Key)?;
        out.client_key = Some(f.path);
        out.client_key_pem = f.data;
    }
    Ok(out)
}

enum PemKind {
    Chain,
    Key,
    /// CA certificates: at least one, none checked for dates (a bundle holds old roots).
    Bundle,
}

/// A PEM file as read: its path as used, its contents, and for a chain when its leaf
/// expires (seconds since 1970).
struct PemFile {
    path: String,
    data: Vec<u8>,
    not_after: i64,
    /// A chain's leaf's issuer.
    issuer: String,
}

/// Reads the PEM file `v` names (relative to the configuration file's directory) and checks
/// that it holds what `kind` says: a chain whose leaf is valid now, or a private key.
fn pem_file(
    ctx: &Ctx,
    v: &Spanned<String>,
    key: &str,
    kind: PemKind,
) -> Result<PemFile, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let given = std::path::Path::new(v.get_ref());
    let path = match ctx.file.and_then(|f| std::path::Path::new(f).parent()) {
        Some(dir) if given.is_relative() => dir.join(given),
        _ => given.to_path_buf(),
    };
    let shown = path.display().to_string();
    let data = std::fs::read(&path).or_else(|e| {
        ctx.err(
            v.span(),
            key,
            format!("cannot read {shown}: {e}"),
            "give the path of a readable PEM file (relative paths are from the configuration file's directory)",
        )
    })?;
    let bad = |what: String, fix: &str| ctx.err(v.span(), key, format!("{shown}{what}"), fix);
    let mut issuer = String::new();
    let not_after = match kind {
        PemKind::Bundle => {
            match CertificateDer::pem_slice_iter(&data).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if !certs.is_empty() => 0,
                _ => {
                    return bad(
                        " holds no PEM certificate".into(),
                        "give the CA certificates in PEM (-----BEGIN CERTIFICATE-----)",
                    )
                }
            }
        }
        PemKind::Key => {
            if PrivateKeyDer::from_pem_slice(&data).is_err() {
                return bad(
                    " holds no PEM private key".into(),
                    "give the private key in PEM (PKCS#8, PKCS#1 or SEC1: -----BEGIN PRIVATE KEY-----)",
                );
            }
            0
        }
        PemKind::Chain => {
            let leaf = match CertificateDer::pem_slice_iter(&data).collect::<Result<Vec<_>, _>>() {
                Ok(certs) if !certs.is_empty() => {
                    issuer = super::x509::issuer(&certs[0]).unwrap_or_default();
                    super::x509::validity(&certs[0])
                }
                _ => return bad(
                    " holds no PEM certificate".into(),
                    "give the certificate chain in PEM, leaf first (-----BEGIN CERTIFICATE-----)",
                ),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            match leaf {
                None => {
                    return bad(
                        ": the first certificate's validity cannot be read".into(),
                        "give an X.509 certificate chain in PEM, leaf first",
                    )
                }
                Some((_, until)) if until < now => {
                    return bad(
                        format!(": the certificate expired on {}", super::x509::date(until)),
                        "renew it, or give the renewed file",
                    )
                }
                Some((from, _)) if from > now => {
                    return bad(
                        format!(
                            ": the certificate is not valid before {}",
                            super::x509::date(from)
                        ),
                        "check the clock of the machine that issued it, or wait until then",
                    )
                }
                Some((_, until)) => until,
            }
        }
    };
    Ok(PemFile {
        path: shown,
        data,
        not_after,
        issuer,
    })
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What `hash_on` says, if it is well formed: (kind, name).
pub fn parse_hash_on(s: &str) -> Option<(&str, &str)> {
    if s == "source" {
        return Some(("source", ""));
    }
    let (kind, name) = s.split_once(':')?;
    (matches!(kind, "header" | "cookie") && token(name)).then_some((kind, name))
}

fn check_rules(key: &str, r: &HeaderRules) -> Result<(), Invalid> {
    let names = r
        .set
        .iter()
        .map(|(n, _)| n)
        .chain(r.add.iter().map(|(n, _)| n))
        .chain(r.remove.iter());
    for n in names {
        if !token(n) {
            return invalid(
                key,
                format!("`{n}` is not a header name"),
                "use letters, digits and '-' (for example \"X-Request-Source\")",
            );
        }
    }
    for (n, v) in r.set.iter().chain(r.add.iter()) {
        if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return invalid(
                key,
                format!("the value of `{n}` has a control character"),
                "header values are printable text",
            );
        }
    }
    Ok(())
}

/// The rules an L7 service follows, on the model.
pub(crate) fn check_l7_service(
    key: &str,
    s: &Service,
    l7: &L7Service,
    node: &Node,
) -> Result<(), Invalid> {
    if s.forwarding != Forwarding::L7 {
        return invalid(
            format!("{key}.forwarding"),
            format!(
                "forwarding `{}` does not use the L7 keys (`l7`, pools, routes)",
                s.forwarding.name()
            ),
            "set forwarding = \"l7\", or remove the L7 keys",
        );
    }
    if s.protocol != Protocol::Tcp {
        return invalid(
            format!("{key}.vip"),
            "an L7 service terminates TCP",
            "set protocol = \"tcp\"",
        );
    }
    if !s.backends.is_empty() {
        return invalid(
            format!("{key}.backend[0]"),
            "an L7 service sends requests to its pools' backends, not to [[service.backend]]",
            "move the backends into a [[service.pool]] as [[service.pool.backend]]",
        );
    }
    if l7.pools.is_empty() {
        return invalid(
            key,
            format!("L7 service `{}` has no pools", s.name),
            "add a [[service.pool]] with name = \"…\" and at least one [[service.pool.backend]]",
        );
    }
    for (j, p) in l7.pools.iter().enumerate() {
        if let Some(k) = p.backends.iter().position(|b| b.max_flows.is_some()) {
            return invalid(
                format!("{key}.pool[{j}].backend[{k}].max_flows"),
                "max_flows limits an L4 service's backend; an L7 pool's backends take requests over pooled connections",
                "leave max_flows out here (limit clients with [service.limits] connections)",
            );
        }
    }
    let lim = l7.limits;
    if !(256..=1_048_576).contains(&lim.header_bytes) {
        return invalid(
            format!("{key}.limits.header_bytes"),
            format!("{} is outside 256–1048576", lim.header_bytes),
            "the default is 16384; HAProxy's and nginx's defaults are 8–16 KiB",
        );
    }
    if !(1..=1000).contains(&lim.header_count) {
        return invalid(
            format!("{key}.limits.header_count"),
            format!("{} is outside 1–1000", lim.header_count),
            "the default is 100",
        );
    }
    if lim.connections == 0 {
        return invalid(
            format!("{key}.limits.connections"),
            "0 connections would refuse every client",
            "give at least 1 (the default is 100000 per L7 worker)",
        );
    }
    let t = l7.timeouts;
    for (n, v) in [
        ("client_header_ms", t.client_header_ms),
        ("client_idle_ms", t.client_idle_ms),
        ("backend_connect_ms", t.backend_connect_ms),
        ("backend_response_ms", t.backend_response_ms),
        ("pool_idle_ms", t.pool_idle_ms),
    ] {
        if v == 0 || v > 86_400_000 {
            return invalid(
                format!("{key}.timeouts.{n}"),
                format!("{v} ms is outside 1 ms – 24 h"),
                "give milliseconds, such as 30000",
            );
        }
    }
    for (j, p) in l7.pools.iter().enumerate() {
        let pk = format!("{key}.pool[{j}]");
        let n = &p.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid(
                format!("{pk}.name"),
                format!("`{n}` is not a valid pool name"),
                "use letters, digits, '-', '_' or '.'",
            );
        }
        if l7.pools[..j].iter().any(|o| &o.name == n) {
            return invalid(
                format!("{pk}.name"),
                format!("pool `{n}` is defined twice"),
                "give every [[service.pool]] of a service a distinct name",
            );
        }
        match (p.algorithm, &p.hash_on) {
            (L7Algorithm::Hash, None) => {
                return invalid(
                    format!("{pk}.algorithm"),
                    "algorithm `hash` needs `hash_on`",
                    "add hash_on = \"cookie:NAME\", \"header:NAME\" or \"source\"",
                )
            }
            (L7Algorithm::Hash, Some(h)) if parse_hash_on(h).is_none() => {
                return invalid(
                    format!("{pk}.hash_on"),
                    format!("`{h}` is not what to hash on"),
                    "write \"cookie:NAME\", \"header:NAME\" or \"source\"",
                )
            }
            (a, Some(_)) if a != L7Algorithm::Hash => {
                return invalid(
                    format!("{pk}.hash_on"),
                    format!(
                        "`hash_on` is used only with algorithm = \"hash\", not `{}`",
                        a.name()
                    ),
                    "set algorithm = \"hash\", or remove hash_on",
                )
            }
            _ => {}
        }
        if let Some(c) = &p.sticky_cookie {
            if !token(c) {
                return invalid(
                    format!("{pk}.sticky_cookie"),
                    format!("`{c}` is not a cookie name"),
                    "use letters, digits, '-' and '_', such as \"SLUICE_AFFINITY\"",
                );
            }
        }
        if p.sticky_max_age.is_some() && p.sticky_cookie.is_none() {
            return invalid(
                format!("{pk}.sticky_max_age"),
                "`sticky_max_age` is the lifetime of the sticky cookie, which is not set",
                "add sticky_cookie = \"SLUICE_AFFINITY\", or remove sticky_max_age",
            );
        }
        if p.eject_after > 1000 {
            return invalid(
                format!("{pk}.eject_after"),
                format!("{} failures in a row is more than 1000", p.eject_after),
                "the default is 5; 0 turns passive ejection off",
            );
        }
        if p.eject_for_ms == 0 || p.eject_for_ms > 86_400_000 {
            return invalid(
                format!("{pk}.eject_for_ms"),
                format!("{} ms is outside 1 ms – 24 h", p.eject_for_ms),
                "the default is 30000; to turn ejection off, set eject_after = 0",
            );
        }
        if p.backends.is_empty() {
            return invalid(
                pk,
                format!("pool `{n}` has no backends"),
                "add at least one [[service.pool.backend]] after the pool",
            );
        }
        for (b, be) in p.backends.iter().enumerate() {
            let bk = format!("{pk}.backend[{b}]");
            let a = be.address;
            if a.port() == 0 {
                return invalid(
                    format!("{bk}.address"),
                    "port 0 cannot be a backend port",
                    "give the port the backend listens on",
                );
            }
            if p.backends[..b].iter().any(|o| o.address == a) {
                return invalid(
                    format!("{bk}.address"),
                    format!("backend {a} is listed twice in pool `{n}`"),
                    "list each backend once; use `weight` to give it a larger share",
                );
            }
            if let Some(k) = resolver_missing(a.ip(), node.ipv4, node.ipv6) {
                return invalid(
                    format!("{bk}.address"),
                    format!("the L7 pool connects to {a} from the node's own address, and `{k}` is not set"),
                    format!("set `{k}` in [node]"),
                );
            }
            if let Some((message, fix)) = weight_problem(be.weight as u64) {
                return invalid(format!("{bk}.weight"), message, fix);
            }
        }
        if let Some(h) = &p.health {
            check_health(&pk, h)?;
        }
        if let Some(t) = &p.tls {
            check_pool_tls(&format!("{pk}.tls"), l7.l7, t)?;
        }
    }
    let pool_names: Vec<&str> = l7.pools.iter().map(|p| p.name.as_str()).collect();
    let unknown_pool = |k: String, p: &str| {
        invalid(
            k,
            format!("there is no pool `{p}` in this service"),
            format!("use one of: {}", pool_names.join(", ")),
        )
    };
    if let Some(d) = &l7.default_pool {
        if !pool_names.contains(&d.as_str()) {
            return unknown_pool(format!("{key}.default_pool"), d);
        }
    }
    for (j, r) in l7.routes.iter().enumerate() {
        let rk = format!("{key}.route[{j}]");
        if !pool_names.contains(&r.pool.as_str()) {
            return unknown_pool(format!("{rk}.pool"), &r.pool);
        }
        if let Some(h) = &r.host {
            if !host_pattern(h) {
                return invalid(
                    format!("{rk}.host"),
                    format!("`{h}` is not a host name"),
                    "write a name (\"api.example\") or a wildcard for its subdomains (\"*.example\"), without a port",
                );
            }
        }
        if r.path.is_some() && r.path_prefix.is_some() {
            return invalid(
                format!("{rk}.path"),
                "a route takes `path` or `path_prefix`, not both",
                "keep one of them",
            );
        }
        for (n, v) in [("path", &r.path), ("path_prefix", &r.path_prefix)] {
            if let Some(v) = v {
                if !v.starts_with('/') || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return invalid(
                        format!("{rk}.{n}"),
                        format!("`{v}` is not a path"),
                        "paths start with '/' and have no spaces, such as \"/v1/\"",
                    );
                }
            }
        }
        if let Some(h) = &r.header {
            let ok = h.split_once(':').is_some_and(|(n, v)| {
                token(n.trim_end()) && n == n.trim_end() && !v.trim().is_empty()
            });
            if !ok {
                return invalid(
                    format!("{rk}.header"),
                    format!("`{h}` is not `name: value`"),
                    "write the header name, a colon and the value, such as \"x-canary: 1\"",
                );
            }
        }
        if let Some(m) = &r.method {
            if !token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                return invalid(
                    format!("{rk}.method"),
                    format!("`{m}` is not a method"),
                    "methods are upper case, such as \"GET\" or \"POST\"",
                );
            }
        }
        check_rules(&format!("{rk}.request_headers"), &r.request_headers)?;
        check_rules(&format!("{rk}.response_headers"), &r.response_headers)?;
        check_hello_route(&rk, l7.l7, r)?;
    }
    if l7.l7 == L7Protocol::TlsPassthrough {
        check_passthrough_pools(key, l7)?;
    }
    check_tls(key, l7)
}

/// `[service.pool.tls]`: what re-encryption needs to be safe and to work.
fn check_pool_tls(tk: &str, l7: L7Protocol, t: &L7PoolTls) -> Result<(), Invalid> {
    if l7 == L7Protocol::TlsPassthrough {
        return invalid(
            tk,
            "[service.pool.tls] re-encrypts requests sluice decrypted; a tls-passthrough service relays the client's own TLS",
            "remove it (the backends get the client's TLS as it is), or terminate with l7 = \"tls\"",
        );
    }
    if t.verify && t.ca.is_none() {
        return invalid(
            format!("{tk}.ca"),
            "verifying the backends' certificates needs the CAs they chain to",
            "give ca = \"/etc/sluice/backend-ca.pem\" (the system's public CAs: /etc/ssl/certs/ca-certificates.crt), or set verify = false",
        );
    }
    match (&t.client_cert, &t.client_key) {
        (Some(_), None) => {
            return invalid(
                format!("{tk}.client_key"),
                "client_cert is given without its key",
                "add client_key = \"…\" (PEM), or remove client_cert",
            )
        }
        (None, Some(_)) => {
            return invalid(
                format!("{tk}.client_cert"),
                "client_key is given without its certificate",
                "add client_cert = \"…\" (PEM chain), or remove client_key",
            )
        }
        _ => {}
    }
    if let Some(n) = &t.server_name {
        let ip = n.parse::<std::net::IpAddr>().is_ok();
        if !ip && (n.starts_with("*.") || !host_pattern(n)) {
            return invalid(
                format!("{tk}.server_name"),
                format!("`{n}` is not a host name or an IP address"),
                "give the name the backends' certificates carry, such as \"backend.internal\"",
            );
        }
    }
    Ok(())
}

/// A route's `sni` and `alpn`, which only a `tls-passthrough` service can match (it reads
/// nothing but the ClientHello), and which are all such a service can match.
fn check_hello_route(rk: &str, l7: L7Protocol, r: &L7Route) -> Result<(), Invalid> {
    if l7 != L7Protocol::TlsPassthrough {
        for (n, given) in [("sni", r.sni.is_some()), ("alpn", r.alpn.is_some())] {
            if given {
                return invalid(
                    format!("{rk}.{n}"),
                    format!(
                        "`{n}` routes the connections of l7 = \"tls-passthrough\" by their ClientHello; this service is `{}`",
                        l7.name()
                    ),
                    "route by host (with l7 = \"tls\" the Host header names the site the SNI did), or set l7 = \"tls-passthrough\"",
                );
            }
        }
        return Ok(());
    }
    for (n, given) in [
        ("host", r.host.is_some()),
        ("path", r.path.is_some()),
        ("path_prefix", r.path_prefix.is_some()),
        ("header", r.header.is_some()),
        ("method", r.method.is_some()),
        ("request_headers", !r.request_headers.is_empty()),
        ("response_headers", !r.response_headers.is_empty()),
    ] {
        if given {
            return invalid(
                format!("{rk}.{n}"),
                format!("`{n}` is about HTTP requests, which a tls-passthrough service never decrypts"),
                "route by sni = \"name\" or \"*.example\" (and alpn), or terminate with l7 = \"tls\"",
            );
        }
    }
    if let Some(h) = &r.sni {
        if !host_pattern(h) || h.ends_with('.') {
            return invalid(
                format!("{rk}.sni"),
                format!("`{h}` is not a host name"),
                "write a name (\"db.example\") or a wildcard for its subdomains (\"*.example\")",
            );
        }
    }
    if let Some(a) = &r.alpn {
        if a.is_empty() || a.len() > 255 || a.bytes().any(|b| !b.is_ascii_graphic()) {
            return invalid(
                format!("{rk}.alpn"),
                format!("`{a}` is not an ALPN protocol name"),
                "give the name as clients offer it, such as \"h2\", \"http/1.1\" or \"acme-tls/1\"",
            );
        }
    }
    Ok(())
}

/// What a `tls-passthrough` pool cannot do: it never sees a request, so no cookie, header
/// or status reaches it.
fn check_passthrough_pools(key: &str, l7: &L7Service) -> Result<(), Invalid> {
    for (j, p) in l7.pools.iter().enumerate() {
        let pk = format!("{key}.pool[{j}]");
        let http_only = if p.sticky_cookie.is_some() {
            Some("sticky_cookie")
        } else if p.hash_on.as_deref().is_some_and(|h| h != "source") {
            Some("hash_on")
        } else if p.eject_on_5xx {
            Some("eject_on_5xx")
        } else {
            None
        };
        if let Some(n) = http_only {
            return invalid(
                format!("{pk}.{n}"),
                format!("`{n}` needs HTTP, which a tls-passthrough service never decrypts"),
                "use hash_on = \"source\" for affinity, or terminate with l7 = \"tls\"",
            );
        }
    }
    Ok(())
}

/// A host name, or `*.` and one (any subdomain of it).
fn host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
}

/// `l7 = "tls"` and its `[service.tls]` and `[[service.certificate]]`.
fn check_tls(key: &str, l7: &L7Service) -> Result<(), Invalid> {
    if l7.l7 != L7Protocol::Tls {
        if !l7.certificates.is_empty() {
            return invalid(
                format!("{key}.certificate[0]"),
                format!(
                    "certificates are for l7 = \"tls\"; this service is `{}`",
                    l7.l7.name()
                ),
                "set l7 = \"tls\" to terminate TLS, or remove the [[service.certificate]] tables",
            );
        }
        if l7.tls.is_some() {
            return invalid(
                format!("{key}.tls"),
                format!(
                    "[service.tls] is for l7 = \"tls\"; this service is `{}`",
                    l7.l7.name()
                ),
                "set l7 = \"tls\", or remove [service.tls]",
            );
        }
        return Ok(());
    }
    if l7.certificates.is_empty() {
        return invalid(
            format!("{key}.certificate"),
            "l7 = \"tls\" needs at least one certificate",
            "add a [[service.certificate]] with names, cert and key (PEM files)",
        );
    }
    let mut default = None;
    for (j, c) in l7.certificates.iter().enumerate() {
        let ck = format!("{key}.certificate[{j}]");
        if c.names.is_empty() {
            return invalid(
                format!("{ck}.names"),
                "a certificate needs the names it serves",
                "list the SNI names, such as [\"www.example\", \"*.example\"]",
            );
        }
        if let Some(n) = c.names.iter().find(|n| !host_pattern(n)) {
            return invalid(
                format!("{ck}.names"),
                format!("`{n}` is not a host name"),
                "write a name (\"www.example\") or a wildcard for one label below it (\"*.example\")",
            );
        }
        if c.default {
            if let Some(first) = default {
                return invalid(
                    format!("{ck}.default"),
                    format!("certificate[{first}] is the default already"),
                    "keep default = true on one certificate",
                );
            }
            default = Some(j);
        }
    }
    let tls = l7.tls.clone().unwrap_or_default();
    if tls.versions.is_empty() {
        return invalid(
            format!("{key}.tls.versions"),
            "no TLS version is offered",
            "give [\"1.2\", \"1.3\"], or one of them",
        );
    }
    for (i, v) in tls.versions.iter().enumerate() {
        if v != "1.2" && v != "1.3" {
            return invalid(
                format!("{key}.tls.versions"),
                format!("`{v}` is not a TLS version sluice offers"),
                "give \"1.2\" and/or \"1.3\" (older versions are not safe to offer)",
            );
        }
        if tls.versions[..i].contains(v) {
            return invalid(
                format!("{key}.tls.versions"),
                format!("`{v}` is listed twice"),
                "list each version once",
            );
        }
    }
    if tls.alpn.is_empty() || tls.alpn.iter().any(|a| a.is_empty() || a.len() > 255) {
        return invalid(
            format!("{key}.tls.alpn"),
            "ALPN protocol names are 1 to 255 bytes, and at least one is needed",
            "give [\"http/1.1\"]",
        );
    }
    if let Some(c) = tls
        .cipher_suites
        .iter()
        .find(|c| !TLS_CIPHER_SUITES.contains(&c.as_str()))
    {
        return invalid(
            format!("{key}.tls.cipher_suites"),
            format!("`{c}` is not a cipher suite sluice offers"),
            format!("use some of: {}", TLS_CIPHER_SUITES.join(", ")),
        );
    }
    if !tls.cipher_suites.is_empty() {
        for (v, prefix) in [("1.3", "TLS13_"), ("1.2", "TLS_ECDHE_")] {
            if tls.versions.iter().any(|x| x == v)
                && !tls.cipher_suites.iter().any(|c| c.starts_with(prefix))
            {
                return invalid(
                    format!("{key}.tls.cipher_suites"),
                    format!("TLS {v} is offered, but none of its cipher suites"),
                    format!("add a {prefix}… suite, or remove \"{v}\" from versions"),
                );
            }
        }
    }
    if let Some(a) = tls.alpn.iter().find(|a| a.as_str() != "http/1.1") {
        return invalid(
            format!("{key}.tls.alpn"),
            format!("`{a}` is not a protocol the L7 pool speaks"),
            "give [\"http/1.1\"] (HTTP/2 is not supported yet)",
        );
    }
    if tls.session_cache > 10_000_000 {
        return invalid(
            format!("{key}.tls.session_cache"),
            format!("{} sessions is more than 10000000", tls.session_cache),
            format!("the default is {DEFAULT_SESSION_CACHE}; 0 turns the cache off"),
        );
    }
    Ok(())
}

/// Reads `[l7]`.
pub(crate) fn parse_l7_workers(
    ctx: &Ctx,
    r: &RawL7Workers,
    spans: &mut Spans,
) -> Result<L7Workers, ConfigError> {
    let mut w = L7Workers::default();
    if let Some(v) = &r.workers {
        spans.put("l7.workers", v.span());
        w.workers = *v.get_ref() as usize;
    }
    if let Some(v) = &r.cores {
        spans.put("l7.cores", v.span());
        w.cores = v.get_ref().clone();
    }
    if let Some(v) = &r.upstream_ports {
        spans.put("l7.upstream_ports", v.span());
        let [lo, hi] = *v.get_ref();
        w.upstream_ports = (lo, hi);
    }
    if let Some(v) = &r.tcp_rx_buffer {
        spans.put("l7.tcp_rx_buffer", v.span());
        w.tcp_rx_buffer = small(ctx, v, "l7.tcp_rx_buffer")?;
    }
    if let Some(v) = &r.tcp_tx_buffer {
        spans.put("l7.tcp_tx_buffer", v.span());
        w.tcp_tx_buffer = small(ctx, v, "l7.tcp_tx_buffer")?;
    }
    if let Some(v) = &r.ring {
        spans.put("l7.ring", v.span());
        w.ring = small(ctx, v, "l7.ring")?;
    }
    if let Some(v) = &r.max_idle_per_backend {
        spans.put("l7.max_idle_per_backend", v.span());
        w.max_idle_per_backend = small(ctx, v, "l7.max_idle_per_backend")?;
    }
    Ok(w)
}

/// The rules `[l7]` follows, given the node and the services.
pub(crate) fn check_l7_workers(
    w: &L7Workers,
    node: &Node,
    services: &[Service],
) -> Result<(), Invalid> {
    if !(1..=64).contains(&w.workers) {
        return invalid(
            "l7.workers",
            format!("{} L7 workers is outside 1–64", w.workers),
            "the default is 1; give one per core you set aside for L7",
        );
    }
    if !w.cores.is_empty() && w.cores.len() != w.workers {
        return invalid(
            "l7.cores",
            format!("{} cores for {} L7 workers", w.cores.len(), w.workers),
            "list one core per worker, or leave `cores` out to let the scheduler place them",
        );
    }
    let (lo, hi) = w.upstream_ports;
    if lo < 1024 || lo > hi || ((hi - lo) as usize + 1) < w.workers * 64 {
        return invalid(
            "l7.upstream_ports",
            format!("[{lo}, {hi}] is not a range of at least 64 ports per L7 worker above 1023"),
            "the default is [61000, 65535]",
        );
    }
    let uses_l7 = services.iter().any(|s| s.l7.is_some());
    // The pool's source ports are the node's only while an L7 service runs; without one,
    // SNAT may use every port.
    let (slo, shi) = node.snat_ports;
    if uses_l7 && lo <= shi && slo <= hi {
        return invalid(
            "l7.upstream_ports",
            format!("[{lo}, {hi}] overlaps node.snat_ports [{slo}, {shi}]"),
            "give the two ranges distinct ports (the defaults are [1024, 32767] and [61000, 65535])",
        );
    }
    let need = services
        .iter()
        .filter_map(|s| s.l7.as_ref())
        .map(|l| l.limits.header_bytes)
        .max()
        .unwrap_or(0);
    if uses_l7 && w.tcp_rx_buffer < need.max(4096) {
        return invalid(
            "l7.tcp_rx_buffer",
            format!(
                "{} bytes cannot hold a request head of {need} bytes (limits.header_bytes)",
                w.tcp_rx_buffer
            ),
            format!("give at least {}", need.max(4096)),
        );
    }
    for (n, v) in [
        ("tcp_rx_buffer", w.tcp_rx_buffer),
        ("tcp_tx_buffer", w.tcp_tx_buffer),
    ] {
        if !(4096..=16 << 20).contains(&v) {
            return invalid(
                format!("l7.{n}"),
                format!("{v} bytes is outside 4 KiB – 16 MiB"),
                "the default is 65536",
            );
        }
    }
    if !(1..=1_000_000).contains(&w.max_idle_per_backend) {
        return invalid(
            "l7.max_idle_per_backend",
            format!("{} is outside 1–1000000", w.max_idle_per_backend),
            "the default is 1024",
        );
    }
    if !(64..=1 << 20).contains(&w.ring) {
        return invalid(
            "l7.ring",
            format!("{} is outside 64–1048576", w.ring),
            "the default is 4096",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::{Config, ConfigError};

    /// The configuration contract of the L7 issue, as written there.
    pub(crate) const SITE: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"

[[service]]
name = "site"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"

[service.limits]
header_bytes = 16384
header_count = 100
body_bytes = 10485760
connections = 100000

[service.timeouts]
client_header_ms = 10000
client_idle_ms = 60000
backend_connect_ms = 2000
backend_response_ms = 30000
pool_idle_ms = 30000

[[service.route]]
host = "api.example"
path_prefix = "/v1/"
header = "x-canary: 1"
method = "GET"
pool = "api"

[[service.pool]]
name = "api"
algorithm = "round-robin"
sticky_cookie = "SLUICE_AFFINITY"
sticky_max_age = 3600

[service.pool.health]
type = "http"
path = "/health"

[[service.pool.backend]]
address = "10.99.0.11:8080"
weight = 1

[[service.pool]]
name = "www"
algorithm = "hash"
hash_on = "cookie:session"

[[service.pool.backend]]
address = "10.99.0.12:8080"
"#;

    fn err(src: &str) -> ConfigError {
        Config::from_toml(src, Some("t.toml")).unwrap_err()
    }

    #[test]
    fn the_contract_parses_with_every_key_and_defaults_elsewhere() {
        let c = Config::from_toml(SITE, None).unwrap();
        let s = &c.services[0];
        assert_eq!(s.forwarding, Forwarding::L7);
        let l7 = s.l7.as_ref().unwrap();
        assert_eq!(l7.l7, L7Protocol::Http);
        assert_eq!(l7.default_pool.as_deref(), Some("www"));
        assert_eq!(l7.limits, L7Limits::default());
        assert_eq!(l7.timeouts, L7Timeouts::default());
        assert_eq!(l7.routes[0].host.as_deref(), Some("api.example"));
        assert_eq!(l7.routes[0].header.as_deref(), Some("x-canary: 1"));
        assert_eq!(l7.pools[0].sticky_max_age, Some(3600));
        assert!(l7.pools[0].health.is_some());
        assert_eq!(l7.pools[1].algorithm, L7Algorithm::Hash);
        assert_eq!(l7.pools[1].backends[0].weight, 1);
        assert_eq!(c.l7, L7Workers::default());
        // Without the optional tables, the same defaults.
        let bare = SITE.split("[service.limits]").next().unwrap().to_string()
            + &SITE[SITE.find("[[service.pool]]").unwrap()..];
        let b = Config::from_toml(&bare, None).unwrap();
        assert_eq!(
            b.services[0].l7.as_ref().unwrap().limits,
            L7Limits::default()
        );
        assert!(b.services[0].l7.as_ref().unwrap().routes.is_empty());
    }

    /// The TLS issue's contract for termination, with the L7 pool's test certificates.
    fn secure() -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../l7-offload/tests/tls");
        format!(
            r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"

[[service]]
name = "secure"
vip = "10.99.0.100:443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls"
default_pool = "www"

[service.tls]
versions = ["1.2", "1.3"]
alpn = ["http/1.1"]

[[service.certificate]]
names = ["www.example", "*.example"]
cert = "{dir}/www.pem"
key = "{dir}/www.key"
default = true

[[service.certificate]]
names = ["*.img.example"]
cert = "{dir}/img.pem"
key = "{dir}/img.key"

[[service.pool]]
name = "www"

[[service.pool.backend]]
address = "10.99.0.12:8080"
"#
        )
    }

    #[test]
    fn the_tls_contract_parses_and_its_mistakes_are_named() {
        let src = secure();
        let c = Config::from_toml(&src, None).unwrap();
        let l7 = c.services[0].l7.as_ref().unwrap();
        assert_eq!(l7.l7, L7Protocol::Tls);
        assert_eq!(l7.tls, Some(L7Tls::default()));
        assert_eq!(l7.certificates.len(), 2);
        assert!(l7.certificates[0].default && !l7.certificates[1].default);
        assert!(l7.certificates[1]
            .chain_pem
            .starts_with(b"-----BEGIN CERTIFICATE-----"));
        // [service.tls] is optional; it round-trips through the writer, files read again.
        let bare = src.replace(
            "[service.tls]\nversions = [\"1.2\", \"1.3\"]\nalpn = [\"http/1.1\"]\n",
            "",
        );
        assert_eq!(Config::from_toml(&bare, None).unwrap(), c);
        let text = c.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text, None).unwrap(), c, "{text}");
        // Resumption can be turned off, by tickets and by the cache each.
        let full = src.replace(
            "alpn = [\"http/1.1\"]",
            "alpn = [\"http/1.1\"]\nsession_tickets = false\nsession_cache = 0",
        );
        let t = Config::from_toml(&full, None).unwrap().services[0]
            .l7
            .clone()
            .unwrap()
            .tls
            .unwrap();
        assert!(!t.session_tickets && t.session_cache == 0);
        for (bad, key, fix) in [
            (
                src.replace("www.key", "nothere.key"),
                "certificate[0].key",
                "readable PEM",
            ),
            (
                src.replace("img.key", "img.pem"),
                "certificate[1].key",
                "BEGIN PRIVATE KEY",
            ),
            (
                src.replace("www.pem", "old.pem")
                    .replace("www.key", "old.key"),
                "certificate[0].cert",
                "expired on 2001-01-01",
            ),
            (
                src.replace("www.pem", "www.key"),
                "certificate[0].cert",
                "BEGIN CERTIFICATE",
            ),
            (
                src.replace("l7 = \"tls\"", "l7 = \"http\""),
                "certificate[0]",
                "l7 = \"tls\"",
            ),
            (
                src.replace("\"1.2\", \"1.3\"", "\"1.1\""),
                "tls.versions",
                "1.3",
            ),
            (
                src.replace("alpn = [\"http/1.1\"]", "alpn = [\"h2\"]"),
                "tls.alpn",
                "http/1.1",
            ),
            (
                src.replace(
                    "alpn = [\"http/1.1\"]",
                    "alpn = [\"http/1.1\"]\ncipher_suites = [\"TLS_RSA_WITH_RC4_128_MD5\"]",
                ),
                "tls.cipher_suites",
                "TLS13_AES_128_GCM_SHA256",
            ),
            (
                src.replace(
                    "alpn = [\"http/1.1\"]",
                    "alpn = [\"http/1.1\"]\ncipher_suites = [\"TLS13_AES_128_GCM_SHA256\"]",
                ),
                "tls.cipher_suites",
                "remove \"1.2\"",
            ),
            (
                src.replace("[\"*.img.example\"]", "[\"img example\"]"),
                "certificate[1].names",
                "wildcard",
            ),
            (
                src.replace(
                    "alpn = [\"http/1.1\"]",
                    "alpn = [\"http/1.1\"]\nsession_cache = 20000000",
                ),
                "tls.session_cache",
                "0 turns the cache off",
            ),
            (
                src.replace("key = \"", "default = true\nkey = \"")
                    .replacen("default = true\nkey", "key", 1),
                "certificate[1].default",
                "one certificate",
            ),
        ] {
            let e = Config::from_toml(&bad, None).unwrap_err();
            assert!(e.key.ends_with(key), "{key}: {e}");
            assert!(e.fix.contains(fix) || e.message.contains(fix), "{key}: {e}");
            assert!(e.line.is_some(), "{key}: no line in {e}");
        }
        // No certificate at all.
        let no_certs = src
            .split("[[service.certificate]]")
            .next()
            .unwrap()
            .to_string()
            + &src[src.find("[[service.pool]]").unwrap()..];
        let e = Config::from_toml(&no_certs, None).unwrap_err();
        assert!(
            e.key.ends_with("certificate") && e.fix.contains("[[service.certificate]]"),
            "{e}"
        );
    }

    const RELAY: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"

[[service]]
name = "relay"
vip = "10.99.0.100:443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls-passthrough"
default_pool = "www"

[[service.route]]
sni = "DB.example"
pool = "db"

[[service.route]]
sni = "*.img.example"
alpn = "h2"
pool = "www"

[[service.pool]]
name = "www"
algorithm = "hash"
hash_on = "source"

[[service.pool.backend]]
address = "10.99.0.12:8443"

[[service.pool]]
name = "db"

[[service.pool.backend]]
address = "10.99.0.13:8443"
"#;

    #[test]
    fn re_encryption_parses_and_its_mistakes_are_named() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../l7-offload/tests/tls");
        let src = secure().replace(
            "[[service.pool.backend]]\naddress = \"10.99.0.12:8080\"",
            &format!(
                "[service.pool.tls]\nca = \"{dir}/ca.pem\"\nserver_name = \"www.example\"\nclient_cert = \"{dir}/client.pem\"\nclient_key = \"{dir}/client.key\"\n\n[[service.pool.backend]]\naddress = \"10.99.0.12:8443\""
            ),
        );
        let c = Config::from_toml(&src, None).unwrap();
        let t = c.services[0].l7.as_ref().unwrap().pools[0]
            .tls
            .clone()
            .unwrap();
        assert!(t.verify, "verification is on unless turned off");
        assert_eq!(t.server_name.as_deref(), Some("www.example"));
        assert!(t.ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(!t.client_key_pem.is_empty());
        let text = c.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text, None).unwrap(), c, "{text}");
        for (bad, key, fix) in [
            (
                src.replace(&format!("ca = \"{dir}/ca.pem\"\n"), ""),
                "pool[0].tls.ca",
                "verify = false",
            ),
            (
                src.replace("ca.pem", "ca.key"),
                "pool[0].tls.ca",
                "BEGIN CERTIFICATE",
            ),
            (
                src.replace(&format!("client_key = \"{dir}/client.key\"\n"), ""),
                "pool[0].tls.client_key",
                "client_key",
            ),
            (
                src.replace(
                    "server_name = \"www.example\"",
                    "server_name = \"*.example\"",
                ),
                "pool[0].tls.server_name",
                "backend.internal",
            ),
            (
                src.replace("server_name = ", "verify = \"no\"\nserver_name = "),
                "",
                "bool",
            ),
        ] {
            let e = Config::from_toml(&bad, None).unwrap_err();
            assert!(e.key.ends_with(key), "{key}: {e}");
            assert!(e.fix.contains(fix) || e.message.contains(fix), "{key}: {e}");
            assert!(e.line.is_some(), "{key}: no line in {e}");
        }
        // Without a CA, verify = false is what it takes.
        let unverified = src.replace(&format!("ca = \"{dir}/ca.pem\"\n"), "verify = false\n");
        let c = Config::from_toml(&unverified, None).unwrap();
        assert!(
            !c.services[0].l7.as_ref().unwrap().pools[0]
                .tls
                .as_ref()
                .unwrap()
                .verify
        );
        // Re-encryption has no place in a passthrough service.
        let e = Config::from_toml(
            &RELAY.replace(
                "[[service.pool.backend]]\naddress = \"10.99.0.13:8443\"",
                "[service.pool.tls]\nverify = false\n\n[[service.pool.backend]]\naddress = \"10.99.0.13:8443\"",
            ),
            None,
        )
        .unwrap_err();
        assert!(e.key.ends_with("pool[1].tls"), "{e}");
    }

    #[test]
    fn the_passthrough_contract_parses_and_its_mistakes_are_named() {
        let c = Config::from_toml(RELAY, None).unwrap();
        let l7 = c.services[0].l7.as_ref().unwrap();
        assert_eq!(l7.l7, L7Protocol::TlsPassthrough);
        assert_eq!(
            l7.routes[0].sni.as_deref(),
            Some("db.example"),
            "lower case"
        );
        assert_eq!(l7.routes[1].alpn.as_deref(), Some("h2"));
        assert_eq!(l7.tls, None);
        let text = c.to_toml().unwrap();
        assert!(text.contains("l7 = \"tls-passthrough\""), "{text}");
        assert_eq!(Config::from_toml(&text, None).unwrap(), c, "{text}");
        for (bad, key, fix) in [
            (
                RELAY.replace("sni = \"DB.example\"", "host = \"db.example\""),
                "route[0].host",
                "sni",
            ),
            (
                RELAY.replace("sni = \"DB.example\"", "sni = \"db example\""),
                "route[0].sni",
                "wildcard",
            ),
            (
                RELAY.replace("alpn = \"h2\"", "alpn = \"\""),
                "route[1].alpn",
                "acme-tls/1",
            ),
            (
                RELAY.replace("hash_on = \"source\"", "hash_on = \"cookie:s\""),
                "pool[0].hash_on",
                "source",
            ),
            (
                RELAY.replace("l7 = \"tls-passthrough\"", "l7 = \"http\""),
                "route[0].sni",
                "route by host",
            ),
            (
                RELAY.replace("l7 = \"tls-passthrough\"", "l7 = \"tls-passthru\""),
                // A parse error: the line, and the values that are allowed.
                "",
                "tls-passthrough",
            ),
        ] {
            let e = Config::from_toml(&bad, None).unwrap_err();
            assert!(e.key.ends_with(key), "{key}: {e}");
            assert!(e.fix.contains(fix) || e.message.contains(fix), "{key}: {e}");
            assert!(e.line.is_some(), "{key}: no line in {e}");
        }
    }

    #[test]
    fn an_l7_configuration_round_trips_through_the_writer() {
        let mut c = Config::from_toml(SITE, None).unwrap();
        let l7 = c.services[0].l7.as_mut().unwrap();
        l7.routes[0]
            .request_headers
            .set
            .push(("X-Via".into(), "sluice".into()));
        l7.routes[0].response_headers.remove.push("server".into());
        c.l7.workers = 2;
        c.l7.cores = vec![0, 1];
        let text = c.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text, None).unwrap(), c, "{text}");
    }

    #[test]
    fn mistakes_name_the_key_the_line_and_the_fix() {
        let line_of =
            |src: &str, needle: &str| src[..src.find(needle).unwrap()].matches('\n').count() + 1;
        let cases: Vec<(String, &str, &str)> = vec![
            (
                SITE.replace("pool = \"api\"\n", "pool = \"apj\"\n"),
                "route[0].pool",
                "use one of: api, www",
            ),
            (
                SITE.replace("default_pool = \"www\"", "default_pool = \"w\""),
                "default_pool",
                "use one of",
            ),
            (
                SITE.replace("hash_on = \"cookie:session\"\n", ""),
                "pool[1].algorithm",
                "hash_on",
            ),
            (
                SITE.replace("cookie:session", "cookie session"),
                "pool[1].hash_on",
                "cookie:NAME",
            ),
            (SITE.replace("l7 = \"http\"\n", ""), "l7", "l7 = \"http\""),
            (
                SITE.replace("forwarding = \"l7\"", "forwarding = \"nat\""),
                "forwarding",
                "forwarding = \"l7\"",
            ),
            (
                SITE.replace("host = \"api.example\"", "host = \"api.example:80\""),
                "route[0].host",
                "without a port",
            ),
            (
                SITE.replace("path_prefix = \"/v1/\"", "path_prefix = \"v1\""),
                "route[0].path_prefix",
                "start with '/'",
            ),
            (
                SITE.replace("header = \"x-canary: 1\"", "header = \"x-canary\""),
                "route[0].header",
                "name, a colon",
            ),
            (
                SITE.replace("method = \"GET\"", "method = \"get\""),
                "route[0].method",
                "upper case",
            ),
            (
                SITE.replace("header_count = 100", "header_count = 0"),
                "limits.header_count",
                "100",
            ),
            (
                SITE.replace("client_idle_ms = 60000", "client_idle_ms = 0"),
                "timeouts.client_idle_ms",
                "milliseconds",
            ),
            (
                SITE.replace("name = \"www\"", "name = \"api\""),
                "pool[1].name",
                "distinct",
            ),
            (
                SITE.replace("sticky_cookie = \"SLUICE_AFFINITY\"\n", ""),
                "pool[0].sticky_max_age",
                "sticky_cookie",
            ),
            (
                SITE.replace("ipv4 = \"10.99.0.1\"\n", "").replace(
                    "gateway = \"10.98.0.2\"",
                    "gateway_mac = \"02:00:00:00:00:fe\"",
                ),
                "backend[0].address",
                "node.ipv4",
            ),
            (
                format!("{SITE}\n[l7]\nupstream_ports = [1024, 2000]\n"),
                "l7.upstream_ports",
                "distinct ports",
            ),
            (
                format!("{SITE}\n[l7]\nworkers = 2\ncores = [0]\n"),
                "l7.cores",
                "one core per worker",
            ),
            (
                format!("{SITE}\n[[service.backend]]\naddress = \"10.99.0.13:80\"\n"),
                "backend[0]",
                "[[service.pool.backend]]",
            ),
        ];
        for (src, key, fix) in &cases {
            let e = err(src);
            assert!(e.key.ends_with(key), "{key}: {e}");
            assert!(e.fix.contains(fix) || e.message.contains(fix), "{key}: {e}");
            assert!(e.line.is_some(), "{key}: no line in {e}");
        }
        // The line is the key's own.
        let src = SITE.replace("pool = \"api\"\n", "pool = \"apj\"\n");
        assert_eq!(err(&src).line, Some(line_of(&src, "pool = \"apj\"")));
        // Unknown keys in the new tables are refused by name, with their line.
        let e = err(&SITE.replace("header_count = 100", "header_counts = 100"));
        assert!(e.message.contains("header_counts"), "{e}");
        assert_eq!(e.line, Some(line_of(SITE, "header_count = 100")));
    }

    #[test]
    fn a_changed_model_is_held_to_the_same_rules() {
        let good = Config::from_toml(SITE, None).unwrap();
        let mut c = good.clone();
        c.services[0].l7.as_mut().unwrap().routes[0].pool = "nope".into();
        let e = c.validate().unwrap_err();
        assert!(e.key.ends_with("route[0].pool") && e.line.is_none(), "{e}");
        let mut c = good.clone();
        c.services[0].l7.as_mut().unwrap().pools[0].backends.clear();
        assert!(c.validate().unwrap_err().message.contains("no backends"));
        assert_eq!(good.validate(), Ok(()));
    }
}
