//! The ClientHello at the start of a TLS connection, read without terminating TLS (for
//! `l7 = "tls-passthrough"` services): the server name it asks for (SNI) and the ALPN
//! protocols it offers. A checked view over a copy of the client's first bytes, as the
//! `packet` crate's views are: every length is checked before it is used, and anything that
//! is not a well-formed ClientHello is an error that says what is wrong with it.
//!
//! The handshake message may be split over several TLS records (and those over several TCP
//! segments); [`read_client_hello`] gathers it in place, in the copy it is given.

/// Why the bytes so far are not (yet) a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// More bytes are needed.
    Incomplete,
    /// The first record is not a TLS handshake record (plain HTTP, say).
    NotTls,
    /// The handshake message is longer than allowed.
    TooLarge,
    /// Something in it is malformed; says what.
    Malformed(&'static str),
}

impl HelloError {
    /// What was wrong, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            HelloError::Incomplete => "incomplete",
            HelloError::NotTls => "not a TLS handshake record",
            HelloError::TooLarge => "ClientHello larger than allowed",
            HelloError::Malformed(why) => why,
        }
    }
}

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: a record's fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 16384;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// A ClientHello's server name and ALPN offer, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    server_name: Option<&'a str>,
    /// The ALPN extension's protocol_name_list (each name preceded by its length byte),
    /// checked well formed.
    alpn: Option<&'a [u8]>,
}

impl<'a> ClientHello<'a> {
    /// The host name asked for, as the client wrote it (compare without regard to case).
    pub fn server_name(&self) -> Option<&'a str> {
        self.server_name
    }

    /// The ALPN protocols offered, in the client's order.
    pub fn alpn(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.alpn.unwrap_or(&[]);
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (name, tail) = tail.split_at_checked(len as usize)?;
            rest = tail;
            Some(name)
        })
    }

    /// Whether the client offers ALPN protocol `proto`.
    pub fn offers(&self, proto: &[u8]) -> bool {
        self.alpn().any(|p| p == proto)
    }
}

/// A cursor over bytes whose reads fail instead of running past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(HelloError::Malformed(what))?;
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)? as usize;
        self.take(n, what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Reads the ClientHello at the start of `buf`, a copy of what the client sent so far,
/// allowing a handshake message of at most `max` bytes. The message's fragments are moved
/// together at the start of `buf` (their record headers dropped), so `buf` is changed.
pub fn read_client_hello(buf: &mut [u8], max: usize) -> Result<ClientHello<'_>, HelloError> {
    let len = gather(buf, max)?;
    parse(&buf[..len])
}

/// Gathers the handshake message from its records to the start of `buf`; returns its
/// length (header included).
fn gather(buf: &mut [u8], max: usize) -> Result<usize, HelloError> {
    let mut read = 0;
    let mut written = 0;
    let mut need: Option<usize> = None;
    loop {
        if let Some(n) = need.filter(|&n| written >= n) {
            return Ok(n);
        }
        let Some(h) = buf.get(read..read + RECORD_HEADER) else {
            // A record header that has not arrived; what did arrive is checked already.
            return match buf.get(read) {
                Some(&t) if t != RECORD_HANDSHAKE => Err(not_handshake(read)),
                _ => Err(HelloError::Incomplete),
            };
        };
        if h[0] != RECORD_HANDSHAKE {
            return Err(not_handshake(read));
        }
        if h[1] != 3 {
            return Err(if read == 0 {
                HelloError::NotTls
            } else {
                HelloError::Malformed("a record's version is not TLS")
            });
        }
        let fragment = u16::from_be_bytes([h[3], h[4]]) as usize;
        if fragment == 0 || fragment > MAX_FRAGMENT {
            return Err(HelloError::Malformed(
                "a record's length is 0 or over 16384",
            ));
        }
        let start = read + RECORD_HEADER;
        let end = start + fragment;
        let have = end.min(buf.len());
        buf.copy_within(start..have, written);
        written += have - start;
        read = end;
        if need.is_none() && written >= 4 {
            if buf[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::Malformed(
                    "the first handshake message is not a ClientHello",
                ));
            }
            let body = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
            if 4 + body > max {
                return Err(HelloError::TooLarge);
            }
            need = Some(4 + body);
        }
        if have < end && need.is_none_or(|n| written < n) {
            return Err(HelloError::Incomplete);
        }
    }
}

