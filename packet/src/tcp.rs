//! TCP headers (RFC 9293): ports, flags and checksum; the options a SYN carries
//! ([`SynOptions`], read by a checked walk that never reads past the header); in-place
//! rewrites of sequence numbers, windows and SACK blocks with incremental checksums (what a
//! SYN proxy translates); and headers written afresh ([`TcpRepr`]).

use crate::{be16, be32, checksum, put16, Error, Result};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A view over a TCP segment; the constructor checks the data offset lies within the slice.
#[derive(Debug, Clone)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const MIN_HEADER_LEN: usize = 20;
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = (b[12] >> 4) as usize * 4;
        if hl < Self::MIN_HEADER_LEN || hl > b.len() {
            return Err(Error::BadHeaderLength);
        }
        Ok(TcpPacket { buf })
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    #[inline(always)]
    pub fn ack_number(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.buf.as_ref()[12] >> 4) as usize * 4
    }
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    #[inline(always)]
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), 14)
    }
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// The option bytes (between the fixed header and the data offset).
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[Self::MIN_HEADER_LEN..self.header_len()]
    }
    /// What the options of a SYN (or SYN-ACK) offer.
    pub fn syn_options(&self) -> SynOptions {
        SynOptions::parse(self.options())
    }
}

/// Option kinds (RFC 9293, 7323, 2018).
pub const OPT_END: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WINDOW_SCALE: u8 = 3;
pub const OPT_SACK_PERMITTED: u8 = 4;
pub const OPT_SACK: u8 = 5;
pub const OPT_TIMESTAMPS: u8 = 8;

/// The options of a SYN that matter to a peer answering it: the maximum segment size, the
/// window scale shift (RFC 7323 caps it at 14), whether SACK is permitted, and the
/// timestamps. Options malformed or cut short end the walk; what was read before stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

impl SynOptions {
    /// Bytes [`SynOptions::emit`] writes at most: MSS (4), NOP + window scale (4), two NOPs
    /// + SACK permitted (4). Timestamps are never written.
    pub const MAX_EMIT: usize = 12;

    /// Writes the MSS, window scale and SACK-permitted options (not the timestamps) into
    /// `b`, padded with NOPs to a multiple of four; the number of bytes written (0 if `b` is
    /// shorter than [`SynOptions::MAX_EMIT`]).
    pub fn emit(&self, b: &mut [u8]) -> usize {
        let Some(b) = b.get_mut(..Self::MAX_EMIT) else {
            return 0;
        };
        let mut n = 0;
        if let Some(m) = self.mss {
            b[..4].copy_from_slice(&[OPT_MSS, 4, (m >> 8) as u8, m as u8]);
            n = 4;
        }
        if let Some(w) = self.window_scale {
            b[n..n + 4].copy_from_slice(&[OPT_NOP, OPT_WINDOW_SCALE, 3, w.min(14)]);
            n += 4;
        }
        if self.sack_permitted {
            b[n..n + 4].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2]);
            n += 4;
        }
        n
    }

    pub fn parse(opts: &[u8]) -> SynOptions {
        let mut o = SynOptions::default();
        let mut i = 0;
        while i < opts.len() {
            let kind = opts[i];
            if kind == OPT_END {
                break;
            }
            if kind == OPT_NOP {
                i += 1;
                continue;
            }
            let Some(&len) = opts.get(i + 1) else {
                break;
            };
            let len = len as usize;
            if len < 2 || i + len > opts.len() {
                break;
            }
            let v = &opts[i + 2..i + len];
            match (kind, v.len()) {
                (OPT_MSS, 2) => o.mss = Some(be16(v, 0)),
                (OPT_WINDOW_SCALE, 1) => o.window_scale = Some(v[0].min(14)),
                (OPT_SACK_PERMITTED, 0) => o.sack_permitted = true,
                (OPT_TIMESTAMPS, 8) => o.timestamps = Some((be32(v, 0), be32(v, 4))),
                _ => {}
            }
            i += len;
        }
        o
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port, updating the checksum incrementally.
    pub fn set_src_port(&mut self, p: u16) {
        set_port(self.buf.as_mut(), 0, 16, p)
    }
    /// Sets the destination port, updating the checksum incrementally.
    pub fn set_dst_port(&mut self, p: u16) {
        set_port(self.buf.as_mut(), 2, 16, p)
    }
    /// Sets the sequence number, updating the checksum incrementally.
    pub fn set_seq_number(&mut self, v: u32) {
        set32(self.buf.as_mut(), 4, v)
    }
    /// Sets the acknowledgement number, updating the checksum incrementally.
    pub fn set_ack_number(&mut self, v: u32) {
        set32(self.buf.as_mut(), 8, v)
    }
    /// Sets the window field, updating the checksum incrementally.
    pub fn set_window(&mut self, v: u16) {
        set_port(self.buf.as_mut(), 14, 16, v)
    }
    /// Subtracts `delta` (modulo 2³²) from both edges of every SACK block (RFC 2018) in the
    /// options, updating the checksum: SACK blocks name sequence numbers of the other
    /// direction, which a SYN proxy translates. Malformed options end the walk, as in
    /// [`SynOptions::parse`]. Returns the number of blocks rewritten.
    pub fn shift_sack_blocks(&mut self, delta: u32) -> usize {
        let b = self.buf.as_mut();
        let end = ((b[12] >> 4) as usize * 4).min(b.len());
        let mut i = Self::MIN_HEADER_LEN;
        let mut blocks = 0;
        while i < end {
            let kind = b[i];
            if kind == OPT_END {
                break;
            }
            if kind == OPT_NOP {
                i += 1;
                continue;
            }
            let Some(&len) = b.get(i + 1) else {
                break;
            };
            let len = len as usize;
            if len < 2 || i + len > end {
                break;
            }
            if kind == OPT_SACK && (len - 2).is_multiple_of(8) {
                let mut e = i + 2;
                while e + 4 <= i + len {
                    let v = be32(b, e).wrapping_sub(delta);
                    set32(b, e, v);
                    e += 4;
                }
                blocks += (len - 2) / 8;
            }
            i += len;
        }
        blocks
    }
    /// Folds an address change (old → new, 4 or 16 bytes) into the checksum, as the
    /// pseudo header covers the addresses.
    pub fn update_checksum_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let b = self.buf.as_mut();
        let c = checksum::update(be16(b, 16), old, new);
        put16(b, 16, c);
    }
}

