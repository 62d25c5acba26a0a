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
# generator (make-fixtures --bench): a SYN, then a data segment, per flow, so that from the
# second pass over the file on every packet is one of an established, tracked flow (a file
# of SYNs alone would be a SYN flood, which the conntrack keeps to its half-open share); with
# W workers each queue's file holds FLOWS/W flows.
#
# Mode `synproxy` is `nat` with `syn_proxy = "on"` fed a spoofed-source SYN flood instead
# (make-fixtures --syn-flood, FLOWS distinct sources per queue): every packet is answered
# with a cookie SYN-ACK, nothing is tracked. Its packets/s against `nat`'s in the same run is
# the SYN proxy's figure (issue 18: at least 0.5).
#
# This machine is shared and its speed drifts, so one run is an anecdote: every figure is
# the median of RUNS pairs (default 3), each pair a testpmd run and then a sluice run back to
# back, and is printed with its spread [min-max]; the ratio is the median of the pairs'
# ratios. Every run is in runs.csv, the medians and spreads in results.csv.
#
# Usage: scripts/bench-pps.sh [-s SECONDS] [-f FLOWS] [-r RUNS] [-m "nat snat dsr ipip gue synproxy"]
#                             [-w "1 2"] [-o OUTDIR]
# Needs root, hugepages and dpdk-dev (installed here if missing). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=10; flows=100000; runs=3; modes="nat snat dsr ipip gue"; workers="1 2"; out=target/bench-pps
while getopts "s:f:r:m:w:o:" o; do
  case $o in
    s) secs=$OPTARG ;; f) flows=$OPTARG ;; r) runs=$OPTARG ;; m) modes=$OPTARG ;; w) workers=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,23p' "$0"; exit 2 ;;
  esac
done
case $runs in ''|*[!0-9]*|0) echo "bench-pps: -r takes a whole number of runs, at least 1 (got '$runs')" >&2; exit 2 ;; esac
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
echo "mode,workers,flows,sluice_pps,testpmd_pps,ratio,conntrack_active,cycles_per_packet,cache_misses_per_packet,runs,sluice_min,sluice_max,testpmd_min,testpmd_max,ratio_min,ratio_max" > "$out/results.csv"
echo "mode,workers,flows,run,sluice_pps,testpmd_pps,ratio,conntrack_active,cycles_per_packet,cache_misses_per_packet" > "$out/runs.csv"
echo "bench-pps: ${secs} s per run, $runs testpmd/sluice pairs per figure"
# One dpdk-testpmd macswap run on the devices of the current worker count: its Rx packets/s.
testpmd_pps() {
  timeout -s INT "$secs" dpdk-testpmd --in-memory --no-pci --lcores "$lcores" --log-level=lib.eal:error \
    --vdev "$rx" --vdev "$tx" -- --no-mlockall --forward-mode=macswap --nb-cores="$w" \
    --rxq="$w" --txq="$w" --total-num-mbufs="$mbufs" --stats-period 1 -a < /dev/null > "$work/testpmd.log" 2>&1 || true
  awk '/Port statistics/ {port = 1; next} /Rx-pps:/ { if (port == 1) { v = $2 } port++ } END { print v + 0 }' "$work/testpmd.log"
}
for w in $workers; do
  if [ "$w" -gt "$ncpu" ]; then echo "skipping $w workers: this machine has $ncpu cores"; continue; fi
  per=$(( flows / w ))
  rx="net_pcap0"
  for q in $(seq 0 $((w - 1))); do
    cargo run -q --release -p fixtures --bin make-fixtures -- --bench "$per" 2 "$work/q$q.pcap" $((q * per)) >/dev/null
    rx="$rx,rx_pcap=$work/q$q.pcap"
  done
  rx="$rx,infinite_rx=1"
  tx="net_null0,no-rx=1"
  syn_rx="net_pcap0"
  for q in $(seq 0 $((w - 1))); do
    cargo run -q --release -p fixtures --bin make-fixtures -- --syn-flood "$per" "$work/syn$q.pcap" >/dev/null
    syn_rx="$syn_rx,rx_pcap=$work/syn$q.pcap"
  done
  syn_rx="$syn_rx,infinite_rx=1"
  data_rx=$rx
  mbufs=$(( (flows / 1024 + 8 * w) * 1024 * 2 - 1 ))
  # Worker cores: the highest ones; the EAL main / control thread gets core 0.
  if [ "$w" -eq 1 ]; then cores="1"; lcores="0,1"; else cores="0, 1"; lcores="0@0,1@0,2@1"; fi
  for mode in $modes; do
    fwd=$mode; proxy=off; rx=$data_rx
    if [ "$mode" = synproxy ]; then fwd=nat; proxy=on; rx=$syn_rx; fi
    bport=$([ "$fwd" = nat ] || [ "$fwd" = snat ] && echo 8080 || echo 80)
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
forwarding = "$fwd"
syn_proxy = "$proxy"
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
    for r in $(seq "$runs"); do
      # A pair: the I/O limit, then sluice, back to back on the same devices and cores.
      ref=$(testpmd_pps)
      if [ "$perf_ok" = 1 ]; then
        perf stat -x, -e cycles,cache-misses -o "$work/perf.csv" "${cmd[@]}"
      else
        "${cmd[@]}"; : > "$work/perf.csv"
      fi
      python3 - "$work/s.json" "$ref" "$mode" "$w" "$flows" "$work/perf.csv" "$r" >> "$out/runs.csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); ref = float(sys.argv[2]); mode, w, flows, r = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[7]
