//! Operator changes (`service add|remove`, `backend add|remove|set-weight|drain|enable|
//! disable`, an L7 service's `route add|remove` and `pool add|remove` and its pools'
//! backends, and batches of them) applied to a candidate, never to the running state.

use super::{not_found, op_name, refused, BackendState, Candidate, Plane};
use config::{AllDown, Backend, Service};
use ctl::{BackendSpec, ErrorBody, Op, ServiceSpec};
use dataplane::snapshot::Admin;
use std::net::SocketAddr;

fn backend_from_spec(b: &BackendSpec) -> Result<Backend, ErrorBody> {
    let address: SocketAddr = b.address.parse().map_err(|_| {
        refused(format!(
            "backend address `{}` is not an address with a port (like 10.1.0.1:8080)",
            b.address
        ))
    })?;
    let mac = match &b.mac {
        Some(m) => Some(m.parse().map_err(|e| {
            refused(format!(
                "backend MAC `{m}` is not a MAC address ({e}); write six hex octets like 02:00:00:00:01:01, or leave it out to have sluice resolve it"
            ))
        })?),
        None => None,
    };
    Ok(Backend {
        address,
        mac,
        weight: b.weight.unwrap_or(1),
        max_flows: b.max_flows,
    })
}

fn parse_addr(address: &str) -> Result<SocketAddr, ErrorBody> {
    address.parse().map_err(|_| {
        ErrorBody::new(
            "bad_request",
            format!("`{address}` is not an address with a port (like 10.1.0.1:8080)"),
        )
    })
}

/// The service a `service add` request describes, read field by field (its rules are
/// checked with the rest of the candidate by `Config::validate`). `i` is the place it will
/// take, which error keys name.
fn service_from_spec(i: usize, s: &ServiceSpec) -> Result<Service, ErrorBody> {
    let key = format!("service[{i}] (\"{}\")", s.name);
    let vip: SocketAddr = s.vip.parse().map_err(|_| {
        refused(format!(
            "`{key}.vip`: `{}` is not an address with a port (fix: write \"198.51.100.10:80\" or \"[2001:db8:100::10]:80\")",
            s.vip
        ))
    })?;
    let field = |k: &str, e: String| refused(format!("`{key}.{k}`: {e}"));
    let protocol = s.protocol.parse().map_err(|e| field("protocol", e))?;
    let forwarding = s.forwarding.parse().map_err(|e| field("forwarding", e))?;
    let all_down = match &s.all_down {
        Some(a) => a.parse().map_err(|e| field("all_down", e))?,
        None => AllDown::Drop,
    };
    Ok(Service {
        name: s.name.clone(),
        vip,
        protocol,
        forwarding,
        table_size: s.table_size.unwrap_or(config::DEFAULT_TABLE_SIZE),
        gue_port: s.gue_port.unwrap_or(config::DEFAULT_GUE_PORT),
        syn_proxy: match &s.syn_proxy {
            Some(m) => m.parse().map_err(|e| field("syn_proxy", e))?,
            None => Default::default(),
        },
        syn_proxy_auto_on: None,
        syn_proxy_auto_off: None,
        syn_proxy_mss: None,
        backends: s
            .backends
            .iter()
            .map(backend_from_spec)
            .collect::<Result<_, _>>()?,
        health: None,
        all_down,
        l7: None,
        rate_limit: None,
    })
}