/// Rewrites the 32-bit word at `off` and the TCP checksum (at 16).
fn set32(b: &mut [u8], off: usize, v: u32) {
    let old = be32(b, off).to_be_bytes();
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    let c = checksum::update(be16(b, 16), &old, &v.to_be_bytes());
    put16(b, 16, c);
}

/// The fields of a TCP header written afresh (the SYN proxy's SYN-ACKs, SYNs and ACKs).
#[derive(Debug, Clone, Copy)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Already padded to a multiple of four (as [`SynOptions::emit`] writes them).
    pub options: &'a [u8],
}

impl TcpRepr<'_> {
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        TcpPacket::<&[u8]>::MIN_HEADER_LEN + self.options.len()
    }

    /// Writes the header into the front of `segment` (header and payload, in place) and its
    /// checksum over all of `segment` plus `pseudo` (the pseudo header's sum, from
    /// [`checksum::pseudo_v4`] or [`checksum::pseudo_v6`]).
    pub fn emit(&self, segment: &mut [u8], pseudo: u64) -> Result<()> {
        let hl = self.header_len();
        if !self.options.len().is_multiple_of(4) || hl > 60 {
            return Err(Error::BadHeaderLength);
        }
        let h = segment.get_mut(..hl).ok_or(Error::Truncated)?;
        put16(h, 0, self.src_port);
        put16(h, 2, self.dst_port);
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..12].copy_from_slice(&self.ack.to_be_bytes());
        h[12] = ((hl / 4) as u8) << 4;
        h[13] = self.flags;
        put16(h, 14, self.window);
        put16(h, 16, 0);
        put16(h, 18, 0);
        // Options are 4, 8 or 12 bytes in practice: copied as fixed sizes, not by a call.
        let opts = &mut h[20..];
        match (self.options.len(), opts.len()) {
            (4, 4) => opts.copy_from_slice(&self.options[..4]),
            (8, 8) => opts.copy_from_slice(&self.options[..8]),
            (12, 12) => opts.copy_from_slice(&self.options[..12]),
            _ => opts.copy_from_slice(self.options),
        }
        // The header's sum from the fields and the options' source, not read back from the
        // bytes just written (that stalls store forwarding; see `Ipv4Repr::emit`); any
        // payload after the header is summed where it lies.
        let word = |x: u32| u64::from(x >> 16) + u64::from(x & 0xffff);
        let acc = pseudo
            + u64::from(self.src_port)
            + u64::from(self.dst_port)
            + word(self.seq)
            + word(self.ack)
            + (((hl / 4) as u64) << 12 | u64::from(self.flags))
            + u64::from(self.window);
        let acc = checksum::sum(acc, self.options);
        let acc = checksum::sum(acc, segment.get(hl..).unwrap_or(&[]));
        put16(segment, 16, !checksum::fold(acc));
        Ok(())
    }
}

/// Rewrites a 16-bit port at `off` and the checksum at `csum_off`. Shared by TCP and UDP.
pub(crate) fn set_port(b: &mut [u8], off: usize, csum_off: usize, p: u16) {
    let old = be16(b, off);
    put16(b, off, p);
    let c = checksum::update16(be16(b, csum_off), old, p);
    put16(b, csum_off, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_offset_is_checked() {
        let mut b = [0u8; 24];
        b[12] = 0x60; // 24 bytes
        b[13] = SYN | ACK;
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.header_len(), t.flags()), (24, SYN | ACK));
        assert!(t.payload().is_empty());
        b[12] = 0x70;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).unwrap_err(),
            Error::Truncated
        );
    }
}

