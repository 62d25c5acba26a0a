#!/usr/bin/env bash
# The L4 paths an operator would pick between on a machine without DPDK, in one script, on the
# same namespaces (tests/e2e/topology.sh, nat mode), client, backends and cores:
#
#   sluice     AF_XDP on the balancer's veth, `nat`, one worker on core 1 (its XDP program in
#              native mode, copy: veth has no zero-copy)
#   sluice-generic  the same with the XDP program in generic (skb) mode, as on a driver
#              without native XDP
#   nftables   the kernel's own NAT in the balancer's namespace: `dnat to jhash ip saddr .
#              tcp sport mod N map { ... }` over the backends, IPv4 forwarding
#   haproxy    Debian's HAProxy, `mode tcp`, one thread pinned to core 1 (nbthread 1, cpu-map)
#   direct     no balancer: the client to the backend over the reference subnet
#   xdp-tx     (small packets only) the I/O limit of the balancer's interface: a minimal XDP
#              program (compiled here with clang, attached with `ip link ... xdp`) that swaps
#              each frame's MACs and returns XDP_TX, bouncing it straight back to the client.
#              (xdp-tools' `xdp-bench tx` would be the stock tool; it needs its tracepoints'
#              types in the kernel's BTF, which this kernel's lacks.)
#
# Core 0 runs everything else: the client (iperf3, wrk, pinned), the backends (iperf3's server,
# pinned, and HAProxy answering HTTP with `http-request return`, so they are not the limit)
# and whatever softirq work the kernel does there. For each path, in each round (the paths
# alternate within a round), it measures:
#
#   bulk1      one iperf3 TCP stream, client -> VIP:5201 -> one backend (Gbit/s received)
#   bulk16     sixteen streams at once (iperf3 -P 16)
#   conns      new connections per second: wrk, 64 connections, `Connection: close`, to
#              VIP:81 -> two backends (every request a new TCP connection through the path)
#   pps64      small packets: 64-byte UDP frames over 10,000 flows to VIP:9000 -> two backends,
#              counted as they arrive at the backends' interfaces (M packets/s); for xdp-tx, as
#              they come back to the client. HAProxy is a TCP proxy and takes no part. The
#              generator, on core 0, is `xdp-flood` (scripts/xdp-flood: an XDP program run by
#              BPF_PROG_RUN in live-frames mode, which makes each frame in the kernel and sends
#              it with XDP_TX: about 3 M frames/s from one core into a bare veth), or with
#              -g blast, fixtures' sendmmsg generator (about 1 M frames/s, which left the
#              small-packet figures the generator's).
#
# and the share of each core in use during each run (core 1 is the balancer's: sluice's poll
# loop keeps it busy whether there is traffic or not, unless it sleeps when idle; the
# kernel's NAT uses no core of its own but softirq time wherever packets arrive). Prints
# median [min-max] over ROUNDS for every figure and sluice's ratio to each other path;
# writes runs.csv and results.csv to OUTDIR.
#
# With -k, the kernel's delivery of the frames sluice transmits is steered to core 0 by RPS
# (on the bridge side of the balancer's veth): on veth that delivery — through the bridge and
# into the receiving namespace's stack, the backend's TCP receive work included — otherwise
# runs in softirq on the transmitting core, sluice's, where a NIC would take it off the
# balancer's core by DMA. The kernel paths transmit from softirq on core 0 already.
#
# Usage: scripts/bench-l4-paths.sh [-s SECONDS] [-r ROUNDS] [-p "sluice sluice-generic nftables haproxy direct xdp-tx"]
#                                  [-m "bulk1 bulk16 conns pps64"] [-g xdp-flood|blast] [-k] [-o OUTDIR]
# (BENCH_DEBUG=1 prints sluice's drops after each of its runs.)
# Needs root; installs nftables, haproxy, wrk and iperf3 if missing. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=8; rounds=3; paths="sluice sluice-generic nftables haproxy direct xdp-tx"; out=target/bench-l4-paths; steer=0
metrics_wanted="bulk1 bulk16 conns pps64"; gen=xdp-flood
while getopts "s:r:p:m:g:o:k" o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; p) paths=$OPTARG ;; o) out=$OPTARG ;; k) steer=1 ;;
    m) metrics_wanted=$OPTARG ;; g) gen=$OPTARG ;;
    *) sed -n '2,52p' "$0"; exit 2 ;;
  esac
