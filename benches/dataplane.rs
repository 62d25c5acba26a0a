//! Criterion benches: Maglev build and lookup, and the per-packet NAT path through a worker
//! on the `mem` port, next to a reference that only moves the same frames through the same
//! port (so the ratio, not the absolute time, is the figure to compare across runs).
//! Run: `cargo bench --bench dataplane`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::maglev::{MaglevBackend, MaglevTable};
use dataplane::port::{Port, BURST};
use dataplane::{Bursts, MemPort, PacketBuf, Rings, Snapshot, Steering, Worker};
use std::hint::black_box;
use std::sync::Arc;

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(10);
    for (n, m) in [(10usize, 65537u32), (1000, 65537), (1000, 655373)] {
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

fn frames(n: u32) -> Vec<Vec<u8>> {
    use pcap::synth::{FrameBuilder, Transport};
    (0..n)
        .map(|i| {
            let b = FrameBuilder::new(
                packet::MacAddr([2, 0, 0, 0, 0, 0xfe]),
                packet::MacAddr([2, 0, 0, 0, 0, 1]),
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(0xcb00_0000 + i)),
                "198.51.100.10".parse().unwrap(),
            );
            b.frame(&Transport::Tcp {
                src_port: 1024 + (i % 60000) as u16,
                dst_port: 80,
                flags: 0x10,
                seq: 1,
                ack: 1,
                payload: &[0u8; 6],
            })
        })
        .collect()
}

fn per_packet(c: &mut Criterion) {
    let cfg = config::Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sluice.toml"
    )))
    .unwrap();
    let snap = Arc::new(Snapshot::build(&cfg).unwrap());
    let mut g = c.benchmark_group("per_packet_nat");
    g.throughput(Throughput::Elements(BURST as u64));
    for flows in [1_000u32, 50_000] {
        let fs = frames(flows);
        let mut port = MemPort::new(false);
        let mut w = Worker::new(
            0,
            Steering::new(1, cfg.node.snat_ports),
            Arc::clone(&snap),
            false,
        );
        let mut bursts: Bursts<PacketBuf> = Bursts::new();
        let rings: Rings<PacketBuf> = Rings::new(1, 64);
        for (i, f) in fs.iter().enumerate() {
            port.inject(f, 1, i as u64);
            w.poll(&mut port, &mut bursts, &rings);
            let done = std::mem::take(&mut port.tx);
            port.recycle(done);
        }
        let mut next = 0usize;
        g.bench_function(BenchmarkId::new("worker", flows), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    port.inject(&fs[next], 2, 0);
                    next = (next + 1) % fs.len();
                }
                w.poll(&mut port, &mut bursts, &rings);
                let done = std::mem::take(&mut port.tx);
                port.recycle(done);
            })
        });
        // Reference: the same frames through the same port with no processing.
        let mut rx: Vec<PacketBuf> = Vec::with_capacity(BURST);
        g.bench_function(BenchmarkId::new("port_only_reference", flows), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    port.inject(&fs[next], 2, 0);
                    next = (next + 1) % fs.len();
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

criterion_group!(benches, maglev, per_packet);
criterion_main!(benches);
