#!/usr/bin/env bash
# Replay throughput: a 10,000-flow capture of 64-byte TCP frames (made by the committed
# generator) through `sluice replay` with one worker, in NAT mode. In the same run, as the
# reference, the same capture is replayed through a configuration with no services, so every
# frame is read, parsed, classified and dropped but never forwarded or written: the ratio of
# the two figures is the cost of conntrack, Maglev, rewriting and output on this machine. The
# capture is replayed both as pcap and as pcapng (converted by Wireshark's editcap when it is
# installed, else by sluice's own writer), so the cost of reading each format shows.
#
# With --before OLD_SLUICE, every figure is also taken with that binary, alternating with this
# build in each round (same capture, same machine state), to measure a change.
#
# Each figure is the median over the rounds, with [min–max].
# Usage: scripts/bench-replay.sh [--before OLD_SLUICE] [FLOWS] [FRAMES_PER_FLOW] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
before=""
if [ "${1:-}" = "--before" ]; then before=$2; shift 2; fi
flows=${1:-10000}; per=${2:-20}; rounds=${3:-7}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build -q --release --bin sluice
cargo run -q --release -p fixtures --bin make-fixtures -- --bench "$flows" "$per" "$work/in.pcap" >/dev/null
sed -n '/^\[node\]/,/^gateway_mac/p' examples/sluice.toml > "$work/none.toml"
if command -v editcap >/dev/null; then
  editcap -F pcapng "$work/in.pcap" "$work/in.pcapng"
else
  ./target/release/sluice replay --config "$work/none.toml" --input "$work/in.pcap" \
    --output "$work/unused.pcap" --host-output "$work/in.pcapng" --output-format pcapng -q
fi
echo "capture: $flows flows x $per frames = $((flows * per)) frames; $rounds rounds, median [min–max]"
bins=(./target/release/sluice)
[ -n "$before" ] && bins+=("$before")
: > "$work/runs.csv"
for r in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    for input in in.pcap in.pcapng; do
      for cfg in examples/sluice.toml "$work/none.toml"; do
        # The old binary may not read pcapng: that cell is left empty.
        if "$bin" replay --config "$cfg" --input "$work/$input" --output "$work/out.pcap" \
             --stats "$work/s.json" -q 2>/dev/null; then
          pps=$(python3 -c "import json; print(json.load(open('$work/s.json'))['packets_per_second'])")
          echo "$bin,$input,$(basename "$cfg"),$pps" >> "$work/runs.csv"
        fi
      done
    done
  done
done
python3 - "$work/runs.csv" "${bins[@]}" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
bins = sys.argv[2:]
def cell(b, inp, cfg):
    v = sorted(float(r[3]) for r in rows if r[0] == b and r[1] == inp and r[2] == cfg)
    return v
def fmt(v):
    if not v:
        return "(cannot read it)"
    return f"{statistics.median(v):12,.0f} [{v[0]:,.0f}–{v[-1]:,.0f}]"
for b in bins:
    name = "this build" if b == bins[0] else f"before ({b})"
    print(f"\n{name}:")
    for inp in ("in.pcap", "in.pcapng"):
        nat, ref = cell(b, inp, "sluice.toml"), cell(b, inp, "none.toml")
        print(f"  {inp:10} NAT replay, 1 worker:       {fmt(nat)} packets/s")
        print(f"  {inp:10} reference (parse + drop):   {fmt(ref)} packets/s")
        if nat and ref:
            print(f"  {inp:10} ratio NAT / reference:      {statistics.median(nat) / statistics.median(ref):12.2f}")
if len(bins) == 2:
    print("\nthis build / before (pcap input):")
    for cfg, label in (("sluice.toml", "NAT"), ("none.toml", "reference")):
        a, b = cell(bins[0], "in.pcap", cfg), cell(bins[1], "in.pcap", cfg)
        if a and b:
            print(f"  {label:10} {statistics.median(a) / statistics.median(b):6.3f}")
PY
