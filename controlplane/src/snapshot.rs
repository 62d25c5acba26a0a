//! The configuration, as the data path sees it: a validated [`Config`] plus each backend's
//! admin and health state become a dataplane [`Setup`], and from it a [`Snapshot`].

use config::{Backend, Config, Service};
use dataplane::neighbour::NeighbourTable;
use dataplane::setup::{
    AllDown, BackendSetup, ConntrackSetup, Forwarding, NodeSetup, ServiceSetup, Setup,
};
use dataplane::snapshot::{Admin, Health, SnapshotError};
use dataplane::Snapshot;
use std::sync::Arc;

fn forwarding(f: config::Forwarding) -> Forwarding {
    match f {
        config::Forwarding::Nat => Forwarding::Nat,
        config::Forwarding::Snat => Forwarding::Snat,
        config::Forwarding::Dsr => Forwarding::Dsr,
        config::Forwarding::Ipip => Forwarding::Ipip,
        config::Forwarding::Gue => Forwarding::Gue,
        config::Forwarding::L7 => Forwarding::Offload,
    }
}

fn all_down(a: config::AllDown) -> AllDown {
    match a {
        config::AllDown::Drop => AllDown::Drop,
        config::AllDown::All => AllDown::All,
    }
}

/// Each backend address once, in order.
fn unique<'a>(all: impl Iterator<Item = &'a Backend>) -> impl Iterator<Item = &'a Backend> {
    let mut seen = std::collections::HashSet::new();
    all.filter(move |b| seen.insert(b.address))
}

/// The data path's view of `cfg`, with each backend's admin and health state from `state`.
pub fn setup(cfg: &Config, state: impl Fn(&Service, &Backend) -> (Admin, Health)) -> Setup {
    let n = &cfg.node;
    let c = &cfg.conntrack;
    Setup {
        node: NodeSetup {
            mac: n.mac,
            ipv4: n.ipv4,
            ipv6: n.ipv6,
            gateway_mac: n.gateway_mac,
            gateway: n.gateway,
            snat_ports: n.snat_ports,
            tunnel_mtu: n.tunnel_mtu,
            tunnel_fragment: n.tunnel_fragment,
            standby: n.start_standby,
            announce_epoch: 0,
            vlan: n.vlan,
            offload_ports: cfg
                .services
                .iter()
                .any(|s| s.l7.is_some())
                .then_some(cfg.l7.upstream_ports),
        },
        conntrack: ConntrackSetup {
            capacity: c.capacity,
            tcp_syn_timeout: c.tcp_syn_timeout,
            tcp_established_timeout: c.tcp_established_timeout,
            tcp_closing_timeout: c.tcp_closing_timeout,
            udp_timeout: c.udp_timeout,
            half_open_percent: c.half_open_percent,
            rate_limit_sources: c.rate_limit_sources,
        },
        services: cfg
            .services
            .iter()
            .map(|s| ServiceSetup {
                name: s.name.clone(),
                vip: s.vip,
                proto: s.protocol.number(),
                forwarding: forwarding(s.forwarding),
                table_size: s.table_size,
                gue_port: s.gue_port,
                all_down: all_down(s.all_down),
                // An L7 service's pool backends, each once: the data path resolves their
                // next hops for the frames the L7 pool sends them.
                backends: unique(s.all_backends())
                    .map(|b| {
                        let (admin, health) = state(s, b);
                        BackendSetup {
                            address: b.address,
                            mac: b.mac,
                            weight: b.weight,
                            max_flows: b.max_flows.unwrap_or(0),
                            admin,
                            health,
                        }
                    })
                    .collect(),
                rate_limit: s.rate_limit.as_ref().map(rate_limit),
                syn_proxy: syn_proxy(s),
            })
            .collect(),
    }
}

/// `syn_proxy` with its defaults: auto turns on at `DEFAULT_SYN_PROXY_AUTO_ON` SYNs per second
/// and off under half the on rate.
fn syn_proxy(s: &config::Service) -> dataplane::setup::SynProxySetup {
    use dataplane::setup::SynProxyMode as M;
    let on_rate = s
        .syn_proxy_auto_on
        .unwrap_or(config::DEFAULT_SYN_PROXY_AUTO_ON);
    dataplane::setup::SynProxySetup {
        mode: match s.syn_proxy {
            config::SynProxyMode::Off => M::Off,
            config::SynProxyMode::On => M::On,
            config::SynProxyMode::Auto => M::Auto {
                on_rate,
                off_rate: s.syn_proxy_auto_off.unwrap_or(on_rate / 2),
            },
        },
        mss: s.syn_proxy_mss.unwrap_or(0),
    }
}

