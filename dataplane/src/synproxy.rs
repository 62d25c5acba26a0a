//! SYN cookies (RFC 4987 §3.6) for the SYN proxy: the sequence number of the SYN-ACK sluice
//! answers a client's SYN with carries everything needed to open the connection once the
//! client's ACK returns it, so nothing is kept for a SYN that never completes.
//!
//! A cookie is 32 bits, from the top:
//!
//! | bits | what |
//! | --- | --- |
//! | 3 | the period it was made in (64 s periods, modulo 8) |
//! | 3 | the client's MSS, as an index into [`MSS_TABLE`] (the largest entry not above it) |
//! | 4 | the client's window scale (0–14), 15 when it offered none |
//! | 1 | whether the client permitted SACK |
//! | 21 | a keyed hash of the above, the flow's addresses and ports, the client's ISN and the period |
//!
//! The key is a secret for each period, derived from the proxy's master secret, so the secret
//! rotates every 64 s and a cookie is accepted in the period it was made and the one after (a
//! client has 64–128 s to answer). A forged ACK is accepted with probability 2⁻²¹ per try, and
//! only for a 4-tuple and ISN the attacker chose; each guess costs a packet.
//!
//! The codec is pure: [`CookieKey`] and the functions here allocate nothing and never panic;
//! the proxy's data path (handshake to the backend, sequence translation) builds on them.

use packet::tcp::SynOptions;
use packet::FlowKey;
use std::hash::{BuildHasher, Hasher};

/// The MSS values a cookie can carry (RFC 4987: a few common ones; a client's MSS is rounded
/// down to the largest that fits, so segments never exceed what it asked for).
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];

/// Seconds in one period of the cookie's clock (and of its secret).
pub const PERIOD_S: u64 = 64;

/// The proxy's secret. Cloned into every snapshot; the same value in every worker, so any
/// worker checks any cookie. `RandomState` is std's SipHash, keyed with random keys drawn
/// when the daemon starts.
#[derive(Clone, Debug, Default)]
pub struct CookieKey {
    keys: std::collections::hash_map::RandomState,
}

/// What a valid cookie says about the client's SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOptions {
    /// The MSS to use towards the client (from [`MSS_TABLE`]).
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
}

impl CookieKey {
    pub fn new() -> CookieKey {
        CookieKey::default()
    }

    fn mac(&self, key: &FlowKey, client_isn: u32, period: u64, fields: u32) -> u32 {
        let mut h = self.keys.build_hasher();
        h.write_u64(period);
        h.write_u32(fields);
        h.write_u32(client_isn);
        match key.src {
            std::net::IpAddr::V4(a) => h.write_u32(u32::from(a)),
            std::net::IpAddr::V6(a) => h.write_u128(u128::from(a)),
        }
        match key.dst {
            std::net::IpAddr::V4(a) => h.write_u32(u32::from(a)),
            std::net::IpAddr::V6(a) => h.write_u128(u128::from(a)),
        }
        h.write_u16(key.src_port);
        h.write_u16(key.dst_port);
        h.write_u8(key.proto);
        (h.finish() as u32) & HASH_MASK
    }

    /// The cookie for a SYN of flow `key` (client to VIP) with initial sequence number
    /// `client_isn` and options `opts`, made at `now_s` (seconds on any clock every worker
    /// shares).
    pub fn make(&self, key: &FlowKey, client_isn: u32, opts: &SynOptions, now_s: u64) -> u32 {
        let period = now_s / PERIOD_S;
        let mss = opts.mss.unwrap_or(536);
        let mss_index = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let ws = opts.window_scale.map_or(15, |w| u32::from(w.min(14)));
        let fields = ((period as u32 & 7) << 29)
            | (mss_index << 26)
            | (ws << 22)
            | (u32::from(opts.sack_permitted) << 21);
        fields | self.mac(key, client_isn, period, fields)
    }

