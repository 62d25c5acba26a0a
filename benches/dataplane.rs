//! Criterion micro-benchmarks of the data path (issue 6's list). Each group that measures
//! packet work has a reference in the same process where one is meaningful (the same frames
//! moved through the same port with no processing), so ratios survive a noisy machine.
//! Run: `cargo bench --bench dataplane` (or `-- GROUP` for one group).
//!
//! - `parse`: `parse_frame` + flow key, IPv4 / IPv6 / 802.1Q-tagged IPv4
//! - `conntrack`: hit, and miss + insert (evicting, as a full table does), 1 k and 1 M flows
//! - `maglev_build` (65,537 and 655,373 entries; 10, 100, 1,000 backends), `maglev_lookup`
//! - `mode`: the per-packet path (parse, lookup, rewrite) of each forwarding mode, established
//!   flows
//! - `per_packet_nat`: the whole poll loop on the `mem` port, 1 k and 1 M tracked flows, next to
//!   `port_only_reference`

use config::Config;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::conntrack::{initial_state, ConnTrack, Flow};
use dataplane::port::{Port, BURST};
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Steering, Verdict, Worker};
use fixtures::{FrameBuilder, Rng, Transport};
use maglev::{MaglevBackend, MaglevTable};
use packet::FlowKey;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const NODE: packet::MacAddr = packet::MacAddr([2, 0, 0, 0, 0, 1]);
const GW: packet::MacAddr = packet::MacAddr([2, 0, 0, 0, 0, 0xfe]);

fn tcp(sport: u16) -> Transport<'static> {
    Transport::Tcp {
        src_port: sport,
        dst_port: 80,
        flags: 0x10,
        seq: 1,
        ack: 1,
        payload: b"abcdef",
    }
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i))
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let v4 =
        FrameBuilder::new(GW, NODE, client(1), "198.51.100.10".parse().unwrap()).frame(&tcp(1000));
    let v6 = FrameBuilder::new(
        GW,
        NODE,
        "2001:db8:c::1".parse().unwrap(),
        "2001:db8:100::10".parse().unwrap(),
    )
    .frame(&tcp(1000));
    let mut vb = FrameBuilder::new(GW, NODE, client(1), "198.51.100.10".parse().unwrap());
    vb.vlan_tci = Some(100);
    let vlan = vb.frame(&tcp(1000));
    for (name, f) in [("ipv4", &v4), ("ipv6", &v6), ("vlan_ipv4", &vlan)] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(packet::parse_frame(black_box(f)).map(|p| p.flow_key())))
        });
    }
    g.finish();
}

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: client(i),
        dst: "198.51.100.10".parse().unwrap(),
        src_port: 1024 + (i % 50000) as u16,
        dst_port: 80,
        proto: 6,
    }
}

fn conntrack(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    let flow = Flow {
        service: 0,
        backend: 0,
        generation: 0,
        backend_addr: "10.1.0.1:8080".parse().unwrap(),
        snat_port: 0,
        state: initial_state(Some(0x10)),
        created_ns: 0,
        last_seen_ns: 0,
        reply_key: None,
        seq_delta: 0,
        proxy_shift: Default::default(),
        proxy: Default::default(),
    };
    for n in [1_000u32, 1_000_000] {
        let mut ct = ConnTrack::new(&dataplane::setup::ConntrackSetup {
            capacity: n as usize,
            ..Default::default()
        });
        for i in 0..n {
            ct.insert(key(i), flow, 1);
        }
        // Look flows up in a shuffled order, as traffic from many clients arrives.
        let mut order: Vec<u32> = (0..n).collect();
        let mut rng = Rng::new(7);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let keys: Vec<FlowKey> = order.iter().map(|i| key(*i)).collect();
        let mut next = 0usize;
        g.bench_function(BenchmarkId::new("hit", n), |b| {
            b.iter(|| {
                next = (next + 1) % keys.len();
                black_box(ct.lookup(&keys[next], Some(0x10), 2).is_some())
            })
        });
        let mut fresh = n;
        g.bench_function(BenchmarkId::new("miss_insert", n), |b| {
            b.iter(|| {
                fresh = fresh.wrapping_add(1);
                let k = key(fresh);
                if ct.lookup(&k, Some(0x02), 3).is_none() {
                    ct.insert(k, flow, 3);
                }
            })
        });
    }
    g.finish();
}

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(10);
    for m in [65537u32, 655373] {
        for n in [10usize, 100, 1000] {
            let ids: Vec<String> = (0..n)
                .map(|i| format!("10.{}.{}.1:8080", i / 256, i % 256))
                .collect();
            let bs: Vec<MaglevBackend> = ids
                .iter()
                .map(|i| MaglevBackend {
                    identity: i.as_bytes(),
                    weight: 1,
                })
                .collect();
            g.bench_with_input(BenchmarkId::new(format!("{n}_backends"), m), &m, |b, &m| {
                b.iter(|| MaglevTable::build(black_box(&bs), m).unwrap())
            });
        }
    }
    g.finish();
    let ids: Vec<String> = (0..100).map(|i| format!("10.0.{i}.1:8080")).collect();
    let bs: Vec<MaglevBackend> = ids
        .iter()
        .map(|i| MaglevBackend {
            identity: i.as_bytes(),
            weight: 1,
        })
        .collect();
    let t = MaglevTable::build(&bs, 65537).unwrap();
    c.bench_function("maglev_lookup", |b| {
        let mut h = 0x1234_5678u64;
        b.iter(|| {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
            black_box(t.lookup(h))
        })
    });
}

