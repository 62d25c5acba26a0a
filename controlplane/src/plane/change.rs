//! Operator changes (`service add|remove`, `backend add|remove|set-weight|drain|enable|
//! disable`, and batches of them) applied to a candidate, never to the running state.

use super::{op_name, refused, BackendState, Candidate, Plane};
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
        backends: s
            .backends
            .iter()
            .map(backend_from_spec)
            .collect::<Result<_, _>>()?,
        health: None,
        all_down,
        l7: None,
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
                    if matches!(o, Op::Batch { .. } | Op::Reload) {
                        return Err(ErrorBody::new(
                            "bad_request",
                            format!("batch entry {i}: a batch holds changes only (no batch or reload inside)"),
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
            Op::BackendAdd { service, backend } => {
                let si = c.service_index(service)?;
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
