//! Validation, one module per section: each turns a section of the file into the model, or
//! says what is wrong with the key, line and fix.

pub(crate) mod bgp;
pub(crate) mod conntrack;
pub(crate) mod control;
pub(crate) mod dataplane;
pub(crate) mod health;
pub(crate) mod l7;
pub(crate) mod node;
pub(crate) mod service;
pub(crate) mod x509;

use crate::error::Ctx;
use crate::ConfigError;
use packet::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use toml::Spanned;

pub(crate) fn parse_mac(ctx: &Ctx, v: &Spanned<String>, key: &str) -> Result<MacAddr, ConfigError> {
    v.get_ref().parse().or_else(|e| {
        ctx.err(
            v.span(),
            key,
            format!("`{}` is not a MAC address: {e}", v.get_ref()),
            "write it as six hex octets, like \"02:00:00:00:00:01\"",
        )
    })
}

/// The [node] key whose address the data path needs to resolve `a` (ARP / neighbour
/// solicitations come from it), if that address is not set.
pub(crate) fn resolver_missing(
    a: IpAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
) -> Option<&'static str> {
    match a {
        IpAddr::V4(_) => v4.is_none().then_some("node.ipv4"),
        IpAddr::V6(_) => v6.is_none().then_some("node.ipv6"),
    }
}

pub(crate) fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}
