#!/usr/bin/env bash
# How a live change to a large service affects forwarding. sluice runs on DPDK virtual
# devices (net_pcap replaying 64-byte TCP frames over FLOWS flows forever -> net_null), one
# worker, one NAT service of BACKENDS backends with a Maglev table of TABLE entries. After a
# quiet period, sluicectl changes one backend's weight every half second (each change
# rebuilds the whole table on the control thread and swaps the snapshot in). It prints:
#   - the rebuild time the daemon reports for each change (median and max),
#   - the longest any swap held up the worker (its only effect on packets: the time between
#     two bursts; measured on the worker, per swap),
#   - packets/s during the quiet period next to packets/s during the changes (same run).
#
# Usage: scripts/bench-swap.sh [-b BACKENDS] [-t TABLE] [-f FLOWS] [-n CHANGES]
# Needs root, hugepages and libdpdk-dev (installed here if missing). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
backends=1000; table=655373; flows=100000; changes=20
while getopts "b:t:f:n:" o; do
  case $o in
    b) backends=$OPTARG ;; t) table=$OPTARG ;; f) flows=$OPTARG ;; n) changes=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
ensure_packages libdpdk-dev libclang-dev libxdp-dev libbpf-dev clang
ensure_hugepages 1024
work=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
cargo build -q --release -p sluice -p ctl --bin sluice --bin sluicectl
cargo run -q --release -p fixtures --bin make-fixtures -- --bench "$flows" 2 "$work/in.pcap" >/dev/null
sock="$work/control.sock"
python3 - "$backends" "$table" "$flows" "$work" > "$work/sluice.toml" <<'PY'
import sys
n, table, flows, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f'''[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"
[conntrack]
capacity = {flows + 1024}
[control]
socket = "{work}/control.sock"
[dataplane]
driver = "dpdk"
cores = [1]
[dataplane.dpdk]
eal_args = ["--in-memory", "--no-pci", "--log-level=lib.eal:error", "--vdev", "net_pcap0,rx_pcap={work}/in.pcap,infinite_rx=1", "--vdev", "net_null0,no-rx=1"]
port = "net_pcap0"
tx_port = "net_null0"
mbufs = {((flows // 1024 + 8) * 1024 * 2) - 1}
[[service]]
name = "big"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = {table}''')
for i in range(n):
    print(f'[[service.backend]]\naddress = "10.{1 + i // 250}.{i % 250 // 1}.{1 + i % 250 // 250}:8080"\nmac = "02:00:00:01:{i >> 8:02x}:{i & 255:02x}"')
PY
ctl() { ./target/release/sluicectl --socket "$sock" --json "$@"; }
./target/release/sluice run --config "$work/sluice.toml" -q --stats "$work/stats.json" &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
sleep 3
ctl stats >/dev/null; sleep 2
quiet=$(ctl stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["packets_per_s"])')
first=$(python3 -c "print('10.1.0.1:8080')")
: > "$work/builds"
for i in $(seq "$changes"); do
  ctl backend set-weight big "$first" $(( (i % 2) + 1 )) | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["build_ms"])' >> "$work/builds"
  sleep 0.5
done
busy=$(ctl stats | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; w=r["workers"][0]; print(r["packets_per_s"], w["snapshot_swaps"], w["swap_max_us"])')
kill -INT $pid; wait $pid || true; pid=
python3 - "$work/builds" "$quiet" $busy "$backends" "$table" "$flows" <<'PY'
import sys, statistics
b = [float(x) for x in open(sys.argv[1]) if x.strip()]
quiet, busy, swaps, swap_us = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
n, table, flows = sys.argv[6], sys.argv[7], sys.argv[8]
print(f"service of {n} backends, Maglev table {table}, {flows} flows, {len(b)} weight changes")
print(f"rebuild (validate + build snapshot, control thread): median {statistics.median(b):.1f} ms, max {max(b):.1f} ms")
print(f"worker: {swaps} snapshot swaps, longest {swap_us:.1f} us (the most any burst waited)")
print(f"packets/s: quiet {quiet:,.0f}; during changes {busy:,.0f} (ratio {busy / quiet if quiet else 0:.3f})")
PY
