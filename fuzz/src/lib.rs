//! The bodies of sluice's fuzz targets, shared by the cargo-fuzz binaries
//! (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz.sh` for a bounded time) and by
//! `tests/fuzz_regressions.rs`, which replays every committed seed and every crash found
//! (`fuzz/regressions/TARGET/`) as an ordinary test. Each target states the property it
//! checks; a panic anywhere is a finding.
//!
//! - `frame`: any bytes through the frame parser, the quoted-datagram parser and the ARP /
//!   neighbour answerers never panic, and a parse's offsets stay inside the frame.
//! - `burst`: a burst of frames (each `[len_hi, len_lo, bytes…]`) through a worker's whole
//!   poll loop, against a live snapshot with every forwarding mode, both families, SNAT,
//!   tunnels, next hops to resolve, `max_flows` and rate limits, never panics, and what it
//!   transmits is no larger than a frame may be.
//! - `control`: control-protocol lines against a control plane: a request that is refused
//!   leaves the running configuration and its generation exactly as they were.
//! - `config`: any text as a configuration file never panics, and one that loads writes
//!   back (`to_toml`) to a file that loads to the same configuration.
//! - `cookie`: the SYN-cookie check on any ACK never panics; a cookie made for any SYN is
//!   accepted for it in its period and the next, gives back the SYN's options (the MSS
//!   rounded down to the table). (That it is refused for another flow or ISN is a 2⁻²¹
//!   matter of chance, tested statistically in `dataplane::synproxy`.)

use std::sync::{Arc, OnceLock};

pub fn frame(data: &[u8]) {
    let Ok(p) = packet::parse::parse_frame(data) else {
        return;
    };
    assert!(p.l2_len <= data.len(), "l2 past the frame");
    assert!(p.l3_end <= data.len(), "l3 end past the frame: {p:?}");
    if p.is_ip() {
        assert!(p.l4_off <= p.l3_end, "l4 past the datagram: {p:?}");
        let _ = packet::parse::parse_quoted(data, &p);
    }
}

/// A configuration with a service of every forwarding mode, both families, a backend whose
/// MAC the data path must resolve, a `max_flows` backend, rate limits and SYN proxies (`auto`
/// on web, switching on at 3 SYNs a second on a worker; `on` on snat).
pub const BURST_CONFIG: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
ipv6 = "2001:db8::1"
gateway = "192.0.2.254"
tunnel_mtu = 1500
tunnel_fragment = true

[conntrack]
capacity = 512
half_open_percent = 25
rate_limit_sources = 64

