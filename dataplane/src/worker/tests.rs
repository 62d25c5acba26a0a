//! The worker on the `mem` port: flows across snapshot swaps, admin and health states, and
//! the offload seam end to end with echoing shards.

use super::*;
use crate::port::{MemPort, PacketBuf};
use crate::setup::Forwarding;
use crate::setup::{AllDown, NodeSetup, ServiceSetup, Setup};

fn cfg(backends: &[u8]) -> Setup {
    let mut node = NodeSetup::new(
        packet::MacAddr([2, 0, 0, 0, 0, 1]),
        packet::MacAddr([2, 0, 0, 0, 0, 0xfe]),
    );
    node.ipv4 = Some("192.0.2.1".parse().unwrap());
    let mut web = ServiceSetup::new(
        "web",
        "198.51.100.10:80".parse().unwrap(),
        packet::ipv4::PROTO_TCP,
        Forwarding::Nat,
    );
    for &b in backends {
        web = web.backend(
            format!("10.1.0.{b}:8080").parse().unwrap(),
            Some(packet::MacAddr([2, 0, 0, 0, 1, b])),
        );
    }
    Setup::new(node).service(web)
}

fn syn(i: u16, flags: u8) -> PacketBuf {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xfe, 0x08, 0x00];
    let mut ip = vec![
        0x45,
        0,
        0,
        40,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
        203,
        0,
        113,
        (i % 200) as u8 + 1,
        198,
        51,
        100,
        10,
    ];
    let c = packet::checksum::finish(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(10000 + i).to_be_bytes());
    f.extend_from_slice(&[
        0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let mut b = PacketBuf::new();
    assert!(b.load(&f, 0, 0));
    b
}

fn dst_of(b: &PacketBuf) -> [u8; 4] {
    let d = b.data();
    [d[30], d[31], d[32], d[33]]
}

/// Established flows keep their backend across a change of the backend set, except
/// those of the removed backend, which move; new flows use the new table; the removed
/// backend gets nothing new.
#[test]
fn established_flows_keep_their_backend_across_snapshot_swaps() {
    let a = Arc::new(Snapshot::build(&cfg(&[1, 2, 3])).unwrap());
    let b = Arc::new(Snapshot::build(&cfg(&[1, 3, 4, 5])).unwrap());
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&a), false);
    let mut before = Vec::new();
    for i in 0..300 {
        let mut f = syn(i, packet::tcp::SYN);
        assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
        before.push(dst_of(&f));
    }
    w.set_snapshot(Arc::clone(&b));
    let mut moved_by_table = 0;
    for i in 0..300u16 {
        let mut f = syn(i, packet::tcp::ACK);
        assert_eq!(w.process(&mut f, 2), Verdict::Transmit);
        if before[i as usize] == [10, 1, 0, 2] {
            // Its backend was removed: the flow is chosen afresh.
            assert_ne!(
                dst_of(&f),
                [10, 1, 0, 2],
                "flow {i} left the removed backend"
            );
            continue;
        }
        assert_eq!(dst_of(&f), before[i as usize], "flow {i} kept its backend");
        let key = packet::parse_frame(syn(i, 0).data()).unwrap().flow_key();
        let fresh = b.services[0]
            .table
            .as_ref()
            .unwrap()
            .lookup(key.stable_hash());
        if b.services[0].backends[fresh as usize].addr.ip().to_string()
            != format!(
                "{}.{}.{}.{}",
                before[i as usize][0],
                before[i as usize][1],
                before[i as usize][2],
                before[i as usize][3]
            )
        {
            moved_by_table += 1;
        }
    }
    assert!(
        moved_by_table > 50,
        "the new table would move {moved_by_table} flows: the test must exercise that"
    );
    // New flows follow the new table and never reach the removed backend 10.1.0.2.
    for i in 1000..1300 {
        let mut f = syn(i, packet::tcp::SYN);
        w.process(&mut f, 3);
        assert_ne!(dst_of(&f), [10, 1, 0, 2]);
    }
    // Counters of the kept backends carried over, re-pointed at their new indices.
    let kept: u64 = w.stats.backends[0].iter().map(|c| c.new_flows).sum();
    assert!(kept > 300, "{kept}");
    // Active flows per backend: every flow counted once, under its current backend.
    let active: u64 = w.stats.backends[0].iter().map(|c| c.active_flows).sum();
    let tracked_to_kept =
        w.ct.iter()
            .filter(|(_, f)| f.backend_addr.ip().to_string() != "10.1.0.2")
            .count() as u64;
    assert_eq!(active, tracked_to_kept);
}

