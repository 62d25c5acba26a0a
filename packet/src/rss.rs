//! The Toeplitz receive-side-scaling hash (as NICs compute it), with the symmetric key that
//! sends both directions of a flow to the same queue.

use core::net::IpAddr;

/// `0x6d5a` repeated: with this key the Toeplitz hash of (src, dst, sport, dport) equals that of
/// (dst, src, dport, sport), so both directions of an unchanged flow land on one queue.
pub const SYMMETRIC_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Toeplitz hash of `input` under `key`; `input` must be at most `key.len() - 4` bytes.
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut result = 0u32;
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().take(36).enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | ((next >> (7 - bit)) & 1) as u32;
        }
    }
    result
}

/// The 4-tuple hash a NIC computes for TCP/UDP (addresses then ports, network order).
/// Mixed address families hash the IPv4 side as IPv4-mapped IPv6.
pub fn hash_tuple(key: &[u8; 40], src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> u32 {
    let mut buf = [0u8; 36];
    let n = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf[0..4].copy_from_slice(&s.octets());
            buf[4..8].copy_from_slice(&d.octets());
            8
        }
        (s, d) => {
            buf[0..16].copy_from_slice(&v6_octets(s));
            buf[16..32].copy_from_slice(&v6_octets(d));
            32
        }
    };
    buf[n..n + 2].copy_from_slice(&sport.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&dport.to_be_bytes());
    toeplitz(key, &buf[..n + 4])
}

/// The 2-tuple hash a NIC computes for IP packets without ports (ICMP, fragments, …).
pub fn hash_addrs(key: &[u8; 40], src: IpAddr, dst: IpAddr) -> u32 {
    let mut buf = [0u8; 32];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf[0..4].copy_from_slice(&s.octets());
            buf[4..8].copy_from_slice(&d.octets());
            toeplitz(key, &buf[..8])
        }
        (s, d) => {
            buf[0..16].copy_from_slice(&v6_octets(s));
            buf[16..32].copy_from_slice(&v6_octets(d));
            toeplitz(key, &buf)
        }
    }
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    /// Microsoft's RSS verification suite key and first IPv4/TCP vector.
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn matches_published_vector() {
        // Destination 161.142.100.80:1766, source 66.9.149.187:2794 -> 0x51ccc178.
        let h = hash_tuple(
            &MS_KEY,
            IpAddr::V4(Ipv4Addr::new(66, 9, 149, 187)),
            IpAddr::V4(Ipv4Addr::new(161, 142, 100, 80)),
            2794,
            1766,
        );
        assert_eq!(h, 0x51cc_c178);
    }

    #[test]
    fn symmetric_key_is_symmetric() {
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10));
        let b = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77));
        for p in [1u16, 80, 443, 40000, 65535] {
            assert_eq!(
                hash_tuple(&SYMMETRIC_KEY, a, b, p, 80),
                hash_tuple(&SYMMETRIC_KEY, b, a, 80, p)
            );
        }
    }
}
