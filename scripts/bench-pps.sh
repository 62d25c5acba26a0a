#!/usr/bin/env bash
# The packets-per-second harness. For each forwarding mode and worker count, sluice runs on
# DPDK virtual devices — net_pcap replaying a capture forever (infinite_rx=1, one file per
# queue) into net_null (no-rx=1, a pure sink) — and, in the same run, dpdk-testpmd
# --forward-mode=macswap runs on the same devices, capture and cores. It prints packets/s
# and their ratio, conntrack occupancy, and perf-stat cycles and cache misses per packet
# where the machine has hardware counters; it writes results.csv and pps.svg (a plot of
# packets/s per mode next to testpmd) to the output directory.
#
# The capture: 64-byte TCP frames over FLOWS flows to one VIP, made by the committed
# generator (make-fixtures --bench); with W workers each queue's file holds FLOWS/W flows.
#
# Usage: scripts/bench-pps.sh [-s SECONDS] [-f FLOWS] [-m "nat snat dsr ipip gue"]
#                             [-w "1 2"] [-o OUTDIR]
# Needs root, hugepages and dpdk-dev (installed here if missing). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=10; flows=100000; modes="nat snat dsr ipip gue"; workers="1 2"; out=target/bench-pps
while getopts "s:f:m:w:o:" o; do
  case $o in
    s) secs=$OPTARG ;; f) flows=$OPTARG ;; m) modes=$OPTARG ;; w) workers=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
  esac
done
ensure_packages dpdk-dev libdpdk-dev libclang-dev libxdp-dev libbpf-dev clang
ensure_hugepages 1024
mkdir -p "$out"; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build -q --release --bin sluice
ncpu=$(nproc)
# Hardware counters: a VM often has none, and perf then says "<not supported>".
perf_ok=0
if command -v perf >/dev/null && perf stat -e cycles true >/dev/null 2>&1 && ! perf stat -e cycles true 2>&1 | grep -q "not supported"; then
  perf_ok=1
fi
echo "mode,workers,flows,sluice_pps,testpmd_pps,ratio,conntrack_active,cycles_per_packet,cache_misses_per_packet" > "$out/results.csv"
printf '%-6s %7s %14s %14s %7s %10s\n' MODE WORKERS SLUICE_PPS TESTPMD_PPS RATIO FLOWS
for w in $workers; do
  if [ "$w" -gt "$ncpu" ]; then echo "skipping $w workers: this machine has $ncpu cores"; continue; fi
  per=$(( flows / w ))
  rx="net_pcap0"
  for q in $(seq 0 $((w - 1))); do
    cargo run -q --release -p fixtures --bin make-fixtures -- --bench "$per" 1 "$work/q$q.pcap" $((q * per)) >/dev/null
    rx="$rx,rx_pcap=$work/q$q.pcap"
  done
  rx="$rx,infinite_rx=1"
  tx="net_null0,no-rx=1"
  mbufs=$(( (flows / 1024 + 8 * w) * 1024 * 2 - 1 ))
  # Worker cores: the highest ones; the EAL main / control thread gets core 0.
  if [ "$w" -eq 1 ]; then cores="1"; lcores="0,1"; else cores="0, 1"; lcores="0@0,1@0,2@1"; fi
  timeout -s INT "$secs" dpdk-testpmd --in-memory --no-pci --lcores "$lcores" --log-level=lib.eal:error \
    --vdev "$rx" --vdev "$tx" -- --no-mlockall --forward-mode=macswap --nb-cores="$w" \
    --rxq="$w" --txq="$w" --total-num-mbufs="$mbufs" --stats-period 1 -a < /dev/null > "$work/testpmd.log" 2>&1 || true
  ref=$(awk '/Port statistics/ {port = 1; next} /Rx-pps:/ { if (port == 1) { v = $2 } port++ } END { print v + 0 }' "$work/testpmd.log")
  for mode in $modes; do
    bport=$([ "$mode" = nat ] || [ "$mode" = snat ] && echo 8080 || echo 80)
    cat > "$work/sluice.toml" <<TOML
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:fe"
# SNAT needs a free source port per flow and backend: give it the whole range, so FLOWS
# flows to three backends fit (the default range stops at 32767, below Linux's ephemeral ports).
snat_ports = [1024, 65535]
[conntrack]
capacity = $(( per + 1024 ))
[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "$mode"
[[service.backend]]
address = "10.1.0.1:$bport"
mac = "02:00:00:00:01:01"
[[service.backend]]
address = "10.1.0.2:$bport"
mac = "02:00:00:00:01:02"
[[service.backend]]
address = "10.1.0.3:$bport"
mac = "02:00:00:00:01:03"
[dataplane]
driver = "dpdk"
cores = [$cores]
[dataplane.dpdk]
eal_args = ["--in-memory", "--no-pci", "--log-level=lib.eal:error", "--vdev", "$rx", "--vdev", "$tx"]
port = "net_pcap0"
tx_port = "net_null0"
mbufs = $mbufs
TOML
    cmd=(./target/release/sluice run --config "$work/sluice.toml" --duration "$secs" --stats "$work/s.json" -q)
    if [ "$perf_ok" = 1 ]; then
      perf stat -x, -e cycles,cache-misses -o "$work/perf.csv" "${cmd[@]}"
    else
      "${cmd[@]}"; : > "$work/perf.csv"
    fi
    python3 - "$work/s.json" "$ref" "$mode" "$w" "$flows" "$work/perf.csv" >> "$out/results.csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); ref = float(sys.argv[2]); mode, w, flows = sys.argv[3], sys.argv[4], sys.argv[5]
pps = s["packets_in"] / s["elapsed_seconds"]
cyc = miss = ""
for line in open(sys.argv[6]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        if f[2].startswith("cycles"): cyc = f"{float(f[0]) / max(s['packets_in'], 1):.1f}"
        if f[2].startswith("cache-misses"): miss = f"{float(f[0]) / max(s['packets_in'], 1):.2f}"
print(f"{mode},{w},{flows},{pps:.0f},{ref:.0f},{pps / ref if ref else 0:.4f},{s['conntrack']['active']},{cyc},{miss}")
PY
    tail -1 "$out/results.csv" | awk -F, '{ printf "%-6s %7s %14d %14d %7.3f %10d\n", $1, $2, $4, $5, $6, $7 }'
  done
done
[ "$perf_ok" = 1 ] || echo "perf stat: no hardware counters on this machine, so no cycles or cache misses per packet"
python3 scripts/plot-pps.py "$out/results.csv" "$out/pps.svg"
echo "wrote $out/results.csv and $out/pps.svg"
