//! Internet checksum (RFC 1071): full computation, pseudo headers, and incremental update
//! (RFC 1624, eqn. 3) so rewrites touch only the words they change.

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words, added to `acc` (unfolded).
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Fold a wide sum to 16 bits (not inverted).
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
    let acc = sum(0, &src.octets());
    let acc = sum(acc, &dst.octets());
    acc + proto as u64 + len as u64
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