fn state_snapshot(
    backends: &[u8],
    all_down: &str,
    state: impl Fn(u8) -> (Admin, Health),
) -> Arc<Snapshot> {
    let mut c = cfg(backends);
    c.services[0].all_down = if all_down == "all" {
        AllDown::All
    } else {
        AllDown::Drop
    };
    for b in &mut c.services[0].backends {
        (b.admin, b.health) = state(b.address.ip().to_string()[7..].parse().unwrap());
    }
    Arc::new(Snapshot::build(&c).unwrap())
}

use crate::snapshot::{Admin, Health};

/// Drained backends keep their flows and take no new ones; disabled and drain-expired
/// ones lose their flows; down backends take no new flows; when all are down, the
/// service's policy decides, and is counted.
#[test]
fn admin_and_health_states_steer_new_and_tracked_flows() {
    let up = state_snapshot(&[1, 2, 3], "drop", |_| (Admin::Ready, Health::Up));
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&up), false);
    let mut first = Vec::new();
    for i in 0..300 {
        let mut f = syn(i, packet::tcp::SYN);
        assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
        first.push(dst_of(&f));
    }
    let on2 = |v: &[[u8; 4]]| v.iter().filter(|d| **d == [10, 1, 0, 2]).count();
    assert!(on2(&first) > 50);
    let each = |w: &mut Worker, range: std::ops::Range<u16>, flags: u8| -> Vec<[u8; 4]> {
        range
            .map(|i| {
                let mut f = syn(i, flags);
                assert_eq!(w.process(&mut f, 2), Verdict::Transmit);
                dst_of(&f)
            })
            .collect()
    };
    for (admin, health, keeps) in [
        (Admin::Drain, Health::Up, true),
        (Admin::Ready, Health::Down, true),
        (Admin::Disabled, Health::Up, false),
        (Admin::DrainExpired, Health::Up, false),
    ] {
        let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&up), false);
        each(&mut w, 0..300, packet::tcp::SYN);
        w.set_snapshot(state_snapshot(&[1, 2, 3], "drop", |b| {
            if b == 2 {
                (admin, health)
            } else {
                (Admin::Ready, Health::Up)
            }
        }));
        let again = each(&mut w, 0..300, packet::tcp::ACK);
        if keeps {
            assert_eq!(again, first, "{admin:?}/{health:?}: tracked flows stay");
        } else {
            assert_eq!(on2(&again), 0, "{admin:?}: tracked flows move");
        }
        let fresh = each(&mut w, 1000..1300, packet::tcp::SYN);
        assert_eq!(on2(&fresh), 0, "{admin:?}/{health:?}: no new flows");
        let s2 = &w.stats.backends[0][1];
        assert_eq!(s2.active_flows, if keeps { on2(&first) as u64 } else { 0 });
    }
    // Every backend down: "drop" drops new flows as no_backend, "all" uses them all.
    let down = |_| (Admin::Ready, Health::Down);
    let mut w = Worker::new(
        0,
        Steering::new(1, (1024, 32767)),
        state_snapshot(&[1, 2, 3], "drop", down),
        false,
    );
    let mut f = syn(5, packet::tcp::SYN);
    assert_eq!(w.process(&mut f, 1), Verdict::Drop(DropReason::NoBackend));
    let mut w = Worker::new(
        0,
        Steering::new(1, (1024, 32767)),
        state_snapshot(&[1, 2, 3], "all", down),
        false,
    );
    let got = each(&mut w, 0..300, packet::tcp::SYN);
    assert_eq!(got, first, "fail open: the same table as when all were up");
    assert_eq!(w.stats.services[0].all_down_flows, 300);
}

