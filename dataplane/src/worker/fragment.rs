//! Outer fragmentation (`node.tunnel_fragment`): an IPIP/GUE packet over IPv4 whose client
//! allowed fragmentation (no DF) and that is larger than `node.tunnel_mtu` once encapsulated
//! leaves as IPv4 fragments of the outer packet, as a router on the path would make them
//! (RFC 791): each at most the MTU, payloads in multiples of 8 bytes, one identification for
//! all. The backend's kernel reassembles them before it decapsulates. The first fragment is
//! the frame itself, cut short; the others are written into frames from the port's own
//! buffers.

use crate::port::{Frame, Port};
use crate::stats::DropReason;
use packet::checksum;

/// The most fragments one packet is cut into: a 9216-byte frame over the smallest MTU
/// accepted (1280) needs 8.
pub(super) const MOST_FRAGMENTS: usize = 8;

const IPV4_HEADER: usize = 20;
const MORE_FRAGMENTS: u16 = 0x2000;

/// Where the outer IPv4 header starts: after the Ethernet header and its 802.1Q tag if any.
fn l2_len(d: &[u8]) -> Option<usize> {
    match d.get(12..14)? {
        [0x81, 0x00] => Some(18),
        _ => Some(14),
    }
}

/// Writes fragment fields into the IPv4 header `h` (total length, identification, flags
/// and offset) and its checksum.
fn set_fragment(h: &mut [u8], payload: usize, id: u16, offset: usize, more: bool) {
    h[2..4].copy_from_slice(&((IPV4_HEADER + payload) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    let flags = ((offset / 8) as u16) | if more { MORE_FRAGMENTS } else { 0 };
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[10..12].fill(0);
    let c = checksum::finish(0, &h[..IPV4_HEADER]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Cuts frame `f` — L2, an outer IPv4 header of 20 bytes without DF, its payload — into
/// fragments of at most `mtu` bytes of IP, identified by `id`, and appends them to `out` in
/// order, `f` first. On failure nothing is appended and `f` comes back with the reason: the
/// port had no buffer (`tx_no_buffer`), or the packet is not one this can cut
/// (`encap_inner_invalid`; `oversize` past [`MOST_FRAGMENTS`]).
pub(super) fn fragment_into<P: Port>(
    port: &mut P,
    mut f: P::Frame,
    mtu: u16,
    id: u16,
    out: &mut Vec<P::Frame>,
) -> Result<usize, (P::Frame, DropReason)> {
    let d = f.data();
    let Some(l2) = l2_len(d) else {
        return Err((f, DropReason::EncapInnerInvalid));
    };
    let ip_end = l2 + IPV4_HEADER;
    let fits = d.get(l2).is_some_and(|v| *v == 0x45)
        && d.get(l2 + 6).is_some_and(|fl| fl & 0x40 == 0)
        && d.len() > ip_end;
    if !fits || (mtu as usize) < IPV4_HEADER + 8 {
        return Err((f, DropReason::EncapInnerInvalid));
    }
    let payload = d.len() - ip_end;
    let chunk = (mtu as usize - IPV4_HEADER) / 8 * 8;
    let n = payload.div_ceil(chunk);
    if n > MOST_FRAGMENTS {
        return Err((f, DropReason::Oversize));
    }
    // The later fragments first, into new frames, so that a port out of buffers leaves the
    // packet whole.
    let first = out.len();
    for k in 1..n {
        let offset = k * chunk;
        let len = chunk.min(payload - offset);
        let Some(mut g) = port.alloc(ip_end + len) else {
            for g in out.drain(first..) {
                port.free(g);
            }
            return Err((f, DropReason::TxNoBuffer));
        };
        let src = f.data();
        let dst = g.data_mut();
        dst[..ip_end].copy_from_slice(&src[..ip_end]);
        dst[ip_end..].copy_from_slice(&src[ip_end + offset..ip_end + offset + len]);
        set_fragment(&mut dst[l2..], len, id, offset, k + 1 < n);
        out.push(g);
    }
    f.truncate(ip_end + chunk);
    set_fragment(&mut f.data_mut()[l2..], chunk, id, 0, true);
    out.insert(first, f);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::MemPort;

    /// An Ethernet frame with an IPv4 header (no DF) and `payload` bytes counting up.
    fn packet(payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut h = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0, 192, 0, 2, 1, 10, 1, 0, 1,
        ];
        h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&h);
        f.extend((0..payload).map(|i| (i % 251) as u8));
        f
    }

    /// Fragments are at most the MTU, carry 8-byte multiples, share the identification, set
    /// MF on all but the last, have valid checksums, and put back together are the payload.
    #[test]
    fn fragments_fit_the_mtu_and_reassemble_to_the_packet() {
        for (payload, mtu, want) in [
            (1500, 1500, 2),
            (3000, 1280, 3),
            (2960, 1500, 2),
            (1481, 1500, 2),
        ] {
            let original = packet(payload);
            let mut port = MemPort::new(false);
            assert!(port.inject(&original, 0, 0));
            let mut rx = Vec::new();
            port.rx_burst(&mut rx);
            let f = rx.pop().unwrap();
            let mut out = Vec::new();
            let n = fragment_into(&mut port, f, mtu, 0x1234, &mut out)
                .map_err(|(_, r)| r)
                .unwrap();
            assert_eq!((n, out.len()), (want, want), "{payload} over {mtu}");
            let mut whole = Vec::new();
            for (k, g) in out.iter().enumerate() {
                let d = g.data();
                let h = &d[14..34];
                assert!(d.len() - 14 <= mtu as usize);
                assert_eq!(u16::from_be_bytes([h[2], h[3]]) as usize, d.len() - 14);
                assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0x1234);
                let flags = u16::from_be_bytes([h[6], h[7]]);
                assert_eq!(flags & MORE_FRAGMENTS != 0, k + 1 < n, "MF of fragment {k}");
                assert_eq!(
                    (flags & 0x1fff) as usize * 8,
                    whole.len(),
                    "offset of fragment {k}"
                );
                if k + 1 < n {
                    assert_eq!((d.len() - 34) % 8, 0);
                }
                assert_eq!(checksum::finish(0, h), 0, "header checksum of fragment {k}");
                assert_eq!(&d[..14], &original[..14]);
                whole.extend_from_slice(&d[34..]);
            }
            assert_eq!(whole, &original[34..], "{payload} over {mtu}");
        }
    }

    /// DF set or too many fragments: refused, the frame given back whole, nothing appended.
    #[test]
    fn packets_that_cannot_be_cut_come_back_whole() {
        let mut port = MemPort::new(false);
        let take = |bytes: &[u8], port: &mut MemPort| {
            assert!(port.inject(bytes, 0, 0));
            let mut rx = Vec::new();
            port.rx_burst(&mut rx);
            rx.pop().unwrap()
        };
        let mut df = packet(2000);
        df[20] = 0x40;
        let mut out = Vec::new();
        let f = take(&df, &mut port);
        let (back, why) = fragment_into(&mut port, f, 1500, 1, &mut out).unwrap_err();
        assert_eq!(
            (why, back.data().len(), out.len()),
            (DropReason::EncapInnerInvalid, df.len(), 0)
        );
        let f = take(&packet(8000), &mut port);
        let (_, why) = fragment_into(&mut port, f, 1000, 1, &mut out).unwrap_err();
        assert_eq!(why, DropReason::Oversize);
    }
}
