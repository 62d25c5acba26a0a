//! HTTP/1.1 message heads and bodies as a proxy must see them (RFC 9112): the request head
//! parsed and checked strictly — a proxy that frames a request differently from its backend
//! lets a client smuggle a second request past it — the body framing each side uses, a
//! streaming chunked-coding checker that forwards the chunks as they are, the heads
//! rewritten for the other side (hop-by-hop fields dropped, `X-Forwarded-*` and `Forwarded`
//! added, route rules applied), and the error responses the proxy writes itself.

use crate::setup::HeaderRule;
use bytes::{BufMut, BytesMut};
use std::net::IpAddr;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a head was refused; each maps to the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not all of the head has arrived.
    Incomplete,
    /// The head is longer than `limits.header_bytes` (431).
    TooLarge,
    /// More fields than `limits.header_count` (431).
    TooManyHeaders,
    /// Not HTTP/1.x, or framed ambiguously (400); the text says which rule.
    Malformed(&'static str),
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

/// One header field of a parsed head (borrowed from the receive buffer).
pub type Field<'b> = httparse::Header<'b>;

/// A parsed, checked request head.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub fields: &'b [Field<'b>],
    /// Bytes of the head, the blank line included.
    pub len: usize,
    pub body: BodyKind,
    /// Both `Content-Length` and chunked `Transfer-Encoding`: the length is dropped on the
    /// way out (RFC 9112 6.3: the coding wins).
    pub drop_length: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl Request<'_> {
    /// The first field named `name` (ASCII case-insensitive).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        field(self.fields, name)
    }

    /// The `Host` name, lower case, without a port (the target's authority for an absolute
    /// form).
    pub fn host(&self) -> Option<String> {
        let raw = match self.target.split_once("://") {
            Some((_, rest)) => rest.split('/').next().unwrap_or(""),
            None => std::str::from_utf8(self.field("host")?).ok()?,
        };
        let raw = raw.trim();
        let name = if raw.starts_with('[') {
            raw.split(']').next().unwrap_or(raw).to_string() + "]"
        } else {
            raw.rsplit_once(':').map_or(raw, |(h, _)| h).to_string()
        };
        Some(name.to_ascii_lowercase())
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        let t = match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => self.target,
        };
        t.split(['?', '#']).next().unwrap_or(t)
    }

    /// Whether the request may be sent again after a failure (RFC 9110 9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|f| f.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = trim(pair);
                let eq = pair.iter().position(|&b| b == b'=')?;
                (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
            })
    }
}

fn field<'a>(fields: &'a [Field<'_>], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e.max(s)]
}

/// Comma-separated list elements of every field named `name`, trimmed.
fn list<'a>(fields: &'a [Field<'_>], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |f| f.name.eq_ignore_ascii_case(name))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(trim)
        .filter(|v| !v.is_empty())
}

fn has_token(fields: &[Field<'_>], name: &str, token: &str) -> bool {
    list(fields, name).any(|v| v.eq_ignore_ascii_case(token.as_bytes()))
}

/// Rejects what httparse lets through but RFC 9112 forbids in a request a proxy forwards:
/// a bare CR or LF, or another control character, in a field value.
fn check_values(fields: &[Field<'_>]) -> Result<(), HeadError> {
    for f in fields {
        if f.value
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(HeadError::Malformed(
                "control character in a header field value",
            ));
        }
    }
    Ok(())
}

/// The body framing of a message from its fields (RFC 9112 6.1–6.3), strictly.
fn framing(fields: &[Field<'_>], minor: u8) -> Result<(BodyKind, bool), HeadError> {
    let te: Vec<&[u8]> = list(fields, "transfer-encoding").collect();
    let has_te = fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("transfer-encoding"));
    let mut length: Option<u64> = None;
    for v in list(fields, "content-length") {
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("Content-Length is not a number"));
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(HeadError::Malformed("Content-Length is not a number"))?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::Malformed("differing Content-Length values"));
        }
        length = Some(n);
    }
    let empty_length = fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("content-length") && trim(f.value).is_empty());
    if empty_length {
        return Err(HeadError::Malformed("Content-Length is not a number"));
    }
    if has_te {
        if minor == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !te
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            return Err(HeadError::Malformed(
                "the final Transfer-Encoding is not chunked",
            ));
        }
        if te
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count()
            > 1
        {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        return Ok((BodyKind::Chunked, length.is_some()));
    }
    Ok((
        match length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        },
        false,
    ))
}