/// The snapshot of `cfg` with its service offloaded.
fn offloaded(backends: &[u8]) -> Arc<Snapshot> {
    let mut c = cfg(backends);
    c.services[0].forwarding = Forwarding::Offload;
    Arc::new(Snapshot::build(&c).unwrap())
}

/// What a trivial shard does: swaps the frame's MACs, IP addresses and ports (the
/// checksums stay valid: their sums do not depend on order) and returns it to the worker
/// it came from.
fn echo(d: &mut [u8]) {
    for i in 0..6 {
        d.swap(i, 6 + i);
    }
    for i in 0..4 {
        d.swap(26 + i, 30 + i);
    }
    for i in 0..2 {
        d.swap(34 + i, 36 + i);
    }
}

/// Frames of an offloaded service reach the shard their connection hashes to, whichever
/// worker received them, unmodified and untracked; what the shard returns is transmitted
/// by the worker it names, after that worker's own burst.
#[test]
fn offloaded_frames_reach_one_shard_per_connection_and_come_back_through_their_worker() {
    let snap = offloaded(&[1, 2]);
    let plan = OffloadPlan::new(3);
    let rings = Rings::new(2, 64).with_offload(OffloadRings::new(plan, 2, 1024));
    let mut workers: Vec<Worker> = (0..2)
        .map(|id| {
            Worker::new(
                id,
                Steering::new(2, (1024, 32767)),
                Arc::clone(&snap),
                false,
            )
            .offloading_to(plan)
        })
        .collect();
    let mut ports = [MemPort::new(false), MemPort::new(false)];
    let mut bursts = [Bursts::new(), Bursts::new()];
    // 60 connections, three frames each, alternating between the two workers' queues.
    let mut sent = Vec::new();
    for round in 0..3 {
        for i in 0..60u16 {
            let flags = if round == 0 {
                packet::tcp::SYN
            } else {
                packet::tcp::ACK
            };
            let f = syn(i, flags);
            let w = (i as usize + round) % 2;
            ports[w].inject(f.data(), 1, 0);
            sent.push((w, f.data().to_vec()));
        }
        for w in 0..2 {
            while !ports[w].rx.is_empty() {
                workers[w].poll(&mut ports[w], &mut bursts[w], &rings);
            }
        }
    }
    assert_eq!(workers[0].stats.offloaded + workers[1].stats.offloaded, 180);
    assert!(
        workers.iter().all(|w| w.ct.is_empty()),
        "offloaded flows are not tracked"
    );
    assert!(
        ports.iter().all(|p| p.tx.is_empty()),
        "nothing is sent before a shard answers"
    );
    // Each shard takes its frames; every frame of a connection went to one shard.
    let mut shard_of_conn = std::collections::HashMap::new();
    let mut per_shard = [0; 3];
    let mut received = Vec::new();
    for (shard, taken) in per_shard.iter_mut().enumerate() {
        while let Some(mut h) = rings.offload().unwrap().take(shard) {
            let conn = (h.frame.data()[29], h.frame.data()[34..36].to_vec());
            assert_eq!(*shard_of_conn.entry(conn).or_insert(shard), shard);
            *taken += 1;
            received.push((h.worker, h.frame.data().to_vec()));
            echo(h.frame.data_mut());
            rings
                .offload()
                .unwrap()
                .give_back(h.worker, h.frame)
                .unwrap();
        }
    }
    assert!(per_shard.iter().all(|&n| n >= 30), "{per_shard:?}");
    received.sort();
    let mut expect = sent.clone();
    expect.sort();
    assert!(
        received == expect,
        "frames reach the shards unmodified, with their worker"
    );
    // Idle polls transmit what the shards returned, at most `RETURNED_BURSTS` bursts each, on
    // the worker each frame came from, addressed on the link to the gateway (the echoes go to
    // the clients) from the node.
    let link = |d: &[u8]| {
        let mut d = d.to_vec();
        echo(&mut d);
        d[..6].copy_from_slice(&snap.mac_of(snap.gateway).unwrap().0);
        d[6..12].copy_from_slice(&snap.node.mac.0);
        d
    };
    for w in 0..2 {
        for _ in 0..3 {
            let before = ports[w].tx.len();
            workers[w].poll(&mut ports[w], &mut bursts[w], &rings);
            assert!(ports[w].tx.len() - before <= super::RETURNED_BURSTS * BURST);
        }
        let mut got: Vec<Vec<u8>> = ports[w].tx.iter().map(|b| b.data().to_vec()).collect();
        let mut want: Vec<Vec<u8>> = sent
            .iter()
            .filter(|(sw, _)| *sw == w)
            .map(|(_, d)| link(d))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "worker {w}");
        assert!(got == want, "worker {w} sends the echoes of its own frames");
        assert_eq!(workers[w].stats.offload_returned, 90);
        assert_eq!(workers[w].stats.packets_out, 90);
    }
    assert!(rings.is_empty());
    assert_eq!(
        rings.offload().unwrap().free_frames(),
        1024 * 5,
        "every frame came back"
    );
}

