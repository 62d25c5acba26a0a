//! TLS termination for `l7 = "tls"` services: a rustls server configuration per service (its
//! certificate picked by SNI: the exact name, then a wildcard, then the default; protocol
//! versions and ALPN from the service; session resumption by tickets with rotating keys and
//! by a session cache), and [`TlsSession`], the layer between a TCP socket and the HTTP
//! session: ciphertext in from the socket, plaintext to the proxy, and back. The same layer
//! re-encrypts to the backends of a pool with `[service.pool.tls]`, as a client
//! ([`client_config`]: the pool's CA bundle, verification on unless turned off, an optional
//! client certificate).
//!
//! rustls is driven without sockets (bytes in, bytes out), which is what a userspace TCP
//! stack needs; the crypto provider is aws-lc-rs (see Cargo.toml for why).

use bytes::{Buf, BytesMut};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use smoltcp::socket::tcp::Socket;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

/// One certificate chain and its key, and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Exact names, or `*.suffix` (one label), as the client sends them in SNI.
    pub names: Vec<String>,
    /// PEM: the chain, leaf first.
    pub chain_pem: Vec<u8>,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
    /// Served when no name matches, or the ClientHello has no SNI.
    pub default: bool,
    /// Where it came from, for errors (`service.certificate[0]`).
    pub origin: String,
}

/// A TLS protocol version a service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What a service's TLS termination is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    pub certificates: Vec<CertSpec>,
    pub versions: Vec<TlsVersion>,
    pub alpn: Vec<String>,
    /// By IANA name, in the server's order of preference; empty: the provider's own list.
    pub cipher_suites: Vec<String>,
    /// Whether sessions resume by tickets (encrypted with rotating keys).
    pub session_tickets: bool,
    /// Sessions the server's cache keeps for resumption (0: none). With neither tickets nor
    /// a cache, every handshake is a full one.
    pub session_cache: usize,
}

/// Ciphertext rustls may hold for a client before the proxy's writes are refused: about
/// two records, so the socket's own buffer is where responses wait.
const SEND_LIMIT: usize = 32 * 1024;
/// Plaintext read ahead of the proxy, per client connection.
const PLAIN_LIMIT: usize = 64 * 1024;

/// The provider with just the cipher suites `names` gives, in that order (all when empty).
fn provider_with(names: &[String]) -> Result<Arc<CryptoProvider>, String> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if !names.is_empty() {
        let all = std::mem::take(&mut p.cipher_suites);
        for n in names {
            let s = all
                .iter()
                .find(|s| s.suite().as_str() == Some(n.as_str()))
                .ok_or_else(|| format!("cipher suite {n} is not available"))?;
            p.cipher_suites.push(*s);
        }
    }
    Ok(Arc::new(p))
}

