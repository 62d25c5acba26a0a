//! `[node]`: read from the file ([`parse_node`]), then checked on the model ([`check_node`]).
use super::{family, parse_mac, resolver_missing};
use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Reads `[node]`, recording where its keys are.
pub(crate) fn parse_node(ctx: &Ctx, n: &RawNode, spans: &mut Spans) -> Result<Node, ConfigError> {
    let mac = parse_mac(ctx, &n.mac, "node.mac")?;
    let gateway_mac = match &n.gateway_mac {
        Some(m) => Some(parse_mac(ctx, m, "node.gateway_mac")?),
        None => None,
    };
    let ipv4 = match &n.ipv4 {
        Some(v) => Some(v.get_ref().parse::<Ipv4Addr>().or_else(|_| {
            ctx.err(
                v.span(),
                "node.ipv4",
                format!("`{}` is not an IPv4 address", v.get_ref()),
                "write a dotted quad such as \"192.0.2.1\"",
            )
        })?),
        None => None,
    };
    let ipv6 = match &n.ipv6 {
        Some(v) => Some(v.get_ref().parse::<Ipv6Addr>().or_else(|_| {
            ctx.err(
                v.span(),
                "node.ipv6",
                format!("`{}` is not an IPv6 address", v.get_ref()),
                "write it without brackets, such as \"2001:db8::1\"",
            )
        })?),
        None => None,
    };
    let snat_ports = match &n.snat_ports {
        Some(r) => {
            spans.put("node.snat_ports", r.span());
            let [lo, hi] = *r.get_ref();
            (lo, hi)
        }
        None => (1024, 32767),
    };
    let gateway = match &n.gateway {
        Some(v) => {
            spans.put("node.gateway", v.span());
            Some(v.get_ref().parse::<IpAddr>().or_else(|_| {
                ctx.err(
                    v.span(),
                    "node.gateway",
                    format!("`{}` is not an IP address", v.get_ref()),
                    "give the router's address, such as \"192.0.2.254\" or \"2001:db8::fe\"",
                )
            })?)
        }
        // "No next hop" is said at the node's MAC, the one key [node] must have.
        None => {
            spans.put("node.gateway", n.mac.span());
            None
        }
    };
    if let Some(m) = &n.tunnel_mtu {
        spans.put("node.tunnel_mtu", m.span());
    }
    if let Some(v) = &n.tunnel_fragment {
        spans.put("node.tunnel_fragment", v.span());
    }
    if let Some(v) = &n.vlan {
        spans.put("node.vlan", v.span());
    }
    let start_standby = match &n.start_as {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "active" => false,
            "standby" => true,
            other => {
                return ctx.err(
                    v.span(),
                    "node.start_as",
                    format!("`{other}` is not a state to start in"),
                    "write \"active\" (serve at once) or \"standby\" (wait for `sluicectl node activate`, as keepalived's notify hook sends)",
                )
            }
        },
    };
    Ok(Node {
        mac,
        ipv4,
        ipv6,
        gateway_mac,
        gateway,
        snat_ports,
        tunnel_mtu: n.tunnel_mtu.as_ref().map(|m| *m.get_ref()),
        start_standby,
        tunnel_fragment: n.tunnel_fragment.as_ref().is_some_and(|v| *v.get_ref()),
        vlan: n.vlan.as_ref().map(|v| *v.get_ref()),
    })
}

/// The rules `[node]` must follow.
pub(crate) fn check_node(n: &Node) -> Result<(), Invalid> {
    if n.tunnel_fragment && n.tunnel_mtu.is_none() {
        return invalid(
            "node.tunnel_fragment",
            "fragmenting tunnel packets needs the MTU to fragment to",
            "set node.tunnel_mtu (the MTU of the path to the backends), or leave tunnel_fragment out",
        );
    }
    if let Some(v) = n.vlan {
        if !(1..=4094).contains(&v) {
            return invalid(
                "node.vlan",
                format!("{v} is not a VLAN id (1 to 4094; 0 and 4095 are reserved)"),
                "give the 802.1Q VLAN id the link carries sluice's traffic on, or leave vlan out for an untagged link",
            );
        }
    }
    let (lo, hi) = n.snat_ports;
    if lo == 0 || lo >= hi || (hi - lo) < 63 {
        return invalid(
            "node.snat_ports",
            format!("[{lo}, {hi}] is not a usable port range"),
            "give [low, high] with 0 < low and at least 64 ports, such as [1024, 65535]",
        );
    }
    if let Some(a) = n.gateway {
        if let Some(k) = resolver_missing(a, n.ipv4, n.ipv6) {
            return invalid(
                "node.gateway",
                format!("resolving the gateway {a} needs the node's own {} address, and `{k}` is not set", family(a)),
                format!("set `{k}` in [node] (sluice's requests come from it), or give `gateway_mac` instead"),
            );
        }
    }
    if let Some(m) = n.tunnel_mtu {
        if !(1280..=9216).contains(&m) {
            return invalid(
                "node.tunnel_mtu",
                format!("{m} is outside 1280–9216"),
                "give the MTU of the links from sluice to the backends, such as 1500 (IPv6 needs at least 1280)",
            );
        }
    }
    if n.gateway.is_none() && n.gateway_mac.is_none() {
        return invalid(
            "node.gateway",
            "[node] names no next hop for replies to clients",
            "set `gateway` to the router's address (sluice resolves its MAC by ARP / neighbour discovery), or `gateway_mac` to its MAC",
        );
    }
    Ok(())
}
