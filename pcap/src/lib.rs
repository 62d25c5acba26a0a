//! pcap capture files: a streaming reader and writer (classic libpcap format, micro- or
//! nanosecond timestamps, either byte order) for the replay driver and the tests. The frame
//! builder and fixture generator live in the dev-only `fixtures` crate.

use std::fmt;
use std::io::{self, Read, Write};

/// LINKTYPE_ETHERNET, the only link type the balancer forwards.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record we accept; anything larger is a corrupt file, not a frame.
pub const MAX_RECORD_LEN: u32 = 262_144;

const MAGIC_USEC: u32 = 0xa1b2_c3d4;
const MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;

/// Why a capture could not be read.
#[derive(Debug)]
pub enum PcapError {
    Io(io::Error),
    /// The file does not start with a pcap magic number.
    NotPcap {
        magic: u32,
    },
    /// The file is pcapng, which this reader does not take.
    Pcapng,
    /// The capture's link type is not Ethernet.
    UnsupportedLinkType(u32),
    /// The file ends inside a record header or record body.
    TruncatedRecord {
        index: u64,
    },
    /// A record claims a length no frame has.
    RecordTooLarge {
        index: u64,
        len: u32,
    },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "{e}"),
            PcapError::NotPcap { magic } => write!(f, "not a pcap file (magic number {magic:#010x}); give a libpcap capture such as `tcpdump -w` writes"),
            PcapError::Pcapng => f.write_str("pcapng captures are not supported; convert with `editcap -F pcap IN OUT` or `tshark -F pcap -r IN -w OUT`"),
            PcapError::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}: only Ethernet (link type 1) is supported; capture on an Ethernet interface (not `any`, which gives Linux cooked capture, link type 113)"),
            PcapError::TruncatedRecord { index } => write!(f, "capture is cut short inside record {index} (counting from 0)"),
            PcapError::RecordTooLarge { index, len } => write!(f, "record {index} claims {len} bytes, more than the {MAX_RECORD_LEN}-byte maximum: the file is corrupt"),
        }
    }
}

impl std::error::Error for PcapError {}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> Self {
        PcapError::Io(e)
    }
}

/// Reads records one at a time into a caller-owned buffer.
pub struct PcapReader<R> {
    r: R,
    swapped: bool,
    nanos: bool,
    link_type: u32,
    index: u64,
}

/// Metadata of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed the captured length).
    pub orig_len: u32,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the global header; only Ethernet captures are accepted.
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
            MAGIC_PCAPNG => return Err(PcapError::Pcapng),
            m => return Err(PcapError::NotPcap { magic: m }),
        };
        let mut rd = PcapReader {
            r,
            swapped,
            nanos,
            link_type: 0,
            index: 0,
        };
        rd.link_type = rd.u32_at(&h, 20) & 0x0fff_ffff;
        if rd.link_type != LINKTYPE_ETHERNET {
            return Err(PcapError::UnsupportedLinkType(rd.link_type));
        }
        Ok(rd)
    }

    /// True when the file stores nanosecond timestamps.
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }

    fn u32_at(&self, b: &[u8], off: usize) -> u32 {
        let v = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// Reads the next record into `buf` (cleared first). `Ok(None)` at a clean end of file.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<RecordInfo>, PcapError> {
        let mut h = [0u8; 16];
        let mut got = 0;
        while got < h.len() {
            match self.r.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(PcapError::TruncatedRecord { index: self.index }),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let secs = self.u32_at(&h, 0) as u64;
        let frac = self.u32_at(&h, 4) as u64;
        let incl = self.u32_at(&h, 8);
        let orig_len = self.u32_at(&h, 12);
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
        let ts_ns = secs * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
        Ok(Some(RecordInfo { ts_ns, orig_len }))
    }
}

/// Writes an Ethernet capture, in native byte order.
pub struct PcapWriter<W: Write> {
    w: W,
    nanos: bool,
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
        Ok(PcapWriter { w, nanos })
    }

    /// Appends one frame with its timestamp.
    pub fn write(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
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
    let mut rd = PcapReader::new(r)?;
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
        assert!(matches!(
            read_all(
                &[
                    0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0
                ][..]
            ),
            Err(PcapError::Pcapng)
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
}
