//! The SYN proxy on the worker (`syn_proxy = "on" | "auto"`, `nat` and `snat` TCP services),
//! as DPVS's synproxy does it:
//!
//! 1. A client's SYN is answered with a SYN-ACK written over the SYN's own frame, its
//!    sequence number a cookie ([`crate::synproxy::CookieKey`]); nothing is tracked.
//! 2. An ACK for no tracked flow whose acknowledgement returns a valid cookie creates the
//!    flow (its backend chosen as any new flow's, in the half-open `TcpProxyOpening` state);
//!    any data it carries is held ([`crate::synproxy::HeldSegments`]); the frame becomes
//!    sluice's SYN to the backend, with the client's own ISN and options.
//! 3. The backend's SYN-ACK becomes the ACK that completes its handshake; the flow records
//!    the difference between the backend's ISN and the cookie, and the held data follows
//!    the ACK once the burst is done. A RST instead is passed to the client as a RST.
//! 4. Every later packet is translated ([`toward_backend`], [`toward_client`]): the
//!    backend's sequence numbers and the client's acknowledgements and SACK blocks by that
//!    difference, windows by the two sides' scales.
//!
//! The client's retransmissions are the proxy's only timer: while a flow is opening, each
//! client segment resends the SYN to the backend.

use super::{Verdict, Worker};
use crate::conntrack::{FlowState, Tracked};
use crate::forward::set_macs;
use crate::port::Frame;
use crate::setup::{Forwarding, SynProxyMode};
use crate::snapshot::{ServiceEntry, Snapshot};
use crate::stats::DropReason;
use crate::synproxy::{
    rescale_window, segment_len, write_segment, ProxyHandshake, ProxyShift, SegmentEnds,
    WINDOW_SCALE,
};
use packet::parse::Parsed;
use packet::tcp::{SynOptions, TcpPacket, TcpRepr, ACK, FIN, RST, SYN};
use packet::{FlowKey, MacAddr, Malformed};
use std::net::IpAddr;

const NS: u64 = 1_000_000_000;

/// The TCP segment of a parsed frame (its bytes up to the end of the IP datagram).
fn segment<'a>(data: &'a [u8], p: &Parsed) -> Option<TcpPacket<&'a [u8]>> {
    data.get(p.l4_off..p.l3_end)
        .and_then(|b| TcpPacket::new_checked(b).ok())
}

fn segment_mut<'a>(data: &'a mut [u8], p: &Parsed) -> Option<TcpPacket<&'a mut [u8]>> {
    data.get_mut(p.l4_off..p.l3_end)
        .and_then(|b| TcpPacket::new_checked(b).ok())
}

/// Rewrites frame `f` (whose link header is `l2_len` bytes, kept) into the segment `tcp`
/// between `ends`, growing it at the tail (or, without tailroom, at the front from the
/// headroom) when the new headers are longer than the frame: the proxy's segments carry no
/// data.
#[inline(always)]
fn rewrite_as_segment<F: Frame>(
    f: &mut F,
    l2_len: usize,
    ends: &SegmentEnds,
    tcp: &TcpRepr<'_>,
) -> Result<(), DropReason> {
    let len = l2_len + segment_len(ends.src.is_ipv6(), tcp);
    let have = f.data().len();
    if len > have && !f.append(len - have) {
        // No tailroom: grow at the front instead, and move the link header there. (The
        // tail is preferred: the bytes before the frame are often a cache line the device
        // never wrote, and writing into it costs a miss per segment.)
        let grow = len - have;
        if !f.prepend(grow) {
            return Err(DropReason::NoHeadroom);
        }
        f.data_mut().copy_within(grow..grow + l2_len, 0);
    }
    f.truncate(len);
    let datagram = f
        .data_mut()
        .get_mut(l2_len..len)
        .ok_or(DropReason::Malformed(Malformed::TcpTruncated))?;
    write_segment(datagram, ends, tcp)
}

/// [`rewrite_as_segment`], then the frame's link addresses (from `src_mac` to `dst_mac`): the
/// verdict of every segment the proxy writes.
#[inline(always)]
fn send_segment<F: Frame>(
    f: &mut F,
    l2_len: usize,
    ends: &SegmentEnds,
    tcp: &TcpRepr<'_>,
    src_mac: MacAddr,
    dst_mac: MacAddr,
) -> Verdict {
    if let Err(r) = rewrite_as_segment(f, l2_len, ends, tcp) {
        return Verdict::Drop(r);
    }
    set_macs(f.data_mut(), src_mac, dst_mac);
    Verdict::Transmit
}

