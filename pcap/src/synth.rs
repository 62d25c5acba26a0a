//! Builds well-formed Ethernet frames (IPv4 with optional options, IPv6, one optional 802.1Q
//! tag; TCP, UDP, ICMP/ICMPv6) and the named captures committed as fixtures. The
//! `make-fixtures` binary writes those captures; tests regenerate them and compare, so every
//! committed fixture is provably what this code makes.

use packet::checksum;
use packet::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The transport part of a synthetic frame.
#[derive(Debug, Clone)]
pub enum Transport<'a> {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &'a [u8],
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
    },
    /// ICMP (over IPv4) or ICMPv6 (over IPv6), chosen by the address family.
    Icmp {
        msg_type: u8,
        code: u8,
        rest: [u8; 4],
        payload: &'a [u8],
    },
}

/// Addresses and header fields shared by the frames of one conversation direction.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan_tci: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// IPv4 options (padded to a multiple of 4 with EOL); ignored for IPv6.
    pub ipv4_options: Vec<u8>,
}

impl FrameBuilder {
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, src: IpAddr, dst: IpAddr) -> Self {
        FrameBuilder {
            src_mac,
            dst_mac,
            vlan_tci: None,
            src,
            dst,
            ttl: 64,
            ipv4_options: Vec::new(),
        }
    }

    /// The builder for the opposite direction (MACs and addresses swapped).
    pub fn reversed(&self) -> Self {
        FrameBuilder {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src: self.dst,
            dst: self.src,
            ..self.clone()
        }
    }

    /// Builds the IP datagram (no L2 header).
    pub fn datagram(&self, t: &Transport) -> Vec<u8> {
        let (proto, mut l4) = match t {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                seq,
                ack,
                payload,
            } => {
                let mut s = Vec::with_capacity(20 + payload.len());
                s.extend_from_slice(&src_port.to_be_bytes());
                s.extend_from_slice(&dst_port.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(&ack.to_be_bytes());
                s.extend_from_slice(&[0x50, *flags, 0xff, 0xff, 0, 0, 0, 0]);
                s.extend_from_slice(payload);
                (6u8, s)
            }
            Transport::Udp {
                src_port,
                dst_port,
                payload,
            } => {
                let mut s = Vec::with_capacity(8 + payload.len());
                s.extend_from_slice(&src_port.to_be_bytes());
                s.extend_from_slice(&dst_port.to_be_bytes());
                s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(payload);
                (17u8, s)
            }
            Transport::Icmp {
                msg_type,
                code,
                rest,
                payload,
            } => {
                let mut s = vec![*msg_type, *code, 0, 0];
                s.extend_from_slice(rest);
                s.extend_from_slice(payload);
                (if self.src.is_ipv4() { 1u8 } else { 58u8 }, s)
            }
        };
        let csum_off = match proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) if proto != 1 => {
                checksum::pseudo_v4(s, d, proto, l4.len() as u16)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_v6(s, d, proto, l4.len() as u32),
            _ => 0,
        };
        let mut c = checksum::finish(pseudo, &l4);
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                ipv4_datagram(s, d, proto, self.ttl, &self.ipv4_options, &l4)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_datagram(s, d, proto, self.ttl, &l4),
            _ => panic!("synthetic frame with mixed address families"),
        }
    }

    /// Builds the whole Ethernet frame.
    pub fn frame(&self, t: &Transport) -> Vec<u8> {
        let ip = self.datagram(t);
        self.wrap(self.src.is_ipv6(), &ip)
    }

    /// Puts an Ethernet header (and tag) in front of an IP datagram.
    pub fn wrap(&self, ipv6: bool, ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(18 + ip.len());
        f.extend_from_slice(&self.dst_mac.0);
        f.extend_from_slice(&self.src_mac.0);
        if let Some(tci) = self.vlan_tci {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&(if ipv6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        f.extend_from_slice(ip);
        f
    }
}

/// An IPv4 datagram with DF set, identification 0x1234, and a correct header checksum.
pub fn ipv4_datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let hl = 20 + opts.len();
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&opts);
    let c = checksum::finish(0, &h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 datagram without extension headers.
pub fn ipv6_datagram(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop_limit]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// A small deterministic generator (xorshift64*), so captures are reproducible byte for byte.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Addresses of the example topology used by the sample capture and the example config.
pub mod example {
    use super::*;
    pub const CLIENT_GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
    pub const NODE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    pub const DNS_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
    pub const WEB6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);

    /// The i-th client address: 203.0.113.0/24 and 2001:db8:c::/64, varied per flow.
    pub fn client_v4(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xcb00_7100u32 + (i % 250) + 1)
    }
    pub fn client_v6(i: u32) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, (i >> 16) as u16, i as u16 + 1)
    }
}

/// One TCP conversation from the client side: SYN, ACK with a request, FIN.
pub fn tcp_client_flow(
    b: &FrameBuilder,
    src_port: u16,
    dst_port: u16,
    request: &[u8],
) -> [Vec<u8>; 3] {
    let tcp = |flags: u8, seq: u32, payload: &[u8]| {
        b.frame(&Transport::Tcp {
            src_port,
            dst_port,
            flags,
            seq,
            ack: if flags & 0x10 != 0 { 1 } else { 0 },
            payload,
        })
    };
    [
        tcp(0x02, 0, &[]),
        tcp(0x18, 1, request),
        tcp(0x11, 1 + request.len() as u32, &[]),
    ]
}

