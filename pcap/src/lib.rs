//! Capture files: a streaming reader (classic libpcap, micro- or nanosecond timestamps,
//! either byte order; and pcapng) and writer (either format) for the replay driver and the
//! tests. The frame builder and fixture generator live in the dev-only `fixtures` crate.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

/// LINKTYPE_ETHERNET, the only link type the balancer forwards.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record we accept; anything larger is a corrupt file, not a frame.
pub const MAX_RECORD_LEN: u32 = 262_144;

const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;

/// pcapng block types this reader acts on; any other block is skipped.
const NG_SECTION_HEADER: u32 = 0x0a0d_0d0a;
const NG_INTERFACE_DESCRIPTION: u32 = 1;
const NG_PACKET_OBSOLETE: u32 = 2;
const NG_SIMPLE_PACKET: u32 = 3;
const NG_ENHANCED_PACKET: u32 = 6;
const NG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
/// Largest pcapng block we read (name resolution and custom blocks can be large; a packet
/// block is at most MAX_RECORD_LEN plus its header).
const NG_MAX_BLOCK: u32 = 16 << 20;
/// Interface options: the timestamp resolution and offset.
const NG_OPT_TSRESOL: u16 = 9;
const NG_OPT_TSOFFSET: u16 = 14;

/// The two capture formats, for writing (`sluice replay --output-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap (`tcpdump -w`).
    Pcap,
    /// pcapng (Wireshark's default).
    Pcapng,
}

/// Why a capture could not be read.
#[derive(Debug)]
pub enum PcapError {
    Io(io::Error),
    /// The file does not start with a pcap or pcapng magic number.
    NotPcap {
        magic: u32,
    },
    /// The capture's link type is not Ethernet (`interface` is the pcapng interface, 0 for
    /// classic pcap).
    UnsupportedLinkType(u32),
    /// A pcapng interface with a link type sluice does not replay.
    UnsupportedInterface {
        interface: u32,
        link_type: u32,
    },
    /// The file ends inside a record header or record body.
    TruncatedRecord {
        index: u64,
    },
    /// A record claims a length no frame has.
    RecordTooLarge {
        index: u64,
        len: u32,
    },
    /// A pcapng block that does not hold together (`block` counts every block from 0).
    BadBlock {
        block: u64,
        what: String,
    },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "{e}"),
            PcapError::NotPcap { magic } => write!(f, "not a pcap or pcapng file (magic number {magic:#010x}); give a capture such as `tcpdump -w` or Wireshark writes"),
            PcapError::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}: only Ethernet (link type 1) is supported; capture on an Ethernet interface (not `any`, which gives Linux cooked capture, link type 113)"),
            PcapError::UnsupportedInterface { interface, link_type } => write!(f, "pcapng interface {interface} has link type {link_type}, and its packets cannot be replayed: only Ethernet (link type 1) is supported; capture on an Ethernet interface (not `any`, which gives Linux cooked capture, 113), or keep only Ethernet interfaces (`tshark -r IN -Y 'frame.interface_id == 0' -w OUT`)"),
            PcapError::TruncatedRecord { index } => write!(f, "capture is cut short inside record {index} (counting from 0)"),
            PcapError::RecordTooLarge { index, len } => write!(f, "record {index} claims {len} bytes, more than the {MAX_RECORD_LEN}-byte maximum: the file is corrupt"),
            PcapError::BadBlock { block, what } => write!(f, "pcapng block {block} (counting from 0) is corrupt: {what}"),
        }
    }
}

impl std::error::Error for PcapError {}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> Self {
        PcapError::Io(e)
    }
}

/// A pcapng interface, as its description block gave it.
#[derive(Debug, Clone, Copy)]
struct NgInterface {
    link_type: u32,
    snap_len: u32,
    /// Timestamp units: 10^-exp s (`binary` false) or 2^-exp s (true); the default is µs.
    exp: u8,
    binary: bool,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_s: i64,
}