/// The server configuration `spec` describes; an error names the certificate at fault.
pub fn server_config(spec: &TlsSpec) -> Result<Arc<ServerConfig>, String> {
    let provider = provider_with(&spec.cipher_suites)?;
    let resolver = SniResolver::new(spec, &provider)?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = spec
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let mut cfg = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = spec.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    // A configured list is the server's order of preference.
    cfg.ignore_client_order = !spec.cipher_suites.is_empty();
    cfg.session_storage = if spec.session_cache > 0 {
        ServerSessionMemoryCache::new(spec.session_cache)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    if spec.session_tickets {
        // Ticket keys rotate (every six hours, the previous key still accepted meanwhile).
        cfg.ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
    } else if spec.session_cache == 0 {
        // TLS 1.3 tickets would name cached sessions, and there is no cache.
        cfg.send_tls13_tickets = 0;
    }
    Ok(Arc::new(cfg))
}

/// Loads one chain and key and checks that they belong together.
fn certified_key(c: &CertSpec, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&c.chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: cert: not a PEM certificate chain ({e})", c.origin))?;
    if chain.is_empty() {
        return Err(format!("{}: cert: no certificate in the file", c.origin));
    }
    let key = PrivateKeyDer::from_pem_slice(&c.key_pem)
        .map_err(|e| format!("{}: key: not a PEM private key ({e})", c.origin))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: key: {e}", c.origin))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| format!("{}: the key is not the certificate's ({e})", c.origin))?;
    Ok(ck)
}

/// Picks a certificate by the ClientHello's server name: exact, then `*.` one label up,
/// then the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.` (`example` for `*.example`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// A name as SNI compares it: lowercase, no trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniResolver {
    fn new(spec: &TlsSpec, provider: &CryptoProvider) -> Result<SniResolver, String> {
        let mut r = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        for c in &spec.certificates {
            let ck = Arc::new(certified_key(c, provider)?);
            for n in &c.names {
                let n = normal(n);
                match n.strip_prefix("*.") {
                    Some(suffix) => r.wildcard.insert(suffix.to_string(), Arc::clone(&ck)),
                    None => r.exact.insert(n, Arc::clone(&ck)),
                };
            }
            if c.default || spec.certificates.len() == 1 {
                r.default = Some(Arc::clone(&ck));
            }
        }
        Ok(r)
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = sni.and_then(|s| {
            let s = normal(s);
            self.exact.get(&s).or_else(|| {
                let (_, parent) = s.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// What a pool's re-encryption to its backends is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsSpec {
    /// PEM: the CAs a backend's certificate must chain to (empty with `verify` off).
    pub ca_pem: Vec<u8>,
    /// Whether the backend's certificate is verified (chain and name).
    pub verify: bool,
    /// PEM: a client certificate chain and its key, for backends that ask (mTLS).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Where it came from, for errors (`service `x` pool `y``).
    pub origin: String,
}

/// The client configuration `spec` describes (ALPN http/1.1, TLS 1.2 and 1.3, sessions
/// resumed from a cache); an error names the pool and the file at fault.
pub fn client_config(spec: &ClientTlsSpec) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{}: TLS versions: {e}", spec.origin))?;
    let builder = if spec.verify {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&spec.ca_pem) {
            let c = c.map_err(|e| format!("{}: ca: not a PEM certificate ({e})", spec.origin))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: ca: {e}", spec.origin))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: ca: no certificate in the file", spec.origin));
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut cfg = match &spec.client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let certs = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: client_cert: {e}", spec.origin))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("{}: client_key: {e}", spec.origin))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: client_cert and client_key: {e}", spec.origin))?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A backend's name as its certificate must carry it: a DNS name or an IP address.
pub fn server_name(n: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(n)
        .map(|s| s.to_owned())
        .map_err(|e| format!("`{n}` is not a DNS name or an IP address ({e})"))
}

/// `verify = false`: any certificate is taken (the handshake's signatures are still
/// checked, so the session is at least with the holder of the key it presented).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFault {
    /// The handshake failed (no shared version, cipher or ALPN protocol, a bad message).
    Handshake(String),
    /// A record after the handshake was bad.
    Record(String),
}

/// The TLS layer of one connection: a client's (sluice the server), or a backend's (sluice
/// the client, re-encrypting).
pub struct TlsSession {
    conn: Connection,
    /// Decrypted bytes the proxy has not read yet.
    plain: BytesMut,
    /// The proxy closed its side: once rustls's last bytes are in the socket, close it.
    closing: bool,
    /// The peer sent close_notify, or a fault ended the session.
    done: bool,
    /// The completed handshake has been reported ([`TlsSession::handshake_done`]).
    reported: bool,
}

/// A completed handshake, as the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub version: TlsVersion,
    pub resumed: bool,
}

impl TlsSession {
    pub fn new(cfg: &Arc<ServerConfig>) -> Result<TlsSession, String> {
        let conn = ServerConnection::new(Arc::clone(cfg)).map_err(|e| e.to_string())?;
        Ok(TlsSession::over(conn.into()))
    }

