//! `[[service]]` and `[[service.backend]]`, in two steps. [`parse_service`] reads a service
//! from the file: addresses, MACs and numbers that must fit their type, recording where each
//! key is. [`check_services`] then checks the model — ports, families, forwarding rules,
//! table sizes, weights, duplicates, next hops to resolve — and it is the same check
//! `Config::validate` runs on a configuration changed live, so a file and a control request
//! are held to the same rules.

use super::health::{check_health, parse_health};
use super::{family, parse_mac, resolver_missing};
use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;
use crate::{is_prime, next_prime};
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

/// The key of service `i` once its name is known.
pub(crate) fn service_key(i: usize, name: &str) -> String {
    format!("service[{i}] (\"{name}\")")
}

/// What is wrong with a Maglev table size `n`, if anything: (message, fix).
fn table_size_problem(n: u64) -> Option<(String, String)> {
    if is_prime(n) && n <= MAX_TABLE_SIZE as u64 && n >= 7 {
        return None;
    }
    let hint = if n <= MAX_TABLE_SIZE as u64 {
        format!(
            "the nearest prime at or above is {}; ",
            next_prime(n.max(7))
        )
    } else {
        String::new()
    };
    Some((
        format!("Maglev table size {n} must be a prime between 7 and {MAX_TABLE_SIZE}"),
        format!("{hint}common choices are 65537 (default) and 655373"),
    ))
}

/// What is wrong with a backend weight `w`, if anything: (message, fix).
pub(crate) fn weight_problem(w: u64) -> Option<(String, String)> {
    (w == 0 || w > 65535).then(|| {
        (
            format!("weight {w} is out of range"),
            "give a weight from 1 to 65535; to stop new flows to a backend, drain it (sluicectl backend drain) or remove it".into(),
        )
    })
}

/// Reads service `i` from the file, recording the span of each of its keys in `spans`.
pub(crate) fn parse_service(
    ctx: &Ctx,
    i: usize,
    s: &Spanned<RawService>,
    spans: &mut Spans,
) -> Result<Service, ConfigError> {
    let r = s.get_ref();
    let name = r.name.get_ref().clone();
    spans.put(format!("service[{i}].name"), r.name.span());
    spans.put(format!("service[{i}].vip"), r.vip.span());
    let key = service_key(i, &name);
    spans.put(key.clone(), s.span());
    spans.put(format!("{key}.vip"), r.vip.span());
    spans.put(format!("{key}.forwarding"), r.forwarding.span());
    let vip: SocketAddr = r.vip.get_ref().parse().or_else(|_| {
        ctx.err(
            r.vip.span(),
            format!("{key}.vip"),
            format!("`{}` is not an address with a port", r.vip.get_ref()),
            "write \"198.51.100.10:80\" or \"[2001:db8:100::10]:80\"",
        )
    })?;
    let table_size = match &r.table_size {
        Some(t) => {
            spans.put(format!("{key}.table_size"), t.span());
            let n = *t.get_ref();
            match u32::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    let (message, fix) = table_size_problem(n).unwrap_or_default();
                    return ctx.err(t.span(), format!("{key}.table_size"), message, fix);
                }
            }
        }
        None => DEFAULT_TABLE_SIZE,
    };
    let gue_port = match &r.gue_port {
        Some(p) => {
            spans.put(format!("{key}.gue_port"), p.span());
            *p.get_ref()
        }
        None => DEFAULT_GUE_PORT,
    };
    let backends = parse_backends(ctx, &key, &r.backend, spans)?;
    let l7 = super::l7::parse_l7_service(ctx, &key, r, spans)?;
    let health = match &r.health {
        Some(h) => Some(parse_health(ctx, &key, h.get_ref(), spans)?),
        None => None,
    };
    let rate_limit = r.rate_limit.as_ref().map(|rl| {
        spans.put(format!("{key}.rate_limit"), rl.span());
        let rl = rl.get_ref();
        let mut take = |v: &Option<toml::Spanned<u64>>, k: &str| {
            v.as_ref().map(|x| {
                spans.put(format!("{key}.rate_limit.{k}"), x.span());
                *x.get_ref()
            })
        };
        let clamp = |v: Option<u64>| v.map(|x| x.min(u64::from(u32::MAX)) as u32);
        RateLimit {
            new_flows_per_source: clamp(take(&rl.new_flows_per_source, "new_flows_per_source")),
            source_burst: clamp(take(&rl.source_burst, "source_burst")),
            packets: take(&rl.packets, "packets"),
            packets_burst: take(&rl.packets_burst, "packets_burst"),
        }
    });
    let mut take = |v: &Option<Spanned<u64>>, k: &str| {
        v.as_ref().map(|x| {
            spans.put(format!("{key}.{k}"), x.span());
            *x.get_ref()
        })
    };
    let syn_proxy_auto_on = take(&r.syn_proxy_auto_on, "syn_proxy_auto_on");
    let syn_proxy_auto_off = take(&r.syn_proxy_auto_off, "syn_proxy_auto_off");
    let syn_proxy_mss = take(&r.syn_proxy_mss, "syn_proxy_mss");
    if let Some(m) = &r.syn_proxy {
        spans.put(format!("{key}.syn_proxy"), m.span());
    }
    // Out-of-range numbers saturate here and are refused, by name, by check_services.
    let clamp32 = |v: Option<u64>| v.map(|x| x.min(u64::from(u32::MAX)) as u32);
    Ok(Service {
        name,
        vip,
        protocol: *r.protocol.get_ref(),
        forwarding: *r.forwarding.get_ref(),
        table_size,
        gue_port,
        syn_proxy: r
            .syn_proxy
            .as_ref()
            .map_or_else(Default::default, |m| *m.get_ref()),
        syn_proxy_auto_on: clamp32(syn_proxy_auto_on),
        syn_proxy_auto_off: clamp32(syn_proxy_auto_off),
        syn_proxy_mss: syn_proxy_mss.map(|x| x.min(u64::from(u16::MAX)) as u16),
        backends,
        health,
        all_down: r.all_down.as_ref().map_or(AllDown::Drop, |a| *a.get_ref()),
        l7,
        rate_limit,
    })
}

