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
# (`Connection: close`) from 100; keep-alive from 10,000 connections; and over TLS (the test
# certificates of l7-offload/tests/tls, P-256, TLS 1.3 as wrk negotiates it): keep-alive
# from 100 connections (tlska100), and a new TLS connection, so a full handshake, per request
# from 100 (tlsnew100: its requests/s are handshakes/s). Each runs RUNS times,
# alternating sluice and HAProxy, and reports the median and the spread (min–max) of
# requests/s and of wrk's p50 and p99 latency, and the upstream reuse the backends saw
# (1 - connections/requests, from their own counters), with sluice's figures as ratios of
# HAProxy's. Writes results.csv and summary.txt to OUTDIR. The many-connections scenario
# uses 10,000 connections where the descriptor limit lets HAProxy hold them (two each); it
# says how many it used.
#
# Usage: scripts/bench-l7.sh [-s SECONDS] [-r RUNS] [-o OUTDIR]
#                            [-c "ka100 close100 ka10k tlska100 tlsnew100"]
# (BENCH_L7_DEBUG=1 also prints the client's TCP retransmissions and sluice's exit report;
# SLUICE_IDLE=spin runs sluice's poll loop without yielding when idle.)
# Needs root; installs haproxy and wrk if missing. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=10; runs=3; out=target/bench-l7; scenarios="ka100 close100 ka10k tlska100 tlsnew100"
while getopts "s:r:o:c:" o; do
  case $o in
    s) secs=$OPTARG ;; r) runs=$OPTARG ;; o) out=$OPTARG ;; c) scenarios=$OPTARG ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
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
idle = "${SLUICE_IDLE:-yield}"
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
# HAProxy takes the chain and key in one file.
cat "$certs/www.pem" "$certs/www.key" > "$work/www-combined.pem"
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  cpu-map 1/1 1
  maxconn $many
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

# One wrk run: prints "rps p50_ms p99_ms reuse".
measure() {
  local scenario=$1 conns args=() url=http://10.99.0.100/
  case $scenario in
    ka100) conns=100 ;;
    close100) conns=100; args=(-H "Connection: close") ;;
    ka10k) conns=$many ;;
    tlska100) conns=100; url=https://10.99.0.100/ ;;
    tlsnew100) conns=100; url=https://10.99.0.100/; args=(-H "Connection: close") ;;
  esac
  read -r c0 r0 < <(backend_counts)
  ns cli taskset -c 0 wrk -t1 -c"$conns" -d"$secs" --timeout 10s --latency "${args[@]}" "$url" > "$work/wrk.txt" 2>&1
  read -r c1 r1 < <(backend_counts)
  python3 - "$work/wrk.txt" $((c1 - c0)) $((r1 - r0)) <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, t, re.M)
    if not m: return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errors or "Socket errors" in t:
    print("bench-l7: errors in this run:", (errors.group(0) if errors else ""), re.findall(r"Socket errors.*", t), file=sys.stderr)
conns, reqs = int(sys.argv[2]), int(sys.argv[3])
reuse = 1 - conns / reqs if reqs else float("nan")
print(f"{rps:.0f} {ms('50%'):.3f} {ms('99%'):.3f} {reuse:.4f}")
PY
}

echo "bench-l7: ${secs} s per run, $runs runs each, many-connections scenario with $many connections (descriptor limit $fds)"
echo "scenario,proxy,run,requests_per_s,p50_ms,p99_ms,upstream_reuse" > "$out/results.csv"
for sc in $scenarios; do
  for r in $(seq "$runs"); do
    for proxy in sluice haproxy; do
      start_proxy "$proxy"
      ns cli nstat -n
      read -r rps p50 p99 reuse < <(measure "$sc")
      [ -n "${BENCH_L7_DEBUG:-}" ] && { ns cli nstat | grep -E "SynRetrans|TCPTimeouts|RetransSegs" >&2 || true; }
      stop_proxy "$proxy"
      [ -n "${BENCH_L7_DEBUG:-}" ] && [ "$proxy" = sluice ] && { tail -4 "$work/sluice.log" >&2 || true; }
      echo "$sc,$proxy,$r,$rps,$p50,$p99,$reuse" >> "$out/results.csv"
      printf '%-9s %-8s run %d: %8s req/s  p50 %7s ms  p99 %8s ms  upstream reuse %s\n' "$sc" "$proxy" "$r" "$rps" "$p50" "$p99" "$reuse"
    done
  done
done
python3 - "$out/results.csv" <<'PY' | tee "$out/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def col(sc, proxy, k):
    return [float(r[k]) for r in rows if r["scenario"] == sc and r["proxy"] == proxy]
print(f"{'scenario':9} {'metric':15} {'sluice median [min-max]':>28} {'haproxy median [min-max]':>28} {'ratio':>7}")
for sc in dict.fromkeys(r["scenario"] for r in rows):
    for k, name in [("requests_per_s", "requests/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("upstream_reuse", "upstream reuse")]:
        s, h = col(sc, "sluice", k), col(sc, "haproxy", k)
        ms, mh = statistics.median(s), statistics.median(h)
        fmt = (lambda v: f"{v:.0f}") if k == "requests_per_s" else (lambda v: f"{v:.3f}")
        ratio = ms / mh if mh else float("nan")
        print(f"{sc:9} {name:15} {fmt(ms):>10} [{fmt(min(s))}-{fmt(max(s))}]".ljust(55) + f"{fmt(mh):>10} [{fmt(min(h))}-{fmt(max(h))}]".rjust(28) + f" {ratio:7.2f}")
PY