/// The capture replayed by the README's main-job command: web flows over IPv4 and IPv6 (three
/// frames each), DNS queries over UDP, some traffic that is not the balancer's, and a few
/// malformed frames, spread over ten seconds.
pub fn sample_capture() -> Vec<(u64, Vec<u8>)> {
    use example::*;
    let mut rng = Rng::new(0x5eed);
    let mut frames = Vec::new();
    let t0 = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
    for i in 0..400u32 {
        let (src, dst) = if i % 4 == 3 {
            (IpAddr::V6(client_v6(i)), IpAddr::V6(WEB6_VIP))
        } else {
            (IpAddr::V4(client_v4(i)), IpAddr::V4(WEB_VIP))
        };
        let b = FrameBuilder::new(CLIENT_GW_MAC, NODE_MAC, src, dst);
        let sport = 20000 + rng.below(40000) as u16;
        for f in tcp_client_flow(&b, sport, 80, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n") {
            frames.push(f);
        }
        if i % 5 == 0 {
            let d = FrameBuilder::new(
                CLIENT_GW_MAC,
                NODE_MAC,
                IpAddr::V4(client_v4(i)),
                IpAddr::V4(DNS_VIP),
            );
            frames.push(d.frame(&Transport::Udp { src_port: 30000 + i as u16, dst_port: 53, payload: b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01" }));
        }
        if i % 50 == 0 {
            // Not ours: a ping to another host on the segment, and an ARP request.
            let o = FrameBuilder::new(
                CLIENT_GW_MAC,
                NODE_MAC,
                IpAddr::V4(client_v4(i)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200)),
            );
            frames.push(o.frame(&Transport::Icmp {
                msg_type: 8,
                code: 0,
                rest: [0, 1, 0, i as u8],
                payload: b"ping",
            }));
            frames.push(arp_request(
                CLIENT_GW_MAC,
                Ipv4Addr::new(192, 0, 2, 254),
                Ipv4Addr::new(192, 0, 2, 1),
            ));
        }
    }
    for (_, f) in malformed_frames().into_iter().take(4) {
        frames.push(f);
    }
    let step = 10_000_000_000 / frames.len() as u64;
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (t0 + i as u64 * step, f))
        .collect()
}

/// A throughput capture: `flows` TCP flows to the example web VIP, `per_flow` frames each
/// (a SYN, then ACKs carrying 6 bytes, 64-byte frames), flows interleaved so consecutive
/// frames belong to different flows, one microsecond apart.
pub fn bench_capture(flows: u32, per_flow: u32) -> Vec<(u64, Vec<u8>)> {
    bench_capture_from(0, flows, per_flow)
}

/// [`bench_capture`] for flows `first..first + flows` (disjoint sets for separate queues).
pub fn bench_capture_from(first: u32, flows: u32, per_flow: u32) -> Vec<(u64, Vec<u8>)> {
    use example::*;
    let t0 = 1_767_225_600_000_000_000u64;
    let mut out = Vec::with_capacity((flows * per_flow) as usize);
    for k in 0..per_flow {
        for i in first..first + flows {
            let src = Ipv4Addr::from(0x0a40_0000u32 + i);
            let b = FrameBuilder::new(
                CLIENT_GW_MAC,
                NODE_MAC,
                IpAddr::V4(src),
                IpAddr::V4(WEB_VIP),
            );
            let flags = if k == 0 { 0x02 } else { 0x10 };
            let payload: &[u8] = if k == 0 { b"" } else { b"abcdef" };
            let f = b.frame(&Transport::Tcp {
                src_port: 1024 + (i % 50000) as u16,
                dst_port: 80,
                flags,
                seq: k,
                ack: 1,
                payload,
            });
            out.push((t0 + out.len() as u64 * 1000, f));
        }
    }
    out
}

/// An ARP who-has request, broadcast.
pub fn arp_request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f.resize(60, 0);
    f
}

/// An IPv6 neighbour solicitation (RFC 4861) from `src` for `target`, sent to the target's
/// solicited-node multicast address, with the source link-layer address option.
pub fn neighbour_solicitation(sender_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&sender_mac.0);
    let c = packet::checksum::finish(
        packet::checksum::pseudo_v6(src, group, 58, icmp.len() as u32),
        &icmp,
    );
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let g = group.octets();
    let mut f = vec![0x33, 0x33, g[12], g[13], g[14], g[15]];
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&g);
    f.extend_from_slice(&icmp);
    f
}

/// An ARP reply: `sender_ip` is at `sender_mac`, told to `target_ip` at `target_mac`.
pub fn arp_reply(
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&target_mac.0);
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&target_mac.0);
    f.extend_from_slice(&target_ip.octets());
    f.resize(60, 0);
    f
}