[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = 251
syn_proxy = "auto"
syn_proxy_auto_on = 6
syn_proxy_auto_off = 2
[service.rate_limit]
new_flows_per_source = 50
packets = 100000
[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
max_flows = 4
[[service.backend]]
address = "10.1.0.2:8080"

[[service]]
name = "snat"
vip = "198.51.100.10:443"
protocol = "tcp"
forwarding = "snat"
table_size = 251
syn_proxy = "on"
[[service.backend]]
address = "10.1.0.3:8443"
mac = "02:00:00:00:01:03"

[[service]]
name = "web6"
vip = "[2001:db8:100::10]:80"
protocol = "tcp"
forwarding = "dsr"
table_size = 251
[[service.backend]]
address = "[2001:db8:1::1]:80"
mac = "02:00:00:00:01:01"

[[service]]
name = "dns"
vip = "198.51.100.53:53"
protocol = "udp"
forwarding = "ipip"
table_size = 251
[[service.backend]]
address = "10.2.0.1:53"
mac = "02:00:00:00:01:04"

[[service]]
name = "dns6"
vip = "[2001:db8:100::53]:53"
protocol = "udp"
forwarding = "gue"
table_size = 251
[[service.backend]]
address = "[2001:db8:2::1]:53"
mac = "02:00:00:00:01:05"
"#;

fn burst_snapshot() -> Arc<dataplane::Snapshot> {
    static SNAP: OnceLock<Arc<dataplane::Snapshot>> = OnceLock::new();
    Arc::clone(SNAP.get_or_init(|| {
        let cfg = config::Config::from_toml(BURST_CONFIG, None).expect("the fuzz configuration");
        Arc::new(controlplane::snapshot::build(&cfg).expect("its snapshot"))
    }))
}

pub fn burst(data: &[u8]) {
    use dataplane::{Bursts, Frame, MemPort, PacketBuf, Rings, Steering, Worker};
    let snap = burst_snapshot();
    let mut w = Worker::new(0, Steering::new(2, snap.node.snat_ports), snap, true);
    let mut port = MemPort::new(true);
    let mut bursts: Bursts<PacketBuf> = Bursts::new();
    let rings: Rings<PacketBuf> = Rings::new(2, 64);
    let mut rest = data;
    let mut seq = 0u64;
    let mut now = 1_700_000_000_000_000_000u64;
    // Up to 64 frames; a poll after every 16, so bursts, sweeps and timers all run.
    while rest.len() >= 2 && seq < 64 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]) & 0x0fff);
        let take = len.min(rest.len() - 2);
        let frame = &rest[2..2 + take];
        rest = &rest[2 + take..];
        now += u64::from(frame.first().copied().unwrap_or(0)) * 1_000_000;
        port.inject(frame, now, seq);
        seq += 1;
        if seq.is_multiple_of(16) {
            port.clock = Some(now);
            w.poll(&mut port, &mut bursts, &rings);
            // Answer what the SYN proxy sent, so its handshakes go past the cookie (which the
            // fuzzer cannot forge): the client's ACK to a SYN-ACK from a VIP, the backend's
            // SYN-ACK to a SYN from sluice, with flags, options and data from the input.
            let sent: Vec<Vec<u8>> = port.tx.iter().map(|f| f.data().to_vec()).collect();
            for out in sent {
                let (pick, tail) = match rest.split_first() {
                    Some((b, t)) => (*b, t),
                    None => (0, &[][..]),
                };
                if let Some(back) = answer(&out, pick, tail) {
                    port.inject(&back, now, seq);
                    seq += 1;
                }
            }
        }
    }
    port.clock = Some(now + 1_000_000_000);
    w.poll(&mut port, &mut bursts, &rings);
    for f in port.tx.iter().chain(port.host.iter()) {
        assert!(
            f.data().len() <= 9216 + 64,
            "a frame of {} bytes",
            f.data().len()
        );
    }
    assert!(w.ct.len() <= 512, "the conntrack past its capacity");
}

/// The peer's answer to a TCP segment sluice sent: to a SYN-ACK, the ACK (with data when
/// `pick` says so); to a SYN, the SYN-ACK (options from `tail`, or a RST when `pick` says
/// so). `None` for anything else.
fn answer(frame: &[u8], pick: u8, tail: &[u8]) -> Option<Vec<u8>> {
    use packet::tcp::{TcpPacket, TcpRepr, ACK, RST, SYN};
    let p = packet::parse_frame(frame).ok()?;
    if p.proto != 6 || p.fragment {
        return None;
    }
    let t = TcpPacket::new_checked(frame.get(p.l4_off..p.l3_end)?).ok()?;
    let (flags, payload, options): (u8, &[u8], &[u8]) = match t.flags() & (SYN | ACK) {
        f if f == SYN | ACK => (
            ACK,
            if pick & 1 == 1 {
                tail.get(..tail.len().min(64))?
            } else {
                &[]
            },
            &[],
        ),
        SYN if pick & 2 == 2 => (RST | ACK, &[], &[]),
        SYN => {
            let n = tail.len().min(12) & !3;
            (SYN | ACK, &[], &tail[..n])
        }
        _ => return None,
    };
    let tcp = TcpRepr {
        src_port: p.dst_port,
        dst_port: p.src_port,
        seq: if flags & SYN != 0 {
            u32::from(pick) << 20
        } else {
            t.ack_number()
        },
        ack: t.seq_number().wrapping_add(1),
        flags,
        window: u16::from(pick) << 4,
        options,
    };
    let tl = tcp.header_len() + payload.len();
    let mut out = frame.get(..p.l2_len)?.to_vec();
    out.copy_within(0..6, 6);
    out[..6].copy_from_slice(&frame[6..12]);
    let ip_len = if p.src.is_ipv6() { 40 } else { 20 };
    out.resize(p.l2_len + ip_len + tl, 0);
    let pseudo = match (p.dst, p.src) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
            packet::ipv4::Ipv4Repr {
                src: a,
                dst: b,
                protocol: 6,
                payload_len: tl as u16,
                ttl: 64,
                dscp_ecn: 0,
                dont_fragment: true,
            }
            .emit(&mut out[p.l2_len..])
            .ok()?;
            packet::checksum::pseudo_v4(a, b, 6, tl as u16)
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
            packet::ipv6::Ipv6Repr {
                src: a,
                dst: b,
                next_header: 6,
                payload_len: tl as u16,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut out[p.l2_len..])
            .ok()?;
            packet::checksum::pseudo_v6(a, b, 6, tl as u32)
        }
        _ => return None,
    };
    let seg = &mut out[p.l2_len + ip_len..];
    seg[tcp.header_len()..].copy_from_slice(payload);
    tcp.emit(seg, pseudo).ok()?;
    Some(out)
}

