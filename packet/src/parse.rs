//! One pass over a frame: L2 (with one 802.1Q tag), L3, L4, into a [`Parsed`] summary of
//! offsets and fields that classification and rewrites use. Malformed frames get a
//! [`Malformed`] reason that names the layer and the fault, which the data path counts.

use crate::ethernet::{
    EthernetFrame, VlanTag, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN,
};
use crate::icmp::IcmpPacket;
use crate::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::ipv6::Ipv6Packet;
use crate::tcp::TcpPacket;
use crate::udp::UdpPacket;
use crate::{Error, FlowKey};
use core::net::{IpAddr, Ipv4Addr};

/// Why a frame could not be parsed. Each variant is a drop reason with a stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    EthernetTruncated,
    VlanTruncated,
    Ipv4Truncated,
    Ipv4BadVersion,
    Ipv4BadHeaderLength,
    Ipv4BadLength,
    Ipv4BadChecksum,
    Ipv6Truncated,
    Ipv6BadLength,
    Ipv6BadExtensionHeader,
    TcpTruncated,
    TcpBadHeaderLength,
    UdpTruncated,
    UdpBadLength,
    IcmpTruncated,
}

impl Malformed {
    pub const ALL: [Malformed; 15] = [
        Malformed::EthernetTruncated,
        Malformed::VlanTruncated,
        Malformed::Ipv4Truncated,
        Malformed::Ipv4BadVersion,
        Malformed::Ipv4BadHeaderLength,
        Malformed::Ipv4BadLength,
        Malformed::Ipv4BadChecksum,
        Malformed::Ipv6Truncated,
        Malformed::Ipv6BadLength,
        Malformed::Ipv6BadExtensionHeader,
        Malformed::TcpTruncated,
        Malformed::TcpBadHeaderLength,
        Malformed::UdpTruncated,
        Malformed::UdpBadLength,
        Malformed::IcmpTruncated,
    ];

    /// The stable snake_case name used in stats.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::EthernetTruncated => "ethernet_truncated",
            Malformed::VlanTruncated => "vlan_truncated",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadHeaderLength => "ipv4_bad_header_length",
            Malformed::Ipv4BadLength => "ipv4_bad_total_length",
            Malformed::Ipv4BadChecksum => "ipv4_bad_checksum",
            Malformed::Ipv6Truncated => "ipv6_truncated",
            Malformed::Ipv6BadLength => "ipv6_bad_payload_length",
            Malformed::Ipv6BadExtensionHeader => "ipv6_bad_extension_header",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::TcpBadHeaderLength => "tcp_bad_data_offset",
            Malformed::UdpTruncated => "udp_truncated",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::IcmpTruncated => "icmp_truncated",
        }
    }
}

/// The network layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Ipv4,
    Ipv6,
    Arp,
    /// Any other ethertype (LLDP, STP, QinQ, …): not the balancer's.
    Other,
}

/// Offsets and fields of one frame, found in a single pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Length of the L2 header: 14, or 18 with an 802.1Q tag.
    pub l2_len: usize,
    /// The 802.1Q tag control information, if the frame carried a tag.
    pub vlan_tci: Option<u16>,
    /// The ethertype after any tag.
    pub ethertype: u16,
    pub network: Network,
    /// End of the IP datagram in the frame (anything after is Ethernet padding).
    pub l3_end: usize,
    /// Offset of the transport header (after IPv4 options / IPv6 extension headers).
    pub l4_off: usize,
    /// Transport protocol number (upper-layer protocol for IPv6).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports for TCP/UDP; zero otherwise.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The datagram is a fragment (first or later); its transport header is not parsed.
    pub fragment: bool,
}

impl Parsed {
    /// The summary of nothing: what [`parse_frame_into`] starts from.
    pub const EMPTY: Parsed = Parsed {
        l2_len: 0,
        vlan_tci: None,
        ethertype: 0,
        network: Network::Other,
        l3_end: 0,
        l4_off: 0,
        proto: 0,
        src: UNSPECIFIED,
        dst: UNSPECIFIED,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: 0,
        fragment: false,
    };