/// Parses and checks a request head at the start of `buf` (the fields go into `fields`,
/// whose length is the field-count limit).
pub fn parse_request<'b>(
    buf: &'b [u8],
    fields: &'b mut [Field<'b>],
    max_bytes: usize,
) -> Result<Request<'b>, HeadError> {
    // Empty lines before a request line are to be ignored (RFC 9112 2.2).
    let mut req = httparse::Request::new(fields);
    let status = req.parse(buf).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("bare CR or LF"),
        httparse::Error::Version => HeadError::Malformed("not HTTP/1.0 or HTTP/1.1"),
        httparse::Error::Token => HeadError::Malformed("invalid method"),
        _ => HeadError::Malformed("invalid request line"),
    });
    let len = match status {
        Ok(httparse::Status::Complete(n)) if n > max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Err(HeadError::Incomplete),
        Err(e) => return Err(e),
    };
    let method = req
        .method
        .ok_or(HeadError::Malformed("invalid request line"))?;
    let target = req
        .path
        .ok_or(HeadError::Malformed("invalid request line"))?;
    let minor = req
        .version
        .ok_or(HeadError::Malformed("invalid request line"))?;
    let fields: &'b [Field<'b>] = req.headers;
    // Every field parsed: check the raw head for what httparse tolerates.
    if buf[..len]
        .windows(2)
        .any(|w| w[0] == b'\r' && w[1] != b'\n')
    {
        return Err(HeadError::Malformed("bare CR"));
    }
    check_values(fields)?;
    let hosts = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(HeadError::Malformed(
            "HTTP/1.1 needs exactly one Host field",
        ));
    }
    let (body, drop_length) = framing(fields, minor)?;
    let close = has_token(fields, "connection", "close");
    let keep_alive = if minor == 0 {
        has_token(fields, "connection", "keep-alive")
    } else {
        !close
    };
    let upgrade = has_token(fields, "connection", "upgrade") && field(fields, "upgrade").is_some();
    Ok(Request {
        method,
        target,
        minor,
        fields,
        len,
        body,
        drop_length,
        keep_alive,
        upgrade,
    })
}

/// A parsed response head.
#[derive(Debug)]
pub struct Response<'b> {
    pub code: u16,
    pub reason: &'b str,
    pub minor: u8,
    pub fields: &'b [Field<'b>],
    pub len: usize,
    pub body: BodyKind,
    /// The backend will keep the connection open after this response.
    pub reusable: bool,
}

/// Parses a backend's response head; `head_request` says the request was HEAD (no body).
pub fn parse_response<'b>(
    buf: &'b [u8],
    fields: &'b mut [Field<'b>],
    max_bytes: usize,
    head_request: bool,
) -> Result<Response<'b>, HeadError> {
    let mut resp = httparse::Response::new(fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Err(HeadError::Incomplete),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed("invalid response head")),
    };
    let code = resp
        .code
        .ok_or(HeadError::Malformed("invalid status line"))?;
    let minor = resp.version.unwrap_or(1);
    let reason = resp.reason.unwrap_or("");
    let fields: &'b [Field<'b>] = resp.headers;
    check_values(fields)?;
    let no_body = head_request || (100..200).contains(&code) || code == 204 || code == 304;
    let body = if no_body {
        BodyKind::None
    } else if fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        match framing(fields, 1) {
            Ok((b, _)) => b,
            // A coding other than chunked last: the body ends at the close (RFC 9112 6.3).
            Err(_) => BodyKind::UntilClose,
        }
    } else {
        match framing(fields, minor)? {
            (BodyKind::None, _) if field(fields, "content-length").is_none() => {
                BodyKind::UntilClose
            }
            (b, _) => b,
        }
    };
    let close = has_token(fields, "connection", "close");
    let reusable = body != BodyKind::UntilClose
        && if minor == 0 {
            has_token(fields, "connection", "keep-alive")
        } else {
            !close
        };
    Ok(Response {
        code,
        reason,
        minor,
        fields,
        len,
        body,
        reusable,
    })
}