impl NgInterface {
    /// A timestamp in the interface's units as nanoseconds since the epoch.
    fn ns(&self, ts: u64) -> u64 {
        // The common cases (µs, ns, no offset) in 64 bits; overflow only past year 2554.
        if !self.binary && self.exp <= 9 && self.offset_s == 0 {
            return ts.saturating_mul(10u64.pow(9 - u32::from(self.exp)));
        }
        let ts = ts as u128;
        let ns = if self.binary {
            let e = u32::from(self.exp.min(63));
            ((ts >> e) * 1_000_000_000) + (((ts & ((1u128 << e) - 1)) * 1_000_000_000) >> e)
        } else if self.exp <= 9 {
            ts * 10u128.pow(9 - u32::from(self.exp))
        } else {
            ts / 10u128.pow(u32::from(self.exp.min(38)) - 9)
        };
        let with_offset = ns as i128 + i128::from(self.offset_s) * 1_000_000_000;
        with_offset.clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// A 32-bit field of a pcapng section in its byte order (`b` must hold `off + 4` bytes;
/// callers check lengths first).
fn ng_u32(big_endian: bool, b: &[u8], off: usize) -> u32 {
    let raw = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    }
}

fn ng_u16(big_endian: bool, b: &[u8], off: usize) -> u16 {
    let raw = [b[off], b[off + 1]];
    if big_endian {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    }
}

/// The interface a packet block names, if the section described it and it is Ethernet.
fn ng_interface(interfaces: &[NgInterface], id: u32, block: u64) -> Result<NgInterface, PcapError> {
    let Some(iface) = interfaces.get(id as usize).copied() else {
        return Err(PcapError::BadBlock {
            block,
            what: format!(
                "a packet on interface {id}, but the section describes {} interface(s)",
                interfaces.len()
            ),
        });
    };
    if iface.link_type != LINKTYPE_ETHERNET {
        return Err(PcapError::UnsupportedInterface {
            interface: id,
            link_type: iface.link_type,
        });
    }
    Ok(iface)
}

enum Format {
    Classic {
        swapped: bool,
        nanos: bool,
    },
    Ng {
        big_endian: bool,
        interfaces: Vec<NgInterface>,
        /// The last packet's time: a simple packet block has none of its own.
        last_ns: u64,
        block: u64,
        /// A block's body, reused.
        scratch: Vec<u8>,
    },
}

/// Reads records one at a time into a caller-owned buffer, from a classic pcap file
/// (micro- or nanosecond timestamps, either byte order) or a pcapng file (any number of
/// sections and interfaces, each interface's timestamp resolution and offset; enhanced,
/// simple and obsolete packet blocks; other blocks skipped). Only Ethernet frames are
/// returned; a packet on an interface of another link type is an error that names it.
pub struct PcapReader<R> {
    r: R,
    format: Format,
    index: u64,
    /// Stop after the next interface description (opening a pcapng file).
    first_interface: bool,
    /// A record read ahead while looking for the first interface.
    pending: Option<(RecordInfo, Vec<u8>)>,
}

/// Metadata of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed the captured length).
    pub orig_len: u32,
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, io::Error> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl<R: BufRead> PcapReader<R> {
    /// Reads and checks the file header (the pcapng section header); a classic capture must
    /// be Ethernet, a pcapng one's interfaces are checked as their packets come.
    pub fn new(mut r: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        r.read_exact(&mut h).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => PcapError::NotPcap { magic: 0 },
            _ => PcapError::Io(e),
        })?;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swapped, nanos) = match magic {
            MAGIC_USEC => (false, false),
            MAGIC_NSEC => (false, true),
            m if m == MAGIC_USEC.swap_bytes() => (true, false),
            m if m == MAGIC_NSEC.swap_bytes() => (true, true),
            MAGIC_PCAPNG => {
                let mut rd = PcapReader {
                    r,
                    format: Format::Ng {
                        big_endian: false,
                        interfaces: Vec::new(),
                        last_ns: 0,
                        block: 0,
                        scratch: Vec::new(),
                    },
                    index: 0,
                    first_interface: false,
                    pending: None,
                };
                rd.section_header(&h)?;
                // Up to the first interface description, so `is_nanosecond` can answer.
                rd.first_interface = true;
                rd.pending = rd.next_ng_block()?;
                return Ok(rd);
            }
            m => return Err(PcapError::NotPcap { magic: m }),
        };
        let u32_at = |off: usize| {
            let v = u32::from_le_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
            if swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        let link_type = u32_at(20) & 0x0fff_ffff;
        if link_type != LINKTYPE_ETHERNET {
            return Err(PcapError::UnsupportedLinkType(link_type));
        }
        Ok(PcapReader {
            r,
            format: Format::Classic { swapped, nanos },
            index: 0,
            first_interface: false,
            pending: None,
        })
    }

    /// True when the file stores nanosecond timestamps (a pcapng file: when its first
    /// interface does, or finer).
    pub fn is_nanosecond(&self) -> bool {
        match &self.format {
            Format::Classic { nanos, .. } => *nanos,
            Format::Ng { interfaces, .. } => {
                interfaces
                    .first()
                    .is_some_and(|i| if i.binary { i.exp >= 30 } else { i.exp >= 9 })
            }
        }
    }

    /// The format of the file being read.
    pub fn format(&self) -> CaptureFormat {
        match self.format {
            Format::Classic { .. } => CaptureFormat::Pcap,
            Format::Ng { .. } => CaptureFormat::Pcapng,
        }
    }

    /// Reads the next record into `buf` (cleared first). `Ok(None)` at a clean end of file.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordInfo>, PcapError> {
        match self.format {
            Format::Classic { swapped, nanos } => self.next_classic(buf, swapped, nanos),
            Format::Ng { .. } => {
                if let Some((info, data)) = self.pending.take() {
                    buf.clear();
                    buf.extend_from_slice(&data);
                    return Ok(Some(info));
                }
                self.next_ng(buf)
            }
        }
    }

    /// Opening a pcapng file: reads up to its first interface description, keeping a packet
    /// found before it (which is then an error the next read reports, as it names no
    /// interface described yet).
    fn next_ng_block(&mut self) -> Result<Option<(RecordInfo, Vec<u8>)>, PcapError> {
        let mut buf = Vec::new();
        let r = self.next_ng(&mut buf);
        self.first_interface = false;
        Ok(r?.map(|info| (info, buf)))
    }

    fn next_classic(
        &mut self,
        buf: &mut Vec<u8>,
        swapped: bool,
        nanos: bool,
    ) -> Result<Option<RecordInfo>, PcapError> {
        // A record that lies whole in the reader's buffer, parsed in place.
        let avail = self.r.fill_buf()?;
        if avail.len() >= 16 {
            let u32_at = |off: usize| {
                let v = u32::from_le_bytes([
                    avail[off],
                    avail[off + 1],
                    avail[off + 2],
                    avail[off + 3],
                ]);
                if swapped {
                    v.swap_bytes()
                } else {
                    v
                }
            };
            let incl = u32_at(8) as usize;
            if incl <= MAX_RECORD_LEN as usize && 16 + incl <= avail.len() {
                let (secs, frac, orig_len) =
                    (u64::from(u32_at(0)), u64::from(u32_at(4)), u32_at(12));
                buf.clear();
                buf.extend_from_slice(&avail[16..16 + incl]);
                self.r.consume(16 + incl);
                self.index += 1;
                let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
                return Ok(Some(RecordInfo { ts_ns, orig_len }));
            }
        }
        let mut h = [0u8; 16];
        match read_full(&mut self.r, &mut h) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(PcapError::TruncatedRecord { index: self.index })
            }
            Err(e) => return Err(e.into()),
        }
        let u32_at = |off: usize| {
            let v = u32::from_le_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
            if swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        let secs = u32_at(0) as u64;
        let frac = u32_at(4) as u64;
        let incl = u32_at(8);
        let orig_len = u32_at(12);
        if incl > MAX_RECORD_LEN {
            return Err(PcapError::RecordTooLarge {
                index: self.index,
                len: incl,
            });
        }
        buf.clear();
        buf.resize(incl as usize, 0);
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => PcapError::TruncatedRecord { index: self.index },
            _ => PcapError::Io(e),
        })?;
        self.index += 1;
        let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        Ok(Some(RecordInfo { ts_ns, orig_len }))
    }

    /// A section header block whose first 24 bytes are `h` (type, length, byte-order magic,
    /// version, section length): sets the section's byte order, forgets the previous
    /// section's interfaces, and skips the header's options.
    fn section_header(&mut self, h: &[u8; 24]) -> Result<(), PcapError> {
        let Format::Ng {
            big_endian,
            interfaces,
            block,
            ..
        } = &mut self.format
        else {
            return Ok(());
        };
        let bom = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        *big_endian = match bom {
            NG_BYTE_ORDER_MAGIC => false,
            m if m == NG_BYTE_ORDER_MAGIC.swap_bytes() => true,
            m => {
                return Err(PcapError::BadBlock {
                    block: *block,
                    what: format!("section header with byte-order magic {m:#010x} (not 0x1a2b3c4d in either order)"),
                })
            }
        };
        let raw = [h[4], h[5], h[6], h[7]];
        let len = if *big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        let major = if *big_endian {
            u16::from_be_bytes([h[12], h[13]])
        } else {
            u16::from_le_bytes([h[12], h[13]])
        };
        if major != 1 {
            return Err(PcapError::BadBlock {
                block: *block,
                what: format!("section header of pcapng version {major}, not 1"),
            });
        }
        if len < 28 || len % 4 != 0 || len > NG_MAX_BLOCK {
            return Err(PcapError::BadBlock {
                block: *block,
                what: format!("section header of {len} bytes"),
            });
        }
        interfaces.clear();
        *block += 1;
        let rest = (len - 24) as u64;
        let skipped = io::copy(&mut (&mut self.r).take(rest), &mut io::sink())?;
        if skipped != rest {
            return Err(PcapError::TruncatedRecord { index: self.index });
        }
        Ok(())
    }

    /// An enhanced packet block that lies whole in the reader's buffer, parsed in place:
    /// `None` when it does not (or is not well formed: the general path then reads it and
    /// says what is wrong).
    fn buffered_enhanced_packet(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<RecordInfo>> {
        let Format::Ng {
            big_endian,
            interfaces,
            last_ns,
            block,
            ..
        } = &mut self.format
        else {
            return Ok(None);
        };
        let be = *big_endian;
        let avail = self.r.fill_buf()?;
        if avail.len() < 32 {
            return Ok(None);
        }
        let word = |off: usize| ng_u32(be, avail, off);
        let (kind, len) = (word(0), word(4) as usize);
        if kind != NG_ENHANCED_PACKET || len < 32 || len % 4 != 0 || len > avail.len() {
            return Ok(None);
        }
        let (iface_id, cap, orig_len) = (word(8) as usize, word(20) as usize, word(24));
        if cap > MAX_RECORD_LEN as usize
            || 32 + cap.div_ceil(4) * 4 > len
            || word(len - 4) != len as u32
        {
            return Ok(None);
        }
        let Some(iface) = interfaces.get(iface_id) else {
            return Ok(None);
        };
        if iface.link_type != LINKTYPE_ETHERNET {
            return Ok(None);
        }
        let ts = (u64::from(word(12)) << 32) | u64::from(word(16));
        buf.clear();
        buf.extend_from_slice(&avail[28..28 + cap]);
        let ts_ns = iface.ns(ts);
        *last_ns = ts_ns;
        *block += 1;
        self.r.consume(len);
        self.index += 1;
        Ok(Some(RecordInfo { ts_ns, orig_len }))
    }

    fn next_ng(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordInfo>, PcapError> {
        if !self.first_interface {
            if let Some(info) = self.buffered_enhanced_packet(buf)? {
                return Ok(Some(info));
            }
        }
        loop {
            let mut head = [0u8; 8];
            match read_full(&mut self.r, &mut head) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(PcapError::TruncatedRecord { index: self.index })
                }
                Err(e) => return Err(e.into()),
            }
            let Format::Ng {
                big_endian, block, ..
            } = &self.format
            else {
                return Ok(None);
            };
            let (be, this_block) = (*big_endian, *block);
            let word = |b: &[u8], off: usize| ng_u32(be, b, off);
            let kind = word(&head, 0);
            if kind == NG_SECTION_HEADER {
                let mut h = [0u8; 24];
                h[..8].copy_from_slice(&head);
                self.r.read_exact(&mut h[8..]).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        PcapError::TruncatedRecord { index: self.index }
                    }
                    _ => PcapError::Io(e),
                })?;
                self.section_header(&h)?;
                continue;
            }
            let len = word(&head, 4);
            if len < 12 || len % 4 != 0 || len > NG_MAX_BLOCK {
                return Err(PcapError::BadBlock {
                    block: this_block,
                    what: format!("block of type {kind:#x} with a length of {len} bytes (at least 12, a multiple of 4)"),
                });
            }
            let Format::Ng {
                interfaces,
                last_ns,
                block,
                scratch,
                ..
            } = &mut self.format
            else {
                return Ok(None);
            };
            // The body, and the trailing copy of the length.
            scratch.clear();
            scratch.resize((len - 8) as usize, 0);
            self.r.read_exact(scratch).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => PcapError::TruncatedRecord { index: self.index },
                _ => PcapError::Io(e),
            })?;
            *block += 1;
            let body = &scratch[..scratch.len() - 4];
            let bad = |what: String| PcapError::BadBlock {
                block: this_block,
                what,
            };
            if word(scratch, scratch.len() - 4) != len {
                return Err(bad(format!(
                    "its trailing length {} differs from its leading one {len}",
                    word(scratch, scratch.len() - 4)
                )));
            }
            let half = |b: &[u8], off: usize| ng_u16(be, b, off);
            // (interface, timestamp in its units or None, captured length, original length,
            // data offset in the body)
            let packet = match kind {
                NG_INTERFACE_DESCRIPTION => {
                    if body.len() < 8 {
                        return Err(bad(format!(
                            "interface description of {} bytes",
                            body.len()
                        )));
                    }
                    let mut iface = NgInterface {
                        link_type: u32::from(half(body, 0)),
                        snap_len: word(body, 4),
                        exp: 6,
                        binary: false,
                        offset_s: 0,
                    };
                    let mut at = 8;
                    while at + 4 <= body.len() {
                        let (code, olen) = (half(body, at), half(body, at + 2) as usize);
                        let value = at + 4;
                        if code == 0 || value + olen > body.len() {
                            break;
                        }
                        match (code, olen) {
                            (NG_OPT_TSRESOL, 1) => {
                                let v = body[value];
                                iface.binary = v & 0x80 != 0;
                                iface.exp = v & 0x7f;
                            }
                            (NG_OPT_TSOFFSET, 8) => {
                                let lo = u64::from(word(body, value));
                                let hi = u64::from(word(body, value + 4));
                                let v = if be { (lo << 32) | hi } else { (hi << 32) | lo };
                                iface.offset_s = v as i64;
                            }
                            _ => {}
                        }
                        at = value + olen.div_ceil(4) * 4;
                    }
                    interfaces.push(iface);
                    if self.first_interface {
                        return Ok(None);
                    }
                    None
                }
                NG_ENHANCED_PACKET => {
                    if body.len() < 20 {
                        return Err(bad(format!("enhanced packet of {} bytes", body.len())));
                    }
                    let ts = (u64::from(word(body, 4)) << 32) | u64::from(word(body, 8));
                    Some((word(body, 0), Some(ts), word(body, 12), word(body, 16), 20))
                }
                NG_PACKET_OBSOLETE => {
                    if body.len() < 20 {
                        return Err(bad(format!("packet block of {} bytes", body.len())));
                    }
                    let ts = (u64::from(word(body, 4)) << 32) | u64::from(word(body, 8));
                    let iface = u32::from(half(body, 0));
                    Some((iface, Some(ts), word(body, 12), word(body, 16), 20))
                }
                NG_SIMPLE_PACKET => {
                    if body.len() < 4 {
                        return Err(bad(format!("simple packet of {} bytes", body.len())));
                    }
                    let orig = word(body, 0);
                    let snap = interfaces.first().map_or(0, |i| i.snap_len);
                    let cap = if snap == 0 { orig } else { orig.min(snap) };
                    Some((0, None, cap.min((body.len() - 4) as u32), orig, 4))
                }
                _ => None,
            };
            let Some((iface_id, ts, cap, orig_len, data_at)) = packet else {
                continue;
            };
            let iface = ng_interface(interfaces, iface_id, this_block)?;
            if cap > MAX_RECORD_LEN {
                return Err(PcapError::RecordTooLarge {
                    index: self.index,
                    len: cap,
                });
            }
            if data_at + cap as usize > body.len() {
                return Err(bad(format!(
                    "a packet of {cap} captured bytes in a block with room for {}",
                    body.len() - data_at
                )));
            }
            buf.clear();
            buf.extend_from_slice(&body[data_at..data_at + cap as usize]);
            let ts_ns = ts.map_or(*last_ns, |t| iface.ns(t));
            *last_ns = ts_ns;
            self.index += 1;
            return Ok(Some(RecordInfo { ts_ns, orig_len }));
        }
    }
}