    /// Checks the cookie an ACK returns (its acknowledgement number minus one) for flow
    /// `key`, whose ISN was `client_isn` (the ACK's sequence number minus one), at `now_s`:
    /// the options it encodes if it was made by this key in this period or the one before.
    pub fn check(
        &self,
        key: &FlowKey,
        client_isn: u32,
        cookie: u32,
        now_s: u64,
    ) -> Option<CookieOptions> {
        let now = now_s / PERIOD_S;
        let made = u64::from(cookie >> 29);
        // The period it names, taken as the latest one (mod 8) not after now.
        let back = (now.wrapping_sub(made)) & 7;
        if back > 1 || back > now {
            return None;
        }
        let period = now - back;
        let fields = cookie & !HASH_MASK;
        if self.mac(key, client_isn, period, fields) != cookie & HASH_MASK {
            return None;
        }
        let ws = (cookie >> 22) & 15;
        Some(CookieOptions {
            mss: MSS_TABLE[((cookie >> 26) & 7) as usize],
            window_scale: (ws != 15).then_some(ws.min(14) as u8),
            sack_permitted: cookie & (1 << 21) != 0,
        })
    }
}

const HASH_MASK: u32 = (1 << 21) - 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            src: "203.0.113.9".parse().unwrap(),
            dst: "198.51.100.10".parse().unwrap(),
            src_port: port,
            dst_port: 80,
            proto: 6,
        }
    }

    fn linux_syn() -> SynOptions {
        SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some((1, 0)),
        }
    }

    #[test]
    fn a_cookie_returns_the_options_it_was_made_with() {
        let k = CookieKey::new();
        let now = 1_800_000_000;
        let c = k.make(&flow(40000), 12345, &linux_syn(), now);
        assert_eq!(
            k.check(&flow(40000), 12345, c, now),
            Some(CookieOptions {
                mss: 1460,
                window_scale: Some(7),
                sack_permitted: true
            })
        );
        // No options: the smallest MSS, no scaling, no SACK. An MSS between entries is
        // rounded down.
        let c = k.make(&flow(40001), 7, &SynOptions::default(), now);
        assert_eq!(
            k.check(&flow(40001), 7, c, now),
            Some(CookieOptions {
                mss: 536,
                window_scale: None,
                sack_permitted: false
            })
        );
        let odd = SynOptions {
            mss: Some(1380),
            window_scale: Some(0),
            ..Default::default()
        };
        let c = k.make(&flow(40002), 7, &odd, now);
        let o = k.check(&flow(40002), 7, c, now).unwrap();
        assert_eq!((o.mss, o.window_scale), (1360, Some(0)));
    }

    #[test]
    fn a_cookie_is_good_for_its_period_and_the_next_only() {
        let k = CookieKey::new();
        let t0 = 1_800_000_000 / PERIOD_S * PERIOD_S;
        let c = k.make(&flow(1), 99, &linux_syn(), t0 + 10);
        assert!(k.check(&flow(1), 99, c, t0 + 10).is_some());
        assert!(
            k.check(&flow(1), 99, c, t0 + PERIOD_S + 63).is_some(),
            "the next period"
        );
        assert!(
            k.check(&flow(1), 99, c, t0 + 2 * PERIOD_S).is_none(),
            "two periods on"
        );
        assert!(
            k.check(&flow(1), 99, c, t0 + 8 * PERIOD_S + 10).is_none(),
            "a wrap later"
        );
        assert!(
            k.check(&flow(1), 99, c, t0 - 1).is_none(),
            "before it was made"
        );
    }

    #[test]
    fn a_cookie_is_bound_to_its_flow_isn_and_key() {
        let k = CookieKey::new();
        let now = 1_800_000_000;
        let c = k.make(&flow(5), 1000, &linux_syn(), now);
        assert!(k.check(&flow(6), 1000, c, now).is_none(), "another port");
        assert!(k.check(&flow(5), 1001, c, now).is_none(), "another ISN");
        assert!(
            CookieKey::new().check(&flow(5), 1000, c, now).is_none(),
            "another key"
        );
        assert!(
            k.check(&flow(5), 1000, c ^ (1 << 26), now).is_none(),
            "another MSS"
        );
        assert!(
            k.check(&flow(5), 1000, c ^ 1, now).is_none(),
            "a flipped hash bit"
        );
        // Every single-bit change of the cookie is refused.
        for bit in 0..32 {
            assert!(
                k.check(&flow(5), 1000, c ^ (1 << bit), now).is_none(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn forged_cookies_pass_about_once_in_two_million() {
        let k = CookieKey::new();
        let now = 1_800_000_000;
        let mut passed = 0;
        for guess in 0..2_000_000u32 {
            if k.check(&flow(7), 1, guess.wrapping_mul(2_654_435_761), now)
                .is_some()
            {
                passed += 1;
            }
        }
        // 2^-21 per guess with a valid period and option fields: a handful at most.
        assert!(passed <= 8, "{passed} forged cookies passed");
    }
}
