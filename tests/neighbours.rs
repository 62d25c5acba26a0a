//! Next hops configured without a MAC: the data path sends ARP requests / neighbour
//! solicitations itself (checked byte for byte against frames the `fixtures` synthesiser builds
//! independently), learns the answers, forwards with the learned MAC, retries, and forgets a
//! MAC that stops being confirmed. Packets to a next hop not resolved yet are dropped and
//! counted, never sent to a wrong or empty MAC.

mod common;

use common::*;
use dataplane::neighbour::{MAX_PROBES, REACHABLE_NS, RETRY_NS};
use dataplane::{Bursts, DropReason, Frame, MemPort, Rings, Steering, Worker};
use fixtures::{self as synth, FrameBuilder, Transport};
use packet::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const LEARNED: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0x01];
const LEARNED_GW: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0xfe];

/// One `nat` service whose one backend, and the gateway, have no MAC in the configuration.
fn config(v6: bool) -> config::Config {
    let (vip, backend, gateway) = if v6 {
        (
            format!("[{VIP_V6}]:80"),
            format!("[{}]:8080", backend_ip(true, 0)),
            NODE_V6.to_string().replace("::1", "::fe"),
        )
    } else {
        (
            format!("{VIP_V4}:80"),
            format!("{}:8080", backend_ip(false, 0)),
            GATEWAY_V4.to_string(),
        )
    };
    let text = format!(
        "[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"{NODE_V4}\"\nipv6 = \"{NODE_V6}\"\ngateway = \"{gateway}\"\n\
         [[service]]\nname = \"web\"\nvip = \"{vip}\"\nprotocol = \"tcp\"\nforwarding = \"nat\"\n\
         [[service.backend]]\naddress = \"{backend}\"\n"
    );
    config::Config::from_toml(&text, None).unwrap()
}

struct Rig {
    w: Worker,
    port: MemPort,
    bursts: Bursts<dataplane::PacketBuf>,
    rings: Rings<dataplane::PacketBuf>,
}

impl Rig {
    fn new(v6: bool) -> Rig {
        let snap = Arc::new(controlplane::snapshot::build(&config(v6)).unwrap());
        let mut port = MemPort::new(false);
        port.clock = Some(T0);
        Rig {
            w: Worker::new(0, Steering::new(1, SNAT_PORTS), snap, false),
            port,
            bursts: Bursts::new(),
            rings: Rings::new(1, 64),
        }
    }

    /// One poll at time `t` with `frames` received; what was transmitted.
    fn poll(&mut self, t: u64, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        self.port.clock = Some(t);
        for f in frames {
            assert!(self.port.inject(f, t, 0));
        }
        self.w.poll(&mut self.port, &mut self.bursts, &self.rings);
        let out = self.port.tx.iter().map(|b| b.data().to_vec()).collect();
        let sent = std::mem::take(&mut self.port.tx);
        self.port.recycle(sent);
        out
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.w.stats.drops[r.index()]
    }

    fn neighbour(&self, a: IpAddr) -> dataplane::neighbour::NeighbourState {
        let s = self.w.snapshot();
        let slot = s.next_hop_slot(a).expect("a resolved next hop");
        s.neighbours.state(a, slot).unwrap()
    }
}

fn client_syn(v6: bool, flags: u8) -> Vec<u8> {
    FrameBuilder::new(
        MacAddr(GW_MAC),
        MacAddr(NODE_MAC),
        client_ip(v6, 7),
        vip(v6),
    )
    .frame(&Transport::Tcp {
        src_port: 40000,
        dst_port: VIP_PORT,
        flags,
        seq: 1,
        ack: 0,
        payload: b"",
    })
}

fn backend_reply(v6: bool) -> Vec<u8> {
    FrameBuilder::new(
        MacAddr(LEARNED),
        MacAddr(NODE_MAC),
        backend_ip(v6, 0),
        client_ip(v6, 7),
    )
    .frame(&Transport::Tcp {
        src_port: 8080,
        dst_port: 40000,
        flags: packet::tcp::SYN | packet::tcp::ACK,
        seq: 9,
        ack: 2,
        payload: b"",
    })
}

fn dst_mac(f: &[u8]) -> [u8; 6] {
    f[..6].try_into().unwrap()
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        _ => unreachable!(),
    }
}

