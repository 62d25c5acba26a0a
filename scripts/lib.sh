# Shared steps for scripts/demo.sh, scripts/test.sh and the benchmarks (sourced, not run).

# Installs Debian packages that are not installed yet (one apt-get update, only if needed).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "sluice: these Debian packages are needed: ${missing[*]}; run this script as root, or install them first" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Makes sure a Rust toolchain of at least 1.87 is on PATH (installing one with rustup if
# there is none; Debian 12's own rustc is too old for this code).
ensure_rust() {
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "== no Rust toolchain found: installing one with rustup"
    ensure_packages curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    . "$HOME/.cargo/env"
  fi
  local v
  v=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.87.0\n' "$v" | sort -V | head -1)" != "1.87.0" ]; then
    echo "sluice: rustc $v is too old; 1.87 or newer is needed (rustup update stable)" >&2
    exit 1
  fi
}

# Reserves 2 MiB hugepages (at least $1, default 512 = 1 GiB) and mounts hugetlbfs at
# /dev/hugepages if nothing is mounted; DPDK takes its packet memory from there.
ensure_hugepages() {
  local want=${1:-512} nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages have
  have=$(cat "$nr")
  if [ "$have" -lt "$want" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "sluice: DPDK needs $want hugepages of 2 MiB (have $have); run as root, or: echo $want > $nr" >&2
      exit 1
    fi
    echo "$want" > "$nr"
    have=$(cat "$nr")
    if [ "$have" -lt "$want" ]; then
      echo "sluice: asked the kernel for $want hugepages, got $have (memory too fragmented?); free memory or reboot with hugepages=$want" >&2
      exit 1
    fi
  fi
  if ! grep -qs ' hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
  fi
}

# Busy and total jiffies of core N so far, from /proc/stat (busy: user, nice, system, irq,
# softirq): two readings around a run give the share of that core the run used.
core_jiffies() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