/// A client's segment of a flow the proxy opened, made ready for the backend: its
/// acknowledgement and SACK blocks moved from the cookie's sequence space to the backend's,
/// its window shifted for a backend that refused window scaling.
#[inline(never)]
pub(super) fn toward_backend(data: &mut [u8], p: &Parsed, seq_delta: u32, shift: u8) {
    let Some(mut t) = segment_mut(data, p) else {
        return;
    };
    if seq_delta != 0 {
        if t.flags() & ACK != 0 {
            let a = t.ack_number().wrapping_sub(seq_delta);
            t.set_ack_number(a);
        }
        if t.header_len() > TcpPacket::<&[u8]>::MIN_HEADER_LEN {
            t.shift_sack_blocks(seq_delta);
        }
    }
    if shift != 0 {
        let w = rescale_window(t.window(), shift as i8);
        t.set_window(w);
    }
}

/// A backend's segment of a flow the proxy opened, made ready for the client: its sequence
/// number moved to the cookie's space, its window rescaled to the scale sluice offered.
#[inline(never)]
pub(super) fn toward_client(data: &mut [u8], p: &Parsed, seq_delta: u32, shift: ProxyShift) {
    let Some(mut t) = segment_mut(data, p) else {
        return;
    };
    if seq_delta != 0 {
        let s = t.seq_number().wrapping_add(seq_delta);
        t.set_seq_number(s);
    }
    let by = shift.to_client();
    if by != 0 && t.flags() & SYN == 0 {
        let w = rescale_window(t.window(), by);
        t.set_window(w);
    }
}

/// What a backend's segment does to a flow the proxy is opening.
pub(super) enum BackendAnswer {
    /// The SYN-ACK: the flow is open. The frame becomes the ACK; `held` follows it.
    Opened {
        client_isn: u32,
        backend_isn: u32,
        window: u16,
        held: Option<u16>,
    },
    /// The SYN-ACK again, on an open flow: sluice's ACK was lost.
    Again {
        client_isn: u32,
        backend_isn: u32,
        window: u16,
    },
    /// A RST while opening: the backend refused; the client is told with a RST.
    Refused { cookie: u32, held: Option<u16> },
    /// Anything else while opening.
    Ignored,
}

/// Reads the backend's answer to a flow the proxy opened (found by its reply key, as `t`)
/// and records what it settles: the sequence difference, the window shifts, the state.
#[inline(never)]
pub(super) fn backend_answer(t: Tracked<'_>, data: &[u8], p: &Parsed) -> BackendAnswer {
    let Some(seg) = segment(data, p) else {
        return BackendAnswer::Ignored;
    };
    let flags = seg.flags();
    let open = t.hot.proxy.is_open();
    let hs = &mut t.cold.proxy;
    if flags & RST != 0 && !open {
        return BackendAnswer::Refused {
            cookie: hs.cookie,
            held: hs.take_held(),
        };
    }
    if flags & (SYN | ACK) != SYN | ACK || seg.ack_number() != hs.client_isn.wrapping_add(1) {
        return BackendAnswer::Ignored;
    }
    let backend_isn = seg.seq_number();
    if open {
        if backend_isn.wrapping_add(t.hot.seq_delta) != hs.cookie {
            return BackendAnswer::Ignored;
        }
        return BackendAnswer::Again {
            client_isn: hs.client_isn,
            backend_isn,
            window: rescale_window(hs.client_window, to_backend_shift(t.hot.proxy, hs)),
        };
    }
    // The client's windows are scaled by its own scale, which sluice's SYN passed on; the
    // backend's by its own, and the client was promised sluice's. A backend that refused
    // scaling reads windows unscaled in both directions.
    let (to_client, to_backend) = match (hs.client_scale(), seg.syn_options().window_scale) {
        (Some(_), Some(b)) => (b as i8 - WINDOW_SCALE as i8, 0),
        (Some(c), None) => (-(WINDOW_SCALE as i8), c),
        (None, _) => (0, 0),
    };
    t.hot.seq_delta = hs.cookie.wrapping_sub(backend_isn);
    t.hot.proxy = ProxyShift::new(to_client, to_backend != 0);
    t.hot.state = FlowState::TcpEstablished;
    BackendAnswer::Opened {
        client_isn: hs.client_isn,
        backend_isn,
        window: rescale_window(hs.client_window, to_backend as i8),
        held: hs.take_held(),
    }
}