    pub fn is_ip(&self) -> bool {
        matches!(self.network, Network::Ipv4 | Network::Ipv6)
    }
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
        }
    }
}

/// The drop reason for an IPv4 header the checked view refuses.
fn ipv4_malformed(e: Error) -> Malformed {
    match e {
        Error::Truncated => Malformed::Ipv4Truncated,
        Error::BadVersion => Malformed::Ipv4BadVersion,
        Error::BadHeaderLength => Malformed::Ipv4BadHeaderLength,
        _ => Malformed::Ipv4BadLength,
    }
}

/// RFC 1071 over a 20-byte IPv4 header: true when it sums to all ones. The words are added
/// in the machine's byte order, not the wire's: a one's-complement sum of byte-swapped words
/// is the byte-swapped sum (RFC 1071 §2(B)), and all ones is all ones either way, so the
/// check needs no swap.
#[inline(always)]
///
/// Each fold adds a word's halves with the end-around carry in one add of the word and its
/// rotation (the carry out of the low half lands in the high half, which is the folded sum):
/// five 32-bit words sum to less than 2^35, so their 64-bit sum folds to 32 bits, and those
/// to 16, in two such steps.
fn header20_checksum_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    let acc = w(0) + w(4) + w(8) + w(12) + w(16);
    let x = (acc.wrapping_add(acc.rotate_left(32)) >> 32) as u32;
    let x = x.wrapping_add(x.rotate_left(16)) >> 16;
    x == 0xffff
}

const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Parses one Ethernet frame. Never panics; every fault is a [`Malformed`].
pub fn parse_frame(frame: &[u8]) -> Result<Parsed, Malformed> {
    let mut p = Parsed::EMPTY;
    parse_frame_into(frame, &mut p).map(|()| p)
}