done
for m in $metrics_wanted; do
  case $m in bulk1|bulk16|conns|pps64) ;; *) echo "bench-l4-paths: unknown figure '$m' (bulk1, bulk16, conns, pps64)" >&2; exit 2 ;; esac
done
case $gen in xdp-flood|blast) ;; *) echo "bench-l4-paths: unknown generator '$gen' (xdp-flood, blast)" >&2; exit 2 ;; esac
case $rounds in ''|*[!0-9]*|0) echo "bench-l4-paths: -r takes a whole number of rounds, at least 1 (got '$rounds')" >&2; exit 2 ;; esac
for p in $paths; do
  case $p in sluice|sluice-generic|nftables|haproxy|direct|xdp-tx) ;; *) echo "bench-l4-paths: unknown path '$p' (sluice, sluice-generic, nftables, haproxy, direct, xdp-tx)" >&2; exit 2 ;; esac
done
ensure_packages nftables haproxy wrk iperf3 iproute2 ethtool curl python3 libxdp-dev libbpf-dev clang
ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"; out=$(cd "$out" && pwd)
work=$(mktemp -d); pfx=bl4
ns() { ip netns exec "$pfx-$1" "${@:2}"; }
cleanup() {
  pkill -INT -f "sluice run --config $work" 2>/dev/null || true
  sleep 1
  bash tests/e2e/topology.sh down "$pfx" || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build -q --release -p sluice -p ctl --bin sluice --bin sluicectl
cargo build -q --release -p fixtures --bin blast
clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c scripts/xdp-flood/flood.bpf.c -o "$work/flood.bpf.o"
cc -O2 -Wall -o "$work/xdp-flood" scripts/xdp-flood/flood.c -lbpf
cat > "$work/xdp_tx.c" <<'EOF'
/* The interface's I/O limit: every frame back out where it came in, MACs swapped. */
#include <linux/bpf.h>
#define SEC(name) __attribute__((section(name), used))
SEC("xdp") int xdp_tx(struct xdp_md *ctx) {
  unsigned char *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
  if (d + 12 > end) return XDP_PASS;
  for (int i = 0; i < 6; i++) { unsigned char t = d[i]; d[i] = d[i + 6]; d[i + 6] = t; }
  return XDP_TX;
}
/* On the bridge's side of the link: a veth takes frames its peer sends by XDP_TX only when it
   runs an XDP program itself. */
SEC("pass") int pass_all(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
EOF
clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$work/xdp_tx.c" -o "$work/xdp_tx.o"
bash tests/e2e/topology.sh up "$pfx" 2 "$work" nat > /dev/null
# Every process but the balancer on core 0.
for b in b1 b2; do
  for pid in $(ip netns pids "$pfx-$b"); do taskset -apc 0 "$pid" > /dev/null 2>&1 || true; done
done
if [ "$steer" = 1 ]; then
  ns lan sh -c "echo 1 > /sys/class/net/${pfx}lb/queues/rx-0/rps_cpus"
fi
# wrk opens thousands of connections a second from one address: let it reuse TIME_WAIT ports.
ns cli sysctl -qw net.ipv4.tcp_tw_reuse=1
for i in 1 2; do
  # The small-packet flood ends here, dropped before any socket (no ICMP answers).
  ns "b$i" nft -f - <<'EOF'
table inet sink {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 9000 drop
  }
}
EOF
  cat > "$work/b$i.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout client 30s
  timeout server 30s
  timeout connect 5s
frontend f
  bind *:81
  maxconn 9000
  http-request return status 200 content-type text/plain string "b$i"
EOF
  ns "b$i" taskset -c 0 haproxy -D -p "$work/b$i.pid" -f "$work/b$i.cfg" 2> >(grep -v NOTICE >&2)
done
cat > "$work/sluice.toml" <<EOF
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
[dataplane]
driver = "xdp"
cores = [1]
[dataplane.xdp]
interface = "eth0"
mode = "native"
[control]
socket = "$work/ctl.sock"
[[service]]
name = "iperf"
vip = "10.99.0.100:5201"
protocol = "tcp"
forwarding = "nat"
[[service.backend]]
address = "10.99.0.11:5201"
[[service]]
name = "web"
vip = "10.99.0.100:81"
protocol = "tcp"
forwarding = "nat"
[[service.backend]]
address = "10.99.0.11:81"
[[service.backend]]
address = "10.99.0.12:81"
[[service]]
name = "small"
vip = "10.99.0.100:9000"
protocol = "udp"
forwarding = "nat"
[[service.backend]]
address = "10.99.0.11:9000"
[[service.backend]]
address = "10.99.0.12:9000"
EOF
cat > "$work/nat.nft" <<'EOF'
table ip bench {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.99.0.100 tcp dport 5201 dnat to jhash ip saddr . tcp sport mod 1 map { 0 : 10.99.0.11 }
    ip daddr 10.99.0.100 tcp dport 81 dnat to jhash ip saddr . tcp sport mod 2 map { 0 : 10.99.0.11, 1 : 10.99.0.12 }
    ip daddr 10.99.0.100 udp dport 9000 dnat to jhash ip saddr . udp sport mod 2 map { 0 : 10.99.0.11, 1 : 10.99.0.12 }
  }
}
EOF
cat > "$work/haproxy.cfg" <<EOF
global
  nbthread 1
  cpu-map 1/1 1
  maxconn 9000
