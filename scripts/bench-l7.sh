#!/usr/bin/env bash
# The L7 benchmark: HTTP/1.1 through sluice's L7 pool on AF_XDP, and through HAProxy
# (Debian's, `mode http`, keep-alive and `http-reuse always` to the backends), in the same
# script, on the same namespaces (tests/e2e/topology.sh), backends, client and cores:
#
#   core 1   the proxy under test: sluice's poll loop running its one L7 worker, or HAProxy's
#            one thread (nbthread 1, cpu-map)
#   core 0   the client (wrk) and the two backends (HAProxy answering a small body with
#            `http-request return`, so the backends are not the limit)
#
# Scenarios: keep-alive from 100 connections; a new client connection per request
# (`Connection: close`) from 100; keep-alive from 10,000 connections; and over TLS 1.3
# (X25519, with the test certificates of l7-offload/tests/tls): keep-alive from 100
# connections (tlska100), and a new TLS connection per request from 100, whose requests/s
# are handshakes/s — resumed (tlsresume100: the client offers a ticket of an earlier session
# on every new connection, and both proxies take it), full with ECDSA P-256 (tlsfull100) and full
# with RSA-2048 (tlsrsa100), these two on ports where both proxies neither issue tickets
# nor cache sessions (sluice: session_tickets = false, session_cache = 0; HAProxy:
# no-tls-tickets, tune.ssl.cachesize 0). The share of handshakes that resumed is counted on
# each proxy and reported (tls_resumed). The TLS scenarios use our own rustls client
# (l7-offload/examples/tls-load.rs, 100 threads; --keepalive for tlska100) instead of wrk,
# whose OpenSSL 3 client spends about a millisecond of core 0 per handshake, and most of it
# per keep-alive request, and so was the limit of every such run;
# the share of core 0 in use is reported for every run (client_core_busy: near 1, the
# client side is the limit). Each runs RUNS times,
# alternating sluice and HAProxy, and reports the median and the spread (min–max) of
# requests/s and of wrk's p50 and p99 latency, and the upstream reuse the backends saw
# (1 - connections/requests, from their own counters), with sluice's figures as ratios of
# HAProxy's. Writes results.csv and summary.txt to OUTDIR. The many-connections scenario
# uses 10,000 connections where the descriptor limit lets HAProxy hold them (two each); it
# says how many it used.
#
# Usage: scripts/bench-l7.sh [-s SECONDS] [-r RUNS] [-o OUTDIR]
#                            [-c "ka100 close100 ka10k tlska100 tlsresume100 tlsfull100 tlsrsa100"]
# (BENCH_L7_DEBUG=1 also prints the client's TCP retransmissions and sluice's exit report;
# SLUICE_IDLE=yield or spin runs sluice's poll loop under that dataplane.idle policy instead
# of the default sleep.)
# Needs root; installs haproxy and wrk if missing. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=10; runs=3; out=target/bench-l7
scenarios="ka100 close100 ka10k tlska100 tlsresume100 tlsfull100 tlsrsa100"
while getopts "s:r:o:c:" o; do
  case $o in
    s) secs=$OPTARG ;; r) runs=$OPTARG ;; o) out=$OPTARG ;; c) scenarios=$OPTARG ;;
    *) sed -n '2,32p' "$0"; exit 2 ;;
  esac