/// Writes an Ethernet capture, in native byte order: classic pcap (micro- or nanosecond
/// timestamps) or pcapng (one section, one Ethernet interface with nanosecond timestamps,
/// enhanced packet blocks).
pub struct PcapWriter<W: Write> {
    w: W,
    nanos: bool,
    ng: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header. `nanos` selects nanosecond timestamps.
    pub fn new(mut w: W, nanos: bool) -> io::Result<Self> {
        let magic = if nanos { MAGIC_NSEC } else { MAGIC_USEC };
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&MAX_RECORD_LEN.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter {
            w,
            nanos,
            ng: false,
        })
    }

    /// Writes a pcapng section header and one Ethernet interface (nanosecond timestamps).
    pub fn new_pcapng(mut w: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(64);
        // Section header: no options, section length unknown (-1).
        h.extend_from_slice(&NG_SECTION_HEADER.to_le_bytes());
        h.extend_from_slice(&28u32.to_le_bytes());
        h.extend_from_slice(&NG_BYTE_ORDER_MAGIC.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&(-1i64).to_le_bytes());
        h.extend_from_slice(&28u32.to_le_bytes());
        // Interface description: Ethernet, if_tsresol = 9 (ns), end of options.
        h.extend_from_slice(&NG_INTERFACE_DESCRIPTION.to_le_bytes());
        h.extend_from_slice(&32u32.to_le_bytes());
        h.extend_from_slice(&(LINKTYPE_ETHERNET as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&MAX_RECORD_LEN.to_le_bytes());
        h.extend_from_slice(&NG_OPT_TSRESOL.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&[9, 0, 0, 0]);
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&32u32.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter {
            w,
            nanos: true,
            ng: true,
        })
    }

    /// A writer of `format`; `nanos` applies to classic pcap (pcapng is always in ns).
    pub fn with_format(w: W, format: CaptureFormat, nanos: bool) -> io::Result<Self> {
        match format {
            CaptureFormat::Pcap => Self::new(w, nanos),
            CaptureFormat::Pcapng => Self::new_pcapng(w),
        }
    }

    /// Appends one frame with its timestamp.
    pub fn write(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
        if self.ng {
            let padded = frame.len().div_ceil(4) * 4;
            let total = (32 + padded) as u32;
            let mut h = [0u8; 28];
            h[0..4].copy_from_slice(&NG_ENHANCED_PACKET.to_le_bytes());
            h[4..8].copy_from_slice(&total.to_le_bytes());
            // Interface 0; the timestamp as two 32-bit halves of one 64-bit count of ns.
            h[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
            h[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
            h[20..24].copy_from_slice(&(frame.len() as u32).to_le_bytes());
            h[24..28].copy_from_slice(&(frame.len() as u32).to_le_bytes());
            self.w.write_all(&h)?;
            self.w.write_all(frame)?;
            self.w.write_all(&[0u8; 3][..padded - frame.len()])?;
            return self.w.write_all(&total.to_le_bytes());
        }
        let secs = (ts_ns / 1_000_000_000) as u32;
        let sub = ts_ns % 1_000_000_000;
        let frac = if self.nanos { sub } else { sub / 1000 } as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(frame)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

/// Reads a whole capture into memory: (timestamp ns, frame) pairs. For tests and tools.
pub fn read_all(r: impl Read) -> Result<Vec<(u64, Vec<u8>)>, PcapError> {
    let mut rd = PcapReader::new(BufReader::new(r))?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(info) = rd.next_into(&mut buf)? {
        out.push((info.ts_ns, buf.clone()));
    }
    Ok(out)
}

/// Writes frames as a microsecond capture into a byte vector. For tests and tools.
pub fn to_bytes<'a>(frames: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), false).expect("writing to a Vec cannot fail");
    for (ts, f) in frames {
        w.write(ts, f).expect("writing to a Vec cannot fail");
    }
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_resolutions() {
        for nanos in [false, true] {
            let mut w = PcapWriter::new(Vec::new(), nanos).unwrap();
            w.write(1_700_000_000_123_456_789, &[1, 2, 3]).unwrap();
            w.write(1_700_000_001_000_000_000, &[]).unwrap();
            let bytes = w.into_inner();
            let recs = read_all(&bytes[..]).unwrap();
            let ts0 = if nanos {
                1_700_000_000_123_456_789
            } else {
                1_700_000_000_123_456_000
            };
            assert_eq!(
                recs,
                vec![(ts0, vec![1, 2, 3]), (1_700_000_001_000_000_000, vec![])]
            );
        }
    }

    #[test]
    fn big_endian_files_are_read() {
        let mut h = vec![
            0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0,
            1,
        ];
        h.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0xab, 0xcd]);
        assert_eq!(
            read_all(&h[..]).unwrap(),
            vec![(5_000_007_000, vec![0xab, 0xcd])]
        );
    }

    #[test]
    fn bad_files_get_named_errors() {
        assert!(matches!(
            read_all(&b"hello world, not a capture"[..]),
            Err(PcapError::NotPcap { .. })
        ));
        // pcapng with a byte-order magic that is neither order.
        assert!(matches!(
            read_all(
                &[
                    0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0
                ][..]
            ),
            Err(PcapError::BadBlock { block: 0, .. })
        ));
        let mut cooked = to_bytes([(0, &[1u8][..])]);
        cooked[20] = 113;
        let e = read_all(&cooked[..]).unwrap_err();
        assert!(matches!(e, PcapError::UnsupportedLinkType(113)));
        assert!(e.to_string().contains("only Ethernet"));
        let good = to_bytes([(0, &[1u8, 2, 3, 4][..])]);
        assert!(matches!(
            read_all(&good[..good.len() - 1]),
            Err(PcapError::TruncatedRecord { index: 0 })
        ));
        let mut huge = good.clone();
        huge[32..36].copy_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        assert!(matches!(
            read_all(&huge[..]),
            Err(PcapError::RecordTooLarge { .. })
        ));
    }

    /// pcapng blocks built by hand, in either byte order.
    struct Ng {
        be: bool,
        out: Vec<u8>,
    }

    impl Ng {
        fn u16(&self, v: u16) -> [u8; 2] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn u32(&self, v: u32) -> [u8; 4] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn block(&mut self, kind: u32, body: &[u8]) {
            let mut b = body.to_vec();
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
            let len = 12 + b.len() as u32;
            let (k, l) = (self.u32(kind), self.u32(len));
            self.out.extend_from_slice(&k);
            self.out.extend_from_slice(&l);
            self.out.extend_from_slice(&b);
            self.out.extend_from_slice(&l);
        }
        fn section(&mut self, be: bool) {
            self.be = be;
            let mut b = self.u32(NG_BYTE_ORDER_MAGIC).to_vec();
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&self.u16(0));
            b.extend_from_slice(&[0xff; 8]);
            // An shb_userappl option, to be skipped.
            b.extend_from_slice(&self.u16(4));
            b.extend_from_slice(&self.u16(5));
            b.extend_from_slice(b"test\0\0\0\0");
            b.extend_from_slice(&[0, 0, 0, 0]);
            self.block(NG_SECTION_HEADER, &b);
        }
        /// An interface; `tsresol` and `offset` as the options give them.
        fn interface(&mut self, link: u16, snap: u32, tsresol: Option<u8>, offset: Option<i64>) {
            let mut b = self.u16(link).to_vec();
            b.extend_from_slice(&self.u16(0));
            b.extend_from_slice(&self.u32(snap));
            // if_name first, which the reader must step over.
            b.extend_from_slice(&self.u16(2));
            b.extend_from_slice(&self.u16(3));
            b.extend_from_slice(b"et0\0");
            if let Some(r) = tsresol {
                b.extend_from_slice(&self.u16(NG_OPT_TSRESOL));
                b.extend_from_slice(&self.u16(1));
                b.extend_from_slice(&[r, 0, 0, 0]);
            }
            if let Some(o) = offset {
                b.extend_from_slice(&self.u16(NG_OPT_TSOFFSET));
                b.extend_from_slice(&self.u16(8));
                let v = o as u64;
                // A 64-bit value in the section's order.
                if self.be {
                    b.extend_from_slice(&v.to_be_bytes());
                } else {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
            b.extend_from_slice(&[0, 0, 0, 0]);
            self.block(NG_INTERFACE_DESCRIPTION, &b);
        }
        fn enhanced(&mut self, iface: u32, ts: u64, data: &[u8]) {
            let mut b = self.u32(iface).to_vec();
            b.extend_from_slice(&self.u32((ts >> 32) as u32));
            b.extend_from_slice(&self.u32(ts as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(&self.u32(data.len() as u32 + 10));
            b.extend_from_slice(data);
            self.block(NG_ENHANCED_PACKET, &b);
        }
    }

    #[test]
    fn pcapng_round_trip() {
        let mut w = PcapWriter::new_pcapng(Vec::new()).unwrap();
        w.write(1_700_000_000_123_456_789, &[1, 2, 3]).unwrap();
        w.write(1_700_000_001_000_000_000, &[9; 8]).unwrap();
        let bytes = w.into_inner();
        let rd = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(rd.format(), CaptureFormat::Pcapng);
        assert!(rd.is_nanosecond());
        assert_eq!(
            read_all(&bytes[..]).unwrap(),
            vec![
                (1_700_000_000_123_456_789, vec![1, 2, 3]),
                (1_700_000_001_000_000_000, vec![9; 8])
            ]
        );
    }

    #[test]
    fn pcapng_sections_interfaces_resolutions_and_block_kinds() {
        let mut g = Ng {
            be: true,
            out: Vec::new(),
        };
        // A big-endian section: interface 0 in µs (the default), interface 1 in ns with an
        // offset of 10 s, interface 2 in 2^-20 s.
        g.section(true);
        g.interface(1, 0, None, None);
        g.interface(1, 0, Some(9), Some(10));
        g.interface(1, 0, Some(0x80 | 20), None);
        g.enhanced(0, 1_500_000, &[0xaa]); // 1.5 s
        g.enhanced(1, 2_000_000_007, &[0xbb, 0xbc]); // 2.000000007 s + 10 s
        g.enhanced(2, 3 << 20 | 1 << 19, &[0xcc]); // 3.5 s
                                                   // A name resolution block (skipped), a simple packet (time of the previous one), an
                                                   // obsolete packet block.
        g.block(4, &[0, 0, 0, 0]);
        let spb: Vec<u8> = g.u32(3).iter().chain(&[1u8, 2, 3]).copied().collect();
        g.block(NG_SIMPLE_PACKET, &spb);
        let mut pb = g.u16(0).to_vec();
        pb.extend_from_slice(&g.u16(0));
        pb.extend_from_slice(&g.u32(0));
        pb.extend_from_slice(&g.u32(4_000_000));
        pb.extend_from_slice(&g.u32(1));
        pb.extend_from_slice(&g.u32(1));
        pb.push(0xdd);
        g.block(NG_PACKET_OBSOLETE, &pb);
        // A second, little-endian section: its interfaces replace the first section's.
        g.section(false);
        g.interface(1, 0, Some(3), None);
        g.enhanced(0, 5_000, &[0xee]); // 5 s in ms
        assert_eq!(
            read_all(&g.out[..]).unwrap(),
            vec![
                (1_500_000_000, vec![0xaa]),
                (12_000_000_007, vec![0xbb, 0xbc]),
                (3_500_000_000, vec![0xcc]),
                (3_500_000_000, vec![1, 2, 3]),
                (4_000_000_000, vec![0xdd]),
                (5_000_000_000, vec![0xee]),
            ]
        );
    }

    #[test]
    fn pcapng_errors_name_the_interface_or_block() {
        // A packet on a Linux cooked-capture interface.
        let mut g = Ng {
            be: false,
            out: Vec::new(),
        };
        g.section(false);
        g.interface(1, 0, None, None);
        g.interface(113, 0, None, None);
        g.enhanced(0, 1, &[1]);
        g.enhanced(1, 2, &[2]);
        let e = read_all(&g.out[..]).unwrap_err();
        assert!(
            matches!(
                e,
                PcapError::UnsupportedInterface {
                    interface: 1,
                    link_type: 113
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("interface 1 has link type 113"));
        // A packet on an interface the section never described.
        let mut g = Ng {
            be: false,
            out: Vec::new(),
        };
        g.section(false);
        g.interface(1, 0, None, None);
        g.enhanced(3, 1, &[1]);
        let e = read_all(&g.out[..]).unwrap_err();
        assert!(e.to_string().contains("on interface 3"), "{e}");
        // Lengths that disagree, a block cut short, a captured length past the block.
        let mut bad = g.out.clone();
        let n = bad.len();
        bad[n - 4] ^= 0x10;
        assert!(matches!(
            read_all(&bad[..]),
            Err(PcapError::BadBlock { .. })
        ));
        assert!(matches!(
            read_all(&g.out[..g.out.len() - 2]),
            Err(PcapError::TruncatedRecord { .. })
        ));
        let mut g = Ng {
            be: false,
            out: Vec::new(),
        };
        g.section(false);
        g.interface(1, 0, None, None);
        g.enhanced(0, 1, &[1, 2, 3, 4]);
        let at = g.out.len() - 16; // the EPB's captured length
        g.out[at..at + 4].copy_from_slice(&200u32.to_le_bytes());
        let e = read_all(&g.out[..]).unwrap_err();
        assert!(e.to_string().contains("200 captured bytes"), "{e}");
    }

    #[test]
    fn every_truncation_of_a_pcapng_file_is_an_error_or_a_prefix() {
        let mut g = Ng {
            be: true,
            out: Vec::new(),
        };
        g.section(true);
        g.interface(1, 0, Some(9), None);
        for i in 0..4u8 {
            g.enhanced(0, u64::from(i), &[i; 5]);
        }
        let full = read_all(&g.out[..]).unwrap();
        for cut in 0..g.out.len() {
            if let Ok(recs) = read_all(&g.out[..cut]) {
                assert!(full.starts_with(&recs));
            }
        }
    }
}