/// A full shard ring, or no pool at all, drops the frame by name and frees its buffer.
#[test]
fn offload_without_room_or_without_a_pool_is_dropped_and_counted() {
    let snap = offloaded(&[1]);
    let plan = OffloadPlan::new(1);
    let rings = Rings::new(1, 64).with_offload(OffloadRings::new(plan, 1, 4));
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), Arc::clone(&snap), false)
        .offloading_to(plan);
    let mut port = MemPort::new(false);
    let mut b = Bursts::new();
    for i in 0..10 {
        port.inject(syn(i, packet::tcp::SYN).data(), 1, 0);
    }
    w.poll(&mut port, &mut b, &rings);
    assert_eq!(w.stats.offloaded, 4);
    assert_eq!(w.stats.dropped(DropReason::OffloadRingFull), 6);
    assert_eq!(
        port.pool.len(),
        10,
        "the port's buffers are freed: shards hold copies"
    );
    // A worker that was given no plan, and rings that have no pool.
    let mut bare = Worker::new(0, Steering::new(1, (1024, 32767)), snap, false);
    let mut f = syn(1, packet::tcp::SYN);
    assert_eq!(
        bare.process(&mut f, 1),
        Verdict::Drop(DropReason::OffloadUnavailable)
    );
    let no_pool = Rings::new(1, 64);
    port.inject(syn(2, packet::tcp::SYN).data(), 1, 0);
    w.poll(&mut port, &mut b, &no_pool);
    assert_eq!(w.stats.dropped(DropReason::OffloadUnavailable), 1);
}

