//! In-place rewrites for each forwarding mode: address and port translation with incremental
//! checksum updates (NAT, SNAT and their replies), MAC rewrite (every mode, and all DSR does),
//! and the translation of ICMP errors whose quoted datagram belongs to a translated flow.
//! All of them work on a frame already parsed into [`Parsed`]; none allocates or panics.

use crate::stats::DropReason;
use packet::checksum;
use packet::ethernet::EthernetFrame;
use packet::icmp::IcmpPacket;
use packet::ipv4::{Ipv4Packet, PROTO_TCP, PROTO_UDP};
use packet::ipv6::Ipv6Packet;
use packet::parse::{Ipv4Flow, Malformed, Network, Parsed, Quoted};
use packet::tcp::TcpPacket;
use packet::udp::UdpPacket;
use packet::MacAddr;
use std::net::IpAddr;

/// An address as its wire bytes, without allocating.
#[derive(Clone, Copy)]
struct Octets {
    b: [u8; 16],
    n: usize,
}

impl Octets {
    fn of(a: IpAddr) -> Octets {
        let mut b = [0u8; 16];
        let n = match a {
            IpAddr::V4(v4) => {
                b[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                b.copy_from_slice(&v6.octets());
                16
            }
        };
        Octets { b, n }
    }
    fn get(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// Sets the Ethernet source and destination MACs.
#[inline]
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    if let Ok(mut eth) = EthernetFrame::new_checked(frame) {
        eth.set_src_addr(src);
        eth.set_dst_addr(dst);
    }
}

/// Rewrites the source and/or destination endpoint of a TCP/UDP datagram, updates the IP and
/// transport checksums incrementally, and decrements the TTL / hop limit (we route it).
#[inline]
pub fn translate(
    frame: &mut [u8],
    p: &Parsed,
    new_src: Option<(IpAddr, u16)>,
    new_dst: Option<(IpAddr, u16)>,
) -> Result<(), DropReason> {
    if p.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    if p.network == Network::Ipv4 {
        let v4 = |e: Option<(IpAddr, u16)>| match e {
            Some((IpAddr::V4(a), port)) => Ok(Some((u32::from(a), port))),
            Some(_) => Err(DropReason::FamilyMismatch),
            None => Ok(None),
        };
        let dst = match v4(new_dst)? {
            Some((a, port)) => V4Destination::To(a, port),
            None => V4Destination::Unchanged,
        };
        return translate_v4(frame, V4Offsets::of(p), v4(new_src)?, dst);
    }
    let (old_src, old_dst) = (Octets::of(p.src), Octets::of(p.dst));
    let l3 = frame
        .get_mut(p.l2_len..p.l3_end)
        .ok_or(DropReason::Malformed(Malformed::Ipv4BadLength))?;
    match p.network {
        Network::Ipv4 => {
            let mut ip = Ipv4Packet::new_checked(l3)
                .map_err(|_| DropReason::Malformed(Malformed::Ipv4BadLength))?;
            if let Some((IpAddr::V4(a), _)) = new_src {
                ip.set_src_addr(a);
            }
            if let Some((IpAddr::V4(a), _)) = new_dst {
                ip.set_dst_addr(a);
            }
            ip.decrement_ttl();
        }
        Network::Ipv6 => {
            let mut ip = Ipv6Packet::new_checked(l3)
                .map_err(|_| DropReason::Malformed(Malformed::Ipv6BadLength))?;
            if let Some((IpAddr::V6(a), _)) = new_src {
                ip.set_src_addr(a);
            }
            if let Some((IpAddr::V6(a), _)) = new_dst {
                ip.set_dst_addr(a);
            }
            ip.set_hop_limit(p.ttl - 1);
        }
        _ => return Err(DropReason::NotOurs),
    }
    let l4 = frame
        .get_mut(p.l4_off..p.l3_end)
        .ok_or(DropReason::Malformed(Malformed::TcpTruncated))?;
    match p.proto {
        PROTO_TCP => rewrite_ports(
            &mut TcpPacket::new_checked(l4)
                .map_err(|_| DropReason::Malformed(Malformed::TcpTruncated))?,
            old_src,
            old_dst,
            new_src,
            new_dst,
        ),
        PROTO_UDP => rewrite_ports(
            &mut UdpPacket::new_checked(l4)
                .map_err(|_| DropReason::Malformed(Malformed::UdpTruncated))?,
            old_src,
            old_dst,
            new_src,
            new_dst,
        ),
        _ => return Err(DropReason::NotOurs),
    }
    Ok(())
}

/// One's-complement accumulator for RFC 1624 eqn. 3 over several changed words:
/// `HC' = ~(~HC + sum(~m + m'))`.
struct Delta(u32);

impl Delta {
    fn start(hc: u16) -> Delta {
        Delta((!hc) as u32)
    }
    #[inline(always)]
    fn word(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u32 + new as u32;
    }
    #[inline(always)]
    fn dword(&mut self, old: u32, new: u32) {
        self.word((old >> 16) as u16, (new >> 16) as u16);
        self.word(old as u16, new as u16);
    }
    /// Two end-around folds, without a loop: the first leaves at most 0x1fffe, the second
    /// at most 0xffff.
    #[inline(always)]
    fn finish(self) -> u16 {
        let x = (self.0 & 0xffff) + (self.0 >> 16);
        let x = (x & 0xffff) + (x >> 16);
        !(x as u16)
    }
}

#[inline(always)]
fn get16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// A backend's rewrite of the destination of frames to an IPv4 `nat` or `snat` service,
/// worked out once per snapshot ([`crate::snapshot::BackendEntry::rewrite_v4`]). Every frame
/// to the service arrives addressed to its VIP (that is how it was classified), so what the
/// VIP-to-backend change and the TTL decrement add to each checksum is the same for all of
/// them: the data path writes the new address and port and adds the sums (RFC 1624 eqn. 3
/// is a sum over the changed words, in any order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendRewrite {
    /// The VIP the sums start from (checked in debug builds).
    vip: [u8; 4],
    addr: [u8; 4],
    port: [u8; 2],
    /// Σ(~m + m') over the IP header's destination address words (the TTL's change,
    /// [`TTL_DECREMENT`], is the same for every frame and added for all).
    ip_delta: u32,
    /// Σ(~m + m') over the transport checksum's: the address's two (the pseudo-header's)
    /// and the destination port.
    l4_delta: u32,
}

/// What a TTL decrement adds to the IP checksum: `~w + (w - 0x100)` for the TTL's word `w`
/// (TTL and protocol), the same whatever the TTL (at least 2 when forwarded).
const TTL_DECREMENT: u32 = 0xfeff;

impl BackendRewrite {
    /// The rewrite from `vip` to `backend`, both IPv4; `None` otherwise.
    pub fn v4(vip: std::net::SocketAddr, backend: std::net::SocketAddr) -> Option<BackendRewrite> {
        let (IpAddr::V4(old), IpAddr::V4(new)) = (vip.ip(), backend.ip()) else {
            return None;
        };
        let mut addr = Delta(0);
        addr.dword(u32::from(old), u32::from(new));
        let mut port = Delta(0);
        port.word(vip.port(), backend.port());
        Some(BackendRewrite {
            vip: old.octets(),
            addr: new.octets(),
            port: backend.port().to_be_bytes(),
            ip_delta: addr.0,
            l4_delta: addr.0 + port.0,
        })
    }
}

/// The destination change of [`translate_v4`].
#[derive(Clone, Copy)]
enum V4Destination<'a> {
    Unchanged,
    To(u32, u16),
    /// From the service's VIP to a backend, its sums worked out beforehand.
    Backend(&'a BackendRewrite),
}

/// Rewrites an IPv4 frame to an IPv4 `nat` or `snat` service for its backend (`rewrite`),
/// and its source to `new_src` (`snat`), as [`translate`] does but with the destination's
/// checksum change worked out beforehand. `p.dst` must be the VIP `rewrite` was made for.
#[inline(always)]
pub fn translate_to_backend_v4(
    frame: &mut [u8],
    p: &Parsed,
    new_src: Option<(std::net::Ipv4Addr, u16)>,
    rewrite: &BackendRewrite,
) -> Result<(), DropReason> {
    if p.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    if p.network != Network::Ipv4 {
        return Err(DropReason::FamilyMismatch);
    }
    let src = new_src.map(|(a, port)| (u32::from(a), port));
    translate_v4(
        frame,
        V4Offsets::of(p),
        src,
        V4Destination::Backend(rewrite),
    )
}

/// [`translate_to_backend_v4`] and [`set_macs`] for a frame read as an [`Ipv4Flow`] (the
/// express lane's summary), its TTL already checked to be above 1: the link addresses
/// (`link`, as [`crate::snapshot::link_addresses`] lays them out), the
/// destination (and for `snat` the source) and both checksums, written into the frame's
/// headers taken as one fixed-size array. The lane's frames have no VLAN tag and no IP
/// options, so every offset is a constant and one length check covers every access (the
/// general path's offsets come from its parse summary and are checked one by one). `None`,
/// with the frame untouched, if it is not TCP or UDP or shorter than its headers.
#[inline(always)]
pub fn rewrite_express_to_backend(
    frame: &mut [u8],
    e: &Ipv4Flow,
    new_src: Option<(u32, u16)>,
    rewrite: &BackendRewrite,
    link: &[u8; 12],
) -> Option<()> {
    match e.proto {
        PROTO_TCP => {
            rewrite_headers::<54, 50, false>(frame.first_chunk_mut()?, new_src, rewrite, link)
        }
        PROTO_UDP => {
            rewrite_headers::<42, 40, true>(frame.first_chunk_mut()?, new_src, rewrite, link)
        }
        _ => return None,
    }
    Some(())
}

/// [`rewrite_express_to_backend`] over the first `N` bytes of a frame (Ethernet, a 20-byte
/// IPv4 header and the transport header up to and including its checksum, at `CSUM`).
#[inline(always)]
fn rewrite_headers<const N: usize, const CSUM: usize, const UDP: bool>(
    h: &mut [u8; N],
    new_src: Option<(u32, u16)>,
    r: &BackendRewrite,
    link: &[u8; 12],
) {
    const IP: usize = Ipv4Flow::L2_LEN;
    const L4: usize = Ipv4Flow::L4_OFF;
    let old_l4_sum = get16(h, CSUM);
    let mut ip_sum = Delta::start(get16(h, IP + 10));
    let mut l4_sum = Delta::start(old_l4_sum);
    if let Some((a, port)) = new_src {
        let old = u32::from_be_bytes([h[IP + 12], h[IP + 13], h[IP + 14], h[IP + 15]]);
        ip_sum.dword(old, a);
        l4_sum.dword(old, a);
        l4_sum.word(get16(h, L4), port);
        h[IP + 12..IP + 16].copy_from_slice(&a.to_be_bytes());
        h[L4..L4 + 2].copy_from_slice(&port.to_be_bytes());
    }
    debug_assert_eq!(
        h[IP + 16..IP + 20],
        r.vip,
        "a frame to a service is to its VIP"
    );
    h[..12].copy_from_slice(link);
    h[IP + 16..IP + 20].copy_from_slice(&r.addr);
    h[L4 + 2..L4 + 4].copy_from_slice(&r.port);
    ip_sum.0 += r.ip_delta + TTL_DECREMENT;
    l4_sum.0 += r.l4_delta;
    h[IP + 8] = h[IP + 8].wrapping_sub(1);
    h[IP + 10..IP + 12].copy_from_slice(&ip_sum.finish().to_be_bytes());
    // A UDP datagram sent without a checksum (zero) keeps none; one that sums to zero is
    // sent as all ones (RFC 768).
    if !(UDP && old_l4_sum == 0) {
        let c = l4_sum.finish();
        let c = if UDP && c == 0 { 0xffff } else { c };
        h[CSUM..CSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Where an IPv4 datagram's headers are in its frame, for [`translate_v4`].
#[derive(Clone, Copy)]
struct V4Offsets {
    l2_len: usize,
    l4_off: usize,
    l3_end: usize,
    proto: u8,
}

impl V4Offsets {
    #[inline(always)]
    fn of(p: &Parsed) -> V4Offsets {
        V4Offsets {
            l2_len: p.l2_len,
            l4_off: p.l4_off,
            l3_end: p.l3_end,
            proto: p.proto,
        }
    }
}

/// One endpoint of an IPv4 datagram rewritten (address at `addr_off` of the IP header, port
/// at `port_off` of the transport header), its change added to both checksum sums. A function,
/// not a closure over the sums: the closure was left out of line, and every sum and pointer it
/// captured went through the stack on every frame, changed or not.
#[inline(always)]
fn change_endpoint(
    ip: &mut [u8; 20],
    l4: &mut [u8],
    ip_sum: &mut Delta,
    l4_sum: &mut Delta,
    addr_off: usize,
    port_off: usize,
    (a, port): (u32, u16),
) {
    let old = u32::from_be_bytes([
        ip[addr_off],
        ip[addr_off + 1],
        ip[addr_off + 2],
        ip[addr_off + 3],
    ]);
    ip_sum.dword(old, a);
    l4_sum.dword(old, a);
    ip[addr_off..addr_off + 4].copy_from_slice(&a.to_be_bytes());
    l4_sum.word(get16(l4, port_off), port);
    l4[port_off..port_off + 2].copy_from_slice(&port.to_be_bytes());
}

/// The IPv4 path of [`translate`]: the IP header taken once as a fixed-size array and the
/// transport header up to its checksum as one checked slice (the offsets come from `parse_frame`, which validated
/// them), then every change (addresses, ports, TTL) folded into one incremental update per
/// checksum.
#[inline(always)]
fn translate_v4(
    frame: &mut [u8],
    p: V4Offsets,
    new_src: Option<(u32, u16)>,
    new_dst: V4Destination<'_>,
) -> Result<(), DropReason> {
    let csum = match p.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return Err(DropReason::NotOurs),
    };
    let bad = DropReason::Malformed(Malformed::Ipv4BadLength);
    if p.l4_off < p.l2_len + 20 || frame.len() < p.l3_end {
        return Err(bad);
    }
    let (head, l4) = frame.split_at_mut_checked(p.l4_off).ok_or(bad)?;
    let ip: &mut [u8; 20] = head
        .get_mut(p.l2_len..p.l2_len + 20)
        .and_then(|h| h.try_into().ok())
        .ok_or(bad)?;
    // Ports and checksum: the first 18 bytes of a TCP header, 8 of a UDP one.
    let l4 = l4.get_mut(..csum + 2).ok_or(bad)?;
    let udp_no_checksum = p.proto == PROTO_UDP && get16(l4, csum) == 0;
    let mut ip_sum = Delta::start(get16(ip, 10));
    let mut l4_sum = Delta::start(get16(l4, csum));
    // Source: address at 12, port at 0; destination: address at 16, port at 2.
    if let Some((a, port)) = new_src {
        change_endpoint(ip, l4, &mut ip_sum, &mut l4_sum, 12, 0, (a, port));
    }
    match new_dst {
        V4Destination::Unchanged => {}
        V4Destination::To(a, port) => {
            change_endpoint(ip, l4, &mut ip_sum, &mut l4_sum, 16, 2, (a, port))
        }
        V4Destination::Backend(r) => {
            debug_assert_eq!(ip[16..20], r.vip, "a frame to a service is to its VIP");
            ip[16..20].copy_from_slice(&r.addr);
            l4[2..4].copy_from_slice(&r.port);
            ip_sum.0 += r.ip_delta;
            l4_sum.0 += r.l4_delta;
        }
    }
    ip[8] -= 1;
    ip_sum.0 += TTL_DECREMENT;
    ip[10..12].copy_from_slice(&ip_sum.finish().to_be_bytes());
    if !udp_no_checksum {
        let mut c = l4_sum.finish();
        if p.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        l4[csum..csum + 2].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// The transport-header rewrites TCP and UDP share.
trait PortRewrite {
    fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]);
    fn set_src_port(&mut self, p: u16);
    fn set_dst_port(&mut self, p: u16);
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PortRewrite for TcpPacket<T> {
    fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        TcpPacket::update_checksum_for_addr(self, old, new)
    }
    fn set_src_port(&mut self, p: u16) {
        TcpPacket::set_src_port(self, p)
    }
    fn set_dst_port(&mut self, p: u16) {
        TcpPacket::set_dst_port(self, p)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PortRewrite for UdpPacket<T> {
    fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        UdpPacket::update_checksum_for_addr(self, old, new)
    }
    fn set_src_port(&mut self, p: u16) {
        UdpPacket::set_src_port(self, p)
    }
    fn set_dst_port(&mut self, p: u16) {
        UdpPacket::set_dst_port(self, p)
    }
}

/// Folds each address change into the transport checksum and rewrites the ports.
fn rewrite_ports(
    l4: &mut impl PortRewrite,
    old_src: Octets,
    old_dst: Octets,
    new_src: Option<(IpAddr, u16)>,
    new_dst: Option<(IpAddr, u16)>,
) {
    if let Some((a, port)) = new_src {
        l4.update_checksum_for_addr(old_src.get(), Octets::of(a).get());
        l4.set_src_port(port);
    }
    if let Some((a, port)) = new_dst {
        l4.update_checksum_for_addr(old_dst.get(), Octets::of(a).get());
        l4.set_dst_port(port);
    }
}

/// Retargets an ICMP error about a translated flow at the backend that owns it: the outer
/// destination becomes `outer_dst`, the quoted datagram's source becomes `quoted_src` and,
/// for SNAT, its destination `quoted_dst`, so the backend's stack matches the quote to its
/// socket. Quoted checksums are updated incrementally; the ICMP checksum is recomputed.
pub fn translate_icmp_error(
    frame: &mut [u8],
    p: &Parsed,
    q: &Quoted,
    outer_dst: IpAddr,
    quoted_src: (IpAddr, u16),
    quoted_dst: Option<(IpAddr, u16)>,
    seq_delta: u32,
) -> Result<(), DropReason> {
    if p.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let bad = DropReason::Malformed(Malformed::IcmpTruncated);
    // Outer header.
    let l3 = frame.get_mut(p.l2_len..p.l3_end).ok_or(bad)?;
    match (p.network, outer_dst) {
        (Network::Ipv4, IpAddr::V4(a)) => {
            let mut ip = Ipv4Packet::new_checked(l3).map_err(|_| bad)?;
            ip.set_dst_addr(a);
            ip.decrement_ttl();
        }
        (Network::Ipv6, IpAddr::V6(a)) => {
            let mut ip = Ipv6Packet::new_checked(l3).map_err(|_| bad)?;
            ip.set_dst_addr(a);
            ip.set_hop_limit(p.ttl - 1);
        }
        _ => return Err(bad),
    }
    // Quoted IP header.
    let quote = frame.get_mut(q.ip_off..p.l3_end).ok_or(bad)?;
    match p.network {
        Network::Ipv4 => {
            let mut ip = Ipv4Packet::new_quoted(quote).map_err(|_| bad)?;
            if let IpAddr::V4(a) = quoted_src.0 {
                ip.set_src_addr(a);
            }
            if let Some((IpAddr::V4(a), _)) = quoted_dst {
                ip.set_dst_addr(a);
            }
        }
        _ => {
            let mut ip = Ipv6Packet::new_quoted(quote).map_err(|_| bad)?;
            if let IpAddr::V6(a) = quoted_src.0 {
                ip.set_src_addr(a);
            }
            if let Some((IpAddr::V6(a), _)) = quoted_dst {
                ip.set_dst_addr(a);
            }
        }
    }
    // Quoted transport ports, and its checksum when the quote reaches it.
    let l4 = frame.get_mut(q.l4_off..p.l3_end).ok_or(bad)?;
    if l4.len() < 4 {
        return Err(bad);
    }
    let csum_off = match q.key.proto {
        6 if l4.len() >= 18 => Some(16),
        17 if l4.len() >= 8 && l4[6..8] != [0, 0] => Some(6),
        _ => None,
    };
    let mut changes: [(Octets, Octets); 2] = [
        (Octets::of(q.key.src), Octets::of(quoted_src.0)),
        (
            Octets::of(q.key.dst),
            Octets::of(quoted_dst.map_or(q.key.dst, |d| d.0)),
        ),
    ];
    let old_ports = [q.key.src_port, q.key.dst_port];
    let new_ports = [quoted_src.1, quoted_dst.map_or(q.key.dst_port, |d| d.1)];
    l4[0..2].copy_from_slice(&new_ports[0].to_be_bytes());
    l4[2..4].copy_from_slice(&new_ports[1].to_be_bytes());
    // A flow the SYN proxy opened: the quoted segment's sequence number is in the client's
    // view (the cookie's); the backend checks it against its own.
    let mut seq_change = None;
    if q.key.proto == 6 && seq_delta != 0 && l4.len() >= 8 {
        let old = [l4[4], l4[5], l4[6], l4[7]];
        let new = u32::from_be_bytes(old)
            .wrapping_sub(seq_delta)
            .to_be_bytes();
        l4[4..8].copy_from_slice(&new);
        seq_change = Some((old, new));
    }
    if let Some(off) = csum_off {
        let mut c = u16::from_be_bytes([l4[off], l4[off + 1]]);
        if let Some((old, new)) = seq_change {
            c = checksum::update(c, &old, &new);
        }
        for (o, n) in changes.iter_mut() {
            c = checksum::update(c, o.get(), n.get());
        }
        for i in 0..2 {
            c = checksum::update16(c, old_ports[i], new_ports[i]);
        }
        if q.key.proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    // The ICMP checksum covers the whole message (and, for ICMPv6, the pseudo header).
    let pseudo = match (p.network, p.src, outer_dst) {
        (Network::Ipv6, IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(s, d, 58, (p.l3_end - p.l4_off) as u32)
        }
        _ => 0,
    };
    let icmp = frame.get_mut(p.l4_off..p.l3_end).ok_or(bad)?;
    IcmpPacket::new_checked(icmp)
        .map_err(|_| bad)?
        .fill_checksum_with(pseudo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::parse::parse_frame;
    use std::net::{Ipv4Addr, SocketAddr};

    /// An Ethernet + IPv4 + TCP/UDP frame with valid checksums (UDP: `udp_sum` false leaves
    /// the checksum zero, "none").
    fn frame(
        proto: u8,
        ttl: u8,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        udp_sum: bool,
    ) -> Vec<u8> {
        let l4_len = if proto == PROTO_TCP { 20 } else { 8 } + 5;
        let mut f = vec![0u8; 14 + 20 + l4_len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[8] = ttl;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src.0.octets());
        ip[16..20].copy_from_slice(&dst.0.octets());
        let c = checksum::finish(0, &f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let l4 = &mut f[34..];
        l4[0..2].copy_from_slice(&src.1.to_be_bytes());
        l4[2..4].copy_from_slice(&dst.1.to_be_bytes());
        if proto == PROTO_TCP {
            l4[12] = 0x50;
            l4[13] = 0x18;
        } else {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let n = l4.len();
        l4[n - 5..].copy_from_slice(b"hello");
        if proto == PROTO_TCP || udp_sum {
            let pseudo = checksum::pseudo_v4(src.0, dst.0, proto, l4_len as u16);
            let mut c = checksum::finish(pseudo, &f[34..]);
            if proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            let at = if proto == PROTO_TCP { 34 + 16 } else { 34 + 6 };
            f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    fn sums_ok(f: &[u8]) -> bool {
        let ip = &f[14..34];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = &f[34..];
        let pseudo = checksum::pseudo_v4(src, dst, ip[9], l4.len() as u16);
        let udp_none = ip[9] == PROTO_UDP && l4[6..8] == [0, 0];
        checksum::finish(0, ip) == 0 && (udp_none || checksum::finish(pseudo, l4) == 0)
    }

    /// The rewrite worked out per backend writes exactly what the word-by-word rewrite does,
    /// for TCP and UDP (with and without a checksum), any TTL that may be forwarded, with and
    /// without a source change (`snat`), and the checksums verify from scratch.
    #[test]
    fn a_precomputed_backend_rewrite_matches_the_live_one() {
        let vips = [
            (Ipv4Addr::new(10, 99, 0, 100), 80),
            (Ipv4Addr::new(255, 255, 255, 254), 65535),
        ];
        let backends = [
            (Ipv4Addr::new(10, 99, 0, 11), 8080),
            (Ipv4Addr::new(0, 0, 0, 1), 1),
            (Ipv4Addr::new(10, 99, 0, 100), 80),
        ];
        let clients = [
            (Ipv4Addr::new(10, 98, 0, 2), 40000),
            (Ipv4Addr::new(192, 0, 2, 255), 65535),
        ];
        let mut checked = 0;
        for &vip in &vips {
            for &be in &backends {
                let r = BackendRewrite::v4(SocketAddr::from(vip), SocketAddr::from(be)).unwrap();
                for &client in &clients {
                    for (proto, udp_sum) in
                        [(PROTO_TCP, true), (PROTO_UDP, true), (PROTO_UDP, false)]
                    {
                        for ttl in [2, 64, 255] {
                            for snat in [None, Some((Ipv4Addr::new(10, 99, 0, 1), 1024))] {
                                let f = frame(proto, ttl, client, vip, udp_sum);
                                let p = parse_frame(&f).unwrap();
                                let (mut live, mut pre) = (f.clone(), f.clone());
                                let src = snat.map(|(a, port)| (IpAddr::V4(a), port));
                                translate(&mut live, &p, src, Some((IpAddr::V4(be.0), be.1)))
                                    .unwrap();
                                translate_to_backend_v4(&mut pre, &p, snat, &r).unwrap();
                                assert_eq!(pre, live, "{vip:?} -> {be:?} from {client:?}, proto {proto}, ttl {ttl}, snat {snat:?}");
                                // The express lane's fixed-layout rewrite, MACs and all.
                                let mut fast = f.clone();
                                let e = packet::parse_ipv4_flow(&f).unwrap();
                                let macs =
                                    (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 1, 1]));
                                let src = snat.map(|(a, port)| (u32::from(a), port));
                                let link = crate::snapshot::link_addresses(macs.1, macs.0);
                                rewrite_express_to_backend(&mut fast, &e, src, &r, &link).unwrap();
                                set_macs(&mut live, macs.0, macs.1);
                                assert_eq!(fast, live, "express: {vip:?} -> {be:?} from {client:?}, proto {proto}, ttl {ttl}, snat {snat:?}");
                                assert!(sums_ok(&pre), "checksums after {vip:?} -> {be:?}");
                                assert_eq!(pre[14 + 8], ttl - 1);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 3 * 2 * 3 * 3 * 2);
        // An IPv6 end has no precomputed rewrite; a TTL of 1 is not forwarded.
        assert!(BackendRewrite::v4(
            "[fd99::1]:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap()
        )
        .is_none());
        let f = frame(PROTO_TCP, 1, clients[0], vips[0], true);
        let r =
            BackendRewrite::v4(SocketAddr::from(vips[0]), SocketAddr::from(backends[0])).unwrap();
        let mut g = f.clone();
        assert_eq!(
            translate_to_backend_v4(&mut g, &parse_frame(&f).unwrap(), None, &r),
            Err(DropReason::TtlExceeded)
        );
        assert_eq!(g, f, "a frame that is not forwarded is left as it was");
    }
}
