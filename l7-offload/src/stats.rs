//! One shard's counters. The shard owns them (nothing shared while it works) and publishes a
//! copy every few milliseconds for the control plane to sum.

/// Errors the proxy answers or counts, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Error {
    /// 400: the request head or a chunked body broke RFC 9112.
    BadRequest,
    /// 404: no route, no default pool.
    NoRoute,
    /// 413: the body is larger than `limits.body_bytes`.
    BodyTooLarge,
    /// 431: the head is larger than `limits.header_bytes` or has too many fields.
    HeadTooLarge,
    /// 502: the backend refused, reset, closed early or answered garbage.
    BackendFailed,
    /// 503: no backend in the pool takes requests.
    NoBackend,
    /// 504: no response byte within `timeouts.backend_response_ms`.
    BackendTimeout,
    /// The client sent no complete head within `timeouts.client_header_ms` (closed).
    ClientHeaderTimeout,
    /// A SYN past `limits.connections` (answered with a RST).
    ConnectionLimit,
    /// No free source port toward the backend in this shard's range.
    UpstreamPortsExhausted,
    /// A TLS handshake failed (no shared version, cipher suite or ALPN protocol, a bad
    /// message); the client got an alert.
    TlsHandshake,
    /// A bad TLS record after the handshake; the connection was closed with an alert.
    TlsRecord,
    /// Re-encryption: the TLS handshake with a backend failed (its certificate did not
    /// verify, no shared version), or a record from it was bad.
    UpstreamTls,
    /// tls-passthrough: the first bytes were not a well-formed ClientHello, or one larger
    /// than `limits.header_bytes` (the connection was reset).
    TlsClientHello,
}

impl L7Error {
    pub const ALL: [L7Error; 14] = [
        L7Error::BadRequest,
        L7Error::NoRoute,
        L7Error::BodyTooLarge,
        L7Error::HeadTooLarge,
        L7Error::BackendFailed,
        L7Error::NoBackend,
        L7Error::BackendTimeout,
        L7Error::ClientHeaderTimeout,
        L7Error::ConnectionLimit,
        L7Error::UpstreamPortsExhausted,
        L7Error::TlsHandshake,
        L7Error::TlsRecord,
        L7Error::UpstreamTls,
        L7Error::TlsClientHello,
    ];

    pub fn name(self) -> &'static str {
        match self {
            L7Error::BadRequest => "bad_request",
            L7Error::NoRoute => "no_route",
            L7Error::BodyTooLarge => "body_too_large",
            L7Error::HeadTooLarge => "head_too_large",
            L7Error::BackendFailed => "backend_failed",
            L7Error::NoBackend => "no_backend",
            L7Error::BackendTimeout => "backend_timeout",
            L7Error::ClientHeaderTimeout => "client_header_timeout",
            L7Error::ConnectionLimit => "connection_limit",
            L7Error::UpstreamPortsExhausted => "upstream_ports_exhausted",
            L7Error::TlsHandshake => "tls_handshake",
            L7Error::TlsRecord => "tls_record",
            L7Error::UpstreamTls => "upstream_tls",
            L7Error::TlsClientHello => "tls_client_hello",
        }
    }

    /// The status the client gets, if the proxy answers at all.
    pub fn status(self) -> Option<u16> {
        match self {
            L7Error::BadRequest => Some(400),
            L7Error::NoRoute => Some(404),
            L7Error::BodyTooLarge => Some(413),
            L7Error::HeadTooLarge => Some(431),
            L7Error::BackendFailed | L7Error::UpstreamPortsExhausted => Some(502),
            L7Error::NoBackend => Some(503),
            L7Error::BackendTimeout => Some(504),
            L7Error::ClientHeaderTimeout
            | L7Error::ConnectionLimit
            | L7Error::TlsHandshake
            | L7Error::TlsRecord
            | L7Error::UpstreamTls
            | L7Error::TlsClientHello => None,
        }
    }
}

/// The index of a status code's class (1xx is 0), for codes 100–599.
pub fn status_class(code: u16) -> Option<usize> {
    (100..600)
        .contains(&code)
        .then(|| (code / 100 - 1) as usize)
}