done
ensure_packages haproxy wrk iproute2 ethtool curl python3 libxdp-dev libbpf-dev clang
# HAProxy needs two descriptors per proxied connection; raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
fds=$(ulimit -n)
# The many-connections scenario: 10,000, or as many as HAProxy can hold under this limit.
many=$(( fds / 2 - 500 < 10000 ? fds / 2 - 500 : 10000 ))
mkdir -p "$out"; out=$(cd "$out" && pwd)
work=$(mktemp -d); pfx=bl7
certs=$(pwd)/l7-offload/tests/tls
ns() { ip netns exec "$pfx-$1" "${@:2}"; }
cleanup() {
  pkill -INT -f "sluice run --config $work" 2>/dev/null || true
  sleep 1
  bash tests/e2e/topology.sh down "$pfx" || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build -q --release -p sluice -p ctl --bin sluice --bin sluicectl
cargo build -q --release -p l7-offload --example tls-load
bash tests/e2e/topology.sh up "$pfx" 2 "$work" snat > /dev/null

for i in 1 2; do
  cat > "$work/b$i.cfg" <<EOF
global
  nbthread 1
  maxconn $many
  stats socket $work/b$i.sock mode 600 level admin
defaults
  mode http
  timeout client 120s
  timeout server 120s
  timeout connect 5s
  timeout http-keep-alive 120s
frontend f
  bind 10.99.0.1$i:8082
  maxconn $many
  http-request return status 200 content-type text/plain string "b$i"
EOF
  ns "b$i" taskset -c 0 haproxy -D -p "$work/b$i.pid" -f "$work/b$i.cfg" 2> >(grep -v NOTICE >&2)
done
cat > "$work/sluice.toml" <<EOF
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
snat_ports = [1024, 9999]
[dataplane]
driver = "xdp"
cores = [1]
idle = "${SLUICE_IDLE:-sleep}"
[dataplane.xdp]
interface = "eth0"
# Sized for the many-connections scenario, where every connection has a request in flight
# and they queue in front of the busy core: the receive ring holds them (at the default 2,048
# most were dropped and waited a retransmission timeout), and the pool keeps as many idle
# upstream connections as there are requests at once.
ring = 16384
frames = 65536
[control]
socket = "$work/ctl.sock"
[l7]
cores = [1]
ring = 16384
max_idle_per_backend = 8192
# 10,000 connections at once need more than the default 4,536 source ports per backend.
upstream_ports = [10000, 65535]
[[service]]
name = "site"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"
[service.limits]
connections = 60000
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.11:8082"
[[service.pool.backend]]
address = "10.99.0.12:8082"
[[service]]
name = "secure"
vip = "10.99.0.100:443"
protocol = "tcp"
forwarding = "l7"
l7 = "tls"
default_pool = "www"
[service.limits]
connections = 60000
[[service.certificate]]
names = ["www.example"]
cert = "$certs/www.pem"
key = "$certs/www.key"
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.11:8082"
[[service.pool.backend]]
address = "10.99.0.12:8082"
EOF
# Full handshakes only: the same service without resumption, with the P-256 certificate on
# 8443 and the RSA-2048 one on 9443.
for p in "full 8443 www" "rsa 9443 rsa"; do
  read -r name port cert <<< "$p"
  cat >> "$work/sluice.toml" <<EOF
[[service]]
name = "$name"
vip = "10.99.0.100:$port"
protocol = "tcp"
forwarding = "l7"
l7 = "tls"
default_pool = "www"
[service.limits]
connections = 60000
[service.tls]
session_tickets = false
session_cache = 0
[[service.certificate]]
names = ["www.example"]
cert = "$certs/$cert.pem"
key = "$certs/$cert.key"
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.11:8082"
[[service.pool.backend]]
address = "10.99.0.12:8082"
EOF
done
# HAProxy takes the chain and key in one file.
cat "$certs/www.pem" "$certs/www.key" > "$work/www-combined.pem"
cat "$certs/rsa.pem" "$certs/rsa.key" > "$work/rsa-combined.pem"
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  cpu-map 1/1 1
  maxconn $many
  stats socket $work/lb.sock mode 600 level admin
  # No session cache: tlsfull100 and tlsrsa100 then make full handshakes (tlsresume100
  # resumes by ticket, which this does not touch).
  tune.ssl.cachesize 0
defaults
  mode http
  timeout client 120s
  timeout server 120s
  timeout connect 5s
  timeout http-keep-alive 120s
  option http-keep-alive
  http-reuse always
frontend f
  bind 10.99.0.100:80
  maxconn $many
  default_backend www
frontend tls
  bind 10.99.0.100:443 ssl crt $work/www-combined.pem alpn http/1.1
  maxconn $many
  default_backend www
frontend tlsfull
  bind 10.99.0.100:8443 ssl crt $work/www-combined.pem alpn http/1.1 no-tls-tickets
  bind 10.99.0.100:9443 ssl crt $work/rsa-combined.pem alpn http/1.1 no-tls-tickets
  maxconn $many
  default_backend www
backend www
  balance roundrobin
  server b1 10.99.0.11:8082
  server b2 10.99.0.12:8082
EOF

# Connections and requests both backends have counted so far.
backend_counts() {
  python3 - "$work" <<'PY'
import socket, sys
c = r = 0
for i in (1, 2):
    s = socket.socket(socket.AF_UNIX); s.connect(f"{sys.argv[1]}/b{i}.sock")
    s.sendall(b"show info\n"); data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    for line in data.decode().splitlines():
        k, _, v = line.partition(": ")
        if k == "CumConns": c += int(v)
        if k == "CumReq": r += int(v)
print(c, r)
PY
}

start_proxy() {
  case $1 in
    sluice)
      ns lb ./target/release/sluice run --config "$work/sluice.toml" > "$work/sluice.log" 2>&1 &
      for _ in $(seq 100); do [ -S "$work/ctl.sock" ] && break; sleep 0.1; done ;;
    haproxy)
      ns lb ip addr add 10.99.0.100/24 dev eth0
      ns lb ip route add 10.98.0.0/24 dev eth0
      ns lb haproxy -D -p "$work/lb.pid" -f "$work/haproxy.cfg" 2> >(grep -v NOTICE >&2) ;;
  esac
  for _ in $(seq 50); do ns cli curl -s -m 1 -o /dev/null http://10.99.0.100/ && break; sleep 0.1; done
  # Warm up: every backend answered once (sluice resolves their MACs by ARP on first use).
  for _ in $(seq 10); do
    ns cli curl -s -m 2 -o /dev/null http://10.99.0.100/ || { echo "bench-l7: $1 does not answer" >&2; exit 1; }
  done
}