/// Reads the `[[…backend]]` tables under `key`.
pub(crate) fn parse_backends(
    ctx: &Ctx,
    key: &str,
    raw: &[Spanned<RawBackend>],
    spans: &mut Spans,
) -> Result<Vec<Backend>, ConfigError> {
    let mut backends: Vec<Backend> = Vec::with_capacity(raw.len());
    for (j, sb) in raw.iter().enumerate() {
        let bkey = format!("{key}.backend[{j}]");
        let b = sb.get_ref();
        spans.put(bkey.clone(), sb.span());
        spans.put(format!("{bkey}.address"), b.address.span());
        // A missing MAC is refused at the address that needs it.
        spans.put(
            format!("{bkey}.mac"),
            b.mac.as_ref().map_or(b.address.span(), |m| m.span()),
        );
        let address: SocketAddr = b.address.get_ref().parse().or_else(|_| {
            ctx.err(
                b.address.span(),
                format!("{bkey}.address"),
                format!("`{}` is not an address with a port", b.address.get_ref()),
                "write \"10.1.0.1:8080\" or \"[2001:db8:1::1]:8080\"",
            )
        })?;
        let mac = match &b.mac {
            Some(m) => Some(parse_mac(ctx, m, &format!("{bkey}.mac"))?),
            None => None,
        };
        let weight = match &b.weight {
            Some(w) => {
                spans.put(format!("{bkey}.weight"), w.span());
                match u32::try_from(*w.get_ref()) {
                    Ok(w) => w,
                    Err(_) => {
                        let (message, fix) = weight_problem(*w.get_ref()).unwrap_or_default();
                        return ctx.err(w.span(), format!("{bkey}.weight"), message, fix);
                    }
                }
            }
            None => 1,
        };
        let max_flows = match &b.max_flows {
            Some(m) => {
                spans.put(format!("{bkey}.max_flows"), m.span());
                match u32::try_from(*m.get_ref()) {
                    Ok(v) if (1..=100_000_000).contains(&v) => Some(v),
                    _ => {
                        return ctx.err(
                            m.span(),
                            format!("{bkey}.max_flows"),
                            format!("{} flows is out of range", m.get_ref()),
                            "give the most flows this backend takes at once, 1 to 100000000, or leave max_flows out for no limit",
                        )
                    }
                }
            }
            None => None,
        };
        backends.push(Backend {
            address,
            mac,
            weight,
            max_flows,
        });
    }
    Ok(backends)
}