/// Bits a client's window moves toward the backend of a flow translated by `shift`.
pub(super) fn to_backend_shift(shift: ProxyShift, hs: &ProxyHandshake) -> i8 {
    if shift.shifts_to_backend() {
        hs.to_backend_shift() as i8
    } else {
        0
    }
}

impl Worker {
    /// Whether the proxy answers a SYN to service `s` now (counting it, for `auto`).
    #[inline(never)]
    pub(super) fn proxy_answers_syn(&mut self, svc: &ServiceEntry, s: usize, now: u64) -> bool {
        match svc.syn_proxy.mode {
            SynProxyMode::Off => false,
            SynProxyMode::On => true,
            SynProxyMode::Auto { on_rate, off_rate } => {
                let w = self.steering.workers.max(1) as u64;
                let Some(l) = self.limits.get_mut(s) else {
                    return false;
                };
                let was = l.gate.is_active();
                let on = l
                    .gate
                    .syn(now, u64::from(on_rate).div_ceil(w), u64::from(off_rate) / w);
                if on != was {
                    if let Some(c) = self.stats.services.get_mut(s) {
                        c.syn_proxy_on = u64::from(on);
                        c.syn_proxy_activations += u64::from(on);
                    }
                }
                on
            }
        }
    }

    /// Whether the proxy answers service `s`'s SYNs now.
    fn proxy_active(&self, svc: &ServiceEntry, s: usize) -> bool {
        match svc.syn_proxy.mode {
            SynProxyMode::Off => false,
            SynProxyMode::On => true,
            SynProxyMode::Auto { .. } => self.limits.get(s).is_some_and(|l| l.gate.is_active()),
        }
    }

