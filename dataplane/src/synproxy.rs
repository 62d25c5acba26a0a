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
//! The codec is pure: [`CookieKey`] and the functions here allocate nothing and never panic.
//!
//! Beside it, what the worker's proxy ([`crate::worker`]) keeps and writes:
//!
//! - a flow the proxy opened records, in its hot half, the difference between the
//!   backend's sequence numbers and the client's view of them (the cookie) and how to rescale
//!   the backend's windows ([`ProxyShift`]); in its cold half, the handshake it is completing
//!   ([`ProxyHandshake`]);
//! - [`HeldSegments`]: a fixed pool, per worker, holding the first data a client sends before
//!   the backend has answered the proxy's SYN;
//! - [`ProxyGate`]: whether `syn_proxy = "auto"` answers SYNs now;
//! - [`write_segment`]: IP and TCP headers written afresh for the SYN-ACKs, SYNs, ACKs and
//!   RSTs the proxy sends.

use crate::stats::DropReason;
use packet::ipv4::{Ipv4Repr, PROTO_TCP};
use packet::ipv6::Ipv6Repr;
use packet::tcp::{SynOptions, TcpRepr};
use packet::{checksum, FlowKey};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::OnceLock;

/// The MSS values a cookie can carry (RFC 4987: a few common ones; a client's MSS is rounded
/// down to the largest that fits, so segments never exceed what it asked for).
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];

/// Seconds in one period of the cookie's clock (and of its secret).
pub const PERIOD_S: u64 = 64;

/// The proxy's secret: a SipHash-1-3 key drawn when the daemon starts (from std's random
/// source, the one `RandomState` keys its SipHash from). The same value in every worker, so
/// any worker checks any cookie.
#[derive(Clone, Debug)]
pub struct CookieKey {
    keys: [u64; 2],
}

impl Default for CookieKey {
    fn default() -> Self {
        let s = std::collections::hash_map::RandomState::new();
        let word = |i: u64| {
            let mut h = s.build_hasher();
            h.write_u64(i);
            h.finish()
        };
        CookieKey {
            keys: [word(0xc00c1e), word(0xc00c1e + 1)],
        }
    }
}

/// SipHash-`C`-`D` (Aumasson and Bernstein) keyed by `k` over `words` read as the
/// little-endian words of a message of `len` bytes (its last word zero-padded). Written over
/// whole words because the cookie's input is a fixed block: std's byte-stream SipHash costs
/// twice as much for it. `tests` check SipHash-2-4 against std's.
#[inline(always)]
fn siphash<const C: usize, const D: usize>(k: [u64; 2], words: &[u64], len: usize) -> u64 {
    let mut v = [
        k[0] ^ 0x736f_6d65_7073_6575,
        k[1] ^ 0x646f_7261_6e64_6f6d,
        k[0] ^ 0x6c79_6765_6e65_7261,
        k[1] ^ 0x7465_6462_7974_6573,
    ];
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let full = len / 8;
    let mut compress = |m: u64| {
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
    };
    for &m in words.iter().take(full) {
        compress(m);
    }
    let tail = if len.is_multiple_of(8) {
        0
    } else {
        words.get(full).copied().unwrap_or(0)
    };
    compress(tail | (len as u64) << 56);
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
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

    /// The key every worker of this process uses, drawn once: any worker checks a cookie
    /// any other made, and a configuration reload keeps the cookies in flight valid.
    pub fn process() -> &'static CookieKey {
        static KEY: OnceLock<CookieKey> = OnceLock::new();
        KEY.get_or_init(CookieKey::new)
    }

    /// The keyed hash of a cookie's inputs, packed into whole words — four for an IPv4
    /// tuple, seven for IPv6, the family in the last byte so the two never feed the same
    /// block — and hashed with SipHash-1-3 (fed field by field to std's hasher, they cost
    /// about 500 instructions a cookie, over a quarter of answering a SYN: callgrind).
    fn mac(&self, key: &FlowKey, client_isn: u32, period: u64, fields: u32) -> u32 {
        let mut w = [0u64; 7];
        w[0] = period;
        w[1] = u64::from(fields) | u64::from(client_isn) << 32;
        let ports = u64::from(key.src_port) | u64::from(key.dst_port) << 16;
        let n = match (key.src, key.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                w[2] = u64::from(u32::from(s)) | u64::from(u32::from(d)) << 32;
                w[3] = ports | u64::from(key.proto) << 32;
                4
            }
            (s, d) => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
                    IpAddr::V6(a) => u128::from(a),
                };
                let (s, d) = (v6(s), v6(d));
                w[2] = s as u64;
                w[3] = (s >> 64) as u64;
                w[4] = d as u64;
                w[5] = (d >> 64) as u64;
                w[6] = ports | u64::from(key.proto) << 32 | 1 << 56;
                7
            }
        };
        (siphash::<1, 3>(self.keys, &w[..n], n * 8) as u32) & HASH_MASK
    }

    /// The cookie for a SYN of flow `key` (client to VIP) with initial sequence number
    /// `client_isn` and options `opts`, made at `now_s` (seconds on any clock every worker
    /// shares).
    #[inline]
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

