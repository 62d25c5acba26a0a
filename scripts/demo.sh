#!/usr/bin/env bash
# sluice's main job on the embedded default: replays the committed sample capture
# (examples/sample.pcap: web over IPv4 and IPv6, DNS over UDP, some traffic that is not the
# balancer's and a few malformed frames) through the data path configured by
# examples/sluice.toml, and prints what went to each backend. Outputs land in target/demo/.
# Run as root on Debian 12 from anywhere in the checkout:  scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages build-essential pkg-config libdpdk-dev libclang-dev libxdp-dev libbpf-dev clang
ensure_rust
cargo build --release -q --bin sluice
mkdir -p target/demo
./target/release/sluice replay \
  --config examples/sluice.toml \
  --input examples/sample.pcap \
  --output target/demo/out.pcap \
  --host-output target/demo/host.pcap \
  --stats target/demo/stats.json
echo
echo "written: target/demo/out.pcap (forwarded frames), target/demo/host.pcap (not ours), target/demo/stats.json"