/// A solicited IPv6 neighbour advertisement (RFC 4861) from `src` (the target itself) to
/// `dst`, with the target link-layer address option.
pub fn neighbour_advertisement(
    sender_mac: MacAddr,
    src: Ipv6Addr,
    dst_mac: MacAddr,
    dst: Ipv6Addr,
) -> Vec<u8> {
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend_from_slice(&src.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&sender_mac.0);
    let c = packet::checksum::finish(
        packet::checksum::pseudo_v6(src, dst, 58, icmp.len() as u32),
        &icmp,
    );
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.0.to_vec();
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Malformed frames addressed to the example web VIP, each with the drop reason the data path
/// must count for it (the names of `packet::Malformed`).
pub fn malformed_frames() -> Vec<(&'static str, Vec<u8>)> {
    use example::*;
    let b = FrameBuilder::new(
        CLIENT_GW_MAC,
        NODE_MAC,
        IpAddr::V4(client_v4(7)),
        IpAddr::V4(WEB_VIP),
    );
    let good = b.frame(&Transport::Tcp {
        src_port: 40000,
        dst_port: 80,
        flags: 0x02,
        seq: 0,
        ack: 0,
        payload: b"",
    });
    let fix_ip_csum = |f: &mut Vec<u8>| {
        let hl = ((f[14] & 0x0f) as usize * 4).min(f.len() - 14);
        f[24] = 0;
        f[25] = 0;
        let c = checksum::finish(0, &f[14..14 + hl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let mut out = Vec::new();
    out.push(("ethernet_truncated", good[..10].to_vec()));
    out.push(("ipv4_truncated", good[..14 + 12].to_vec()));
    let mut f = good.clone();
    f[14] = 0x44; // IHL 4: below the minimum
    out.push(("ipv4_bad_header_length", f));
    let mut f = good.clone();
    f[14] = 0x4f; // IHL 15: 60 bytes, past the 40-byte datagram
    out.push(("ipv4_bad_header_length", f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes()); // total length past the frame
    fix_ip_csum(&mut f);
    out.push(("ipv4_bad_total_length", f));
    let mut f = good.clone();
    f[22] ^= 0x01; // TTL changed without fixing the checksum
    out.push(("ipv4_bad_checksum", f));
    let mut f = good.clone();
    f[14] = 0x65; // version 6 inside an IPv4 ethertype
    out.push(("ipv4_bad_version", f));
    let mut f = good.clone();
    f.truncate(14 + 20 + 10); // TCP header cut short, IP length adjusted to match
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    fix_ip_csum(&mut f);
    out.push(("tcp_truncated", f));
    let mut f = good.clone();
    f[14 + 20 + 12] = 0xf0; // data offset 60 bytes, past the segment
    out.push(("tcp_bad_data_offset", f));
    let u = b.frame(&Transport::Udp {
        src_port: 40000,
        dst_port: 53,
        payload: b"abcd",
    });
    let mut f = u.clone();
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&99u16.to_be_bytes()); // UDP length past the datagram
    out.push(("udp_bad_length", f));
    let b6 = FrameBuilder::new(
        CLIENT_GW_MAC,
        NODE_MAC,
        IpAddr::V6(client_v6(7)),
        IpAddr::V6(WEB6_VIP),
    );
    let g6 = b6.frame(&Transport::Tcp {
        src_port: 40000,
        dst_port: 80,
        flags: 0x02,
        seq: 0,
        ack: 0,
        payload: b"",
    });
    out.push(("ipv6_truncated", g6[..14 + 30].to_vec()));
    let mut f = g6.clone();
    f[18..20].copy_from_slice(&500u16.to_be_bytes()); // payload length past the frame
    out.push(("ipv6_bad_payload_length", f));
    let mut f = g6.clone();
    f[20] = 0; // next header: hop-by-hop, whose length byte claims far past the datagram
    f[14 + 40 + 1] = 200;
    out.push(("ipv6_bad_extension_header", f));
    let mut f = good.clone();
    f.truncate(16); // VLAN ethertype, tag cut short
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    out.push(("vlan_truncated", f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_frames_fail_with_the_reason_they_name() {
        for (reason, f) in malformed_frames() {
            let got = packet::parse_frame(&f).map(|_| ()).map_err(|m| m.name());
            assert_eq!(got, Err(reason), "frame {f:02x?}");
        }
    }

    #[test]
    fn built_frames_parse() {
        let b = FrameBuilder {
            vlan_tci: Some(7),
            ipv4_options: vec![1, 1, 1],
            ..FrameBuilder::new(
                example::CLIENT_GW_MAC,
                example::NODE_MAC,
                IpAddr::V4(example::client_v4(1)),
                IpAddr::V4(example::WEB_VIP),
            )
        };
        let f = b.frame(&Transport::Tcp {
            src_port: 1,
            dst_port: 80,
            flags: 2,
            seq: 0,
            ack: 0,
            payload: b"x",
        });
        let p = packet::parse_frame(&f).unwrap();
        assert_eq!(
            (p.l2_len, p.l4_off, p.dst_port, p.tcp_flags),
            (18, 18 + 24, 80, 2)
        );
    }
}