/// The window scale the proxy's SYN-ACK offers a client that offered one (Linux's choice for
/// its default buffers); the backend's windows are rescaled to it.
pub const WINDOW_SCALE: u8 = 7;

/// Seconds `syn_proxy = "auto"` stays on once SYNs fall under its off rate.
pub const AUTO_OFF_HOLD_S: u64 = 10;

/// How a flow the proxy opened is translated, in one byte of its hot half (0: not proxied).
/// Bit 7: proxied. Bit 6: its handshake with the backend is complete. Bits 0–4: the shift of the backend's windows toward the client (the
/// backend's scale less sluice's, −16 to 15, stored plus 16). Bit 5: the client's windows
/// need a shift toward the backend too (the backend refused window scaling that the client
/// offered; the shift is the client's scale, [`ProxyHandshake::to_backend_shift`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyShift(u8);

impl ProxyShift {
    pub const NONE: ProxyShift = ProxyShift(0);
    const PROXIED: u8 = 0x80;
    const TO_BACKEND: u8 = 0x20;
    const OPEN: u8 = 0x40;

    /// A proxied flow whose handshake to the backend is not complete yet.
    pub const OPENING: ProxyShift = ProxyShift(Self::PROXIED | 16);

    pub fn new(to_client: i8, to_backend: bool) -> ProxyShift {
        let c = (to_client.clamp(-16, 15) + 16) as u8;
        ProxyShift(Self::PROXIED | Self::OPEN | c | if to_backend { Self::TO_BACKEND } else { 0 })
    }
    #[inline(always)]
    pub fn is_proxied(self) -> bool {
        self.0 & Self::PROXIED != 0
    }
    /// Proxied and its handshake with the backend complete.
    #[inline(always)]
    pub fn is_open(self) -> bool {
        self.0 & Self::OPEN != 0
    }
    /// Bits the backend's window field moves left (negative: right) toward the client.
    #[inline(always)]
    pub fn to_client(self) -> i8 {
        (self.0 & 0x1f) as i8 - 16
    }
    #[inline(always)]
    pub fn shifts_to_backend(self) -> bool {
        self.0 & Self::TO_BACKEND != 0
    }
}

/// A window field rescaled by `shift` bits (left when positive), saturating at 65535 and
/// never rounded to zero from a nonzero window (which would stall the sender).
#[inline]
pub fn rescale_window(w: u16, shift: i8) -> u16 {
    let w = u32::from(w);
    let v = if shift >= 0 {
        (w << shift.min(16)).min(0xffff)
    } else {
        let v = w >> (-shift).min(16);
        if v == 0 && w != 0 {
            1
        } else {
            v
        }
    };
    v as u16
}

/// The handshake of a flow the proxy opened, in its cold half (16 bytes): what the SYN to
/// the backend was made from, and what the SYN-ACK and ACK need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHandshake {
    pub client_isn: u32,
    /// The ISN sluice gave the client (the cookie).
    pub cookie: u32,
    /// The window field of the client's ACK (scaled by the client's scale).
    pub client_window: u16,
    /// The client's MSS, as the cookie kept it.
    pub mss: u16,
    /// A [`HeldSegments`] slot holding the client's first data until the backend answers
    /// (`NOTHING_HELD`: none).
    held: u16,
    /// The client's window scale (`NO_SCALE`: it offered none).
    client_scale: u8,
    pub sack_permitted: bool,
}

const NOTHING_HELD: u16 = u16::MAX;
const NO_SCALE: u8 = u8::MAX;

impl Default for ProxyHandshake {
    fn default() -> Self {
        ProxyHandshake {
            client_isn: 0,
            cookie: 0,
            client_window: 0,
            mss: 536,
            held: NOTHING_HELD,
            client_scale: NO_SCALE,
            sack_permitted: false,
        }
    }
}

impl ProxyHandshake {
    pub fn new(
        client_isn: u32,
        cookie: u32,
        client_window: u16,
        opts: &CookieOptions,
        held: Option<u16>,
    ) -> ProxyHandshake {
        ProxyHandshake {
            client_isn,
            cookie,
            client_window,
            mss: opts.mss,
            held: held.unwrap_or(NOTHING_HELD),
            client_scale: opts.window_scale.unwrap_or(NO_SCALE),
            sack_permitted: opts.sack_permitted,
        }
    }