pps = s["packets_in"] / s["elapsed_seconds"]
cyc = miss = ""
for line in open(sys.argv[6]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        if f[2].startswith("cycles"): cyc = f"{float(f[0]) / max(s['packets_in'], 1):.1f}"
        if f[2].startswith("cache-misses"): miss = f"{float(f[0]) / max(s['packets_in'], 1):.2f}"
print(f"{mode},{w},{flows},{r},{pps:.0f},{ref:.0f},{pps / ref if ref else 0:.4f},{s['conntrack']['active']},{cyc},{miss}")
PY
      tail -1 "$out/runs.csv" | awk -F, '{ printf "%-6s %2s workers  run %s: sluice %12d  testpmd %12d  ratio %.3f\n", $1, $2, $4, $5, $6, $7 }'
    done
    # The figure: medians over the pairs, with their spread.
    python3 - "$out/runs.csv" "$mode" "$w" >> "$out/results.csv" <<'PY'
import csv, statistics, sys
mode, w = sys.argv[2], sys.argv[3]
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["mode"] == mode and r["workers"] == w]
col = lambda k: [float(r[k]) for r in rows]
med = lambda k: statistics.median(col(k))
def opt(k):
    v = [float(r[k]) for r in rows if r[k]]
    return f"{statistics.median(v):.2f}" if v else ""
s, t, q = col("sluice_pps"), col("testpmd_pps"), col("ratio")
print(f"{mode},{w},{rows[0]['flows']},{med('sluice_pps'):.0f},{med('testpmd_pps'):.0f},{med('ratio'):.4f},{rows[-1]['conntrack_active']},{opt('cycles_per_packet')},{opt('cache_misses_per_packet')},{len(rows)},{min(s):.0f},{max(s):.0f},{min(t):.0f},{max(t):.0f},{min(q):.4f},{max(q):.4f}")
PY
    tail -1 "$out/results.csv" | awk -F, '{ printf "%-6s %2s workers  median of %s: sluice %.2f M [%.2f-%.2f]  testpmd %.2f M [%.2f-%.2f]  ratio %.3f [%.3f-%.3f]\n", $1, $2, $10, $4/1e6, $11/1e6, $12/1e6, $5/1e6, $13/1e6, $14/1e6, $6, $15, $16 }'
  done
done
python3 - "$out/results.csv" <<'PY'
import csv, sys
rows = {(r["mode"], r["workers"]): r for r in csv.DictReader(open(sys.argv[1]))}
for (mode, w), r in sorted(rows.items()):
    nat = rows.get(("nat", w))
    if mode == "synproxy" and nat:
        print(f"SYN proxy, {w} workers: {float(r['sluice_pps']) / 1e6:.2f} M SYNs/s answered, {float(r['sluice_pps']) / float(nat['sluice_pps']):.2f} of NAT's {float(nat['sluice_pps']) / 1e6:.2f} M packets/s in the same run (target >= 0.5)")
PY
[ "$perf_ok" = 1 ] || echo "perf stat: no hardware counters on this machine, so no cycles or cache misses per packet"
python3 scripts/plot-pps.py "$out/results.csv" "$out/pps.svg"
echo "wrote $out/results.csv and $out/pps.svg"