/// Every service on its own, then across services: names and VIPs used once, and no more
/// next hops to resolve than the data path can.
pub(crate) fn check_services(services: &[Service], node: &Node) -> Result<(), Invalid> {
    for (i, svc) in services.iter().enumerate() {
        check_service(i, svc, node)?;
        if let Some(l7) = &svc.l7 {
            super::l7::check_l7_service(&service_key(i, &svc.name), svc, l7, node)?;
        }
        let key = format!("service[{i}]");
        if let Some(o) = services[..i].iter().find(|o| o.name == svc.name) {
            return invalid(
                format!("{key}.name"),
                format!("service name `{}` is used twice", o.name),
                "give every [[service]] a distinct name",
            );
        }
        if let Some(o) = services[..i]
            .iter()
            .find(|o| o.vip == svc.vip && o.protocol == svc.protocol)
        {
            return invalid(
                format!("{key}.vip"),
                format!(
                    "{} {} is already the VIP of service `{}`",
                    svc.protocol.name(),
                    svc.vip,
                    o.name
                ),
                "use a different address or port, or merge the two services",
            );
        }
    }
    let resolved: std::collections::HashSet<IpAddr> = services
        .iter()
        .flat_map(|s| s.all_backends())
        .filter(|b| b.mac.is_none())
        .map(|b| b.address.ip())
        .chain(node.gateway.filter(|_| node.gateway_mac.is_none()))
        .collect();
    if resolved.len() > MAX_RESOLVED_NEXT_HOPS {
        return invalid(
            "service",
            format!(
                "{} backend addresses have no `mac`: sluice resolves at most {MAX_RESOLVED_NEXT_HOPS}",
                resolved.len()
            ),
            "give the other backends' `mac` in the configuration",
        );
    }
    Ok(())
}