defaults
  mode tcp
  timeout client 30s
  timeout server 30s
  timeout connect 5s
frontend iperf
  bind 10.99.0.100:5201
  default_backend iperf
frontend web
  bind 10.99.0.100:81
  maxconn 9000
  default_backend web
backend iperf
  server b1 10.99.0.11:5201
backend web
  balance roundrobin
  server b1 10.99.0.11:81
  server b2 10.99.0.12:81
EOF

# The balancer's namespace as the kernel paths need it: the node address and the VIP on its
# link, the client's subnet on-link (all hosts share the segment).
kernel_addresses() {
  ns lb ip addr add 10.99.0.1/24 dev eth0
  ns lb ip addr add 10.99.0.100/32 dev eth0
  ns lb ip route add 10.98.0.0/24 dev eth0
}

start_path() {
  case $1 in
    sluice|sluice-generic)
      local cfg=$work/sluice.toml
      if [ "$1" = sluice-generic ]; then
        sed 's/^mode = "native"/mode = "generic"/' "$work/sluice.toml" > "$work/sluice-generic.toml"
        cfg=$work/sluice-generic.toml
      fi
      ns lb ./target/release/sluice run --config "$cfg" -q > "$work/sluice.log" 2>&1 &
      for _ in $(seq 100); do [ -S "$work/ctl.sock" ] && break; sleep 0.1; done ;;
    nftables)
      kernel_addresses
      ns lb sysctl -qw net.ipv4.ip_forward=1
      ns lb nft -f "$work/nat.nft" ;;
    haproxy)
      kernel_addresses
      ns lb haproxy -D -p "$work/lb.pid" -f "$work/haproxy.cfg" 2> >(grep -v NOTICE >&2) ;;
    direct) ;;
    xdp-tx) ns lan ip link set dev "${pfx}lb" xdpdrv obj "$work/xdp_tx.o" sec pass
            ns lb ip link set dev eth0 xdpdrv obj "$work/xdp_tx.o" sec xdp 2>/dev/null ||
              ns lb ip link set dev eth0 xdpgeneric obj "$work/xdp_tx.o" sec xdp
            return ;;
  esac
  local web=$(target "$1"):81
  for _ in $(seq 50); do ns cli curl -s -m 1 -o /dev/null "http://$web/" && break; sleep 0.1; done
  for _ in $(seq 10); do
    ns cli curl -s -m 2 -o /dev/null "http://$web/" || { echo "bench-l4-paths: $1 does not answer" >&2; exit 1; }
  done
}

