//! Just enough of X.509 (RFC 5280) to read a certificate's validity period, so a
//! configuration with an expired or not yet valid certificate is refused when it is loaded,
//! and its issuer, for `sluicectl certificate list`. The certificate is otherwise checked by
//! the TLS library when the L7 pool builds its configuration.

/// One DER element at the start of `d`: (tag, contents, the rest after it).
fn element(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = d.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Seconds since 1970 of a UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let y: i64 = s.get(..2)?.parse().ok()?;
            // RFC 5280 4.1.2.5.1: 50-99 are 19xx.
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        (0x18, 14) => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mon, day, h, m, sec) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mon <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mon + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + m * 60 + sec)
}

/// The issuer and validity fields of a DER certificate's TBSCertificate.
fn fields(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, cert, _) = element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version, when present; then serial, signature algorithm, issuer; then validity.
    let (tag, _, r) = element(rest)?;
    if tag == 0xa0 {
        rest = r;
        rest = element(rest)?.2;
    } else {
        rest = r;
    }
    rest = element(rest)?.2;
    let (0x30, issuer, r) = element(rest)? else {
        return None;
    };
    let (0x30, validity, _) = element(r)? else {
        return None;
    };
    Some((issuer, validity))
}

/// The validity period of a DER certificate, as seconds since 1970: (not before, not after).
pub(crate) fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, validity) = fields(der)?;
    let (t1, v1, r) = element(validity)?;
    let (t2, v2, _) = element(r)?;
    Some((time(t1, v1)?, time(t2, v2)?))
}

/// The issuer of a DER certificate as `CN=…, O=…` (the attributes people read, in the
/// certificate's order; others left out).
pub(crate) fn issuer(der: &[u8]) -> Option<String> {
    let (mut rdns, _) = fields(der)?;
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (0x31, mut set, rest) = element(rdns)? else {
            return None;
        };
        rdns = rest;
        while !set.is_empty() {
            let (0x30, atv, rest) = element(set)? else {
                return None;
            };
            set = rest;
            let (0x06, oid, value) = element(atv)? else {
                return None;
            };
            let (tag, text, _) = element(value)?;
            let name = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => continue,
            };
            // UTF8String, PrintableString, T61String, IA5String.
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                parts.push(format!("{name}={}", String::from_utf8_lossy(text)));
            }
        }
    }
    Some(parts.join(", "))
}

/// `secs` since 1970 as `YYYY-MM-DD` (for messages).
pub fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let mon = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(mon <= 2);
    format!("{year:04}-{mon:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn reads_the_validity_of_the_test_certificates() {
        // `openssl x509 -noout -dates` of l7-offload/tests/tls/www.pem: notBefore Dec 1
        // 17:26:29 2026 GMT, notAfter Nov 7 17:26:29 2126 GMT (make-certs.sh run again
        // changes them).
        let pem = include_bytes!("../../../l7-offload/tests/tls/www.pem");
        let der = CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        let (from, until) = validity(&der).unwrap();
        assert_eq!(date(from), "2026-12-01");
        assert_eq!(date(until), "2126-11-07");
        assert_eq!(until - from, 36_500 * 86_400);
        assert_eq!(from % 86_400, 17 * 3_600 + 26 * 60 + 29);
        assert_eq!(issuer(&der).as_deref(), Some("CN=sluice test CA"));
        for n in 0..der.len() {
            // Every truncation is None or a string, never a panic.
            let _ = issuer(&der[..n]);
        }
    }

    #[test]
    fn times_and_truncations() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(time(0x17, b"701301000000Z"), None);
        assert_eq!(time(0x17, b"700101000000"), None);
        let pem = include_bytes!("../../../l7-offload/tests/tls/img.pem");
        let der = CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        for n in 0..der.len() {
            // Never a panic, and no period from a cut certificate.
            assert_eq!(validity(&der[..n]), None, "{n}");
        }
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_868_800), "2000-03-01");
    }
}