const CONTROL_CONFIG: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"

[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = 251
[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
[[service.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
weight = 2
"#;

pub fn control(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = config::Config::from_toml(CONTROL_CONFIG, None).expect("the control configuration");
    let snap = controlplane::snapshot::build(&cfg).expect("its snapshot");
    let (cell, links, _workers) = controlplane::links(Arc::new(snap), 0);
    let mut p = controlplane::plane::Plane::new(
        cfg,
        "/nonexistent/sluice.toml".into(),
        "fuzz",
        cell,
        links,
        true,
    );
    for line in text.lines().take(8) {
        let Ok(op) = ctl::decode_request(line) else {
            continue;
        };
        let before = (p.cfg.to_toml(), p.generation, p.current().generation);
        if p.handle(&op).is_err() {
            let after = (p.cfg.to_toml(), p.generation, p.current().generation);
            assert_eq!(before, after, "a refused request changed the state: {line}");
        }
    }
}

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = config::Config::from_toml(text, None) else {
        return;
    };
    let again = c.to_toml().expect("a loaded configuration writes back");
    let c2 = config::Config::from_toml(&again, None)
        .unwrap_or_else(|e| panic!("what to_toml wrote does not load: {e}\n{again}"));
    assert_eq!(c, c2, "the configuration changed on the way back");
}

/// The proxy's key, the same for every input (as in a daemon's life).
fn cookie_key() -> &'static dataplane::synproxy::CookieKey {
    static KEY: OnceLock<dataplane::synproxy::CookieKey> = OnceLock::new();
    KEY.get_or_init(dataplane::synproxy::CookieKey::new)
}

pub fn cookie(data: &[u8]) {
    use dataplane::synproxy::MSS_TABLE;
    if data.len() < 28 {
        return;
    }
    let u32_at = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let key = packet::FlowKey {
        src: std::net::IpAddr::V4(u32_at(0).into()),
        dst: std::net::IpAddr::V4(u32_at(4).into()),
        src_port: u32_at(8) as u16,
        dst_port: (u32_at(8) >> 16) as u16,
        proto: 6,
    };
    let (isn, cookie, now) = (u32_at(12), u32_at(16), u64::from(u32_at(20)) * 16);
    let k = cookie_key();
    // Any ACK: checked without panicking.
    let _ = k.check(&key, isn, cookie, now);
    // Any SYN: its cookie comes back with its options, for it alone.
    let opts = packet::tcp::SynOptions::parse(&data[24..]);
    let c = k.make(&key, isn, &opts, now);
    for later in [0, dataplane::synproxy::PERIOD_S] {
        let got = k
            .check(&key, isn, c, now + later)
            .expect("a fresh cookie is accepted");
        let asked = opts.mss.unwrap_or(536);
        assert!(got.mss <= asked.max(MSS_TABLE[0]), "{got:?} for {opts:?}");
        assert_eq!(got.sack_permitted, opts.sack_permitted);
        assert_eq!(got.window_scale, opts.window_scale.map(|w| w.min(14)));
    }
}