/// Replies to the node's address on a shard's upstream ports go to that shard; other
/// ports of the node are not the pool's.
#[test]
fn replies_to_a_shards_upstream_ports_reach_that_shard() {
    let plan = OffloadPlan::new(4).with_upstream_ports(50000, 50999);
    let mut w =
        Worker::new(0, Steering::new(1, (1024, 32767)), offloaded(&[1]), false).offloading_to(plan);
    let reply = |port: u16| {
        // 10.1.0.1:8080 -> 192.0.2.1:port
        let mut f = syn(0, packet::tcp::SYN | packet::tcp::ACK);
        let d = f.data_mut();
        d[26..30].copy_from_slice(&[10, 1, 0, 1]);
        d[30..34].copy_from_slice(&[192, 0, 2, 1]);
        d[34..36].copy_from_slice(&8080u16.to_be_bytes());
        d[36..38].copy_from_slice(&port.to_be_bytes());
        d[24..26].copy_from_slice(&[0, 0]);
        let c = packet::checksum::finish(0, &d[14..34]);
        d[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    for (port, shard) in [(50000, 0), (50249, 0), (50250, 1), (50750, 3), (50999, 3)] {
        assert_eq!(
            w.process(&mut reply(port), 1),
            Verdict::Offload(shard),
            "{port}"
        );
    }
    assert_eq!(
        w.process(&mut reply(51000), 1),
        Verdict::Drop(DropReason::NotOurs)
    );
}

/// An ARP request from 203.0.113.1 (02:..:fe) for `target`.
fn arp_for(target: [u8; 4]) -> PacketBuf {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xfe, 203, 0, 113, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    let mut b = PacketBuf::new();
    assert!(b.load(&f, 0, 0));
    b
}

/// A standby node answers ARP for its own address but not for a VIP, and drops what comes
/// for a VIP as `standby`; made active with a new epoch, worker 0 sends one gratuitous ARP
/// per VIP on its next poll (idle or not), once.
#[test]
fn a_standby_node_serves_no_vip_and_announces_them_on_becoming_active() {
    let mut setup = cfg(&[1]);
    setup.node.standby = true;
    let standby = Arc::new(Snapshot::build(&setup).unwrap());
    let mut w = Worker::new(
        0,
        Steering::new(1, (1024, 32767)),
        Arc::clone(&standby),
        false,
    );
    let mut f = syn(1, packet::tcp::SYN);
    assert_eq!(w.process(&mut f, 1), Verdict::Drop(DropReason::Standby));
    let mut a = arp_for([198, 51, 100, 10]);
    assert_eq!(w.process(&mut a, 1), Verdict::Drop(DropReason::NotOurs));
    let mut a = arp_for([192, 0, 2, 1]);
    assert_eq!(
        w.process(&mut a, 1),
        Verdict::Transmit,
        "the node's own address"
    );

    let rings = Rings::new(1, 64);
    let mut port = MemPort::new(false);
    let mut b = Bursts::new();
    w.poll(&mut port, &mut b, &rings);
    assert!(port.tx.is_empty(), "nothing announced while standby");
    setup.node.standby = false;
    setup.node.announce_epoch = 1;
    w.set_snapshot(Arc::new(Snapshot::build(&setup).unwrap()));
    w.poll(&mut port, &mut b, &rings);
    assert_eq!(port.tx.len(), 1);
    let g = port.tx[0].data().to_vec();
    assert_eq!(
        (&g[..6], &g[6..12]),
        (&[0xff; 6][..], &[2, 0, 0, 0, 0, 1][..])
    );
    assert_eq!(&g[28..32], &[198, 51, 100, 10], "sender: the VIP");
    assert_eq!(&g[38..42], &[198, 51, 100, 10], "target: the VIP");
    assert_eq!(w.stats.vip_announcements, 1);
    w.poll(&mut port, &mut b, &rings);
    assert_eq!(port.tx.len(), 1, "once per epoch");
    let mut f = syn(2, packet::tcp::SYN);
    assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
}

/// `max_flows`: a backend at its limit takes no new flow — Maglev's next choice does — and
/// when every backend is at its limit new flows are dropped as `backend_full`, while tracked
/// flows keep flowing.
#[test]
fn backends_at_max_flows_take_no_new_flows() {
    let mut setup = cfg(&[1, 2]);
    for b in &mut setup.services[0].backends {
        b.max_flows = 5;
    }
    let snap = Arc::new(Snapshot::build(&setup).unwrap());
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), snap, false);
    let mut per_backend = std::collections::HashMap::<[u8; 4], usize>::new();
    let mut verdicts = Vec::new();
    for i in 0..20 {
        let mut f = syn(i, packet::tcp::SYN);
        let v = w.process(&mut f, 1);
        if v == Verdict::Transmit {
            *per_backend.entry(dst_of(&f)).or_default() += 1;
        }
        verdicts.push(v);
    }
    assert_eq!(per_backend.len(), 2, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n == 5), "{per_backend:?}");
    let full = verdicts
        .iter()
        .filter(|v| **v == Verdict::Drop(DropReason::BackendFull))
        .count();
    assert_eq!(full, 10);
    // A tracked flow is not new: it keeps going.
    let first = verdicts
        .iter()
        .position(|v| *v == Verdict::Transmit)
        .unwrap();
    let mut f = syn(first as u16, packet::tcp::ACK);
    assert_eq!(w.process(&mut f, 2), Verdict::Transmit);
    // Without a limit, the same flows all go through.
    let open = Arc::new(Snapshot::build(&cfg(&[1, 2])).unwrap());
    let mut w = Worker::new(0, Steering::new(1, (1024, 32767)), open, false);
    for i in 0..20 {
        let mut f = syn(i, packet::tcp::SYN);
        assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
    }
}