    pub fn client_scale(&self) -> Option<u8> {
        (self.client_scale != NO_SCALE).then_some(self.client_scale)
    }

    pub fn held(&self) -> Option<u16> {
        (self.held != NOTHING_HELD).then_some(self.held)
    }

    pub fn set_held(&mut self, h: Option<u16>) {
        self.held = h.unwrap_or(NOTHING_HELD);
    }

    pub fn take_held(&mut self) -> Option<u16> {
        let h = self.held();
        self.held = NOTHING_HELD;
        h
    }

    /// Bits the client's windows move left toward the backend: its whole scale, for a
    /// backend that refused window scaling (flagged in [`ProxyShift::shifts_to_backend`]).
    pub fn to_backend_shift(&self) -> u8 {
        self.client_scale().unwrap_or(0)
    }

    /// The options of the SYN the proxy sends the backend: the client's, as its cookie kept
    /// them (no timestamps: the cookie cannot carry them, so neither side uses them).
    pub fn backend_syn_options(&self) -> SynOptions {
        SynOptions {
            mss: Some(self.mss),
            window_scale: self.client_scale(),
            sack_permitted: self.sack_permitted,
            timestamps: None,
        }
    }
}

const _: () = assert!(std::mem::size_of::<ProxyHandshake>() == 16);

/// Bytes each [`HeldSegments`] slot holds: a full Ethernet frame at 1500 MTU with a VLAN tag
/// and room to spare; a larger first segment is not held (its sender retransmits it).
pub const HELD_FRAME: usize = 2048;

/// The first data segments of flows waiting for their backend's SYN-ACK, in a fixed pool of
/// slots reserved once per worker (nothing is allocated per segment). A client's ACK that
/// completes the proxy's handshake often carries its request; holding it saves the client
/// a retransmission timeout.
pub struct HeldSegments {
    frames: Box<[u8]>,
    lens: Vec<u16>,
    free: Vec<u16>,
}

impl HeldSegments {
    pub fn new(slots: usize) -> HeldSegments {
        let slots = slots.min(u16::MAX as usize);
        HeldSegments {
            frames: vec![0u8; slots * HELD_FRAME].into_boxed_slice(),
            lens: vec![0; slots],
            free: (0..slots as u16).rev().collect(),
        }
    }

    /// Copies `frame` into a free slot; `None` when every slot is taken or it is too large.
    pub fn hold(&mut self, frame: &[u8]) -> Option<u16> {
        if frame.len() > HELD_FRAME {
            return None;
        }
        let slot = self.free.pop()?;
        let at = slot as usize * HELD_FRAME;
        self.frames
            .get_mut(at..at + frame.len())?
            .copy_from_slice(frame);
        self.lens[slot as usize] = frame.len() as u16;
        Some(slot)
    }

    /// The frame in `slot`.
    pub fn get(&self, slot: u16) -> &[u8] {
        let at = slot as usize * HELD_FRAME;
        let len = self.lens.get(slot as usize).copied().unwrap_or(0) as usize;
        self.frames.get(at..at + len).unwrap_or(&[])
    }