/// Upper bounds (seconds) of the request duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one backend of one pool, as one shard saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendRequests {
    pub requests: u64,
    pub in_flight: u64,
    pub failures: u64,
    /// Times passive health ejected it.
    pub ejections: u64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
}

/// Requests of one service, as one shard answered them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRequests {
    /// Responses by class: 1xx … 5xx.
    pub status: [u64; 5],
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Segments lost for want of a free frame, or of room in a worker's return ring.
    pub frames_no_buffer: u64,
    pub frames_ring_full: u64,
    /// Frames that were not IP/TCP for the pool (dropped).
    pub frames_not_tcp: u64,
    /// Segments of no connection (answered with a RST by the stack).
    pub segments_no_connection: u64,
    pub client_connections: u64,
    pub clients_accepted: u64,
    pub upstream_connections: u64,
    pub upstream_opened: u64,
    pub upstream_reused: u64,
    pub requests: u64,
    pub retries: u64,
    /// Connections reset when the daemon stopped.
    pub reset_at_stop: u64,
    /// Backends ejected by passive health.
    pub ejections: u64,
    /// Completed TLS handshakes: TLS 1.2, TLS 1.3.
    pub tls_handshakes: [u64; 2],
    /// Of those, resumed sessions (a ticket or the session cache).
    pub tls_resumed: u64,
    /// tls-passthrough connections relayed to a backend (after their ClientHello).
    pub tls_passthrough: u64,
    /// Re-encryption: completed TLS handshakes with backends, and of those resumed.
    pub upstream_tls_handshakes: u64,
    pub upstream_tls_resumed: u64,
    /// Responses by class sent to clients (the proxy's own errors included).
    pub status: [u64; 5],
    pub errors: [u64; L7Error::ALL.len()],
    /// Request durations (first head byte handled to last response byte sent): counts per
    /// bucket of [`DURATION_BUCKETS`] and one for slower, and their sum in seconds.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum: f64,
    /// Per service, per pool, per backend.
    pub backends: Vec<Vec<Vec<BackendRequests>>>,
    /// Requests per service and route; the last entry of each service counts its default
    /// pool's.
    pub routes: Vec<Vec<u64>>,
    /// Responses by class (1xx … 5xx) per service and route, laid out as `routes`.
    pub route_status: Vec<Vec<[u64; 5]>>,
    /// Per service: status classes and durations.
    pub services: Vec<ServiceRequests>,
}

impl ShardStats {
    pub fn error(&mut self, e: L7Error) {
        if let Some(i) = L7Error::ALL.iter().position(|&x| x == e) {
            self.errors[i] += 1;
        }
    }

    pub fn errors_of(&self, e: L7Error) -> u64 {
        L7Error::ALL
            .iter()
            .position(|&x| x == e)
            .map_or(0, |i| self.errors[i])
    }

    /// A response with status `code` to a request of service `svc`.
    pub fn status(&mut self, svc: usize, code: u16) {
        let Some(i) = status_class(code) else { return };
        self.status[i] += 1;
        if let Some(s) = self.services.get_mut(svc) {
            s.status[i] += 1;
        }
    }

    /// A response with status `code` on route slot `route` of service `svc`.
    pub fn route_status(&mut self, svc: usize, route: usize, code: u16) {
        if let (Some(i), Some(c)) = (
            status_class(code),
            self.route_status
                .get_mut(svc)
                .and_then(|r| r.get_mut(route)),
        ) {
            c[i] += 1;
        }
    }

    /// A request of service `svc` that took `secs`.
    pub fn duration(&mut self, svc: usize, secs: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[i] += 1;
        self.duration_sum += secs;
        if let Some(s) = self.services.get_mut(svc) {
            s.duration_buckets[i] += 1;
            s.duration_sum += secs;
        }
    }