fn not_handshake(at: usize) -> HelloError {
    if at == 0 {
        HelloError::NotTls
    } else {
        HelloError::Malformed("a record other than handshake before the ClientHello ended")
    }
}

/// Parses a whole ClientHello handshake message (RFC 8446 §4.1.2; TLS 1.2's is the same
/// shape).
fn parse(msg: &[u8]) -> Result<ClientHello<'_>, HelloError> {
    let mut r = Reader { rest: &msg[4..] };
    r.take(2, "the ClientHello ends inside legacy_version")?;
    r.take(32, "the ClientHello ends inside random")?;
    let session_id = r.vec8("the ClientHello ends inside legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id is longer than 32 bytes",
        ));
    }
    let suites = r.vec16("the ClientHello ends inside cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed(
            "cipher_suites is empty or of odd length",
        ));
    }
    let compression = r.vec8("the ClientHello ends inside compression_methods")?;
    if compression.is_empty() {
        return Err(HelloError::Malformed("compression_methods is empty"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: None,
    };
    if r.is_empty() {
        // No extensions at all (an old client): no SNI.
        return Ok(hello);
    }
    let mut exts = Reader {
        rest: r.vec16("the ClientHello ends inside its extensions")?,
    };
    if !r.is_empty() {
        return Err(HelloError::Malformed(
            "bytes after the ClientHello's extensions",
        ));
    }
    let (mut seen_sni, mut seen_alpn) = (false, false);
    while !exts.is_empty() {
        let ty = exts.u16("an extension ends inside its type")?;
        let data = exts.vec16("an extension is longer than the extensions")?;
        match ty {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(HelloError::Malformed("server_name is given twice"));
                }
                hello.server_name = server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(HelloError::Malformed("ALPN is given twice"));
                }
                hello.alpn = Some(alpn(data)?);
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// The host_name of a server_name extension (RFC 6066 §3), checked to be a host name.
fn server_name(data: &[u8]) -> Result<Option<&str>, HelloError> {
    let mut outer = Reader { rest: data };
    let mut list = Reader {
        rest: outer.vec16("server_name_list is longer than its extension")?,
    };
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("server_name_list is empty or padded"));
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("a server name ends inside its type")?;
        let name = list.vec16("a server name is longer than its list")?;
        if kind != 0 {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::Malformed("two host names in server_name"));
        }
        let ok = !name.is_empty()
            && name.len() <= 255
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && name[0] != b'.'
            && name[name.len() - 1] != b'.';
        if !ok {
            return Err(HelloError::Malformed("the server name is not a host name"));
        }
        // Checked ASCII above.
        host = std::str::from_utf8(name).ok();
    }
    Ok(host)
}

