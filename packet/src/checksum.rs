//! Internet checksum (RFC 1071): full computation, pseudo headers, and incremental update
//! (RFC 1624, eqn. 3) so rewrites touch only the words they change.

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc` (unfolded:
/// only [`fold`] or [`finish`] of the result is meaningful). The words are added eight bytes
/// at a time in the machine's byte order with end-around carry, and the folded sum swapped
/// to the wire's order once at the end: a one's-complement sum of byte-swapped words is the
/// byte-swapped sum (RFC 1071 §2(B)).
pub fn sum(acc: u64, data: &[u8]) -> u64 {
    let mut s: u64 = 0;
    let mut add = |w: u64| {
        let (r, carry) = s.overflowing_add(w);
        s = r + carry as u64;
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        if let Ok(c) = <[u8; 8]>::try_from(c) {
            add(u64::from_ne_bytes(c));
        }
    }
    // The tail, zero-padded: 4, 2 and 1 bytes at their places in one native word.
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    let mut at = 0;
    if let Some(c) = rest.get(at..at + 4) {
        tail[at..at + 4].copy_from_slice(c);
        at += 4;
    }
    if let Some(c) = rest.get(at..at + 2) {
        tail[at..at + 2].copy_from_slice(c);
        at += 2;
    }
    if let Some(&b) = rest.get(at) {
        tail[at] = b;
    }
    add(u64::from_ne_bytes(tail));
    let x = (s & 0xffff_ffff) + (s >> 32);
    let x = (x & 0xffff) + (x >> 16);
    let x = (x & 0xffff) + (x >> 16);
    let x = ((x & 0xffff) + (x >> 16)) as u16;
    // `x` holds the sum's two bytes in memory order: read them as the wire's big-endian word.
    acc + u64::from(u16::from_be_bytes(x.to_ne_bytes()))
}

pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (whose checksum field is zero) plus `acc`.
pub fn finish(acc: u64, data: &[u8]) -> u16 {
    !fold(sum(acc, data))
}

/// Unfolded sum of the IPv4 pseudo header.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    let word = |a: Ipv4Addr| {
        let a = u32::from(a);
        u64::from(a >> 16) + u64::from(a & 0xffff)
    };
    word(src) + word(dst) + proto as u64 + len as u64
}

/// Unfolded sum of the IPv6 pseudo header.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u64 {
    let acc = sum(0, &src.octets());
    let acc = sum(acc, &dst.octets());
    acc + proto as u64 + (len >> 16) as u64 + (len & 0xffff) as u64
}

/// RFC 1624 eqn. 3, for any number of changed 16-bit words at once:
/// `HC' = ~(~HC + ~m + m')`. `old` and `new` must be the same length (even).
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = (!hc) as u64;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += (!u16::from_be_bytes([o[0], o[1]])) as u64;
        acc += u16::from_be_bytes([n[0], n[1]]) as u64;
    }
    !fold(acc)
}

/// [`update`] for a single 16-bit word.
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    update(hc, &old.to_be_bytes(), &new.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time sum folds to what a plain sum of big-endian 16-bit words folds to,
    /// for every length and alignment of the tail, and added to a running `acc`.
    #[test]
    fn the_fast_sum_matches_a_plain_one() {
        let reference = |acc: u64, d: &[u8]| {
            let mut a = acc;
            for (i, b) in d.iter().enumerate() {
                a += if i % 2 == 0 {
                    u64::from(*b) << 8
                } else {
                    u64::from(*b)
                };
            }
            a
        };
        let data: Vec<u8> = (0u32..200)
            .map(|i| (i * 151 + 7) as u8 | (i as u8 & 0x80))
            .collect();
        for len in 0..data.len() {
            for acc in [0u64, 0x1234, 0xffff_fffe] {
                assert_eq!(
                    fold(sum(acc, &data[..len])),
                    fold(reference(acc, &data[..len])),
                    "length {len}, acc {acc:#x}"
                );
            }
        }
        let ones = [0xffu8; 64];
        assert_eq!(fold(sum(0, &ones)), 0xffff);
    }

    /// The IPv4 pseudo header's sum, worked out from the addresses, is the sum of its 12
    /// bytes as RFC 793 lays them out.
    #[test]
    fn the_ipv4_pseudo_header_sums_its_bytes() {
        for (s, d, p, l) in [
            ([10, 0, 0, 1], [192, 0, 2, 7], 6, 40u16),
            ([255, 255, 255, 255], [0, 0, 0, 0], 17, 65535),
            ([203, 0, 113, 9], [198, 51, 100, 10], 6, 0),
        ] {
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&s);
            b[4..8].copy_from_slice(&d);
            b[9] = p;
            b[10..12].copy_from_slice(&l.to_be_bytes());
            assert_eq!(
                fold(pseudo_v4(s.into(), d.into(), p, l)),
                fold(sum(0, &b)),
                "{s:?} {d:?}"
            );
        }
    }

    #[test]
    fn rfc1071_example() {
        // The worked example from RFC 1071 section 3: sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(finish(0, &data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data = [
            0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 172, 16, 10, 99, 172, 16, 10, 12,
        ];
        let c = finish(0, &data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let old = [172u8, 16, 10, 12];
        let new = [10u8, 1, 255, 254];
        let c2 = update(c, &old, &new);
        data[16..20].copy_from_slice(&new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c2, finish(0, &data));
    }
}