    /// Answers a client's SYN with a SYN-ACK carrying a cookie, written over the SYN's frame:
    /// the options the client offered that the cookie can carry (MSS, window scale, SACK),
    /// none it cannot (timestamps), and a window of one segment, so the client sends one
    /// segment (which the proxy can hold) until the backend's own window reaches it.
    #[inline(never)]
    pub(super) fn answer_syn<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        svc: &ServiceEntry,
        now: u64,
    ) -> Verdict {
        let Some(seg) = segment(f.data(), p) else {
            return Verdict::Drop(DropReason::Malformed(Malformed::TcpTruncated));
        };
        let (client_isn, offered) = (seg.seq_number(), seg.syn_options());
        let Some(gateway) = snap.mac_of(snap.gateway) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        let cookie = self
            .cookies
            .make(&p.flow_key(), client_isn, &offered, now / NS);
        let mss = svc.syn_proxy.mss;
        let ours = SynOptions {
            mss: Some(mss),
            window_scale: offered.window_scale.map(|_| WINDOW_SCALE),
            sack_permitted: offered.sack_permitted,
            timestamps: None,
        };
        let mut o = [0u8; SynOptions::MAX_EMIT];
        let n = ours.emit(&mut o);
        let tcp = TcpRepr {
            src_port: p.dst_port,
            dst_port: p.src_port,
            seq: cookie,
            ack: client_isn.wrapping_add(1),
            flags: SYN | ACK,
            window: mss,
            options: &o[..n],
        };
        let ends = SegmentEnds {
            src: p.dst,
            dst: p.src,
            ttl: 64,
        };
        let v = send_segment(f, p.l2_len, &ends, &tcp, snap.node.mac, gateway);
        if v == Verdict::Transmit {
            self.stats.syn_proxy_cookies += 1;
        }
        v
    }

    /// A TCP packet to proxied service `s` with no tracked flow: an ACK returning a valid
    /// cookie opens the flow; anything else is dropped while the proxy is answering SYNs
    /// (`None` lets it be balanced as any new flow, with `auto` off: a flow from before).
    #[inline(never)]
    pub(super) fn proxy_untracked<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        now: u64,
    ) -> Option<Verdict> {
        let svc = &snap.services[s];
        let expects = match svc.syn_proxy.mode {
            SynProxyMode::Off => false,
            SynProxyMode::On => true,
            SynProxyMode::Auto { .. } => {
                self.limits.get(s).is_some_and(|l| l.gate.cookies_out(now))
            }
        };
        if expects && p.tcp_flags & (SYN | RST | ACK) == ACK {
            if let Some(v) = self.accept_cookie(f, p, snap, s, now) {
                return Some(v);
            }
            if self.proxy_active(svc, s) {
                return Some(Verdict::Drop(DropReason::SynProxyBadCookie));
            }
            return None;
        }
        self.proxy_active(svc, s)
            .then_some(Verdict::Drop(DropReason::SynProxyNoFlow))
    }

    /// An ACK for no tracked flow: if it returns a valid cookie, creates the flow, holds its
    /// data and sends sluice's SYN to the backend in its frame. `None` if the cookie is not
    /// valid.
    fn accept_cookie<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        now: u64,
    ) -> Option<Verdict> {
        let seg = segment(f.data(), p)?;
        let client_isn = seg.seq_number().wrapping_sub(1);
        let cookie = seg.ack_number().wrapping_sub(1);
        let (window, has_data) = (seg.window(), !seg.payload().is_empty());
        let key = p.flow_key();
        let opts = self.cookies.check(&key, client_isn, cookie, now / NS)?;
        self.stats.syn_proxy_accepted += 1;
        let held = if has_data {
            let h = self.held.hold(f.data());
            match h {
                Some(_) => self.stats.syn_proxy_held += 1,
                None => self.stats.syn_proxy_hold_full += 1,
            }
            h
        } else {
            None
        };
        let hs = ProxyHandshake::new(client_isn, cookie, window, &opts, held);
        let flow = match self.new_flow(&key, snap, s, Some(ACK), now, Some(hs)) {
            Ok(fl) => fl,
            Err(r) => {
                if let Some(h) = held {
                    self.held.release(h);
                }
                return Some(Verdict::Drop(r));
            }
        };
        Some(self.backend_syn(f, p, snap, s, flow.backend, flow.snat_port, &hs))
    }

    /// A client segment while its flow waits for the backend's SYN-ACK: its data is held if
    /// none is yet, and it resends sluice's SYN (the client retransmits until it hears from
    /// the backend, so the proxy needs no timer of its own).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn proxy_opening<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        key: &FlowKey,
        backend: u16,
        snat_port: u16,
    ) -> Verdict {
        if p.tcp_flags & (SYN | RST | FIN) != 0 {
            return Verdict::Drop(DropReason::SynProxyOpening);
        }
        let has_data = segment(f.data(), p).is_some_and(|t| !t.payload().is_empty());
        let Some(hs) = self.ct.proxy_handshake_mut(key) else {
            return Verdict::Drop(DropReason::SynProxyOpening);
        };
        if has_data && hs.held().is_none() {
            hs.set_held(self.held.hold(f.data()));
            match hs.held() {
                Some(_) => self.stats.syn_proxy_held += 1,
                None => self.stats.syn_proxy_hold_full += 1,
            }
        }
        let hs = *hs;
        self.backend_syn(f, p, snap, s, backend, snat_port, &hs)
    }

    /// Rewrites the client's segment `f` into sluice's SYN to the flow's backend: from the
    /// client (`nat`) or the node's SNAT port (`snat`), with the client's ISN (so the
    /// client's sequence numbers need no translation) and the options its cookie kept.
    #[allow(clippy::too_many_arguments)]
    fn backend_syn<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        s: usize,
        backend: u16,
        snat_port: u16,
        hs: &ProxyHandshake,
    ) -> Verdict {
        let svc = &snap.services[s];
        let Some(be) = svc.backends.get(backend as usize) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let Some(dst_mac) = snap.mac_of(be.next_hop) else {
            return Verdict::Drop(DropReason::UnresolvedNextHop);
        };
        let (src, src_port) = match svc.forwarding {
            Forwarding::Snat => match snap.node_addr(p.dst.is_ipv6()) {
                Some(a) => (a, snat_port),
                None => return Verdict::Drop(DropReason::NoNodeAddress),
            },
            _ => (p.src, p.src_port),
        };
        if p.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let mut o = [0u8; SynOptions::MAX_EMIT];
        let n = hs.backend_syn_options().emit(&mut o);
        let tcp = TcpRepr {
            src_port,
            dst_port: be.addr.port(),
            seq: hs.client_isn,
            ack: 0,
            flags: SYN,
            // A SYN's window is never scaled: the client's, unscaled.
            window: rescale_window(hs.client_window, hs.client_scale().unwrap_or(0) as i8),
            options: &o[..n],
        };
        let ends = SegmentEnds {
            src,
            dst: be.addr.ip(),
            ttl: p.ttl - 1,
        };
        let v = send_segment(f, p.l2_len, &ends, &tcp, snap.node.mac, dst_mac);
        if v == Verdict::Transmit {
            self.count_backend_packet(s, backend, f.data().len());
        }
        v
    }

    /// Acts on a backend's answer to a flow the proxy opened ([`backend_answer`]): the
    /// SYN-ACK's frame becomes sluice's ACK back to the backend (to the MAC it came from),
    /// and the held data is queued to follow; a RST's frame becomes a RST to the client
    /// (`client`, from the VIP `vip`).
    #[inline(never)]
    pub(super) fn proxy_backend_answer<F: Frame>(
        &mut self,
        f: &mut F,
        p: &Parsed,
        snap: &Snapshot,
        answer: BackendAnswer,
        vip: (IpAddr, u16),
        client: (IpAddr, u16),
    ) -> Verdict {
        let came_from = MacAddr(
            f.data()
                .get(6..12)
                .and_then(|m| <[u8; 6]>::try_from(m).ok())
                .unwrap_or_default(),
        );
        let (client_isn, backend_isn, window) = match answer {
            BackendAnswer::Opened {
                client_isn,
                backend_isn,
                window,
                held,
            } => {
                self.stats.syn_proxy_opened += 1;
                if let Some(h) = held {
                    self.held_due.push(h);
                }
                (client_isn, backend_isn, window)
            }
            BackendAnswer::Again {
                client_isn,
                backend_isn,
                window,
            } => (client_isn, backend_isn, window),
            BackendAnswer::Refused { cookie, held } => {
                if let Some(h) = held {
                    self.held.release(h);
                }
                self.stats.syn_proxy_refused += 1;
                let Some(gateway) = snap.mac_of(snap.gateway) else {
                    return Verdict::Drop(DropReason::UnresolvedNextHop);
                };
                let tcp = TcpRepr {
                    src_port: vip.1,
                    dst_port: client.1,
                    seq: cookie.wrapping_add(1),
                    ack: 0,
                    flags: RST,
                    window: 0,
                    options: &[],
                };
                let ends = SegmentEnds {
                    src: vip.0,
                    dst: client.0,
                    ttl: 64,
                };
                return send_segment(f, p.l2_len, &ends, &tcp, snap.node.mac, gateway);
            }
            BackendAnswer::Ignored => return Verdict::Drop(DropReason::SynProxyOpening),
        };
        // Back to where the SYN-ACK came from: to the backend from the client's (`nat`) or the
        // node's (`snat`) end of the connection, which is the SYN-ACK's destination.
        let tcp = TcpRepr {
            src_port: p.dst_port,
            dst_port: p.src_port,
            seq: client_isn.wrapping_add(1),
            ack: backend_isn.wrapping_add(1),
            flags: ACK,
            window,
            options: &[],
        };
        let ends = SegmentEnds {
            src: p.dst,
            dst: p.src,
            ttl: 64,
        };
        send_segment(f, p.l2_len, &ends, &tcp, snap.node.mac, came_from)
    }

    /// One packet of `len` bytes to backend `backend` of service `s`, in this worker's
    /// counters (the forwarding path's, and the proxy's SYNs).
    #[inline(always)]
    pub(super) fn count_backend_packet(&mut self, s: usize, backend: u16, len: usize) {
        if let Some(c) = self
            .stats
            .backends
            .get_mut(s)
            .and_then(|v| v.get_mut(backend as usize))
        {
            c.packets += 1;
            c.bytes += len as u64;
        }
    }
}
