#!/usr/bin/env bash
# Replay throughput: a 10,000-flow capture of 64-byte TCP frames (made by the committed
# generator) through `sluice replay` with one worker, in NAT mode. In the same run, as the
# reference, the same capture is replayed through a configuration with no services, so every
# frame is read, parsed, classified and dropped but never forwarded or written: the ratio of
# the two figures is the cost of conntrack, Maglev, rewriting and output on this machine.
# Usage: scripts/bench-replay.sh [FLOWS] [FRAMES_PER_FLOW] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
flows=${1:-10000}; per=${2:-20}; runs=${3:-5}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build -q --release --bin sluice
cargo run -q --release -p fixtures --bin make-fixtures -- --bench "$flows" "$per" "$work/in.pcap" >/dev/null
sed -n '/^\[node\]/,/^gateway_mac/p' examples/sluice.toml > "$work/none.toml"
echo "capture: $flows flows x $per frames = $((flows * per)) frames; $runs runs each, best kept"
best() {  # config -> best packets/s over the runs
  local b=0
  for _ in $(seq "$runs"); do
    ./target/release/sluice replay --config "$1" --input "$work/in.pcap" --output "$work/out.pcap" --stats "$work/s.json" -q
    b=$(python3 -c "import json,sys; print(max($b, json.load(open('$work/s.json'))['packets_per_second']))")
  done
  echo "$b"
}
nat=$(best examples/sluice.toml)
ref=$(best "$work/none.toml")
python3 - "$nat" "$ref" <<'PY'
import sys
nat, ref = float(sys.argv[1]), float(sys.argv[2])
print(f"NAT replay, 1 worker:         {nat:12,.0f} packets/s")
print(f"reference (parse + drop):     {ref:12,.0f} packets/s")
print(f"ratio NAT / reference:        {nat / ref:12.2f}")
PY
