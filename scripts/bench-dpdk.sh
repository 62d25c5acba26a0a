#!/usr/bin/env bash
# Single-core packets/s on DPDK virtual devices: net_pcap replaying a capture forever
# (infinite_rx=1) into net_null (no-rx=1, so it only sinks), sluice's NAT path against
# dpdk-testpmd --forward-mode=macswap on the same devices and core, in the same run.
# The capture is 64-byte TCP frames over FLOWS flows to one VIP, made by the committed
# generator. Needs root, hugepages (scripts/test.sh sets them up) and dpdk-dev (testpmd).
# Usage: scripts/bench-dpdk.sh [SECONDS] [FLOWS] [CORE]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages dpdk-dev libdpdk-dev libclang-dev
ensure_hugepages 512
secs=${1:-10}; flows=${2:-100000}; core=${3:-1}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build -q --release --bin sluice
cargo run -q --release -p pcap --bin make-fixtures -- --bench "$flows" 1 "$work/in.pcap" >/dev/null
mbufs=$(( (flows / 1024 + 8) * 1024 * 2 - 1 ))
rx="net_pcap0,rx_pcap=$work/in.pcap,infinite_rx=1"
tx="net_null0,no-rx=1"
main=$(( core == 0 ? 1 : 0 ))

# Reference: testpmd, one forwarding core, MAC swap only.
timeout -s INT "$secs" dpdk-testpmd --in-memory --no-pci -l "$main,$core" --log-level=lib.eal:error \
  --vdev "$rx" --vdev "$tx" -- --no-mlockall --forward-mode=macswap --nb-cores=1 \
  --total-num-mbufs="$mbufs" --stats-period 1 -a < /dev/null > "$work/testpmd.log" 2>&1 || true
ref=$(awk '/Port statistics/ {port = 1; next} /Rx-pps:/ { if (port == 1) { v = $2 } port++ } END { print v + 0 }' "$work/testpmd.log")

# sluice: NAT through examples/sluice.toml's services, one worker on the same core.
{ cat examples/sluice.toml; cat <<TOML

[dataplane]
driver = "dpdk"
cores = [$core]

[dataplane.dpdk]
eal_args = ["--in-memory", "--no-pci", "-l", "$main", "--log-level=lib.eal:error", "--vdev", "$rx", "--vdev", "$tx"]
port = "net_pcap0"
tx_port = "net_null0"
mbufs = $mbufs
TOML
} | sed 's/^capacity = 65536/capacity = 262144/' > "$work/sluice.toml"
./target/release/sluice run --config "$work/sluice.toml" --duration "$secs" --stats "$work/s.json" -q
python3 - "$work/s.json" "$ref" "$flows" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); ref = float(sys.argv[2]); flows = int(sys.argv[3])
pps = s["packets_in"] / s["elapsed_seconds"]
print(f"flows: {flows}, 64-byte TCP frames, net_pcap (infinite_rx) -> net_null, one core")
print(f"dpdk-testpmd macswap: {ref:14,.0f} packets/s")
print(f"sluice NAT:           {pps:14,.0f} packets/s  (dropped {s['dropped']}, conntrack {s['conntrack']['active']} flows)")
print(f"ratio sluice/testpmd: {pps / ref if ref else float('nan'):14.3f}")
PY
