//! `[bgp]`: read from the file ([`parse_bgp`]), then checked on the model ([`check_bgp`]).
use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;

/// The longest shutdown grace accepted: ten minutes.
const LONGEST_GRACE_MS: u64 = 600_000;

/// Reads `[bgp]`, recording where its keys are.
pub(crate) fn parse_bgp(ctx: &Ctx, b: &RawBgp, spans: &mut Spans) -> Result<Bgp, ConfigError> {
    let d = Bgp::default();
    let next_hop = match &b.next_hop {
        Some(v) => {
            spans.put("bgp.next_hop", v.span());
            match v.get_ref().as_str() {
                "self" => NextHop::SessionAddress,
                s => NextHop::Address(s.parse().or_else(|_| {
                    ctx.err(
                        v.span(),
                        "bgp.next_hop",
                        format!("`{s}` is neither \"self\" nor an IP address"),
                        "write \"self\" (ExaBGP gives the BGP session's own address) or the address routers should send VIP traffic to, such as the node's address",
                    )
                })?),
            }
        }
        None => d.next_hop,
    };
    if let Some(v) = &b.shutdown_grace_ms {
        spans.put("bgp.shutdown_grace_ms", v.span());
    }
    Ok(Bgp {
        next_hop,
        shutdown_grace_ms: b
            .shutdown_grace_ms
            .as_ref()
            .map_or(d.shutdown_grace_ms, |v| *v.get_ref()),
    })
}

/// The rules `[bgp]` must follow.
pub(crate) fn check_bgp(b: &Bgp) -> Result<(), Invalid> {
    if b.shutdown_grace_ms > LONGEST_GRACE_MS {
        return invalid(
            "bgp.shutdown_grace_ms",
            format!(
                "{} ms is longer than the {LONGEST_GRACE_MS} ms allowed",
                b.shutdown_grace_ms
            ),
            "give milliseconds from 0 (stop as soon as the withdrawal is sent) to 600000",
        );
    }
    if let NextHop::Address(a) = b.next_hop {
        if a.is_unspecified() || a.is_multicast() {
            return invalid(
                "bgp.next_hop",
                format!("{a} cannot be a next hop"),
                "give a unicast address of this machine, or \"self\"",
            );
        }
    }
    Ok(())
}
