//! The file as written: every value with its span (`toml::Spanned`), so an error can name
//! its line. Nothing here is checked yet; `validate` turns these into the model.

use crate::model::{AllDown, Driver, Forwarding, Protocol};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) node: Spanned<RawNode>,
    #[serde(default)]
    pub(crate) conntrack: Option<Spanned<RawConntrack>>,
    #[serde(default)]
    pub(crate) service: Vec<Spanned<RawService>>,
    pub(crate) dataplane: Option<Spanned<RawDataplane>>,
    pub(crate) control: Option<Spanned<RawControl>>,
    pub(crate) metrics: Option<Spanned<RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub(crate) socket: Option<Spanned<String>>,
    pub(crate) group: Option<Spanned<String>>,
    pub(crate) drain_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    #[serde(rename = "type")]
    pub(crate) kind: Spanned<String>,
    pub(crate) interval: Option<Spanned<f64>>,
    pub(crate) timeout: Option<Spanned<f64>>,
    pub(crate) rise: Option<Spanned<u32>>,
    pub(crate) fall: Option<Spanned<u32>>,
    pub(crate) jitter: Option<Spanned<f64>>,
    pub(crate) port: Option<Spanned<u16>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) status: Option<Spanned<Vec<String>>>,
    pub(crate) body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPcapDriver {
    pub(crate) input: Spanned<String>,
    pub(crate) output: Spanned<String>,
    pub(crate) speed: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDataplane {
    pub(crate) driver: Spanned<Driver>,
    pub(crate) cores: Spanned<Vec<usize>>,
    pub(crate) dpdk: Option<Spanned<RawDpdk>>,
    pub(crate) pcap: Option<Spanned<RawPcapDriver>>,
    pub(crate) xdp: Option<Spanned<RawXdp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawXdp {
    pub(crate) interface: Spanned<String>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) zerocopy: Option<Spanned<String>>,
    pub(crate) frames: Option<Spanned<u32>>,
    pub(crate) ring: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDpdk {
    #[serde(default)]
    pub(crate) eal_args: Vec<String>,
    pub(crate) port: Spanned<String>,
    pub(crate) tx_port: Option<Spanned<String>>,
    pub(crate) exception_interface: Option<Spanned<String>>,
    pub(crate) mbufs: Option<Spanned<u32>>,
    pub(crate) rx_descriptors: Option<Spanned<u16>>,
    pub(crate) tx_descriptors: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) mac: Spanned<String>,
    pub(crate) ipv4: Option<Spanned<String>>,
    pub(crate) ipv6: Option<Spanned<String>>,
    pub(crate) gateway_mac: Option<Spanned<String>>,
    pub(crate) gateway: Option<Spanned<String>>,
    pub(crate) snat_ports: Option<Spanned<[u16; 2]>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConntrack {
    pub(crate) capacity: Option<Spanned<u64>>,
    pub(crate) tcp_syn_timeout: Option<Spanned<u64>>,
    pub(crate) tcp_established_timeout: Option<Spanned<u64>>,
    pub(crate) tcp_closing_timeout: Option<Spanned<u64>>,
    pub(crate) udp_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: Spanned<String>,
    pub(crate) vip: Spanned<String>,
    pub(crate) protocol: Spanned<Protocol>,
    pub(crate) forwarding: Spanned<Forwarding>,
    pub(crate) table_size: Option<Spanned<u64>>,
    pub(crate) gue_port: Option<Spanned<u16>>,
    pub(crate) health: Option<Spanned<RawHealth>>,
    pub(crate) all_down: Option<Spanned<AllDown>>,
    #[serde(default)]
    pub(crate) backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) address: Spanned<String>,
    pub(crate) mac: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<u64>>,
}