/// Fields that describe one connection, not the message (RFC 9110 7.6.1), and fields the
/// proxy writes itself.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a field is dropped on the way through: hop-by-hop, named by `Connection`, or
/// removed or replaced by a rule.
fn dropped(name: &str, fields: &[Field<'_>], rules: &[HeaderRule]) -> bool {
    hop_by_hop(name)
        || list(fields, "connection").any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
        || rules.iter().any(|r| match r {
            HeaderRule::Set(n, _) | HeaderRule::Remove(n) => n.eq_ignore_ascii_case(name),
            HeaderRule::Add(..) => false,
        })
}

fn put_field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The values of every `name` field, joined by ", ".
fn put_joined(out: &mut BytesMut, fields: &[Field<'_>], name: &str) {
    let mut first = true;
    for f in fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)) {
        if !first {
            out.put_slice(b", ");
        }
        out.put_slice(f.value);
        first = false;
    }
}

fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    use std::fmt::Write;
    // Writing to a `BytesMut` cannot fail.
    let _ = write!(out, "{ip}");
}

fn put_rules(out: &mut BytesMut, rules: &[HeaderRule]) {
    for r in rules {
        match r {
            HeaderRule::Set(n, v) | HeaderRule::Add(n, v) => put_field(out, n, v.as_bytes()),
            HeaderRule::Remove(_) => {}
        }
    }
}

/// Writes the request head as the backend gets it.
/// Writes the request head as the backend gets it; `proto` is the client's scheme (`http`,
/// or `https` behind TLS termination).
pub fn write_request(
    out: &mut BytesMut,
    req: &Request<'_>,
    client: IpAddr,
    proto: &str,
    rules: &[HeaderRule],
) {
    out.put_slice(req.method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(req.target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut xff = false;
    let mut forwarded = false;
    for f in req.fields {
        let n = f.name;
        if dropped(n, req.fields, rules)
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || (req.drop_length && n.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff = true;
            continue;
        }
        if n.eq_ignore_ascii_case("forwarded") {
            forwarded = true;
            continue;
        }
        put_field(out, n, f.value);
    }
    // Both are written straight into `out` (no temporaries: this runs for every request),
    // the client's values first, joined as one field.
    out.put_slice(b"X-Forwarded-For: ");
    if xff {
        put_joined(out, req.fields, "x-forwarded-for");
        out.put_slice(b", ");
    }
    put_ip(out, client);
    out.put_slice(b"\r\nX-Forwarded-Proto: ");
    out.put_slice(proto.as_bytes());
    out.put_slice(b"\r\nForwarded: ");
    if forwarded {
        put_joined(out, req.fields, "forwarded");
        out.put_slice(b", ");
    }
    out.put_slice(b"for=");
    match client {
        IpAddr::V4(_) => put_ip(out, client),
        IpAddr::V6(_) => {
            out.put_slice(b"\"[");
            put_ip(out, client);
            out.put_slice(b"]\"");
        }
    }
    out.put_slice(b";proto=");
    out.put_slice(proto.as_bytes());
    if let Some(h) = req.field("host") {
        if h.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            out.put_slice(b";host=\"");
            out.put_slice(h);
            out.put_u8(b'"');
        }
    }
    out.put_slice(b"\r\n");
    put_rules(out, rules);
    if req.upgrade {
        if let Some(u) = req.field("upgrade") {
            put_field(out, "Upgrade", u);
        }
        put_field(out, "Connection", b"upgrade");
    }
    out.put_slice(b"\r\n");
}

/// How the client side of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFraming {
    /// The client connection closes after this response.
    pub close: bool,
    /// The client asked for keep-alive with HTTP/1.0 and gets it.
    pub keep_alive_10: bool,
}

