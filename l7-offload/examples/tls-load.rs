//! A TLS load generator for `scripts/bench-l7.sh`: N connections at once, each a loop of
//! connect, TLS 1.3 handshake, one `GET` with `Connection: close`, read to the end, close —
//! so its requests/s are handshakes/s. It uses rustls because wrk's OpenSSL 3 client spends
//! about a millisecond of its core per handshake, which made every handshake benchmark on
//! this two-core machine measure the client, not the proxies.
//!
//! To keep the client's cost per handshake low it does not verify the server's certificate
//! or its handshake signature (the servers are the test's own, and both proxies face the
//! same client), and it offers X25519 only (rustls's default would also send a post-quantum
//! key share, which OpenSSL 3.0, and so HAProxy, does not take). With `--resume` it resumes
//! its sessions (TLS 1.3 tickets); without, every handshake is a full one. With
//! `--keepalive` each connection is made once and carries one request after another (its
//! requests/s are HTTPS keep-alive requests/s), reading each response by its
//! Content-Length.
//!
//! Usage: tls-load ADDR:PORT SNI [--conns N] [--secs S] [--resume | --keepalive]
//! Prints: `requests N errors E seconds S rps R p50_ms A p99_ms B resumed K`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Takes any certificate and signature: a load generator's shortcut, never a proxy's.
#[derive(Debug)]
struct TrustAnything;

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ED25519,
        ]
    }
}

/// One request on a new connection; whether its handshake resumed.
fn one(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    request: &[u8],
) -> std::io::Result<bool> {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = ClientConnection::new(Arc::clone(cfg), name.clone())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    conn.writer().write_all(request)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0u8; 4096];
    let (mut got, mut ok) = (0, false);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if got == 0 {
                    ok = buf[..n].starts_with(b"HTTP/1.1 200");
                }
                got += n;
            }
            // A server that closes without close_notify after its response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    if !ok {
        return Err(std::io::Error::other("no 200 response"));
    }
    Ok(conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

/// Requests one after another on one connection until `stop`: their durations, and errors.
fn keep_alive(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    request: &[u8],
    stop: &AtomicBool,
) -> (Vec<Duration>, u64) {
    let (mut times, mut errors) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            errors += 1;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(mut conn) = ClientConnection::new(Arc::clone(cfg), name.clone()) else {
            errors += 1;
            continue;
        };
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut pending: Vec<u8> = Vec::new();
        'conn: while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if tls.write_all(request).is_err() {
                errors += 1;
                break;
            }
            // Read one response: its head, then Content-Length bytes of body.
            let mut buf = [0u8; 4096];
            let need = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if !head.starts_with("http/1.1 200") {
                        errors += 1;
                        break 'conn;
                    }
                    break end + 4 + len;
                }
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        break 'conn;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            };
            while pending.len() < need {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        break 'conn;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
            pending.drain(..need);
            times.push(t.elapsed());
        }
    }
    (times, errors)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tls-load ADDR:PORT SNI [--conns N] [--secs S] [--resume]";
    let (Some(addr), Some(sni)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("tls-load: `{addr}` is not ADDR:PORT ({e})\n{usage}");
        std::process::exit(2)
    });
    let flag = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
    };
    let conns: usize = flag("--conns").map_or(100, |v| v.parse().expect("--conns N"));
    let secs: f64 = flag("--secs").map_or(10.0, |v| v.parse().expect("--secs S"));
    let resume = args.iter().any(|a| a == "--resume");
    let keepalive = args.iter().any(|a| a == "--keepalive");

    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    let cfg = Arc::new(cfg);
    let name = ServerName::try_from(sni.clone()).expect("SNI: a DNS name");
    let request = if keepalive {
        format!("GET / HTTP/1.1\r\nHost: {sni}\r\n\r\n")
    } else {
        format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (cfg, name, request, stop) = (
                Arc::clone(&cfg),
                name.clone(),
                request.clone().into_bytes(),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                if keepalive {
                    let (times, errors) = keep_alive(addr, &cfg, &name, &request, &stop);
                    return (times, errors, 0);
                }
                let (mut times, mut errors, mut resumed) = (Vec::new(), 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match one(addr, &cfg, &name, &request) {
                        Ok(r) => {
                            times.push(t.elapsed());
                            resumed += u64::from(r);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (times, errors, resumed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (mut times, mut errors, mut resumed) = (Vec::new(), 0, 0);
    for w in workers {
        let (t, e, r) = w.join().expect("a load thread panicked");
        times.extend(t);
        errors += e;
        resumed += r;
    }
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests {} errors {errors} seconds {elapsed:.2} rps {:.0} p50_ms {:.3} p99_ms {:.3} resumed {resumed}",
        times.len(),
        times.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