/// `frame` with an 802.1Q tag for `vlan` after its addresses.
fn tagged(frame: &PacketBuf, vlan: u16) -> PacketBuf {
    let d = frame.data();
    let mut t = vec![0u8; d.len() + 4];
    t[..d.len()].copy_from_slice(d);
    assert!(packet::ethernet::insert_vlan_tag(&mut t, d.len(), vlan));
    let mut b = PacketBuf::new();
    assert!(b.load(&t, 0, 0));
    b
}

/// On a tagged link (`node.vlan`), frames on sluice's VLAN are served and keep their tag,
/// untagged frames and other VLANs' belong to the host, and the frames sluice makes itself
/// (here the ARP request for its gateway) carry the tag.
#[test]
fn a_tagged_link_keeps_sluices_vlan_on_everything_it_sends() {
    let mut setup = cfg(&[1]);
    setup.node.vlan = Some(100);
    setup.node.gateway_mac = None;
    setup.node.gateway = Some("192.0.2.254".parse().unwrap());
    let mut w = Worker::new(
        0,
        Steering::new(1, (1024, 32767)),
        Arc::new(Snapshot::build(&setup).unwrap()),
        false,
    );
    let mut f = tagged(&syn(1, packet::tcp::SYN), 100);
    assert_eq!(w.process(&mut f, 1), Verdict::Transmit);
    let d = f.data();
    assert_eq!(&d[12..16], &[0x81, 0x00, 0, 100], "the tag stays");
    assert_eq!(&d[..6], &[2, 0, 0, 0, 1, 1], "to the backend");
    assert_eq!(
        &d[34..38],
        &[10, 1, 0, 1],
        "destination rewritten past the tag"
    );
    for mut other in [
        syn(2, packet::tcp::SYN),
        tagged(&syn(3, packet::tcp::SYN), 200),
    ] {
        assert_eq!(
            w.process(&mut other, 1),
            Verdict::Drop(DropReason::NotOurs),
            "untagged and other VLANs are not sluice's"
        );
    }
    let mut a = tagged(&arp_for([192, 0, 2, 1]), 100);
    assert_eq!(w.process(&mut a, 1), Verdict::Transmit, "ARP on the VLAN");
    assert_eq!(&a.data()[12..16], &[0x81, 0x00, 0, 100]);
    assert_eq!(&a.data()[16..18], &[0x08, 0x06]);

    let rings = Rings::new(1, 64);
    let mut port = MemPort::new(false);
    port.clock = Some(1_000_000_000);
    let mut b = Bursts::new();
    w.poll(&mut port, &mut b, &rings);
    let req = port
        .tx
        .iter()
        .map(|f| f.data().to_vec())
        .find(|d| d.get(16..18) == Some(&[0x08, 0x06][..]))
        .expect("an ARP request for the gateway");
    assert_eq!(req.len(), 64);
    assert_eq!(&req[..6], &[0xff; 6]);
    assert_eq!(
        &req[12..16],
        &[0x81, 0x00, 0, 100],
        "tagged with sluice's VLAN"
    );
    assert_eq!(&req[18 + 24..18 + 28], &[192, 0, 2, 254], "for the gateway");
    assert_eq!(
        packet::parse::parse_frame(&req).map(|p| p.vlan_tci),
        Ok(Some(100))
    );
}