/// Writes the response head as the client gets it; `cookie` is a `Set-Cookie` value to add.
pub fn write_response(
    out: &mut BytesMut,
    resp: &Response<'_>,
    rules: &[HeaderRule],
    framing: ClientFraming,
    cookie: Option<&str>,
) {
    out.put_slice(format!("HTTP/1.1 {} {}\r\n", resp.code, resp.reason).as_bytes());
    let switching = resp.code == 101;
    for f in resp.fields {
        let keep_for_upgrade = switching
            && (f.name.eq_ignore_ascii_case("upgrade")
                || f.name.eq_ignore_ascii_case("connection"));
        if !keep_for_upgrade && dropped(f.name, resp.fields, rules) {
            continue;
        }
        put_field(out, f.name, f.value);
    }
    put_rules(out, rules);
    if let Some(c) = cookie {
        put_field(out, "Set-Cookie", c.as_bytes());
    }
    if !switching && !(100..200).contains(&resp.code) {
        if framing.close {
            put_field(out, "Connection", b"close");
        } else if framing.keep_alive_10 {
            put_field(out, "Connection", b"keep-alive");
        }
    }
    out.put_slice(b"\r\n");
}

/// The response the proxy writes itself for `status`, closing the connection.
pub fn error_response(status: u16) -> &'static [u8] {
    // A unit test checks each length against its body.
    match status {
        400 => b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nbad request\n",
        404 => b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\nconnection: close\r\n\r\nno route\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain\r\ncontent-length: 18\r\nconnection: close\r\n\r\nbody is too large\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\nheader is too large\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 15\r\nconnection: close\r\n\r\nbackend failed\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 19\r\nconnection: close\r\n\r\nno healthy backend\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\ncontent-type: text/plain\r\ncontent-length: 18\r\nconnection: close\r\n\r\nbackend timed out\n",
        _ => b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nerror\n",
    }
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Follows a chunked body byte by byte as it streams through, checking its syntax strictly
/// (RFC 9112 7.1) and finding where it ends; the bytes themselves are forwarded unchanged.
#[derive(Debug, Clone)]
pub struct ChunkedBody {
    state: ChunkState,
    size: u64,
    digits: u8,
    remaining: u64,
    /// Data bytes so far (for the body limit).
    pub data_bytes: u64,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            remaining: 0,
            data_bytes: 0,
        }
    }
}