    /// Frees `slot` (a slot not held is ignored).
    pub fn release(&mut self, slot: u16) {
        if let Some(l) = self.lens.get_mut(slot as usize) {
            if *l != 0 {
                *l = 0;
                self.free.push(slot);
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.lens.len() - self.free.len()
    }
}

/// One worker's view of whether the proxy answers a service's SYNs: always with `on`; with
/// `auto`, from the rate of SYNs this worker sees (its share of the service's), switching on
/// at `on_rate` and off after [`AUTO_OFF_HOLD_S`] seconds under `off_rate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyGate {
    active: bool,
    window_start_ns: u64,
    syns: u64,
    /// Seconds under the off rate so far.
    quiet_s: u64,
    /// When it was last on (an ACK may return a cookie for two periods after).
    last_active_ns: u64,
    /// Times it switched on.
    pub activations: u64,
}

const NS: u64 = 1_000_000_000;

impl ProxyGate {
    /// Counts one SYN at `now` and says whether the proxy answers it. `on_rate` and
    /// `off_rate` are this worker's shares.
    pub fn syn(&mut self, now: u64, on_rate: u64, off_rate: u64) -> bool {
        let elapsed = now.saturating_sub(self.window_start_ns);
        if elapsed >= NS {
            let secs = elapsed / NS;
            let rate = self.syns / secs.max(1);
            if self.active {
                if rate < off_rate {
                    self.quiet_s += secs;
                    if self.quiet_s >= AUTO_OFF_HOLD_S {
                        self.active = false;
                    }
                } else {
                    self.quiet_s = 0;
                }
            }
            self.window_start_ns = now;
            self.syns = 0;
        }
        self.syns += 1;
        if !self.active && self.syns >= on_rate.max(1) {
            self.active = true;
            self.quiet_s = 0;
            self.activations += 1;
        }
        if self.active {
            self.last_active_ns = now;
        }
        self.active
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether an ACK may be returning a cookie: the gate is on, or was within the two
    /// periods a cookie stays good for.
    pub fn cookies_out(&self, now: u64) -> bool {
        self.active
            || (self.activations > 0 && now.saturating_sub(self.last_active_ns) < 2 * PERIOD_S * NS)
    }
}

/// The addresses and ports of a segment the proxy writes.
#[derive(Debug, Clone, Copy)]
pub struct SegmentEnds {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
}

/// Bytes of IP and TCP header [`write_segment`] writes for `tcp` over addresses of `v6`.
pub fn segment_len(v6: bool, tcp: &TcpRepr<'_>) -> usize {
    (if v6 { Ipv6Repr::LEN } else { Ipv4Repr::LEN }) + tcp.header_len()
}

/// Writes a fresh IP header (no options or extension headers) and `tcp` at the front of
/// `datagram`, which is exactly [`segment_len`] bytes (the proxy's segments carry no data).
#[inline]
pub fn write_segment(
    datagram: &mut [u8],
    ends: &SegmentEnds,
    tcp: &TcpRepr<'_>,
) -> Result<(), DropReason> {
    let tl = tcp.header_len();
    let bad = DropReason::Malformed(packet::Malformed::TcpTruncated);
    match (ends.src, ends.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            Ipv4Repr {
                src,
                dst,
                protocol: PROTO_TCP,
                payload_len: tl as u16,
                ttl: ends.ttl,
                dscp_ecn: 0,
                dont_fragment: true,
            }
            .emit(datagram)
            .map_err(|_| bad)?;
            let pseudo = checksum::pseudo_v4(src, dst, PROTO_TCP, tl as u16);
            let seg = datagram.get_mut(Ipv4Repr::LEN..).ok_or(bad)?;
            tcp.emit(seg, pseudo).map_err(|_| bad)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            Ipv6Repr {
                src,
                dst,
                next_header: PROTO_TCP,
                payload_len: tl as u16,
                hop_limit: ends.ttl,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(datagram)
            .map_err(|_| bad)?;
            let pseudo = checksum::pseudo_v6(src, dst, PROTO_TCP, tl as u32);
            let seg = datagram.get_mut(Ipv6Repr::LEN..).ok_or(bad)?;
            tcp.emit(seg, pseudo).map_err(|_| bad)
        }
        _ => Err(DropReason::FamilyMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our SipHash over words is SipHash: its 2-4 instance gives what std's (deprecated but
    /// keyed) `SipHasher` gives for the same bytes, at every length from 0 to 64.
    #[test]
    #[allow(deprecated)]
    fn siphash_over_words_matches_std() {
        let k = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908];
        let bytes: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..=64 {
            let mut words = [0u64; 8];
            for (i, b) in bytes[..len].iter().enumerate() {
                words[i / 8] |= u64::from(*b) << (8 * (i % 8));
            }
            let mut h = std::hash::SipHasher::new_with_keys(k[0], k[1]);
            h.write(&bytes[..len]);
            assert_eq!(siphash::<2, 4>(k, &words, len), h.finish(), "length {len}");
        }
    }

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
    fn windows_rescale_without_overflow_or_reaching_zero() {
        assert_eq!(rescale_window(1000, 0), 1000);
        assert_eq!(rescale_window(1000, 2), 4000);
        assert_eq!(rescale_window(1000, 7), 65535, "saturates");
        assert_eq!(rescale_window(1024, -7), 8);
        assert_eq!(rescale_window(5, -7), 1, "a nonzero window stays open");
        assert_eq!(rescale_window(0, -7), 0);
        assert_eq!(rescale_window(65535, 15), 65535);
        assert_eq!(rescale_window(65535, -16), 1);
        for to_client in -16..=15 {
            for tb in [false, true] {
                let s = ProxyShift::new(to_client, tb);
                assert!(s.is_proxied() && s.is_open());
                assert_eq!((s.to_client(), s.shifts_to_backend()), (to_client, tb));
            }
        }
        assert!(!ProxyShift::NONE.is_proxied());
        assert_eq!(ProxyShift::OPENING.to_client(), 0);
        assert!(ProxyShift::OPENING.is_proxied() && !ProxyShift::OPENING.is_open());
    }

    #[test]
    fn held_segments_are_bounded_and_reused() {
        let mut h = HeldSegments::new(2);
        let a = h.hold(b"first").unwrap();
        let b = h.hold(b"second").unwrap();
        assert_eq!(h.hold(b"third"), None, "every slot taken");
        assert_eq!((h.get(a), h.get(b)), (&b"first"[..], &b"second"[..]));
        assert_eq!(h.hold(&[0u8; HELD_FRAME + 1]), None);
        h.release(a);
        h.release(a);
        assert_eq!(h.in_use(), 1, "a double release frees once");
        let c = h.hold(b"again").unwrap();
        assert_eq!(h.get(c), b"again");
        h.release(999);
        assert_eq!(h.get(999), b"");
    }

    #[test]
    fn the_auto_gate_turns_on_at_the_rate_and_off_after_the_hold() {
        let mut g = ProxyGate::default();
        let s = NS;
        // 50 SYNs a second against an on rate of 100: stays off.
        for i in 0..500 {
            assert!(!g.syn(i * s / 50, 100, 50));
        }
        assert!(!g.cookies_out(10 * s));
        // 100 within one second: on at the hundredth.
        let t0 = 20 * s;
        let on: Vec<bool> = (0..100).map(|i| g.syn(t0 + i * 1000, 100, 50)).collect();
        assert!(!on[98] && on[99]);
        // 60 a second (above the off rate) keeps it on for a minute.
        for i in 0..3600 {
            assert!(g.syn(t0 + s + i * s / 60, 100, 50));
        }
        // 10 a second: on for the hold, then off.
        let t1 = t0 + 61 * s;
        let mut off_at = None;
        for i in 0..200 {
            let t = t1 + i * s / 10;
            if !g.syn(t, 100, 50) && off_at.is_none() {
                off_at = Some(t);
            }
        }
        let off = off_at.expect("off after the hold") - t1;
        assert!(
            (AUTO_OFF_HOLD_S * s..=(AUTO_OFF_HOLD_S + 2) * s).contains(&off),
            "{off}"
        );
        assert!(g.cookies_out(t1 + 20 * s), "cookies still out");
        assert!(!g.cookies_out(t1 + off + 2 * PERIOD_S * s));
        assert_eq!(g.activations, 1);
    }

    #[test]
    fn segments_are_written_with_valid_checksums() {
        let mut o = [0u8; SynOptions::MAX_EMIT];
        let n = linux_syn().emit(&mut o);
        let tcp = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 2,
            flags: packet::tcp::SYN | packet::tcp::ACK,
            window: 1460,
            options: &o[..n],
        };
        for (src, dst) in [
            ("198.51.100.10", "203.0.113.9"),
            ("2001:db8::10", "2001:db8::9"),
        ] {
            let ends = SegmentEnds {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                ttl: 64,
            };
            let len = segment_len(ends.src.is_ipv6(), &tcp);
            let mut frame = vec![0u8; 14 + len];
            frame[12..14].copy_from_slice(if ends.src.is_ipv6() {
                &[0x86, 0xdd]
            } else {
                &[0x08, 0x00]
            });
            write_segment(&mut frame[14..], &ends, &tcp).unwrap();
            let p = packet::parse_frame(&frame).unwrap();
            assert_eq!(
                (p.src, p.dst, p.src_port, p.dst_port),
                (ends.src, ends.dst, 80, 40000)
            );
            assert_eq!(p.tcp_flags, packet::tcp::SYN | packet::tcp::ACK);
            let seg = &frame[p.l4_off..p.l3_end];
            let pseudo = match (ends.src, ends.dst) {
                (IpAddr::V4(a), IpAddr::V4(b)) => checksum::pseudo_v4(a, b, 6, seg.len() as u16),
                (IpAddr::V6(a), IpAddr::V6(b)) => checksum::pseudo_v6(a, b, 6, seg.len() as u32),
                _ => unreachable!(),
            };
            assert_eq!(checksum::fold(checksum::sum(pseudo, seg)), 0xffff);
            assert!(write_segment(&mut frame[14..14 + len - 1], &ends, &tcp).is_err());
        }
        let mixed = SegmentEnds {
            src: "198.51.100.10".parse().unwrap(),
            dst: "2001:db8::9".parse().unwrap(),
            ttl: 64,
        };
        assert_eq!(
            write_segment(&mut [0u8; 80], &mixed, &tcp),
            Err(DropReason::FamilyMismatch)
        );
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
