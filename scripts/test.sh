#!/usr/bin/env bash
# Installs what the tests need (build tools, Debian's DPDK and libclang for bindgen, 1 GiB of
# hugepages and a hugetlbfs mount) and runs every test: formatting, lints, unit tests, the
# golden replay tests, the corpus and random-frame robustness tests, the CLI contract tests,
# the DPDK virtual-device tests, the control-plane tests against a running daemon, the
# end-to-end tests (real curl and iperf3 clients and HTTP backends in network namespaces,
# through sluice on DPDK and AF_XDP; two instances behind a BIRD router that learns the VIP
# from ExaBGP, and a keepalived VRRP pair), the Debian package (built, installed, run as its
# systemd unit runs it, reloaded, stopped and purged), coverage-guided fuzzing of five targets
# for 20 s each (scripts/fuzz.sh), and a build of the benchmarks (so they do not rot; they run on demand, see docs/performance.md).
# Run as root on Debian 12 from anywhere in the checkout:  scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# Each step's header says how long the run has taken so far (minutes:seconds).
began=$SECONDS
step() { printf '== [%d:%02d] %s\n' $(((SECONDS - began) / 60)) $(((SECONDS - began) % 60)) "$*"; }
ensure_packages build-essential pkg-config libdpdk-dev libclang-dev \
  iproute2 ethtool curl iperf3 python3 procps iputils-ping \
  libxdp-dev libbpf-dev clang haproxy wrk nghttp2-client openssl exabgp bird2 keepalived \
  dpkg-dev man-db strace wireshark-common hping3
ensure_rust
# DPDK tests run on virtual devices with real hugepage memory (not --no-huge), as production does.
ensure_hugepages 512
corpus=../shared/corpus/tcpdump-ether
if [ ! -d "$corpus" ]; then
  echo "sluice: the capture corpus is missing at $(pwd)/$corpus (shared/ must sit beside the checkout)" >&2
  exit 1
fi
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
step "scripts/build-deb.sh (tests/package.rs installs and runs the package)"
scripts/build-deb.sh
step "cargo test"
log=$(mktemp); trap 'rm -f "$log"' EXIT
# A bound on the whole run, well inside CI's 90 minutes (the tests take about 10 here): a hang
# fails here with the tests still running named above, instead of running out CI's clock.
test_rc=0
timeout -k 60 3600 cargo test --workspace 2>&1 | tee "$log" || test_rc=$?
if [ "$test_rc" = 124 ] || [ "$test_rc" = 137 ]; then
  echo "sluice: cargo test ran past 60 minutes and was stopped; the tests 'running for over 60 seconds' above are the ones that hung" >&2
fi
[ "$test_rc" = 0 ] || exit "$test_rc"
step "scripts/fuzz.sh 20 (coverage-guided fuzzing, 20 s per target)"
fuzzlog=$(mktemp)
if scripts/fuzz.sh 20 2>&1 | tee "$fuzzlog"; then fuzz_ok=1; else fuzz_ok=0; fi
step "cargo bench --no-run"
cargo bench --workspace --no-run -q
# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, i }' "$log"
grep '^fuzz ' "$fuzzlog" || true
step "done"
rm -f "$fuzzlog"
[ "$fuzz_ok" = 1 ] || { echo "sluice: fuzzing found a crash (above)" >&2; exit 1; }