#[cfg(test)]
mod syn_option_tests {
    use super::*;

    /// The checksum of `seg` over an IPv4 pseudo header is valid.
    fn valid(seg: &[u8]) -> bool {
        let p = checksum::pseudo_v4(
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            6,
            seg.len() as u16,
        );
        checksum::fold(checksum::sum(p, seg)) == 0xffff
    }

    #[test]
    fn written_headers_read_back_and_rewrites_keep_the_checksum() {
        let opts = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some((5, 6)),
        };
        let mut o = [0u8; SynOptions::MAX_EMIT];
        let n = opts.emit(&mut o);
        assert_eq!(n, 12);
        assert_eq!(
            SynOptions::parse(&o[..n]),
            SynOptions {
                timestamps: None,
                ..opts
            },
            "timestamps are never written"
        );
        assert_eq!(SynOptions::default().emit(&mut o), 0);
        assert_eq!(opts.emit(&mut [0u8; 11]), 0);
        let mut seg = [0u8; 32 + 5];
        seg[32..].copy_from_slice(b"hello");
        let r = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            seq: 0xdead_beef,
            ack: 7,
            flags: SYN | ACK,
            window: 512,
            options: &o[..n],
        };
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 37);
        r.emit(&mut seg, pseudo).unwrap();
        assert!(valid(&seg));
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        assert_eq!(
            (t.seq_number(), t.ack_number(), t.flags(), t.window()),
            (0xdead_beef, 7, SYN | ACK, 512)
        );
        assert_eq!(t.syn_options().mss, Some(1460));
        assert_eq!(t.payload(), b"hello");
        t.set_seq_number(1);
        t.set_ack_number(u32::MAX);
        t.set_window(65535);
        assert_eq!(t.shift_sack_blocks(5), 0, "no SACK option");
        assert!(valid(&seg));
        assert!(r
            .emit(&mut [0u8; 31], pseudo)
            .is_err_and(|e| e == Error::Truncated));
    }

    #[test]
    fn sack_blocks_are_shifted_and_malformed_ones_left() {
        // NOP NOP SACK with two blocks.
        let mut seg = [0u8; 20 + 20];
        seg[12] = 10 << 4;
        seg[13] = ACK;
        seg[20..24].copy_from_slice(&[OPT_NOP, OPT_NOP, OPT_SACK, 18]);
        for (i, v) in [100u32, 200, 300, 3].iter().enumerate() {
            seg[24 + 4 * i..28 + 4 * i].copy_from_slice(&v.to_be_bytes());
        }
        let pseudo = checksum::pseudo_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 40);
        let c = checksum::finish(pseudo, &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        assert_eq!(t.shift_sack_blocks(10), 2);
        assert!(valid(&seg));
        let edges: Vec<u32> = (0..4).map(|i| be32(&seg, 24 + 4 * i)).collect();
        assert_eq!(edges, [90, 190, 290, 3u32.wrapping_sub(10)]);
        // A SACK option whose length is not 2 + 8n, or runs past the header, is left alone.
        seg[22] = OPT_SACK;
        seg[23] = 17;
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        assert_eq!(t.shift_sack_blocks(10), 0);
        seg[23] = 30;
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        assert_eq!(t.shift_sack_blocks(10), 0);
        for a in 0..=255u8 {
            seg[21] = a;
            seg[23] = a;
            let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
            let _ = t.shift_sack_blocks(1);
        }
    }

    #[test]
    fn a_linux_syns_options_are_read() {
        // MSS 1460, SACK permitted, timestamps, NOP, window scale 7: what Linux sends.
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(
            SynOptions::parse(&opts),
            SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some((1, 0)),
            }
        );
    }

    #[test]
    fn malformed_options_end_the_walk_without_reading_past_them() {
        // MSS, then a length of 0, then what would be window scale.
        let o = SynOptions::parse(&[2, 4, 0x02, 0x18, 3, 0, 3, 3, 9]);
        assert_eq!((o.mss, o.window_scale), (Some(536), None));
        // Cut short inside an option.
        assert_eq!(SynOptions::parse(&[2, 4, 0x05]).mss, None);
        assert_eq!(SynOptions::parse(&[2]), SynOptions::default());
        // A scale past 14 is read as 14 (RFC 7323 2.3); END stops the walk.
        assert_eq!(
            SynOptions::parse(&[3, 3, 20, 0, 2, 4, 1, 1]).window_scale,
            Some(14)
        );
        assert_eq!(SynOptions::parse(&[0, 2, 4, 1, 1]).mss, None);
        // Every prefix of every byte string of length 3 parses without panicking.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 4, 10, 255] {
                let _ = SynOptions::parse(&[a, b, a]);
            }
        }
    }
}
