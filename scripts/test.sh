#!/usr/bin/env bash
# Installs what the tests need and runs every test: formatting, lints, unit tests, the golden
# replay tests, the corpus and random-frame robustness tests, the CLI contract tests, and a
# build of the benchmarks (so they do not rot; they run on demand, see docs/performance.md).
# Run as root on Debian 12 from anywhere in the checkout:  scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages build-essential pkg-config
ensure_rust
corpus=../shared/corpus/tcpdump-ether
if [ ! -d "$corpus" ]; then
  echo "sluice: the capture corpus is missing at $(pwd)/$corpus (shared/ must sit beside the checkout)" >&2
  exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo test"
log=$(mktemp); trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "== cargo bench --no-run"
cargo bench --workspace --no-run -q
# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