    /// The client side, toward a backend called `name` (its certificate is checked for it).
    pub fn client(
        cfg: &Arc<ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<TlsSession, String> {
        let conn = ClientConnection::new(Arc::clone(cfg), name).map_err(|e| e.to_string())?;
        Ok(TlsSession::over(conn.into()))
    }

    fn over(mut conn: Connection) -> TlsSession {
        conn.set_buffer_limit(Some(SEND_LIMIT));
        TlsSession {
            conn,
            plain: BytesMut::with_capacity(4096),
            closing: false,
            done: false,
            reported: false,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake just completed, once (then `None`).
    pub fn handshake_done(&mut self) -> Option<Handshake> {
        if self.reported || self.conn.is_handshaking() {
            return None;
        }
        self.reported = true;
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => TlsVersion::Tls12,
            _ => TlsVersion::Tls13,
        };
        let resumed = self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Some(Handshake { version, resumed })
    }

    /// Moves ciphertext from `sock` through rustls into the plaintext buffer, and what rustls
    /// has to send (handshake, records, alerts) into `sock` as far as it has room.
    pub fn pump(&mut self, sock: &mut Socket<'static>) -> Result<(), TlsFault> {
        let mut fault = None;
        while !self.done && sock.recv_queue() > 0 && self.plain.len() < PLAIN_LIMIT {
            let read = sock.recv(|buf| {
                let mut r: &[u8] = buf;
                match self.conn.read_tls(&mut r) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    fault = Some(TlsFault::Record(e.to_string()));
                    break;
                }
                Err(_) => 0,
            };
            let handshaking = self.conn.is_handshaking();
            match self.conn.process_new_packets() {
                Ok(state) => {
                    if state.peer_has_closed() {
                        self.done = true;
                    }
                }
                Err(e) => {
                    fault = Some(if handshaking {
                        TlsFault::Handshake(e.to_string())
                    } else {
                        TlsFault::Record(e.to_string())
                    });
                    break;
                }
            }
            self.read_plain();
            if n == 0 {
                break;
            }
        }
        self.read_plain();
        self.write_out(sock);
        if let Some(f) = fault {
            // rustls queued an alert for it; it goes out before the FIN.
            self.done = true;
            self.write_out(sock);
            sock.close();
            return Err(f);
        }
        if self.closing && !self.conn.wants_write() {
            sock.close();
        }
        Ok(())
    }

    fn read_plain(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.plain.len() < PLAIN_LIMIT {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn write_out(&mut self, sock: &mut Socket<'static>) {
        while self.conn.wants_write() && sock.can_send() {
            let wrote = sock.send(|buf| {
                let mut w: &mut [u8] = buf;
                let n = self.conn.write_tls(&mut w).unwrap_or(0);
                (n, n)
            });
            if !matches!(wrote, Ok(n) if n > 0) {
                break;
            }
        }
    }

    /// Decrypted bytes waiting for the proxy.
    pub fn recv_queue(&self) -> usize {
        self.plain.len()
    }

    pub fn peek(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.plain.len());
        buf[..n].copy_from_slice(&self.plain[..n]);
        n
    }

    /// Gives the waiting plaintext to `f`, which says how much of it it took.
    pub fn recv<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> R {
        let (n, r) = f(&mut self.plain[..]);
        self.plain.advance(n.min(self.plain.len()));
        r
    }

    /// Encrypts what of `data` rustls takes (up to its buffer limit); the next pump sends it.
    pub fn send(&mut self, data: &[u8]) -> usize {
        if self.closing || self.done {
            return 0;
        }
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Whether the proxy may write: the handshake is done and nothing closed this side.
    pub fn may_send(&self) -> bool {
        !self.closing && !self.done && !self.conn.is_handshaking()
    }

    /// Whether the client will send nothing more over TLS (close_notify or a fault).
    pub fn peer_done(&self) -> bool {
        self.done
    }

    /// Ends the session: close_notify, then the socket's FIN once it is all in the socket.
    pub fn close(&mut self, sock: &mut Socket<'static>) {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
        self.write_out(sock);
        if !self.conn.wants_write() {
            sock.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // P-256 leaves for www.example and *.img.example, signed by a test CA (made by
    // tests/tls/make-certs.sh).
    const LEAF: &str = include_str!("../tests/tls/www.pem");
    const KEY: &str = include_str!("../tests/tls/www.key");
    const IMG: &str = include_str!("../tests/tls/img.pem");
    const IMG_KEY: &str = include_str!("../tests/tls/img.key");

    fn spec() -> TlsSpec {
        TlsSpec {
            certificates: vec![
                CertSpec {
                    names: vec!["www.example".into()],
                    chain_pem: LEAF.into(),
                    key_pem: KEY.into(),
                    default: true,
                    origin: "service.certificate[0]".into(),
                },
                CertSpec {
                    names: vec!["*.img.example".into(), "IMG.Example.".into()],
                    chain_pem: IMG.into(),
                    key_pem: IMG_KEY.into(),
                    default: false,
                    origin: "service.certificate[1]".into(),
                },
            ],
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            alpn: vec!["http/1.1".into()],
            cipher_suites: vec![],
            session_tickets: true,
            session_cache: 64,
        }
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_default() {
        let r = SniResolver::new(&spec(), &provider_with(&[]).unwrap()).unwrap();
        let www = r.pick(Some("www.example")).unwrap();
        let img = r.pick(Some("a.img.example")).unwrap();
        assert!(!Arc::ptr_eq(&www, &img));
        assert!(Arc::ptr_eq(&img, &r.pick(Some("img.example")).unwrap()));
        assert!(Arc::ptr_eq(&img, &r.pick(Some("A.IMG.example.")).unwrap()));
        // A wildcard covers one label only; anything else gets the default.
        assert!(Arc::ptr_eq(&www, &r.pick(Some("a.b.img.example")).unwrap()));
        assert!(Arc::ptr_eq(&www, &r.pick(Some("other.test")).unwrap()));
        assert!(Arc::ptr_eq(&www, &r.pick(None).unwrap()));
    }

    #[test]
    fn bad_files_and_mismatched_keys_are_named() {
        let mut s = spec();
        s.certificates[1].key_pem = KEY.into();
        let e = server_config(&s).unwrap_err();
        assert!(
            e.starts_with("service.certificate[1]: the key is not"),
            "{e}"
        );
        let mut s = spec();
        s.certificates[0].chain_pem = b"not pem".to_vec();
        let e = server_config(&s).unwrap_err();
        assert!(
            e.starts_with("service.certificate[0]: cert: no certificate"),
            "{e}"
        );
        let mut s = spec();
        s.certificates[0].key_pem = LEAF.into();
        let e = server_config(&s).unwrap_err();
        assert!(e.starts_with("service.certificate[0]: key: "), "{e}");
    }

    /// Two handshakes in memory from one client configuration: whether the second resumed.
    fn second_resumes(spec: &TlsSpec, version: &'static rustls::SupportedProtocolVersion) -> bool {
        use rustls::pki_types::ServerName;
        let server = server_config(spec).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(include_bytes!("../tests/tls/ca.pem")).unwrap())
            .unwrap();
        let client = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let mut kinds = vec![];
        for _ in 0..2 {
            let name = ServerName::try_from("www.example").unwrap();
            let mut c = ClientConnection::new(Arc::clone(&client), name).unwrap();
            let mut s = ServerConnection::new(Arc::clone(&server)).unwrap();
            for _ in 0..10 {
                let mut buf = vec![];
                while c.wants_write() {
                    c.write_tls(&mut buf).unwrap();
                }
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets().unwrap();
                let mut buf = vec![];
                while s.wants_write() {
                    s.write_tls(&mut buf).unwrap();
                }
                c.read_tls(&mut &buf[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            assert!(!c.is_handshaking() && !s.is_handshaking());
            kinds.push(s.handshake_kind());
        }
        kinds[1] == Some(rustls::HandshakeKind::Resumed)
    }

    #[test]
    fn resumption_by_ticket_or_cache_can_each_be_turned_off() {
        let v12 = &rustls::version::TLS12;
        let v13 = &rustls::version::TLS13;
        let with = |tickets, cache| {
            let mut s = spec();
            s.session_tickets = tickets;
            s.session_cache = cache;
            s
        };
        for v in [v12, v13] {
            assert!(second_resumes(&with(true, 0), v), "tickets alone");
            assert!(second_resumes(&with(false, 64), v), "the cache alone");
            assert!(
                !second_resumes(&with(false, 0), v),
                "neither: full handshakes"
            );
        }
    }
}