#[test]
fn requests_are_the_frames_an_independent_builder_makes() {
    let mut a = vec![0u8; dataplane::neighbour::ARP_REQUEST_LEN];
    let target = Ipv4Addr::new(10, 1, 0, 1);
    assert!(dataplane::neighbour::write_arp_request(
        &mut a,
        MacAddr(NODE_MAC),
        NODE_V4,
        target
    ));
    assert_eq!(a, synth::arp_request(MacAddr(NODE_MAC), NODE_V4, target));
    let mut n = vec![0u8; dataplane::neighbour::NS_LEN];
    let target6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0xab, 0xcdef);
    assert!(dataplane::neighbour::write_ns(
        &mut n,
        MacAddr(NODE_MAC),
        NODE_V6,
        target6
    ));
    assert_eq!(
        n,
        synth::neighbour_solicitation(MacAddr(NODE_MAC), NODE_V6, target6)
    );
    // A buffer of the wrong size is refused, not overrun.
    assert!(!dataplane::neighbour::write_arp_request(
        &mut [0u8; 20],
        MacAddr(NODE_MAC),
        NODE_V4,
        target
    ));
}

/// The whole life of a resolved IPv4 next hop: asked at once, traffic dropped (and counted)
/// until it answers, asked again each second, learned from its reply, forwarded to, asked
/// to confirm after the reachable time, forgotten after unanswered confirmations.
#[test]
fn ipv4_backend_and_gateway_are_resolved_retried_and_expired() {
    let mut r = Rig::new(false);
    let backend = backend_ip(false, 0);
    let asked_backend = synth::arp_request(MacAddr(NODE_MAC), NODE_V4, v4(backend));
    let asked_gateway = synth::arp_request(MacAddr(NODE_MAC), NODE_V4, GATEWAY_V4);

    // The first poll asks for both next hops.
    let out = r.poll(T0, &[]);
    assert_eq!(out.len(), 2, "one request per next hop");
    assert!(out.contains(&asked_backend) && out.contains(&asked_gateway));

    // A client's SYN before the backend answered: dropped and counted, nothing sent.
    let out = r.poll(T0 + 20_000_000, &[client_syn(false, packet::tcp::SYN)]);
    assert!(out.is_empty(), "nothing goes to an unresolved next hop");
    assert_eq!(r.drops(DropReason::UnresolvedNextHop), 1);
    assert_eq!(r.neighbour(backend).unresolved_drops, 1);

    // No new request within the retry interval; one per next hop after it.
    assert!(r.poll(T0 + RETRY_NS / 2, &[]).is_empty());
    let out = r.poll(T0 + RETRY_NS, &[]);
    assert_eq!(out.len(), 2, "asked again after {RETRY_NS} ns");
    assert_eq!(r.neighbour(backend).probes, 2);

    // The backend answers; the next SYN goes to the MAC it gave.
    let t = T0 + RETRY_NS + 1_000_000;
    let reply = synth::arp_reply(MacAddr(LEARNED), v4(backend), MacAddr(NODE_MAC), NODE_V4);
    r.poll(t, &[reply]);
    assert_eq!(r.w.stats.neighbours_learned, 1);
    assert_eq!(r.neighbour(backend).mac, Some(MacAddr(LEARNED)));
    let out = r.poll(t + 1, &[client_syn(false, packet::tcp::SYN)]);
    assert_eq!(out.len(), 1);
    assert_eq!(dst_mac(&out[0]), LEARNED, "forwarded to the learned MAC");
    assert_eq!(&out[0][6..12], &NODE_MAC);

    // The backend's reply needs the gateway, which has not answered: dropped, counted.
    assert!(r.poll(t + 2, &[backend_reply(false)]).is_empty());
    assert_eq!(r.drops(DropReason::UnresolvedNextHop), 2);
    // The gateway asks for the node's address: sluice learns it from the request too, and
    // answers it.
    let ask = synth::arp_request(MacAddr(LEARNED_GW), GATEWAY_V4, NODE_V4);
    let out = r.poll(t + 3, &[ask]);
    assert_eq!(out.len(), 1, "the gateway's request is answered");
    assert_eq!(dst_mac(&out[0]), LEARNED_GW);
    let out = r.poll(t + 4, &[backend_reply(false)]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        dst_mac(&out[0]),
        LEARNED_GW,
        "the reply goes to the gateway"
    );

    // Quiet until the reachable time has passed; then a confirmation request; left
    // unanswered MAX_PROBES times, the MAC is forgotten and the flow's packets are dropped.
    let confirmed = t;
    assert!(r
        .poll(confirmed + REACHABLE_NS / 2, &[])
        .iter()
        .all(|f| f != &asked_backend));
    let mut now = confirmed + REACHABLE_NS;
    let mut asked = 0;
    for _ in 0..=MAX_PROBES {
        asked += r
            .poll(now, &[])
            .iter()
            .filter(|f| **f == asked_backend)
            .count();
        now += RETRY_NS;
    }
    assert!(asked as u32 >= MAX_PROBES, "confirmation requests: {asked}");
    let n = r.neighbour(backend);
    assert_eq!((n.mac, n.expiries), (None, 1), "{n:?}");
    let before = r.drops(DropReason::UnresolvedNextHop);
    assert!(r
        .poll(now, &[client_syn(false, packet::tcp::ACK)])
        .iter()
        .all(|f| f[..6] != LEARNED));
    assert_eq!(r.drops(DropReason::UnresolvedNextHop), before + 1);
}