/// The protocol_name_list of an ALPN extension (RFC 7301 §3.1), checked well formed.
fn alpn(data: &[u8]) -> Result<&[u8], HelloError> {
    let mut outer = Reader { rest: data };
    let list = outer.vec16("the ALPN list is longer than its extension")?;
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("the ALPN list is empty or padded"));
    }
    let mut names = Reader { rest: list };
    while !names.is_empty() {
        if names
            .vec8("an ALPN name is longer than its list")?
            .is_empty()
        {
            return Err(HelloError::Malformed("an ALPN name is empty"));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello handshake message with these extensions (type, data).
    fn message(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend(ty.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut m = vec![1];
        m.extend(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend(body);
        m
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (EXT_SERVER_NAME, d)
    }

    fn alpn_ext(names: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(n.len() as u8);
            list.extend(n.as_bytes());
        }
        let mut d = (list.len() as u16).to_be_bytes().to_vec();
        d.extend(list);
        (EXT_ALPN, d)
    }

    /// `msg` in records of at most `size` bytes of fragment.
    fn records(msg: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(size) {
            out.extend([RECORD_HANDSHAKE, 3, 1]);
            out.extend((part.len() as u16).to_be_bytes());
            out.extend(part);
        }
        out
    }

    fn read(wire: &[u8]) -> Result<(Option<String>, Vec<String>), HelloError> {
        let mut copy = wire.to_vec();
        let h = read_client_hello(&mut copy, 16384)?;
        Ok((
            h.server_name().map(str::to_string),
            h.alpn()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        ))
    }

    #[test]
    fn server_name_and_alpn_are_read_from_one_record_or_many() {
        let m = message(&[
            (10, vec![0, 2, 0, 29]),
            sni("Img.Example"),
            alpn_ext(&["h2", "http/1.1"]),
        ]);
        let want = (
            Some("Img.Example".to_string()),
            vec!["h2".to_string(), "http/1.1".to_string()],
        );
        assert_eq!(read(&records(&m, 16384)), Ok(want.clone()));
        // Split into 7-byte fragments (so the 4-byte header itself spans two records).
        assert_eq!(read(&records(&m, 3)), Ok(want.clone()));
        assert_eq!(read(&records(&m, 7)), Ok(want));
        let mut copy = records(&m, 16384);
        let h = read_client_hello(&mut copy, 16384).unwrap();
        assert!(h.offers(b"http/1.1") && !h.offers(b"http/1"));
    }

    #[test]
    fn a_real_client_hello_from_rustls_is_read() {
        use rustls::pki_types::ServerName;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.into())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from("db.example").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg.into(), name).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        assert_eq!(
            read(&wire),
            Ok((
                Some("db.example".into()),
                vec!["h2".into(), "http/1.1".into()]
            ))
        );
    }

    #[test]
    fn every_prefix_of_a_hello_is_incomplete_and_never_more() {
        let wire = records(&message(&[sni("www.example"), alpn_ext(&["h2"])]), 20);
        for n in 0..wire.len() {
            assert_eq!(read(&wire[..n]), Err(HelloError::Incomplete), "prefix {n}");
        }
        assert!(read(&wire).is_ok());
    }

    #[test]
    fn no_sni_and_no_extensions_are_not_errors() {
        assert_eq!(read(&records(&message(&[]), 100)), Ok((None, vec![])));
        // A hello without the extensions block at all (the message ends after compression).
        let mut m = message(&[]);
        m.truncate(m.len() - 2);
        let body = (m.len() - 4) as u32;
        m[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
        assert_eq!(read(&records(&m, 100)), Ok((None, vec![])));
    }

    #[test]
    fn what_is_not_a_client_hello_is_named() {
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(read(b"G"), Err(HelloError::NotTls));
        assert_eq!(read(&[22, 2, 0, 0, 4]), Err(HelloError::NotTls), "SSL 2");
        let good = message(&[sni("a.example")]);
        // A ServerHello where a ClientHello belongs.
        let mut server_hello = good.clone();
        server_hello[0] = 2;
        assert!(matches!(
            read(&records(&server_hello, 100)),
            Err(HelloError::Malformed(_))
        ));
        // An alert record in the middle of the hello.
        let mut wire = records(&good, 10);
        wire[15] = 21;
        assert!(matches!(read(&wire), Err(HelloError::Malformed(_))));
        // A record of length 0.
        assert!(matches!(
            read(&[22, 3, 1, 0, 0]),
            Err(HelloError::Malformed(_))
        ));
        for bad in [
            message(&[sni("a.example"), sni("b.example")]),
            message(&[sni("bad name")]),
            message(&[sni("trailing.dot.")]),
            message(&[sni("")]),
            message(&[alpn_ext(&["h2", ""])]),
            message(&[alpn_ext(&[])]),
            message(&[(EXT_SERVER_NAME, vec![0, 9, 0, 0, 1, b'a'])]),
        ] {
            assert!(
                matches!(read(&records(&bad, 100)), Err(HelloError::Malformed(_))),
                "{bad:?}"
            );
        }
        // The declared hello is larger than allowed (before it has all arrived).
        let big = message(&[(21, vec![0; 20000])]);
        let mut first = records(&big, 16384);
        first.truncate(100);
        assert_eq!(read(&first), Err(HelloError::TooLarge));
    }

    #[test]
    fn a_lying_length_never_reads_past_the_end() {
        let m = message(&[sni("www.example"), alpn_ext(&["h2"])]);
        // Every byte of the message set to every value: whatever the result, no panic.
        for i in 0..m.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = m.clone();
                bad[i] = v;
                let _ = read(&records(&bad, 50));
            }
        }
    }
}