stop_path() {
  case $1 in
    sluice|sluice-generic) if [ -n "${BENCH_DEBUG:-}" ]; then
              ./target/release/sluicectl --socket "$work/ctl.sock" stats | sed -n '/drops/,$p' >&2 || true
            fi
            pkill -INT -f "sluice run --config $work" || true
            for _ in $(seq 100); do pgrep -f "sluice run --config $work" > /dev/null || break; sleep 0.1; done
            rm -f "$work/ctl.sock" ;;
    nftables) ns lb nft delete table ip bench
              ns lb sysctl -qw net.ipv4.ip_forward=0
              ns lb ip addr flush dev eth0 ;;
    haproxy) kill "$(cat "$work/lb.pid")" || true; sleep 0.5
             ns lb ip addr flush dev eth0 ;;
    direct) ;;
    xdp-tx) ns lb ip link set dev eth0 xdp off
            ns lan ip link set dev "${pfx}lb" xdp off ;;
  esac
  # Let the client's connections to the VIP finish closing before the next path's.
  sleep 1
}

target() { [ "$1" = direct ] && echo 10.97.0.11 || echo 10.99.0.100; }
rx_packets() { ns "$1" cat /sys/class/net/eth0/statistics/rx_packets; }
# Frames that reached the far end of path $1: the backends, or (xdp-tx) the client.
arrived() {
  if [ "$1" = xdp-tx ]; then rx_packets cli; else echo $(( $(rx_packets b1) + $(rx_packets b2) )); fi
}

# One measurement: prints "value core0_busy core1_busy".
measure() {
  local what=$1 path=$2 to
  to=$(target "$path")
  # The direct path's web target is one backend (there is no balancer to spread them).
  read -r a0 t0 < <(core_jiffies 0); read -r b0 u0 < <(core_jiffies 1)
  case $what in
    bulk1|bulk16)
      local n=1; [ "$what" = bulk16 ] && n=16
      ns cli taskset -c 0 iperf3 -c "$to" -p 5201 -P "$n" -t "$secs" -J > "$work/iperf.json" 2>&1 || true
      v=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['end']['sum_received']['bits_per_second'] / 1e9 if 'end' in d and 'sum_received' in d['end'] else 0)" "$work/iperf.json" 2>/dev/null || echo 0) ;;
    pps64)
      local mac=02:00:00:00:00:01
      [ "$path" = direct ] && mac=02:00:00:00:01:01
      local n0; n0=$(arrived "$path")
      if [ "$gen" = blast ]; then
        ns cli taskset -c 0 ./target/release/blast eth0 "$mac" 10.98.0.2 "$to" 9000 10000 "$secs" > "$work/blast.txt" 2>&1 || true
      else
        # The client's link's far side runs an XDP program (for the frames it sends by XDP_TX
        # to arrive); xdp-flood attaches one to the client's own end itself.
        ns lan ip link set dev "${pfx}cli" xdpdrv obj "$work/flood.bpf.o" sec pass
        ns cli taskset -c 0 "$work/xdp-flood" eth0 "$mac" 10.98.0.2 "$to" 9000 10000 "$secs" "$work/flood.bpf.o" > "$work/blast.txt" 2>&1 || true
        ns lan ip link set dev "${pfx}cli" xdp off
      fi
      sleep 0.2
      local n1; n1=$(arrived "$path")
      v=$(python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3]) / 1e6:.4f}')" "$n0" "$n1" "$secs")
      [ -n "${BENCH_DEBUG:-}" ] && cat "$work/blast.txt" >&2 ;;
    conns)
      ns cli taskset -c 0 wrk -t1 -c64 -d"$secs" --timeout 5s -H "Connection: close" "http://$to:81/" > "$work/wrk.txt" 2>&1 || true
      v=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt"); v=${v:-0} ;;
  esac
  read -r a1 t1 < <(core_jiffies 0); read -r b1 u1 < <(core_jiffies 1)
  python3 -c "import sys; a,t,b,u=map(int,sys.argv[1:5]); print(sys.argv[5], f'{a/max(t,1):.2f}', f'{b/max(u,1):.2f}')" \
    $((a1 - a0)) $((t1 - t0)) $((b1 - b0)) $((u1 - u0)) "$v"
}