/// [`parse_frame`] into a summary the caller holds (the poll loop's burst array), so the
/// summary is written once where it is read rather than built, returned and copied. On an
/// error `p` is left partly written: only `Ok` makes it a frame's summary.
pub fn parse_frame_into(frame: &[u8], p: &mut Parsed) -> Result<(), Malformed> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Malformed::EthernetTruncated)?;
    // Every field written out rather than `..Parsed::EMPTY`: that form compiled to 3 more
    // instructions a frame (callgrind).
    *p = Parsed {
        l2_len: EthernetFrame::<&[u8]>::HEADER_LEN,
        vlan_tci: None,
        ethertype: eth.ethertype(),
        network: Network::Other,
        l3_end: frame.len(),
        l4_off: frame.len(),
        proto: 0,
        src: UNSPECIFIED,
        dst: UNSPECIFIED,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: 0,
        fragment: false,
    };
    if p.ethertype == ETHERTYPE_VLAN {
        let tag = VlanTag::new_checked(eth.payload()).map_err(|_| Malformed::VlanTruncated)?;
        p.vlan_tci = Some(tag.tci());
        p.ethertype = tag.inner_ethertype();
        p.l2_len += VlanTag::<&[u8]>::LEN;
    }
    let l3 = &frame[p.l2_len..];
    match p.ethertype {
        // The common case, a header without options, is checked and read as one fixed-size
        // array: no per-field bounds checks, the checksum as five 32-bit adds. Anything else
        // (options, a bad version) takes the general path below, with the same verdicts.
        ETHERTYPE_IPV4 if l3.first_chunk::<20>().is_some_and(|h| h[0] == 0x45) => {
            let Some(h) = l3.first_chunk::<20>() else {
                return Err(Malformed::Ipv4Truncated);
            };
            let tl = u16::from_be_bytes([h[2], h[3]]) as usize;
            if !(20..=l3.len()).contains(&tl) {
                return Err(Malformed::Ipv4BadLength);
            }
            if !header20_checksum_ok(h) {
                return Err(Malformed::Ipv4BadChecksum);
            }
            p.network = Network::Ipv4;
            p.l3_end = p.l2_len + tl;
            p.l4_off = p.l2_len + 20;
            p.proto = h[9];
            p.src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
            p.dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
            p.ttl = h[8];
            // More fragments, or a non-zero fragment offset.
            p.fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
        }
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).map_err(ipv4_malformed)?;
            if !ip.verify_checksum() {
                return Err(Malformed::Ipv4BadChecksum);
            }
            p.network = Network::Ipv4;
            p.l3_end = p.l2_len + ip.total_len() as usize;
            p.l4_off = p.l2_len + ip.header_len();
            p.proto = ip.protocol();
            p.src = IpAddr::V4(ip.src_addr());
            p.dst = IpAddr::V4(ip.dst_addr());
            p.ttl = ip.ttl();
            p.fragment = ip.is_fragment();
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).map_err(|e| match e {
                Error::BadLength => Malformed::Ipv6BadLength,
                _ => Malformed::Ipv6Truncated,
            })?;
            let upper = ip
                .upper_layer()
                .map_err(|_| Malformed::Ipv6BadExtensionHeader)?;
            p.network = Network::Ipv6;
            p.l3_end = p.l2_len + ip.end();
            p.l4_off = p.l2_len + upper.offset;
            p.proto = upper.protocol;
            p.src = IpAddr::V6(ip.src_addr());
            p.dst = IpAddr::V6(ip.dst_addr());
            p.ttl = ip.hop_limit();
            p.fragment = upper.fragment;
        }
        ETHERTYPE_ARP => {
            p.network = Network::Arp;
            return Ok(());
        }
        _ => return Ok(()),
    }
    if p.fragment {
        return Ok(());
    }
    let l4 = frame.get(p.l4_off..p.l3_end).unwrap_or(&[]);
    match p.proto {
        PROTO_TCP => {
            let t = TcpPacket::new_checked(l4).map_err(|e| match e {
                Error::Truncated => Malformed::TcpTruncated,
                _ => Malformed::TcpBadHeaderLength,
            })?;
            p.src_port = t.src_port();
            p.dst_port = t.dst_port();
            p.tcp_flags = t.flags();
        }
        PROTO_UDP => {
            let u = UdpPacket::new_checked(l4).map_err(|e| match e {
                Error::Truncated => Malformed::UdpTruncated,
                _ => Malformed::UdpBadLength,
            })?;
            p.src_port = u.src_port();
            p.dst_port = u.dst_port();
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let i = IcmpPacket::new_checked(l4).map_err(|_| Malformed::IcmpTruncated)?;
            p.icmp_type = i.msg_type();
            p.icmp_code = i.msg_code();
        }
        _ => {}
    }
    Ok(())
}

/// The summary of the commonest frame a balancer forwards, in raw words: an untagged IPv4
/// datagram without options or fragmentation, carrying a whole TCP or UDP header, its IP
/// checksum verified. The data path's express lane reads kept flows' frames through it
/// without building a [`Parsed`] (no `IpAddr` enums, no offsets to store: they are fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Flow {
    /// Source and destination address, as the big-endian words on the wire.
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// TCP flags (zero for UDP).
    pub tcp_flags: u8,
    pub ttl: u8,
    /// End of the IP datagram in the frame (anything after is Ethernet padding).
    pub l3_end: u16,
}

impl Ipv4Flow {
    /// Where the IP header starts: right after an untagged Ethernet header.
    pub const L2_LEN: usize = 14;
    /// Where the transport header starts: after a 20-byte IP header.
    pub const L4_OFF: usize = 34;

    /// A TCP SYN without ACK or RST: a connection's first segment.
    #[inline(always)]
    pub fn is_bare_syn(&self) -> bool {
        use crate::tcp::{ACK, RST, SYN};
        self.proto == PROTO_TCP && self.tcp_flags & (SYN | ACK | RST) == SYN
    }

    /// The frame's 5-tuple, as [`Parsed::flow_key`] gives it.
    #[inline(always)]
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            src_port: self.src_port,
            dst_port: self.dst_port,
            proto: self.proto,
        }
    }

    /// The full summary [`parse_frame`] gives the same frame, without parsing it again: for
    /// a frame read as an `Ipv4Flow` that then takes the general path.
    #[inline(always)]
    pub fn parsed(&self) -> Parsed {
        Parsed {
            l2_len: Self::L2_LEN,
            vlan_tci: None,
            ethertype: ETHERTYPE_IPV4,
            network: Network::Ipv4,
            l3_end: self.l3_end as usize,
            l4_off: Self::L4_OFF,
            proto: self.proto,
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            src_port: self.src_port,
            dst_port: self.dst_port,
            tcp_flags: self.tcp_flags,
            icmp_type: 0,
            icmp_code: 0,
            ttl: self.ttl,
            fragment: false,
        }
    }
}

