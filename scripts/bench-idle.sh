#!/usr/bin/env bash
# What an idle sluice costs: the CPU time the whole daemon uses while no traffic comes, under
# each `dataplane.idle` policy (sleep, the default; yield; spin), on AF_XDP in the e2e
# namespaces (tests/e2e/topology.sh) with one worker on core 1 running an L4 NAT service and
# an L7 HTTP service (its L7 worker inside the poll loop, as bench-l7.sh runs it). Each policy
# runs RUNS times for SECONDS after a settling second; reports the median and the spread of
# the daemon's CPU share (user + system time over wall time, from /proc/PID/stat), where 1.0
# is one whole core. Under load the policies differ only in what a worker does between
# bursts; that is measured by `SLUICE_IDLE=POLICY scripts/bench-l7.sh`.
#
# Usage: scripts/bench-idle.sh [-s SECONDS] [-r RUNS]
# Needs root. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=10; runs=3
while getopts "s:r:" o; do
  case $o in
    s) secs=$OPTARG ;; r) runs=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
ensure_packages iproute2 ethtool python3 libxdp-dev libbpf-dev clang
work=$(mktemp -d); pfx=bidle
ns() { ip netns exec "$pfx-$1" "${@:2}"; }
cleanup() {
  pkill -INT -f "sluice run --config $work" 2>/dev/null || true
  sleep 1
  bash tests/e2e/topology.sh down "$pfx" || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build -q --release -p sluice --bin sluice
bash tests/e2e/topology.sh up "$pfx" 2 "$work" nat > /dev/null
hz=$(getconf CLK_TCK)

config() {
  cat <<EOF
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
[dataplane]
driver = "xdp"
cores = [1]
idle = "$1"
[dataplane.xdp]
interface = "eth0"
[control]
socket = "$work/ctl.sock"
[l7]
cores = [1]
[[service]]
name = "tcp"
vip = "10.99.0.100:5201"
protocol = "tcp"
forwarding = "nat"
[[service.backend]]
address = "10.99.0.11:5201"
[[service]]
name = "site"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "www"
[[service.pool]]
name = "www"
[[service.pool.backend]]
address = "10.99.0.11:8080"
EOF
}

echo "bench-idle: ${secs} s per run, $runs runs per policy"
echo "policy,run,cpu_share" > "$work/results.csv"
for r in $(seq "$runs"); do
  for policy in sleep yield spin; do
    config "$policy" > "$work/sluice.toml"
    ns lb ./target/release/sluice run --config "$work/sluice.toml" > "$work/sluice.log" 2>&1 &
    for _ in $(seq 100); do [ -S "$work/ctl.sock" ] && break; sleep 0.1; done
    pid=$(pgrep -f "sluice run --config $work" | head -1)
    sleep 1
    # utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks.
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat"); w0=$(date +%s.%N)
    sleep "$secs"
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat"); w1=$(date +%s.%N)
    share=$(python3 -c "print(f'{($t1 - $t0) / $hz / ($w1 - $w0):.4f}')")
    echo "$policy,$r,$share" >> "$work/results.csv"
    printf '%-6s run %d: %s of a core\n' "$policy" "$r" "$share"
    pkill -INT -f "sluice run --config $work" || true
    for _ in $(seq 100); do pgrep -f "sluice run --config $work" > /dev/null || break; sleep 0.1; done
    rm -f "$work/ctl.sock"
  done
done
python3 - "$work/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for policy in ("sleep", "yield", "spin"):
    v = [float(r["cpu_share"]) for r in rows if r["policy"] == policy]
    print(f"{policy:6} idle CPU share: median {statistics.median(v):.4f} [{min(v):.4f}-{max(v):.4f}]")
PY