echo "round,path,metric,value,core0_busy,core1_busy" > "$out/runs.csv"
echo "bench-l4-paths: $rounds rounds of $paths ($metrics_wanted; small packets from $gen), ${secs} s per run"
for r in $(seq "$rounds"); do
  for path in $paths; do
    case $path in
      haproxy) metrics="bulk1 bulk16 conns" ;;
      xdp-tx) metrics="pps64" ;;
      *) metrics="bulk1 bulk16 conns pps64" ;;
    esac
    wanted=0
    for what in $metrics; do case " $metrics_wanted " in *" $what "*) wanted=1 ;; esac; done
    [ "$wanted" = 1 ] || continue
    start_path "$path"
    for what in $metrics; do
      case " $metrics_wanted " in *" $what "*) ;; *) continue ;; esac
      read -r v c0 c1 < <(measure "$what" "$path")
      echo "$r,$path,$what,$v,$c0,$c1" >> "$out/runs.csv"
      printf "round %s  %-9s %-7s %10s   cores busy: 0 %s, 1 %s\n" "$r" "$path" "$what" "$v" "$c0" "$c1"
    done
    stop_path "$path"
  done
done
python3 - "$out/runs.csv" "$out/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
unit = {"bulk1": "Gbit/s", "bulk16": "Gbit/s", "conns": "conn/s", "pps64": "Mpps"}
med = {}
with open(sys.argv[2], "w") as f:
    w = csv.writer(f)
    w.writerow(["path", "metric", "median", "min", "max", "core0_busy", "core1_busy", "rounds"])
    for metric in ("bulk1", "bulk16", "conns", "pps64"):
        for path in dict.fromkeys(r["path"] for r in rows):
            v = [float(r["value"]) for r in rows if r["path"] == path and r["metric"] == metric]
            if not v:
                continue
            c0 = statistics.median(float(r["core0_busy"]) for r in rows if r["path"] == path and r["metric"] == metric)
            c1 = statistics.median(float(r["core1_busy"]) for r in rows if r["path"] == path and r["metric"] == metric)
            m = statistics.median(v); med[(path, metric)] = m
            w.writerow([path, metric, f"{m:.4g}", f"{min(v):.4g}", f"{max(v):.4g}", c0, c1, len(v)])
            print(f"{metric:7s} {path:9s} {m:10.3f} {unit[metric]} [{min(v):.3f}-{max(v):.3f}]   cores busy: 0 {c0:.2f}, 1 {c1:.2f}")
for metric in ("bulk1", "bulk16", "conns", "pps64"):
    s = med.get(("sluice", metric))
    if not s:
        continue
    for other in ("sluice-generic", "nftables", "haproxy", "direct", "xdp-tx"):
        o = med.get((other, metric))
        if o:
            print(f"sluice / {other} ({metric}): {s / o:.2f}")
PY
echo "wrote $out/runs.csv and $out/results.csv"