#[test]
fn ipv6_backend_is_resolved_by_neighbour_discovery() {
    let mut r = Rig::new(true);
    let IpAddr::V6(backend) = backend_ip(true, 0) else {
        unreachable!()
    };
    let out = r.poll(T0, &[]);
    assert!(
        out.contains(&synth::neighbour_solicitation(
            MacAddr(NODE_MAC),
            NODE_V6,
            backend
        )),
        "a solicitation for the backend"
    );
    assert!(r
        .poll(T0 + 1, &[client_syn(true, packet::tcp::SYN)])
        .is_empty());
    // A multicast MAC in an advertisement is not a neighbour's address: ignored.
    let bogus = synth::neighbour_advertisement(
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        backend,
        MacAddr(NODE_MAC),
        NODE_V6,
    );
    r.poll(T0 + 2, &[bogus]);
    assert_eq!(r.neighbour(IpAddr::V6(backend)).mac, None);
    let na = synth::neighbour_advertisement(MacAddr(LEARNED), backend, MacAddr(NODE_MAC), NODE_V6);
    r.poll(T0 + 3, &[na]);
    let out = r.poll(T0 + 4, &[client_syn(true, packet::tcp::SYN)]);
    assert_eq!(out.len(), 1);
    assert_eq!(dst_mac(&out[0]), LEARNED);
}

/// A learned MAC survives a configuration change that keeps the next hop (the next snapshot
/// shares the table), and a next hop that gets a MAC in the configuration stops being asked.
#[test]
fn learned_macs_carry_over_configuration_changes() {
    let cfg = config(false);
    let table = Arc::new(dataplane::neighbour::NeighbourTable::new());
    let ready = |_: &config::Service, _: &config::Backend| {
        (
            dataplane::snapshot::Admin::Ready,
            dataplane::snapshot::Health::Unknown,
        )
    };
    let a = controlplane::snapshot::build_with(&cfg, &table, ready).unwrap();
    let backend = backend_ip(false, 0);
    let slot = a.next_hop_slot(backend).unwrap();
    table.learn(slot, MacAddr(LEARNED), 0);
    let mut changed = cfg.clone();
    changed.services[0].backends[0].weight = 5;
    let b = controlplane::snapshot::build_with(&changed, &table, ready).unwrap();
    assert_eq!(b.next_hop_slot(backend), Some(slot));
    assert_eq!(
        b.mac_of(b.services[0].backends[0].next_hop),
        Some(MacAddr(LEARNED))
    );
    let mut fixed = cfg.clone();
    fixed.services[0].backends[0].mac = Some(MacAddr(backend_mac(0)));
    let c = controlplane::snapshot::build_with(&fixed, &table, ready).unwrap();
    assert_eq!(c.next_hop_slot(backend), None);
    assert_eq!(
        c.mac_of(c.services[0].backends[0].next_hop),
        Some(MacAddr(backend_mac(0)))
    );
}