impl Plane {
    /// Applies one change (or a batch) to the candidate.
    pub(super) fn apply(&self, c: &mut Candidate, op: &Op) -> Result<(), ErrorBody> {
        match op {
            Op::Batch { ops } => {
                if ops.is_empty() {
                    return Err(ErrorBody::new("bad_request", "the batch is empty"));
                }
                for (i, o) in ops.iter().enumerate() {
                    if matches!(
                        o,
                        Op::Batch { .. }
                            | Op::Reload
                            | Op::NodeDrain
                            | Op::NodeActivate
                            | Op::NodeStandby
                    ) {
                        return Err(ErrorBody::new(
                            "bad_request",
                            format!("batch entry {i}: a batch holds configuration changes only (no batch, reload or node verb inside)"),
                        ));
                    }
                    self.apply(c, o).map_err(|e| ErrorBody {
                        code: e.code,
                        message: format!("batch entry {i} ({}): {}", op_name(o), e.message),
                    })?;
                }
            }
            Op::ServiceAdd { spec } => {
                if c.cfg.services.iter().any(|s| s.name == spec.name) {
                    return Err(refused(format!(
                        "service `{}` exists; remove it first or choose another name",
                        spec.name
                    )));
                }
                let svc = service_from_spec(c.cfg.services.len(), spec)?;
                c.cfg.services.push(svc);
                c.notes.push(format!(
                    "service `{}` added ({} {} {}, {} backend(s))",
                    spec.name,
                    spec.protocol,
                    spec.vip,
                    spec.forwarding,
                    spec.backends.len()
                ));
            }
            Op::ServiceRemove { service } => {
                let si = c.service_index(service)?;
                c.cfg.services.remove(si);
                c.backends.retain(|(s, _), _| s != service);
                c.notes.push(format!(
                    "service `{service}` removed (its tracked flows are dropped as no_service)"
                ));
            }
            Op::BackendAdd {
                service,
                backend,
                pool: Some(pool),
            } => {
                let b = backend_from_spec(backend)?;
                let p = c.l7_pool(service, pool)?;
                if p.backends.iter().any(|o| o.address == b.address) {
                    return Err(refused(format!(
                        "pool `{pool}` of `{service}` already has backend {}",
                        b.address
                    )));
                }
                let (addr, weight) = (b.address, b.weight);
                p.backends.push(b);
                c.state(service, addr);
                c.notes.push(format!(
                    "backend {addr} added to pool `{pool}` of `{service}` (weight {weight})"
                ));
            }
            Op::BackendRemove {
                service,
                address,
                pool: Some(pool),
                ..
            } => {
                let addr = parse_addr(address)?;
                let p = c.l7_pool(service, pool)?;
                let Some(i) = p.backends.iter().position(|b| b.address == addr) else {
                    return Err(not_found(format!(
                        "pool `{pool}` of `{service}` has no backend {addr}"
                    )));
                };
                p.backends.remove(i);
                let still = c.cfg.services[c.service_index(service)?]
                    .all_backends()
                    .any(|b| b.address == addr);
                if !still {
                    c.backends.remove(&(service.clone(), addr));
                }
                c.notes.push(format!(
                    "backend {addr} removed from pool `{pool}` of `{service}` (its requests in flight finish)"
                ));
            }
            Op::BackendSetWeight {
                service,
                address,
                weight,
                pool: Some(pool),
            } => {
                let addr = parse_addr(address)?;
                let p = c.l7_pool(service, pool)?;
                let Some(b) = p.backends.iter_mut().find(|b| b.address == addr) else {
                    return Err(not_found(format!(
                        "pool `{pool}` of `{service}` has no backend {addr}"
                    )));
                };
                let old = b.weight;
                b.weight = *weight;
                c.notes.push(format!(
                    "backend {addr} in pool `{pool}` of `{service}`: weight {old} -> {weight}"
                ));
            }
            Op::RouteAdd {
                service,
                route,
                position,
            } => {
                let l7 = c.l7_service(service)?;
                let r = config::L7Route {
                    host: route.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: route.path_prefix.clone(),
                    path: route.path.clone(),
                    header: route.header.clone(),
                    method: route.method.clone(),
                    sni: route.sni.as_ref().map(|h| h.to_ascii_lowercase()),
                    alpn: route.alpn.clone(),
                    pool: route.pool.clone(),
                    ..Default::default()
                };
                let at = position.unwrap_or(l7.routes.len()).min(l7.routes.len());
                l7.routes.insert(at, r);
                c.notes.push(format!(
                    "route {at} of `{service}` added, to pool `{}`",
                    route.pool
                ));
            }
            Op::RouteRemove { service, index } => {
                let l7 = c.l7_service(service)?;
                if *index >= l7.routes.len() {
                    return Err(not_found(format!(
                        "`{service}` has {} route(s); there is no route {index} (see `sluicectl route list {service}`)",
                        l7.routes.len()
                    )));
                }
                let r = l7.routes.remove(*index);
                c.notes.push(format!(
                    "route {index} of `{service}` (to pool `{}`) removed",
                    r.pool
                ));
            }
            Op::PoolAdd { service, pool } => {
                let algorithm = match pool.algorithm.as_deref() {
                    None => config::L7Algorithm::RoundRobin,
                    Some(a) => a
                        .parse()
                        .map_err(|e: String| refused(format!("pool `{}`: {e}", pool.name)))?,
                };
                let backends = pool
                    .backends
                    .iter()
                    .map(backend_from_spec)
                    .collect::<Result<Vec<_>, _>>()?;
                let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
                let l7 = c.l7_service(service)?;
                if l7.pools.iter().any(|p| p.name == pool.name) {
                    return Err(refused(format!(
                        "`{service}` already has a pool `{}`",
                        pool.name
                    )));
                }
                l7.pools.push(config::L7Pool {
                    name: pool.name.clone(),
                    algorithm,
                    hash_on: pool.hash_on.clone(),
                    sticky_cookie: pool.sticky_cookie.clone(),
                    sticky_max_age: pool.sticky_max_age,
                    health: None,
                    eject_after: config::DEFAULT_EJECT_AFTER,
                    eject_for_ms: config::DEFAULT_EJECT_FOR_MS,
                    eject_on_5xx: false,
                    tls: None,
                    backends,
                });
                for a in addrs {
                    c.state(service, a);
                }
                c.notes.push(format!(
                    "pool `{}` added to `{service}` with {} backend(s)",
                    pool.name,
                    pool.backends.len()
                ));
            }
            Op::PoolRemove { service, pool } => {
                let l7 = c.l7_service(service)?;
                let Some(i) = l7.pools.iter().position(|p| &p.name == pool) else {
                    return Err(not_found(format!("`{service}` has no pool `{pool}`")));
                };
                l7.pools.remove(i);
                let si = c.service_index(service)?;
                let live: std::collections::HashSet<SocketAddr> = c.cfg.services[si]
                    .all_backends()
                    .map(|b| b.address)
                    .collect();
                c.backends
                    .retain(|(s, a), _| s != service || live.contains(a));
                c.notes
                    .push(format!("pool `{pool}` removed from `{service}`"));
            }
            Op::BackendAdd {
                service, backend, ..
            } => {
                let si = c.service_index(service)?;
                c.not_l7(si, "backend add")?;
                let b = backend_from_spec(backend)?;
                if c.cfg.services[si]
                    .backends
                    .iter()
                    .any(|o| o.address == b.address)
                {
                    return Err(refused(format!(
                        "service `{service}` already has backend {}; use set-weight or enable to change it",
                        b.address
                    )));
                }
                c.notes.push(format!(
                    "backend {} added to `{service}` (weight {})",
                    b.address, b.weight
                ));
                *c.state(service, b.address) = BackendState::default();
                c.cfg.services[si].backends.push(b);
            }
            Op::BackendRemove {
                service,
                address,
                force,
                ..
            } => {
                let (si, bi) = c.backend_index(service, address)?;
                let addr = c.cfg.services[si].backends[bi].address;
                if c.cfg.services[si].backends.len() == 1 {
                    return Err(refused(format!(
                        "{addr} is the last backend of `{service}`; a service needs at least one (remove the service instead)"
                    )));
                }
                let active = self.active_flows(service, addr);
                if *force || active == 0 {
                    c.cfg.services[si].backends.remove(bi);
                    c.backends.remove(&(service.clone(), addr));
                    c.notes.push(format!(
                        "backend {addr} removed from `{service}`{}",
                        if active > 0 {
                            format!(" with force: its {active} tracked flow(s) move on their next packet")
                        } else {
                            String::new()
                        }
                    ));
                } else {
                    let timeout = self.drain_timeout();
                    let st = c.state(service, addr);
                    st.admin = Admin::Drain;
                    st.drain_deadline.get_or_insert(self.now() + timeout);
                    st.remove_when_drained = true;
                    c.notes.push(format!(
                        "backend {addr} of `{service}` draining: {active} tracked flow(s); removed when they end or in {} s at most (use --force to remove now)",
                        timeout.as_secs()
                    ));
                }
            }
            Op::BackendSetWeight {
                service,
                address,
                weight,
                ..
            } => {
                let (si, bi) = c.backend_index(service, address)?;
                let b = &mut c.cfg.services[si].backends[bi];
                let old = b.weight;
                b.weight = *weight;
                c.notes.push(format!(
                    "backend {} of `{service}`: weight {old} -> {weight}",
                    b.address
                ));
            }
            Op::BackendDrain { service, address } => {
                let (_, _, addr) = c.backend_ref(service, address)?;

                let timeout = self.drain_timeout();
                let st = c.state(service, addr);
                if st.admin != Admin::Drain {
                    st.admin = Admin::Drain;
                    st.drain_deadline = Some(self.now() + timeout);
                }
                c.notes.push(format!(
                    "backend {addr} of `{service}` draining: no new flows; tracked flows continue for {} s at most",
                    timeout.as_secs()
                ));
            }
            Op::BackendEnable { service, address } => {
                let (_, _, addr) = c.backend_ref(service, address)?;

                let st = c.state(service, addr);
                let was = st.admin;
                st.admin = Admin::Ready;
                st.drain_deadline = None;
                st.remove_when_drained = false;
                c.notes.push(format!(
                    "backend {addr} of `{service}`: {} -> ready",
                    was.name()
                ));
            }
            Op::BackendDisable { service, address } => {
                let (_, _, addr) = c.backend_ref(service, address)?;

                let st = c.state(service, addr);
                st.admin = Admin::Disabled;
                st.drain_deadline = None;
                c.notes.push(format!(
                    "backend {addr} of `{service}` disabled: no new flows, tracked flows move on their next packet"
                ));
            }
            Op::Reload => {
                return Err(ErrorBody::new("bad_request", "reload cannot be batched"));
            }
            other => {
                return Err(ErrorBody::new(
                    "bad_request",
                    format!("`{}` changes nothing", op_name(other)),
                ))
            }
        }
        Ok(())
    }
}