stop_proxy() {
  case $1 in
    sluice) pkill -INT -f "sluice run --config $work" || true
            for _ in $(seq 100); do pgrep -f "sluice run --config $work" > /dev/null || break; sleep 0.1; done
            rm -f "$work/ctl.sock" ;;
    haproxy) kill "$(cat "$work/lb.pid")" || true; sleep 0.5
             ns lb ip addr flush dev eth0 ;;
  esac
}

# TLS handshakes the proxy under test has completed so far, and how many of those resumed a
# session: sluice's counters (sluicectl stats); HAProxy's CumSslConns and, as it counts no
# total of resumptions, the share of the last second that resumed (SslFrontendSessionReuse_pct)
# times the handshakes, taken at the end of the run.
tls_counts() {
  case $1 in
    sluice) ./target/release/sluicectl --socket "$work/ctl.sock" --json stats | python3 -c '
import json, sys
l7 = json.load(sys.stdin)["result"]["l7"]
print(sum(l7["tls_handshakes"].values()), l7["tls_resumed"])' ;;
    haproxy) python3 - "$work/lb.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"show info\n"); data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
info = dict(l.split(": ", 1) for l in data.decode().splitlines() if ": " in l)
n = int(info.get("CumSslConns", "0"))
print(n, round(n * float(info.get("SslFrontendSessionReuse_pct", "0")) / 100))
PY
    ;;
  esac
}

# Busy and total jiffies of core 0 (the client's and the backends') and of core 1 (the
# proxy's), from /proc/stat.
core0() { core_jiffies 0; }
core1() { core_jiffies 1; }

# One wrk run of scenario $1 through proxy $2: prints "rps p50_ms p99_ms reuse tls_resumed
# client_core_busy proxy_core_busy" (the shares of cores 0 and 1 in use: near 1, that side
# is the limit — except sluice's, whose idle poll loop yields but stays runnable, so its core
# reads as busy whether it is or not).
measure() {
  local scenario=$1 proxy=$2 conns args=() url=http://10.99.0.100/ load=()
  case $scenario in
    ka100) conns=100 ;;
    close100) conns=100; args=(-H "Connection: close") ;;
    ka10k) conns=$many ;;
    tlska100) load=(10.99.0.100:443 www.example --conns 100 --keepalive) ;;
    tlsresume100) load=(10.99.0.100:443 www.example --conns 100 --resume) ;;
    tlsfull100) load=(10.99.0.100:8443 www.example --conns 100) ;;
    tlsrsa100) load=(10.99.0.100:9443 www.example --conns 100) ;;
  esac
  read -r c0 r0 < <(backend_counts)
  read -r h0 s0 < <(tls_counts "$proxy")
  read -r b0 t0 < <(core0)
  read -r p0 q0 < <(core1)
  if [ ${#load[@]} -gt 0 ]; then
    ns cli taskset -c 0 ./target/release/examples/tls-load "${load[@]}" --secs "$secs" > "$work/wrk.txt" 2>&1
  else
    ns cli taskset -c 0 wrk -t1 -c"$conns" -d"$secs" --timeout 10s --latency "${args[@]}" "$url" > "$work/wrk.txt" 2>&1
  fi
  read -r b1 t1 < <(core0)
  read -r p1 q1 < <(core1)
  read -r c1 r1 < <(backend_counts)
  read -r h1 s1 < <(tls_counts "$proxy")
  # HAProxy's resumption figure is of the last second, not a total.
  [ "$proxy" = haproxy ] && s0=0
  python3 - "$work/wrk.txt" $((c1 - c0)) $((r1 - r0)) $((h1 - h0)) $((s1 - s0)) $((b1 - b0)) $((t1 - t0)) $((p1 - p0)) $((q1 - q0)) <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, t, re.M)
    if not m: return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
load = re.search(r"^requests (\d+) errors (\d+) seconds \S+ rps (\S+) p50_ms (\S+) p99_ms (\S+)", t, re.M)
if load:
    # tls-load's line.
    rps, p50, p99 = float(load.group(3)), float(load.group(4)), float(load.group(5))
    if int(load.group(2)):
        print("bench-l7: errors in this run:", load.group(2), file=sys.stderr)
else:
    rps, p50, p99 = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)), ms("50%"), ms("99%")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    if errors or "Socket errors" in t:
        print("bench-l7: errors in this run:", (errors.group(0) if errors else ""), re.findall(r"Socket errors.*", t), file=sys.stderr)