/// Reads `frame` as an [`Ipv4Flow`], or `None` when it is any other frame (tagged, IPv6,
/// options, a fragment, another protocol) or one [`parse_frame`] would refuse: then the
/// caller parses it in full, which gives it its class or its drop reason. Whatever this
/// accepts, [`parse_frame`] accepts with the same fields (`tests` hold it to that).
#[inline(always)]
pub fn parse_ipv4_flow(frame: &[u8]) -> Option<Ipv4Flow> {
    // The Ethernet and IP headers as one fixed-size array: one length check for every
    // read of them below.
    let h: &[u8; 34] = frame.first_chunk()?;
    // EtherType IPv4 and version 4 with a 20-byte header, in one compare (byte 15, the
    // DSCP/ECN byte, masked off).
    if u32::from_be_bytes([h[12], h[13], h[14], h[15]]) & 0xffff_ff00 != 0x0800_4500 {
        return None;
    }
    let ip: &[u8; 20] = h[14..].try_into().ok()?;
    let tl = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let proto = ip[9];
    // More fragments, or a non-zero fragment offset.
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if tl + Ipv4Flow::L2_LEN > frame.len() || fragment || !header20_checksum_ok(ip) {
        return None;
    }
    let l4_len = tl.checked_sub(20)?;
    let (l4, tcp_flags) = match proto {
        // A header of at least 20 bytes, within the datagram.
        PROTO_TCP => {
            let l4: &[u8; 20] = frame[34..].first_chunk()?;
            let hl = (l4[12] >> 4) as usize * 4;
            if hl < 20 || hl > l4_len {
                return None;
            }
            (&l4[..8], l4[13])
        }
        // A length field of at least 8, within the datagram.
        PROTO_UDP => {
            let l4: &[u8; 8] = frame[34..].first_chunk()?;
            let ul = u16::from_be_bytes([l4[4], l4[5]]) as usize;
            if !(8..=l4_len).contains(&ul) {
                return None;
            }
            (&l4[..], 0)
        }
        _ => return None,
    };
    Some(Ipv4Flow {
        src: u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
        dst: u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
        src_port: u16::from_be_bytes([l4[0], l4[1]]),
        dst_port: u16::from_be_bytes([l4[2], l4[3]]),
        proto,
        tcp_flags,
        ttl: ip[8],
        l3_end: (tl + Ipv4Flow::L2_LEN) as u16,
    })
}

/// The transport endpoints quoted inside an ICMP error: the invoking datagram's addresses and
/// ports, as that datagram was sent (so for a reply that bounced, source is our side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub key: FlowKey,
    /// Offset of the quoted IP header within the frame.
    pub ip_off: usize,
    /// Offset of the quoted transport header within the frame.
    pub l4_off: usize,
}