    /// Adds `o` into `self` (summing shards).
    pub fn add(&mut self, o: &ShardStats) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            frames_in,
            frames_out,
            frames_no_buffer,
            frames_ring_full,
            frames_not_tcp,
            segments_no_connection,
            client_connections,
            clients_accepted,
            upstream_connections,
            upstream_opened,
            upstream_reused,
            requests,
            retries,
            reset_at_stop,
            ejections,
            tls_resumed,
            tls_passthrough,
            upstream_tls_handshakes,
            upstream_tls_resumed,
            duration_sum
        );
        for (a, b) in self.tls_handshakes.iter_mut().zip(o.tls_handshakes) {
            *a += b;
        }
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        for (a, b) in self.duration_buckets.iter_mut().zip(o.duration_buckets) {
            *a += b;
        }
        if self.services.len() < o.services.len() {
            self.services
                .resize(o.services.len(), ServiceRequests::default());
        }
        for (a, b) in self.services.iter_mut().zip(&o.services) {
            for (x, y) in a.status.iter_mut().zip(b.status) {
                *x += y;
            }
            for (x, y) in a.duration_buckets.iter_mut().zip(b.duration_buckets) {
                *x += y;
            }
            a.duration_sum += b.duration_sum;
        }
        if self.route_status.len() < o.route_status.len() {
            self.route_status.resize(o.route_status.len(), Vec::new());
        }
        for (a, b) in self.route_status.iter_mut().zip(&o.route_status) {
            if a.len() < b.len() {
                a.resize(b.len(), [0; 5]);
            }
            for (x, y) in a.iter_mut().zip(b) {
                for (p, q) in x.iter_mut().zip(y) {
                    *p += q;
                }
            }
        }
        if self.routes.len() < o.routes.len() {
            self.routes.resize(o.routes.len(), Vec::new());
        }
        for (a, b) in self.routes.iter_mut().zip(&o.routes) {
            if a.len() < b.len() {
                a.resize(b.len(), 0);
            }
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        if self.backends.len() < o.backends.len() {
            self.backends.resize(o.backends.len(), Vec::new());
        }
        for (sa, sb) in self.backends.iter_mut().zip(&o.backends) {
            if sa.len() < sb.len() {
                sa.resize(sb.len(), Vec::new());
            }
            for (pa, pb) in sa.iter_mut().zip(sb) {
                if pa.len() < pb.len() {
                    pa.resize(pb.len(), BackendRequests::default());
                }
                for (a, b) in pa.iter_mut().zip(pb) {
                    a.requests += b.requests;
                    a.in_flight += b.in_flight;
                    a.failures += b.failures;
                    a.ejections += b.ejections;
                    for (x, y) in a.status.iter_mut().zip(b.status) {
                        *x += y;
                    }
                }
            }
        }
    }

    /// The sum of the copies the shards published (`lock` waits the few microseconds a
    /// shard holds one while it copies).
    pub fn sum_published(all: &[std::sync::Mutex<ShardStats>]) -> ShardStats {
        let mut sum = ShardStats::default();
        for m in all {
            if let Ok(s) = m.lock() {
                sum.add(&s);
            }
        }
        sum
    }

    /// Upstream requests that reused a pooled connection, of all that needed one.
    pub fn reuse_ratio(&self) -> f64 {
        let all = self.upstream_opened + self.upstream_reused;
        if all == 0 {
            0.0
        } else {
            self.upstream_reused as f64 / all as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_buckets() {
        let mut a = ShardStats {
            services: vec![ServiceRequests::default(); 2],
            ..Default::default()
        };
        a.status(0, 204);
        a.status(1, 503);
        a.status(1, 99);
        a.error(L7Error::NoRoute);
        a.duration(0, 0.0001);
        a.duration(1, 0.3);
        a.duration(1, 9.0);
        a.upstream_opened = 1;
        a.upstream_reused = 3;
        a.backends = vec![vec![vec![BackendRequests {
            requests: 2,
            ..Default::default()
        }]]];
        let mut sum = ShardStats::default();
        sum.add(&a);
        sum.add(&a);
        assert_eq!(sum.status, [0, 2, 0, 0, 2]);
        assert_eq!(sum.services[1].status, [0, 0, 0, 0, 2]);
        assert_eq!(sum.services[1].duration_buckets[12], 2);
        assert_eq!(sum.services[0].duration_buckets[0], 2);
        assert_eq!(sum.errors_of(L7Error::NoRoute), 2);
        assert_eq!(sum.duration_buckets[0], 2);
        assert_eq!(sum.duration_buckets[9], 2);
        assert_eq!(sum.duration_buckets[12], 2);
        assert_eq!(sum.backends[0][0][0].requests, 4);
        assert!((sum.reuse_ratio() - 0.75).abs() < 1e-9);
    }
}