/// `[service.rate_limit]` with its default bursts: a source may open one second's worth of
/// flows at once, and a service take a tenth of a second's worth of packets (at least 64).
fn rate_limit(r: &config::RateLimit) -> dataplane::setup::RateLimitSetup {
    dataplane::setup::RateLimitSetup {
        new_flows_per_source: r.new_flows_per_source.map(|rate| {
            let rate = u64::from(rate);
            (rate, r.source_burst.map_or(rate, u64::from))
        }),
        packets: r
            .packets
            .map(|rate| (rate, r.packets_burst.unwrap_or((rate / 10).max(64)))),
    }
}

/// Builds the snapshot of `cfg` with every backend ready and unchecked, and a neighbour
/// table of its own: what a daemon starts with, and what replay runs.
pub fn build(cfg: &Config) -> Result<Snapshot, SnapshotError> {
    Snapshot::build(&setup(cfg, |_, _| (Admin::Ready, Health::Unknown)))
}

/// Builds the snapshot of `cfg` with each backend's state from `state`, resolving next hops
/// in `neighbours` (the running snapshot's, so learned MACs carry over).
pub fn build_with(
    cfg: &Config,
    neighbours: &Arc<NeighbourTable>,
    state: impl Fn(&Service, &Backend) -> (Admin, Health),
) -> Result<Snapshot, SnapshotError> {
    Snapshot::build_with(&setup(cfg, state), neighbours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_constant_the_data_path_relies_on_agrees() {
        assert_eq!(
            config::MAX_RESOLVED_NEXT_HOPS,
            dataplane::neighbour::CAPACITY
        );
        assert_eq!(
            config::DEFAULT_TABLE_SIZE,
            dataplane::setup::DEFAULT_TABLE_SIZE
        );
        assert_eq!(config::DEFAULT_GUE_PORT, dataplane::setup::DEFAULT_GUE_PORT);
        let d = ConntrackSetup::default();
        let c = config::Conntrack::default();
        assert_eq!(
            (d.capacity, d.tcp_syn_timeout, d.tcp_established_timeout),
            (c.capacity, c.tcp_syn_timeout, c.tcp_established_timeout)
        );
        assert_eq!(
            (d.tcp_closing_timeout, d.udp_timeout, d.half_open_percent),
            (c.tcp_closing_timeout, c.udp_timeout, c.half_open_percent)
        );
    }

    #[test]
    fn the_setup_carries_every_field_and_the_state_callback() {
        let cfg = Config::from_toml(
            r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.0.0.1"
gateway_mac = "02:00:00:00:00:fe"
snat_ports = [40000, 40999]
[conntrack]
capacity = 1024
udp_timeout = 7
[[service]]
name = "web"
vip = "10.0.0.100:80"
protocol = "tcp"
forwarding = "gue"
gue_port = 7000
table_size = 251
all_down = "all"
[[service.backend]]
address = "10.0.1.1:80"
mac = "02:00:00:00:01:01"
weight = 3
[[service.backend]]
address = "10.0.1.2:80"
"#,
            None,
        )
        .unwrap();
        let s = setup(&cfg, |_, b| {
            if b.weight == 3 {
                (Admin::Drain, Health::Up)
            } else {
                (Admin::Ready, Health::Down)
            }
        });
        assert_eq!(s.node.snat_ports, (40000, 40999));
        assert_eq!(s.node.ipv4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((s.conntrack.capacity, s.conntrack.udp_timeout), (1024, 7));
        let svc = &s.services[0];
        assert_eq!(
            (
                svc.proto,
                svc.forwarding,
                svc.gue_port,
                svc.table_size,
                svc.all_down
            ),
            (6, Forwarding::Gue, 7000, 251, AllDown::All)
        );
        assert_eq!(svc.backends[0].weight, 3);
        assert_eq!(
            (svc.backends[0].admin, svc.backends[0].health),
            (Admin::Drain, Health::Up)
        );
        assert_eq!(svc.backends[1].mac, None);
        assert_eq!(
            (svc.backends[1].admin, svc.backends[1].health),
            (Admin::Ready, Health::Down)
        );
        let snap = Snapshot::build(&s).unwrap();
        assert_eq!(snap.services[0].table_size, 251);
        // One backend drains, the other is down: with all_down = "all", the ready one takes
        // every new flow.
        assert!(snap.services[0].all_down_fallback);
    }
}
