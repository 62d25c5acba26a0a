#!/usr/bin/env bash
# Coverage-guided fuzzing of sluice's parsers and data path, bounded in time: libFuzzer
# through cargo-fuzz (installed here if missing), built with `--sanitizer none` so it runs on
# stable Rust — sluice's code is safe Rust outside the driver FFI (which no target reaches),
# so what a sanitizer would add is little, and what the targets hunt are panics and broken
# properties, which libFuzzer reports either way. Targets (fuzz/src/lib.rs says what each
# checks): frame, burst (a worker's whole poll loop on a live snapshot), control (a refused
# request changes nothing), config (parse, write back, parse again), cookie (the SYN proxy's
# cookies: any ACK checked safely, any SYN's cookie accepted with its options).
#
# Each target starts from its committed seeds (fuzz/corpus/TARGET, made by
# fuzz/make-seeds.py) plus what earlier runs here found (target/fuzz-corpus/TARGET, never
# committed), and runs SECONDS. A crash is copied to fuzz/regressions/TARGET/, where
# tests/fuzz_regressions.rs replays it as an ordinary test once committed, and this script
# fails naming it.
#   scripts/fuzz.sh [SECONDS per target, default 20] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_rust
secs=${1:-20}; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(frame burst control config cookie)
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked -q
fi
echo "== cargo fuzz build --sanitizer none"
cargo fuzz build --sanitizer none 2>&1 | grep -v "^ *Compiling" || true
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$t" "fuzz/regressions/$t"
  log=$(mktemp)
  if cargo fuzz run --sanitizer none "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 > "$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $t: ${runs:-?} inputs in ${secs} s, $cov, no crash"
  else
    echo "fuzz $t: FOUND A CRASH" >&2
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" >&2 || tail -20 "$log" >&2
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] && cp "$a" "fuzz/regressions/$t/" && echo "  kept as fuzz/regressions/$t/$(basename "$a")" >&2
    done
    failed+=("$t")
  fi
  rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "sluice: the fuzzer found crashes in: ${failed[*]}; commit fuzz/regressions/ and fix them (cargo test --test fuzz_regressions replays them)" >&2
  exit 1
fi