/// Parses the datagram quoted in an ICMP/ICMPv6 error message of a parsed frame. The quote
/// carries at least the first 8 bytes of the transport header (RFC 792), enough for ports.
pub fn parse_quoted(frame: &[u8], p: &Parsed) -> Option<Quoted> {
    let ip_off = p.l4_off + IcmpPacket::<&[u8]>::HEADER_LEN;
    let q = frame.get(ip_off..p.l3_end)?;
    let (src, dst, proto, l4_rel) = match p.network {
        Network::Ipv4 => {
            let ip = Ipv4Packet::new_quoted(q).ok()?;
            if ip.is_fragment() && ip.frag_offset() != 0 {
                return None;
            }
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.protocol(),
                ip.header_len(),
            )
        }
        Network::Ipv6 => {
            let ip = Ipv6Packet::new_quoted(q).ok()?;
            let u = ip.upper_layer().ok()?;
            if u.later_fragment {
                return None;
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                u.protocol,
                u.offset,
            )
        }
        _ => return None,
    };
    let l4 = q.get(l4_rel..l4_rel + 4)?;
    let key = FlowKey {
        src,
        dst,
        src_port: u16::from_be_bytes([l4[0], l4[1]]),
        dst_port: u16::from_be_bytes([l4[2], l4[3]]),
        proto,
    };
    Some(Quoted {
        key,
        ip_off,
        l4_off: ip_off + l4_rel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folded check agrees with the plain RFC 1071 sum on headers with a valid checksum,
    /// the same headers with one bit flipped, and random ones (whose sums land everywhere,
    /// the carries included), and on the extremes.
    #[test]
    fn the_header_check_agrees_with_the_plain_sum() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let plain = |h: &[u8; 20]| crate::checksum::finish(0, h) == 0;
        let mut valid = 0;
        for i in 0..200_000 {
            let mut h = [0u8; 20];
            for c in h.chunks_mut(8) {
                let r = next().to_ne_bytes();
                c.copy_from_slice(&r[..c.len()]);
            }
            if i % 2 == 0 {
                h[10..12].fill(0);
                let c = crate::checksum::finish(0, &h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                assert!(header20_checksum_ok(&h), "{h:02x?}");
                valid += 1;
                let bit = (next() % 160) as usize;
                h[bit / 8] ^= 1 << (bit % 8);
            }
            assert_eq!(header20_checksum_ok(&h), plain(&h), "{h:02x?}");
        }
        assert_eq!(valid, 100_000);
        for fill in [0x00, 0xff] {
            let h = [fill; 20];
            assert_eq!(header20_checksum_ok(&h), plain(&h), "all {fill:#x}");
        }
    }

    #[test]
    fn vlan_tagged_udp() {
        let mut f = [0u8; 18 + 20 + 8];
        f[12..18].copy_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x08, 0x00]);
        let ip = &mut f[18..38];
        ip.copy_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 7, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        let c = crate::checksum::finish(0, ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f[38..46].copy_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 8, 0, 0]);
        let p = parse_frame(&f).unwrap();
        assert_eq!(
            (p.l2_len, p.vlan_tci, p.l4_off, p.l3_end),
            (18, Some(0x200a), 38, 46)
        );
        assert_eq!(
            (p.proto, p.src_port, p.dst_port, p.ttl),
            (17, 0x1234, 53, 7)
        );
        f[22] = 0xff; // identification changed: checksum no longer verifies
        assert_eq!(parse_frame(&f), Err(Malformed::Ipv4BadChecksum));
        assert_eq!(parse_frame(&f[..16]), Err(Malformed::VlanTruncated));
        assert_eq!(parse_frame(&f[..10]), Err(Malformed::EthernetTruncated));
    }

    /// The fast IPv4 path must give exactly what the checked view types give, for headers
    /// with every byte mutated and for every truncation.
    #[test]
    fn ipv4_fast_path_agrees_with_the_checked_views() {
        let mut f = [0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 1, 198, 51, 100, 10,
        ]);
        let c = crate::checksum::finish(0, &f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..54].copy_from_slice(&[
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let expect = |frame: &[u8]| -> Result<(usize, usize, u8, u8, bool, IpAddr), Malformed> {
            let l3 = &frame[14..];
            let ip = Ipv4Packet::new_checked(l3).map_err(ipv4_malformed)?;
            if !ip.verify_checksum() {
                return Err(Malformed::Ipv4BadChecksum);
            }
            Ok((
                14 + ip.total_len() as usize,
                14 + ip.header_len(),
                ip.protocol(),
                ip.ttl(),
                ip.is_fragment(),
                IpAddr::V4(ip.src_addr()),
            ))
        };
        let got = |frame: &[u8]| {
            parse_frame(frame).map(|p| (p.l3_end, p.l4_off, p.proto, p.ttl, p.fragment, p.src))
        };
        let mut checked = 0;
        for i in 14..34 {
            for v in [0u8, 1, 0x20, 0x45, 0x46, 0x80, 0xff] {
                let mut m = f;
                m[i] = v;
                let e = expect(&m);
                if let Ok(p) = parse_frame(&m) {
                    if p.fragment || p.proto != 6 {
                        assert_eq!(got(&m), e, "byte {i} = {v:#x}");
                        checked += 1;
                        continue;
                    }
                }
                match (got(&m), e) {
                    (Err(a), Err(b)) => assert_eq!(a, b, "byte {i} = {v:#x}"),
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "byte {i} = {v:#x}"),
                    // A valid IP header whose TCP header the new length cuts short.
                    (Err(Malformed::TcpTruncated | Malformed::TcpBadHeaderLength), Ok(_)) => {}
                    (a, b) => panic!("byte {i} = {v:#x}: {a:?} vs {b:?}"),
                }
                checked += 1;
            }
        }
        for n in 14..f.len() {
            match (got(&f[..n]), expect(&f[..n])) {
                (Err(a), Err(b)) => assert_eq!(a, b, "cut at {n}"),
                (a, b) => panic!("cut at {n}: {a:?} vs {b:?}"),
            }
        }
        assert_eq!(got(&f), expect(&f));
        assert!(checked > 100);
    }

    /// Every frame the express parser accepts, `parse_frame` accepts with the same fields;
    /// and it accepts the plain TCP and UDP frames it exists for. Checked over every byte of
    /// a TCP and a UDP frame set to several values, and every truncation.
    #[test]
    fn the_express_parser_agrees_with_parse_frame() {
        let agree = |m: &[u8], what: &str| -> bool {
            let Some(e) = parse_ipv4_flow(m) else {
                return false;
            };
            let p = parse_frame(m).unwrap_or_else(|r| panic!("{what}: express took {r:?}"));
            assert_eq!(
                e.parsed(),
                p,
                "{what}: the summary made from the express read"
            );
            assert_eq!(
                (p.l2_len, p.vlan_tci, p.network, p.l4_off, p.fragment),
                (14, None, Network::Ipv4, 34, false),
                "{what}"
            );
            assert_eq!(
                (p.src, p.dst, p.src_port, p.dst_port, p.proto),
                (
                    IpAddr::V4(Ipv4Addr::from(e.src)),
                    IpAddr::V4(Ipv4Addr::from(e.dst)),
                    e.src_port,
                    e.dst_port,
                    e.proto
                ),
                "{what}"
            );
            assert_eq!(
                (p.tcp_flags, p.ttl, p.l3_end),
                (e.tcp_flags, e.ttl, e.l3_end as usize),
                "{what}"
            );
            true
        };
        let frame = |proto: u8, l4: &[u8]| {
            let mut f = vec![0u8; 14 + 20];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let tl = (20 + l4.len()) as u16;
            f[14..34].copy_from_slice(&[
                0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 203, 0, 113, 1, 198, 51, 100,
                10,
            ]);
            f[16..18].copy_from_slice(&tl.to_be_bytes());
            let c = crate::checksum::finish(0, &f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(l4);
            f
        };
        let tcp = frame(
            6,
            &[
                0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, 1,
                2, 3,
            ],
        );
        let udp = frame(
            17,
            &[
                0x30, 0x39, 0, 53, 0, 24, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
            ],
        );
        let mut accepted = 0;
        for f in [&tcp, &udp] {
            assert!(agree(f, "unchanged"));
            let mut padded = f.clone();
            padded.extend_from_slice(&[0; 6]);
            assert!(agree(&padded, "padded"));
            for i in 0..f.len() {
                for v in [
                    0u8, 1, 0x05, 0x08, 0x11, 0x20, 0x40, 0x45, 0x50, 0x86, 0xdd, 0xff,
                ] {
                    let mut m = f.clone();
                    m[i] = v;
                    accepted += agree(&m, &format!("byte {i} = {v:#x}")) as usize;
                }
            }
            for n in 0..f.len() {
                accepted += agree(&f[..n], &format!("cut at {n}")) as usize;
            }
        }
        // Payload and port bytes change nothing; header bytes mostly refuse.
        assert!(accepted > 200, "{accepted}");
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Malformed::ALL.iter().enumerate() {
            for b in &Malformed::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