/// The rules one service (number `i`) must follow.
fn check_service(i: usize, s: &Service, node: &Node) -> Result<(), Invalid> {
    let name = &s.name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return invalid(
            format!("service[{i}].name"),
            format!("`{name}` is not a valid service name"),
            "use 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    let key = service_key(i, name);
    let vip = s.vip;
    if vip.port() == 0 {
        return invalid(
            format!("{key}.vip"),
            "port 0 cannot be a service port",
            "give the port clients connect to, such as \":80\"",
        );
    }
    if let Some((message, fix)) = table_size_problem(s.table_size as u64) {
        return invalid(format!("{key}.table_size"), message, fix);
    }
    if let Some(rl) = &s.rate_limit {
        check_rate_limit(&key, s, rl)?;
    }
    check_syn_proxy(&key, s)?;
    if s.gue_port == 0 {
        return invalid(
            format!("{key}.gue_port"),
            "port 0 cannot carry GUE",
            format!("use the GUE port your backends' `ip fou add port` listens on (IANA's is {DEFAULT_GUE_PORT})"),
        );
    }
    let forwarding = s.forwarding;
    if matches!(
        forwarding,
        Forwarding::Snat | Forwarding::Ipip | Forwarding::Gue
    ) {
        let missing = match vip {
            SocketAddr::V4(_) => node.ipv4.is_none().then_some("node.ipv4"),
            SocketAddr::V6(_) => node.ipv6.is_none().then_some("node.ipv6"),
        };
        if let Some(k) = missing {
            return invalid(
                format!("{key}.forwarding"),
                format!(
                    "forwarding `{}` sends from the node's own {} address, and `{k}` is not set",
                    forwarding.name(),
                    family(vip.ip())
                ),
                format!("set `{k}` in [node]"),
            );
        }
    }
    if s.forwarding == Forwarding::L7 && s.l7.is_none() {
        return invalid(
            format!("{key}.l7"),
            "an L7 service needs `l7` and its pools",
            "add l7 = \"http\" and a [[service.pool]] with its [[service.pool.backend]] tables to the service",
        );
    }
    if s.forwarding == Forwarding::L7 || s.l7.is_some() {
        // The pools hold the backends; `check_l7_service` checks them.
        return Ok(());
    }
    if s.backends.is_empty() {
        return invalid(
            key,
            format!("service `{name}` has no backends"),
            "add at least one [[service.backend]] table after the service",
        );
    }
    if s.backends.len() > MAX_BACKENDS {
        return invalid(
            key,
            format!(
                "{} backends is more than the {MAX_BACKENDS} a service can have",
                s.backends.len()
            ),
            "split the backends over several services",
        );
    }
    for (j, b) in s.backends.iter().enumerate() {
        let bkey = format!("{key}.backend[{j}]");
        let address = b.address;
        if address.is_ipv4() != vip.is_ipv4() {
            return invalid(format!("{bkey}.address"), format!("backend {address} is {} but the VIP {vip} is {}", family(address.ip()), family(vip.ip())), "give backends of the VIP's address family, or make a separate service for the other family");
        }
        if address.port() == 0 {
            return invalid(
                format!("{bkey}.address"),
                "port 0 cannot be a backend port",
                "give the port the backend listens on",
            );
        }
        if !forwarding.translates() && address.port() != vip.port() {
            return invalid(
                format!("{bkey}.address"),
                format!("forwarding `{}` delivers packets with the VIP's port unchanged, so the backend port must be {} (got {})", forwarding.name(), vip.port(), address.port()),
                format!("use port {} here, or forwarding = \"nat\" to translate ports", vip.port()),
            );
        }
        if s.backends[..j].iter().any(|o| o.address == address) {
            return invalid(
                format!("{bkey}.address"),
                format!("backend {address} is listed twice in service `{name}`"),
                "list each backend once; use `weight` to give it a larger share",
            );
        }
        if b.mac.is_none() {
            if let Some(k) = resolver_missing(address.ip(), node.ipv4, node.ipv6) {
                return invalid(
                    format!("{bkey}.mac"),
                    format!("backend {address} has no `mac`, and resolving it needs the node's own {} address, but `{k}` is not set", family(address.ip())),
                    format!("set `{k}` in [node] (sluice's ARP / neighbour requests come from it), or give the backend's `mac`"),
                );
            }
        }
        if let Some((message, fix)) = weight_problem(b.weight as u64) {
            return invalid(format!("{bkey}.weight"), message, fix);
        }
    }
    if (s.table_size as usize) < s.backends.len() * 100 {
        return invalid(
            format!("{key}.table_size"),
            format!("a Maglev table of {} entries is too small for {} backends (it needs at least 100 entries per backend to balance)", s.table_size, s.backends.len()),
            format!("set table_size to a prime of at least {}", next_prime(s.backends.len() as u64 * 100)),
        );
    }
    if let Some(h) = &s.health {
        check_health(&key, h)?;
    }
    Ok(())
}

/// `syn_proxy` and the keys beside it: a `nat` or `snat` TCP service, the auto thresholds
/// only with `auto` and in order, an MSS a link can carry.
fn check_syn_proxy(key: &str, s: &Service) -> Result<(), Invalid> {
    let k = |x: &str| format!("{key}.{x}");
    let mode = s.syn_proxy;
    if mode != SynProxyMode::Off {
        if !matches!(s.forwarding, Forwarding::Nat | Forwarding::Snat) {
            return invalid(
                k("syn_proxy"),
                format!(
                    "a SYN proxy must see both directions of every connection, and with forwarding = \"{}\" the backends' replies do not pass through sluice",
                    s.forwarding.name()
                ),
                "use forwarding = \"nat\" or \"snat\", or set syn_proxy = \"off\" (the half-open share of [conntrack] and [service.rate_limit] protect the other modes)",
            );
        }
        if s.protocol != Protocol::Tcp {
            return invalid(
                k("syn_proxy"),
                "a SYN proxy answers TCP handshakes; this service is UDP",
                "set syn_proxy = \"off\" (or leave it out) on UDP services",
            );
        }
    }
    for (name, v) in [
        ("syn_proxy_auto_on", s.syn_proxy_auto_on),
        ("syn_proxy_auto_off", s.syn_proxy_auto_off),
    ] {
        let Some(v) = v else { continue };
        if mode != SynProxyMode::Auto {
            return invalid(
                k(name),
                format!(
                    "{name} applies to syn_proxy = \"auto\" and this service's syn_proxy is \"{}\"",
                    mode.name()
                ),
                format!("set syn_proxy = \"auto\", or leave {name} out"),
            );
        }
        if v == 0 || v > 100_000_000 {
            return invalid(
                k(name),
                format!("{v} is out of range"),
                "give SYNs per second to the service, from 1 to 100000000",
            );
        }
    }
    let on = s.syn_proxy_auto_on.unwrap_or(DEFAULT_SYN_PROXY_AUTO_ON);
    if let Some(off) = s.syn_proxy_auto_off {
        if off >= on {
            return invalid(
                k("syn_proxy_auto_off"),
                format!("syn_proxy_auto_off ({off}) must be below syn_proxy_auto_on ({on}), or the proxy would switch on and off with every second"),
                format!("give a rate under {on} SYNs per second, or leave it out for half of syn_proxy_auto_on"),
            );
        }
    }
    if let Some(m) = s.syn_proxy_mss {
        if mode == SynProxyMode::Off {
            return invalid(
                k("syn_proxy_mss"),
                "syn_proxy_mss applies to a service with a SYN proxy, and this service's syn_proxy is \"off\"",
                "set syn_proxy = \"on\" or \"auto\", or leave syn_proxy_mss out",
            );
        }
        if !(536..=9000).contains(&m) {
            return invalid(
                k("syn_proxy_mss"),
                format!("MSS {m} is out of range"),
                "give the largest TCP payload the path from clients to the backends carries, from 536 to 9000 (1460 for a 1500-byte MTU over IPv4, 1440 over IPv6)",
            );
        }
    }
    Ok(())
}

/// `[service.rate_limit]`: rates and bursts in range, at least one limit, an L4 service.
fn check_rate_limit(key: &str, s: &Service, rl: &RateLimit) -> Result<(), Invalid> {
    let k = |x: &str| format!("{key}.rate_limit.{x}");
    if s.l7.is_some() {
        return invalid(
            format!("{key}.rate_limit"),
            "rate limits apply to L4 services; an L7 service's clients are limited by [service.limits]",
            "remove [service.rate_limit] from this service, or put the limit on an L4 service",
        );
    }
    if rl.new_flows_per_source.is_none() && rl.packets.is_none() {
        return invalid(
            format!("{key}.rate_limit"),
            "[service.rate_limit] sets no limit",
            "set new_flows_per_source (new flows per second per client), packets (per second to the service), or both",
        );
    }
    if rl.new_flows_per_source.is_none() && rl.source_burst.is_some() {
        return invalid(
            k("source_burst"),
            "a burst without its rate",
            "set new_flows_per_source too, or leave source_burst out",
        );
    }
    if rl.packets.is_none() && rl.packets_burst.is_some() {
        return invalid(
            k("packets_burst"),
            "a burst without its rate",
            "set packets too, or leave packets_burst out",
        );
    }
    for (name, v, most) in [
        (
            "new_flows_per_source",
            rl.new_flows_per_source.map(u64::from),
            10_000_000,
        ),
        ("source_burst", rl.source_burst.map(u64::from), 10_000_000),
        ("packets", rl.packets, 1_000_000_000),
        ("packets_burst", rl.packets_burst, 1_000_000_000),
    ] {
        if let Some(v) = v {
            if v == 0 || v > most {
                return invalid(
                    k(name),
                    format!("{v} is out of range"),
                    format!("give a whole number from 1 to {most} (per second for a rate, at once for a burst)"),
                );
            }
        }
    }
    Ok(())
}
