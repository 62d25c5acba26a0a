//! The sluice control protocol, shared by the daemon and `sluicectl`: one JSON object per line
//! each way over a Unix-domain socket. A request is `{"version": 1, "op": "<verb>", ...}`; a
//! response is `{"version": 1, "ok": true, "result": ...}` or
//! `{"version": 1, "ok": false, "error": {"code": ..., "message": ...}}`. A `batch` request
//! applies all its changes or none.

pub mod feed;
pub mod human;
pub mod manual;
pub mod views;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks; every response carries it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted, in bytes (the newline excluded).
pub const MAX_LINE: usize = 64 * 1024;
/// Where the daemon listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/control.sock";

/// A backend as `backend add` and `service add` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub address: String,
    /// Absent: sluice resolves the backend's MAC itself (ARP / neighbour discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The most flows tracked to it at once (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
}

/// A service as `service add` describes it (the same keys as a `[[service]]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: String,
    pub protocol: String,
    pub forwarding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_down: Option<String>,
    /// `syn_proxy`: off, on or auto (auto with its default rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<String>,
    pub backends: Vec<BackendSpec>,
}

/// A route as `route add` describes it (the keys of a `[[service.route]]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// tls-passthrough: the ClientHello's server name, exact or "*.example".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// tls-passthrough: an ALPN protocol the ClientHello offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    pub pool: String,
}

/// A pool as `pool add` describes it (the keys of a `[[service.pool]]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_max_age: Option<u64>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendSpec>,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Version, uptime, driver, workers, config file and whether the running configuration
    /// differs from it.
    Status,
    ServiceList,
    ServiceShow {
        service: String,
    },
    ServiceAdd {
        spec: ServiceSpec,
    },
    ServiceRemove {
        service: String,
    },
    BackendList {
        #[serde(default)]
        service: Option<String>,
    },
    /// For an L7 service, `pool` names the pool the backend joins.
    BackendAdd {
        service: String,
        backend: BackendSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    /// Drains the backend and removes it once its flows end or the drain timeout passes;
    /// with `force`, removes it at once (its flows move on their next packet). For an L7
    /// service, from pool `pool` (at once: its requests in flight finish).
    BackendRemove {
        service: String,
        address: String,
        #[serde(default)]
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    BackendSetWeight {
        service: String,
        address: String,
        weight: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    /// An L7 service's routes, in order, with their requests.
    RouteList {
        service: String,
    },
    /// Inserts a route at `position` (0 is first; absent: last).
    RouteAdd {
        service: String,
        route: RouteSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
    },
    /// Removes route `index` (as `route list` numbers them).
    RouteRemove {
        service: String,
        index: usize,
    },
    PoolAdd {
        service: String,
        pool: PoolSpec,
    },
    /// Removes a pool no route or `default_pool` names.
    PoolRemove {
        service: String,
        pool: String,
    },
    BackendDrain {
        service: String,
        address: String,
    },
    BackendEnable {
        service: String,
        address: String,
    },
    BackendDisable {
        service: String,
        address: String,
    },
    HealthShow {
        #[serde(default)]
        service: Option<String>,
    },
    /// The TLS certificates of the L7 services (and the client certificates of pools that
    /// re-encrypt), with names, issuer and expiry.
    CertificateList {
        #[serde(default)]
        service: Option<String>,
    },
    Stats,
    Flows {
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        backend: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The client sources a per-source rate limit (`[service.rate_limit]`) is refusing new
    /// flows from now (a refusal in the last 10 s), with how many it refused.
    Limits {
        #[serde(default)]
        service: Option<String>,
    },
    /// Re-reads the configuration file and applies the difference, or refuses and keeps the
    /// running configuration.
    Reload,
    /// Withdraws this instance's VIP routes (`[bgp]`) so routers send new flows to the other
    /// instances; this one keeps forwarding whatever still reaches it.
    NodeDrain,
    /// Makes the node active: from `drained`, announces the VIP routes again (each that has a
    /// usable backend); from `standby`, answers for the VIPs and forwards for them again,
    /// after a gratuitous ARP / unsolicited neighbour advertisement for each.
    NodeActivate,
    /// Makes the node a standby (VRRP backup, from keepalived's notify hooks): it answers no
    /// ARP / neighbour solicitation for a VIP, forwards nothing for one, and withdraws its
    /// VIP routes.
    NodeStandby,
    /// The VIP routes: whether each is to be announced now, and why. `feed` says the caller
    /// is the ExaBGP feed (`sluicectl bgp feed`): its answer is recorded as what routers were
    /// last told.
    BgpRoutes {
        #[serde(default)]
        feed: bool,
    },
    /// Several changes applied atomically: all of them or none.
    Batch {
        ops: Vec<Op>,
    },
}

impl Op {
    /// Whether the request changes the running configuration or backend state.
    pub fn is_change(&self) -> bool {
        match self {
            Op::Status
            | Op::ServiceList
            | Op::ServiceShow { .. }
            | Op::BackendList { .. }
            | Op::RouteList { .. }
            | Op::HealthShow { .. }
            | Op::CertificateList { .. }
            | Op::Stats
            | Op::BgpRoutes { .. }
            | Op::Limits { .. }
            | Op::Flows { .. } => false,
            Op::Batch { ops } => ops.iter().any(Op::is_change),
            _ => true,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `bad_request` (not JSON, unknown field or op), `version` (unsupported protocol
    /// version), `too_long`, `unauthorised`, `not_found`, `refused` (valid request that would
    /// leave the configuration invalid), `failed` (the daemon could not do it).
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(result: Value) -> Self {
        Response {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(e: ErrorBody) -> Self {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(e),
        }
    }
    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"version":1,"ok":false,"error":{"code":"failed","message":"unencodable response"}}"#
                .into()
        })
    }
}

/// One request line (without the newline).
pub fn encode_request(op: &Op) -> String {
    let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), PROTOCOL_VERSION.into());
    }
    v.to_string()
}