conns, reqs = int(sys.argv[2]), int(sys.argv[3])
reuse = max(0.0, 1 - conns / reqs) if reqs else float("nan")
handshakes, resumed = int(sys.argv[4]), int(sys.argv[5])
share = min(1.0, resumed / handshakes) if handshakes > 100 else float("nan")
busy = int(sys.argv[6]) / int(sys.argv[7]) if int(sys.argv[7]) else float("nan")
proxy_busy = int(sys.argv[8]) / int(sys.argv[9]) if int(sys.argv[9]) else float("nan")
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {reuse:.4f} {share:.3f} {busy:.3f} {proxy_busy:.3f}")
PY
}

echo "bench-l7: ${secs} s per run, $runs runs each, many-connections scenario with $many connections (descriptor limit $fds)"
echo "scenario,proxy,run,requests_per_s,p50_ms,p99_ms,upstream_reuse,tls_resumed,client_core_busy,proxy_core_busy" > "$out/results.csv"
# Round by round, every scenario in turn, so that a ratio between two scenarios (the
# many-connections rate against the 100-connection one) compares runs minutes apart, not a
# quarter of an hour apart on a machine whose speed drifts.
for r in $(seq "$runs"); do
  for sc in $scenarios; do
    for proxy in sluice haproxy; do
      start_proxy "$proxy"
      ns cli nstat -n
      read -r rps p50 p99 reuse resumed busy pbusy < <(measure "$sc" "$proxy")
      [ -n "${BENCH_L7_DEBUG:-}" ] && { ns cli nstat | grep -E "SynRetrans|TCPTimeouts|RetransSegs" >&2 || true; }
      stop_proxy "$proxy"
      [ -n "${BENCH_L7_DEBUG:-}" ] && [ "$proxy" = sluice ] && { tail -4 "$work/sluice.log" >&2 || true; }
      echo "$sc,$proxy,$r,$rps,$p50,$p99,$reuse,$resumed,$busy,$pbusy" >> "$out/results.csv"
      printf '%-12s %-8s run %d: %8s req/s  p50 %7s ms  p99 %8s ms  upstream reuse %s  TLS resumed %s  cores busy %s %s\n' "$sc" "$proxy" "$r" "$rps" "$p50" "$p99" "$reuse" "$resumed" "$busy" "$pbusy"
    done
  done
done
python3 - "$out/results.csv" <<'PY' | tee "$out/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def col(sc, proxy, k):
    return [float(r[k]) for r in rows if r["scenario"] == sc and r["proxy"] == proxy]
print(f"{'scenario':12} {'metric':15} {'sluice median [min-max]':>28} {'haproxy median [min-max]':>28} {'ratio':>7}")
for sc in dict.fromkeys(r["scenario"] for r in rows):
    metrics = [("requests_per_s", "requests/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("upstream_reuse", "upstream reuse"), ("client_core_busy", "client core busy"), ("proxy_core_busy", "proxy core busy")]
    if sc.startswith("tls") and sc != "tlska100":
        metrics.append(("tls_resumed", "TLS resumed"))
    for k, name in metrics:
        s, h = col(sc, "sluice", k), col(sc, "haproxy", k)
        ms, mh = statistics.median(s), statistics.median(h)
        fmt = (lambda v: f"{v:.0f}") if k == "requests_per_s" else (lambda v: f"{v:.3f}")
        ratio = ms / mh if mh else float("nan")
        print(f"{sc:12} {name:15} {fmt(ms):>10} [{fmt(min(s))}-{fmt(max(s))}]".ljust(58) + f"{fmt(mh):>10} [{fmt(min(h))}-{fmt(max(h))}]".rjust(28) + f" {ratio:7.2f}")
# Whether cost stays flat with the number of connections: each round's many-connections rate
# over the same round's 100-connection rate (the two ran back to back).
runs = sorted({int(r["run"]) for r in rows})
def rate(sc, proxy, run):
    v = [float(r["requests_per_s"]) for r in rows if r["scenario"] == sc and r["proxy"] == proxy and int(r["run"]) == run]
    return v[0] if v else None
for proxy in ("sluice", "haproxy"):
    pairs = [(rate("ka10k", proxy, n), rate("ka100", proxy, n)) for n in runs]
    flat = [a / b for a, b in pairs if a and b]
    if flat:
        print(f"{'flat cost':12} {proxy + ' ka10k/ka100':24} median {statistics.median(flat):.2f} [{min(flat):.2f}-{max(flat):.2f}] per round: " + " ".join(f"{v:.2f}" for v in flat))
PY