impl ChunkedBody {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads `data`, the next bytes of the stream; returns how many belong to this body
    /// (all, until its last CRLF).
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let n = (self.remaining.min((data.len() - i) as u64)) as usize;
                i += n;
                self.remaining -= n as u64;
                self.data_bytes += n as u64;
                if self.remaining == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            if self.state == Done {
                break;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 15 {
                        return Err(ChunkError("chunk size is too large"));
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                    Size
                }
                (Size, _) if self.digits == 0 => return Err(ChunkError("invalid chunk size")),
                (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
                (Size | SizeSpace, b';') => Extension,
                (Size | SizeSpace | Extension, b'\r') => SizeLf,
                (Size | SizeSpace, _) => return Err(ChunkError("invalid chunk size")),
                (Extension, b'\n') => return Err(ChunkError("bare LF in a chunk extension")),
                (Extension, b) if (b < 0x20 && b != b'\t') || b == 0x7f => {
                    return Err(ChunkError("control character in a chunk extension"))
                }
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => {
                    self.remaining = self.size;
                    Data
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.size = 0;
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => FinalLf,
                (TrailerStart | TrailerLine, b'\n') => {
                    return Err(ChunkError("bare LF in the trailer section"))
                }
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (FinalLf, b'\n') => Done,
                _ => return Err(ChunkError("bare CR or missing CRLF in a chunked body")),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<(BodyKind, bool, bool), HeadError> {
        let mut f = [httparse::EMPTY_HEADER; 16];
        parse_request(raw, &mut f, 16384).map(|r| (r.body, r.drop_length, r.keep_alive))
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok((BodyKind::None, false, true))
        );
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok((BodyKind::Length(5), false, true))
        );
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
            Ok((BodyKind::Length(5), false, true)),
            "identical duplicates are one length"
        );
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"),
            Ok((BodyKind::Chunked, true, true)),
            "with both, chunked wins and the length is dropped"
        );
        assert_eq!(
            req(b"GET / HTTP/1.0\r\n\r\n"),
            Ok((BodyKind::None, false, false))
        );
        assert_eq!(
            req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            Ok((BodyKind::None, false, true))
        );
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            Ok((BodyKind::None, false, false))
        );
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Err(HeadError::Incomplete)
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for (raw, why) in [
            (&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..], "differing lengths"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", "differing list"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", "signed length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", "empty length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", "space before colon"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "chunked not last"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "unknown coding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked twice"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "coding in 1.0"),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "bare CR"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "control character"),
            (b"GET / HTTP/1.1\r\n\r\n", "no Host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "obsolete line folding"),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "not HTTP"),
        ] {
            let r = req(raw);
            assert!(matches!(r, Err(HeadError::Malformed(_))), "{why}: {r:?}");
        }
    }

    #[test]
    fn limits_give_431() {
        let mut f = [httparse::EMPTY_HEADER; 2];
        let r = parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n",
            &mut f,
            100,
        );
        assert_eq!(r.unwrap_err(), HeadError::TooManyHeaders);
        let mut f = [httparse::EMPTY_HEADER; 8];
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200));
        assert_eq!(
            parse_request(long.as_bytes(), &mut f, 64).unwrap_err(),
            HeadError::TooLarge
        );
        let mut f = [httparse::EMPTY_HEADER; 8];
        let partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(
            parse_request(partial.as_bytes(), &mut f, 64).unwrap_err(),
            HeadError::TooLarge,
            "a head that cannot end within the limit"
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn host_path_and_cookies_are_read_as_routing_needs() {
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(
            b"GET /v1/x?q=1 HTTP/1.1\r\nHost: API.Example:8080\r\nCookie: a=1; session=xyz ; b=2\r\n\r\n",
            &mut f,
            1000,
        )
        .unwrap();
        assert_eq!(r.host().as_deref(), Some("api.example"));
        assert_eq!(r.path(), "/v1/x");
        assert_eq!(r.cookie("session"), Some(&b"xyz"[..]));
        assert_eq!(r.cookie("sess"), None);
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(
            b"GET http://h.example/p HTTP/1.1\r\nHost: other\r\n\r\n",
            &mut f,
            1000,
        )
        .unwrap();
        assert_eq!(r.host().as_deref(), Some("h.example"));
        assert_eq!(r.path(), "/p");
        let mut f = [httparse::EMPTY_HEADER; 8];
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", &mut f, 1000).unwrap();
        assert_eq!(r.host().as_deref(), Some("[::1]"));
    }

    #[test]
    fn the_backend_gets_forwarding_fields_and_no_hop_by_hop_ones() {
        let mut f = [httparse::EMPTY_HEADER; 16];
        let r = parse_request(
            b"POST /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nX-Drop: y\r\nX-Set: old\r\n\r\n",
            &mut f,
            4096,
        )
        .unwrap();
        let mut out = BytesMut::new();
        let rules = [
            HeaderRule::Remove("x-drop".into()),
            HeaderRule::Set("X-Set".into(), "new".into()),
            HeaderRule::Add("X-Add".into(), "1".into()),
        ];
        write_request(&mut out, &r, "10.0.0.9".parse().unwrap(), "http", &rules);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("POST /a HTTP/1.1\r\nHost: h\r\n"), "{s}");
        for gone in [
            "Connection",
            "X-Secret",
            "Keep-Alive",
            "Content-Length",
            "X-Drop",
            "https",
            "old",
        ] {
            assert!(!s.contains(gone), "{gone} in {s}");
        }
        for kept in [
            "Transfer-Encoding: chunked\r\n",
            "X-Forwarded-For: 1.1.1.1, 10.0.0.9\r\n",
            "X-Forwarded-Proto: http\r\n",
            "Forwarded: for=10.0.0.9;proto=http;host=\"h\"\r\n",
            "X-Set: new\r\n",
            "X-Add: 1\r\n",
        ] {
            assert!(s.contains(kept), "{kept} not in {s}");
        }
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn earlier_proxies_forwarding_fields_are_joined_before_ours() {
        let mut f = [httparse::EMPTY_HEADER; 16];
        let r = parse_request(
            b"GET / HTTP/1.1\r\nHost: a b\r\nX-Forwarded-For: 1.1.1.1\r\nForwarded: for=1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
            &mut f,
            4096,
        )
        .unwrap();
        let mut out = BytesMut::new();
        write_request(&mut out, &r, "2001:db8::7".parse().unwrap(), "https", &[]);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::7\r\n"),
            "{s}"
        );
        // A host with a space is left out of Forwarded (it would need quoting rules).
        assert!(
            s.contains("Forwarded: for=1.1.1.1, for=\"[2001:db8::7]\";proto=https\r\n"),
            "{s}"
        );
        assert_eq!(s.matches("X-Forwarded-For").count(), 1, "{s}");
    }

    #[test]
    fn response_framing_and_reuse() {
        let parse = |raw: &[u8], head: bool| {
            let mut f = [httparse::EMPTY_HEADER; 16];
            parse_response(raw, &mut f, 4096, head).map(|r| (r.code, r.body, r.reusable))
        };
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            Ok((200, BodyKind::Length(3), true))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
            Ok((200, BodyKind::None, true)),
            "a HEAD response has no body"
        );
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            Ok((200, BodyKind::Length(3), false))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((200, BodyKind::UntilClose, false))
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok((200, BodyKind::Chunked, true))
        );
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok((204, BodyKind::None, true))
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Ok((200, BodyKind::None, false))
        );
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let mut c = ChunkedBody::default();
        let n = c.advance(body).unwrap();
        assert!(c.done());
        assert_eq!(
            &body[n..],
            b"GET /next",
            "the next request is not the body's"
        );
        assert_eq!(c.data_bytes, 23);
        // Byte at a time, as a slow sender gives it.
        let mut c = ChunkedBody::default();
        let mut total = 0;
        for b in body.iter() {
            total += c.advance(std::slice::from_ref(b)).unwrap();
            if c.done() {
                break;
            }
        }
        assert_eq!(total, n);
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"4\nWiki\r\n",
            b"4\r\nWikiX\r\n",
            b"4\r\nWiki\r0\r\n\r\n",
            b"1234567890abcdef0\r\n",
            b"-1\r\n",
            b"0\r\nX\n",
            b"0 x\r\n",
        ] {
            let mut c = ChunkedBody::default();
            assert!(
                c.advance(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn error_responses_are_well_formed() {
        for code in [400, 404, 413, 431, 502, 503, 504, 500] {
            let r = error_response(code);
            let mut f = [httparse::EMPTY_HEADER; 8];
            let p = parse_response(r, &mut f, 4096, false).unwrap();
            assert_eq!(p.code, code);
            assert_eq!(p.body, BodyKind::Length((r.len() - p.len) as u64), "{code}");
            assert!(!p.reusable);
        }
    }
}