/// A SYN from 203.0.113.`src` port `port` to the web VIP.
fn syn_from(src: u8, port: u16) -> PacketBuf {
    let mut b = syn(0, packet::tcp::SYN);
    let mut d = b.data().to_vec();
    d[29] = src;
    d[34..36].copy_from_slice(&port.to_be_bytes());
    // Fix the IPv4 checksum for the new source.
    d[24..26].copy_from_slice(&[0, 0]);
    let c = packet::checksum::finish(0, &d[14..34]);
    d[24..26].copy_from_slice(&c.to_be_bytes());
    assert!(b.load(&d, 0, 0));
    b
}

/// `[service.rate_limit]`: a source opening flows faster than `new_flows_per_source` is cut
/// to its burst and rate while a slower source is not; past `packets` the service's packets
/// are dropped, established or not; both counted by reason.
#[test]
fn rate_limits_cut_a_fast_source_and_a_busy_service_to_their_rates() {
    let mut setup = cfg(&[1, 2]);
    setup.services[0].rate_limit = Some(crate::setup::RateLimitSetup {
        new_flows_per_source: Some((20, 10)),
        packets: None,
    });
    let mut w = Worker::new(
        0,
        Steering::new(1, (1024, 32767)),
        Arc::new(Snapshot::build(&setup).unwrap()),
        false,
    );
    const S: u64 = 1_000_000_000;
    let (mut fast, mut slow, mut limited) = (0, 0, 0);
    // Over 2 s: source .1 opens 2,000 flows (1,000/s), source .2 opens 20 (10/s).
    for i in 0..2000u64 {
        let now = 5 * S + i * 1_000_000;
        let mut f = syn_from(1, 1024 + i as u16);
        match w.process(&mut f, now) {
            Verdict::Transmit => fast += 1,
            Verdict::Drop(DropReason::SourceRateLimited) => limited += 1,
            v => panic!("{v:?}"),
        }
        if i % 100 == 0 {
            let mut f = syn_from(2, 1024 + i as u16);
            slow += usize::from(w.process(&mut f, now) == Verdict::Transmit);
        }
    }
    assert!((48..=52).contains(&fast), "burst 10 + 2 s at 20/s: {fast}");
    assert_eq!(slow, 20, "the slow source is never limited");
    assert_eq!(
        limited,
        2000 - fast,
        "every other flow dropped as source_rate_limited"
    );
    // Tracked flows are not new flows: the fast source's admitted flows keep flowing.
    let mut f = syn_from(1, 1024);
    assert_eq!(w.process(&mut f, 8 * S), Verdict::Transmit);

    // A packet rate on the service: 100/s with a burst of 64, over established flows too.
    setup.services[0].rate_limit = Some(crate::setup::RateLimitSetup {
        new_flows_per_source: None,
        packets: Some((100, 64)),
    });
    w.set_snapshot(Arc::new(Snapshot::build(&setup).unwrap()));
    let (mut passed, mut limited) = (0, 0);
    for i in 0..1000u64 {
        let mut f = syn_from(2, 1024 + (i % 20) as u16 * 100);
        match w.process(&mut f, 10 * S + i * 1_000_000) {
            Verdict::Transmit => passed += 1,
            Verdict::Drop(DropReason::ServiceRateLimited) => limited += 1,
            v => panic!("{v:?}"),
        }
    }
    assert!(
        (162..=166).contains(&passed),
        "64 at once + 1 s at 100/s: {passed}"
    );
    assert_eq!(limited, 1000 - passed);
}