/// A one-service configuration in `mode` with three backends and `capacity` flows per worker.
fn config_for(mode: &str, capacity: u32) -> Config {
    let port = if mode == "nat" || mode == "snat" {
        8080
    } else {
        80
    };
    let mut t = format!("[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"192.0.2.1\"\ngateway_mac = \"02:00:00:00:00:fe\"\n[conntrack]\ncapacity = {capacity}\n[[service]]\nname = \"web\"\nvip = \"198.51.100.10:80\"\nprotocol = \"tcp\"\nforwarding = \"{mode}\"\n");
    for b in 1..=3 {
        t += &format!(
            "[[service.backend]]\naddress = \"10.1.0.{b}:{port}\"\nmac = \"02:00:00:00:01:0{b}\"\n"
        );
    }
    Config::from_toml(&t, None).unwrap()
}

/// Frames of `n` flows, 64 bytes each, stored contiguously in a shuffled flow order.
fn flow_frames(n: u32) -> Vec<[u8; 64]> {
    let mut order: Vec<u32> = (0..n).collect();
    let mut rng = Rng::new(11);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
        .iter()
        .map(|&i| {
            let f = FrameBuilder::new(GW, NODE, client(i), "198.51.100.10".parse().unwrap())
                .frame(&tcp(1024 + (i % 50000) as u16));
            let mut a = [0u8; 64];
            a[..f.len()].copy_from_slice(&f);
            a
        })
        .collect()
}

fn modes(c: &mut Criterion) {
    let mut g = c.benchmark_group("mode");
    let frames = flow_frames(1000);
    let len = 60;
    for mode in ["nat", "snat", "dsr", "ipip", "gue"] {
        let cfg = config_for(mode, 4096);
        let mut w = Worker::new(
            0,
            Steering::new(1, cfg.node.snat_ports),
            Arc::new(controlplane::snapshot::build(&cfg).unwrap()),
            false,
        );
        let mut buf = PacketBuf::new();
        for f in &frames {
            buf.load(&f[..len], 1, 0);
            assert_eq!(w.process(&mut buf, 1), Verdict::Transmit);
        }
        let mut next = 0usize;
        g.bench_function(mode, |b| {
            b.iter(|| {
                next = (next + 1) % frames.len();
                buf.load(&frames[next][..len], 2, 0);
                black_box(w.process(&mut buf, 2))
            })
        });
    }
    g.finish();
}

fn per_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_packet_nat");
    g.throughput(Throughput::Elements(BURST as u64));
    for flows in [1_000u32, 1_000_000] {
        let frames = flow_frames(flows);
        let cfg = config_for("nat", flows.max(1024));
        let mut port = MemPort::new(false);
        let mut w = Worker::new(
            0,
            Steering::new(1, cfg.node.snat_ports),
            Arc::new(controlplane::snapshot::build(&cfg).unwrap()),
            false,
        );
        let mut bursts: Bursts<PacketBuf> = Bursts::new();
        let rings: Rings<PacketBuf> = Rings::new(1, 64);
        for chunk in frames.chunks(BURST) {
            for f in chunk {
                port.inject(&f[..60], 1, 0);
            }
            w.poll(&mut port, &mut bursts, &rings);
            let done = std::mem::take(&mut port.tx);
            port.recycle(done);
        }
        assert_eq!(
            w.ct.len(),
            flows as usize,
            "every flow tracked before measuring"
        );
        let mut next = 0usize;
        g.bench_function(BenchmarkId::new("worker", flows), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    port.inject(&frames[next][..60], 2, 0);
                    next = (next + 1) % frames.len();
                }
                w.poll(&mut port, &mut bursts, &rings);
                let done = std::mem::take(&mut port.tx);
                port.recycle(done);
            })
        });
        let mut rx: Vec<PacketBuf> = Vec::with_capacity(BURST);
        g.bench_function(BenchmarkId::new("port_only_reference", flows), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    port.inject(&frames[next][..60], 2, 0);
                    next = (next + 1) % frames.len();
                }
                port.rx_burst(&mut rx);
                port.tx_burst(&mut rx);
                let done = std::mem::take(&mut port.tx);
                port.recycle(done);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, conntrack, maglev, modes, per_packet);
criterion_main!(benches);