/// Reads one request line: JSON, a supported version, a known op with known fields.
pub fn decode_request(line: &str) -> Result<Op, ErrorBody> {
    let mut v: Value = serde_json::from_str(line)
        .map_err(|e| ErrorBody::new("bad_request", format!("the request is not JSON: {e}")))?;
    let Value::Object(m) = &mut v else {
        return Err(ErrorBody::new(
            "bad_request",
            "the request must be a JSON object with an \"op\" field",
        ));
    };
    match m.remove("version") {
        None => {
            return Err(ErrorBody::new(
                "bad_request",
                format!("the request has no \"version\"; send \"version\": {PROTOCOL_VERSION}"),
            ))
        }
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION as u64) => {}
        Some(other) => {
            return Err(ErrorBody::new(
                "version",
                format!(
                "protocol version {other} is not supported; this daemon speaks {PROTOCOL_VERSION}"
            ),
            ))
        }
    }
    if !m.contains_key("op") {
        return Err(ErrorBody::new(
            "bad_request",
            "the request has no \"op\" (such as \"status\" or \"backend-drain\")",
        ));
    }
    serde_json::from_value(v).map_err(|e| ErrorBody::new("bad_request", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let ops = [
            Op::Status,
            Op::BackendRemove {
                service: "web".into(),
                address: "10.1.0.1:8080".into(),
                force: true,
                pool: None,
            },
            Op::Batch {
                ops: vec![Op::BackendSetWeight {
                    service: "web".into(),
                    address: "10.1.0.1:8080".into(),
                    weight: 3,
                    pool: None,
                }],
            },
        ];
        for op in ops {
            assert_eq!(decode_request(&encode_request(&op)), Ok(op));
        }
        let e = |l: &str| decode_request(l).unwrap_err();
        assert_eq!(e("{nope").code, "bad_request");
        assert_eq!(e(r#"{"op":"status"}"#).code, "bad_request");
        assert_eq!(e(r#"{"version":9,"op":"status"}"#).code, "version");
        assert!(e(r#"{"version":1,"op":"explode"}"#)
            .message
            .contains("explode"));
        assert!(
            e(r#"{"version":1,"op":"backend-drain","service":"w","adress":"x"}"#)
                .message
                .contains("adress")
        );
    }
}
