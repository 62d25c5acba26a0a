#!/usr/bin/env bash
# Established flows under a SYN flood: the goodput of one iperf3 TCP stream through sluice
# (AF_XDP, NAT, one worker on core 1, the e2e namespaces of tests/e2e/topology.sh) while a
# second namespace floods the VIP with spoofed-source SYNs as fast as hping3 can
# (`--flood --rand-source`), against the same stream without the flood, in the same run. Each
# round runs both, alternating, SECONDS each; reports the median and the spread of each
# figure and of the per-round ratio (issue 18's target: the established flow keeps its
# backend and at least 0.9 of its rate), and the conntrack's evictions (a flood must evict
# only half-open flows) and the flood's packet rate as sluice counted it.
#
# With -p on (or auto), the service has `syn_proxy` set so: sluice answers the flood's SYNs
# itself with cookies and the backend never sees them. sluice's resident memory is read before
# and after every flood (it must stay flat: nothing a flood sends is kept), and the SYN
# proxy's counters are reported.
#
# The machine has two cores: hping3 takes one of them (it shares core 0 with iperf3 and the
# kernel's TCP work); sluice's worker has core 1. The ratio therefore also says how much the
# flood's own CPU costs the client and backend, which a separate attacker would not. To tell
# the two apart, every round also runs the stream while the same hping3 floods its own
# namespace's address (the flood never leaves the attacker, so sluice sees none of it): the
# goodput that the flood's CPU alone leaves, the reference for what sluice itself costs.
#
# With -k, the kernel's delivery of what sluice transmits (the veth's receive side in the
# bridge's namespace) is steered to core 0 by RPS: on veth, a frame sluice sends is otherwise
# carried through the bridge and into the receiving namespace's stack in softirq on sluice's
# own core, work that a NIC's DMA takes off the balancer's core entirely.
#
# Usage: scripts/bench-flood.sh [-s SECONDS] [-r ROUNDS] [-c CONNTRACK_CAPACITY] [-p off|on|auto] [-k]
# Needs root. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=8; rounds=3; capacity=65536; proxy=off; steer=0
while getopts "s:r:c:p:k" o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) capacity=$OPTARG ;; p) proxy=$OPTARG ;; k) steer=1 ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
  esac
done
case $proxy in off|on|auto) ;; *) echo "bench-flood: -p takes off, on or auto (got '$proxy')" >&2; exit 2 ;; esac
ensure_packages iproute2 ethtool python3 iperf3 hping3 libxdp-dev libbpf-dev clang
work=$(mktemp -d); pfx=bfl
ns() { ip netns exec "$pfx-$1" "${@:2}"; }
cleanup() {
  pkill -f "hping3 --flood" 2>/dev/null || true
  pkill -INT -f "sluice run --config $work" 2>/dev/null || true
  sleep 1
  bash tests/e2e/topology.sh down "$pfx" || true
  ip netns del "$pfx-atk" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build -q --release -p sluice --bin sluice -p ctl --bin sluicectl
bash tests/e2e/topology.sh up "$pfx" 1 "$work" nat > /dev/null
# The attacker: its own namespace on the same segment.
ip netns add "$pfx-atk"
ip link add "${pfx}atk" netns "$pfx-lan" type veth peer name eth0 netns "$pfx-atk"
ns lan ip link set "${pfx}atk" master br0 up
ns atk ip link set eth0 up
ns atk ip addr add 10.98.0.66/24 dev eth0
ns atk ip route add 10.99.0.100/32 dev eth0
if [ "$steer" = 1 ]; then
  ns lan sh -c "echo 1 > /sys/class/net/${pfx}lb/queues/rx-0/rps_cpus"
fi
cat > "$work/sluice.toml" <<EOF
[node]
mac = "02:00:00:00:00:01"
ipv4 = "10.99.0.1"
gateway = "10.98.0.2"
[conntrack]
capacity = $capacity
[dataplane]
driver = "xdp"
cores = [1]
[dataplane.xdp]
interface = "eth0"
[control]
socket = "$work/ctl.sock"
[[service]]
name = "iperf"
vip = "10.99.0.100:5201"
protocol = "tcp"
forwarding = "nat"
syn_proxy = "$proxy"
[[service.backend]]
address = "10.99.0.11:5201"
EOF
ns lb ./target/release/sluice run --config "$work/sluice.toml" -q > "$work/sluice.log" 2>&1 &
for _ in $(seq 100); do [ -S "$work/ctl.sock" ] && break; sleep 0.1; done
ctl() { ./target/release/sluicectl --socket "$work/ctl.sock" --json "$@"; }
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read())['result']; print(eval('d' + sys.argv[1]))" "$1"; }
iperf() {  # -> received bits/s
  ns cli iperf3 -c 10.99.0.100 -t "$secs" -J | python3 -c "import json,sys; print(json.load(sys.stdin)['end']['sum_received']['bits_per_second'])"
}
: > "$work/rounds.csv"
rss() {  # sluice's resident memory, KiB
  local pid
  pid=$(pgrep -f "sluice run --config $work" | head -1)
  awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0
}
for r in $(seq "$rounds"); do
  quiet=$(iperf)
  before=$(ctl stats)
  rss0=$(rss)
  ns atk timeout "$((secs + 2))" hping3 --flood --rand-source -S -p 5201 10.99.0.100 > /dev/null 2>&1 &
  hp=$!
  sleep 1
  flooded=$(iperf)
  wait "$hp" || true
  ns atk timeout "$((secs + 2))" hping3 --flood --rand-source -S -p 5201 10.98.0.66 > /dev/null 2>&1 &
  hp2=$!
  sleep 1
  elsewhere=$(iperf)
  wait "$hp2" || true
  rss1=$(rss)
  after=$(ctl stats)
  pin=$(( $(echo "$after" | field "['packets_in']") - $(echo "$before" | field "['packets_in']") ))
  ev=$(( $(echo "$after" | field "['conntrack']['evictions']") - $(echo "$before" | field "['conntrack']['evictions']") ))
  hoev=$(( $(echo "$after" | field "['conntrack']['half_open_evictions']") - $(echo "$before" | field "['conntrack']['half_open_evictions']") ))
  cookies=$(( $(echo "$after" | field "['syn_proxy']['cookies']") - $(echo "$before" | field "['syn_proxy']['cookies']") ))
  echo "$r,$quiet,$flooded,$pin,$ev,$hoev,$cookies,$rss0,$rss1,$elsewhere" >> "$work/rounds.csv"
  echo "round $r: quiet $(python3 -c "print(f'{$quiet/1e9:.2f}')") Gbit/s, during the flood $(python3 -c "print(f'{$flooded/1e9:.2f}')") Gbit/s, during a flood that never reaches sluice $(python3 -c "print(f'{$elsewhere/1e9:.2f}')") Gbit/s; $pin packets in, $ev established evictions, $hoev half-open evictions, $cookies SYNs answered by the proxy; resident memory $rss0 -> $rss1 KiB" >&2
done
echo "syn_proxy = \"$proxy\""
python3 - "$work/rounds.csv" "$secs" <<'PY'
import csv, statistics, sys
rows = [[float(x) for x in r] for r in csv.reader(open(sys.argv[1]))]
secs = float(sys.argv[2])
def med(v):
    v = sorted(v)
    return statistics.median(v), v[0], v[-1]
q = med([r[1] / 1e9 for r in rows]); f = med([r[2] / 1e9 for r in rows])
ratio = med([r[2] / r[1] for r in rows])
rate = med([r[3] / (secs + 1) / 1e6 for r in rows])
print(f"iperf3 alone:            {q[0]:.2f} Gbit/s [{q[1]:.2f}–{q[2]:.2f}]")
print(f"iperf3 during the flood: {f[0]:.2f} Gbit/s [{f[1]:.2f}–{f[2]:.2f}]")
print(f"ratio (per round):       {ratio[0]:.2f} [{ratio[1]:.2f}–{ratio[2]:.2f}]   (target >= 0.9)")
e = med([r[9] / 1e9 for r in rows]); er = med([r[2] / r[9] for r in rows])
print(f"iperf3 during a flood that never reaches sluice (the flood's own CPU): {e[0]:.2f} Gbit/s [{e[1]:.2f}–{e[2]:.2f}]")
print(f"during the flood against that reference (what sluice costs): {er[0]:.2f} [{er[1]:.2f}–{er[2]:.2f}]")
print(f"packets into sluice during a flood round: {rate[0]:.2f} M/s [{rate[1]:.2f}–{rate[2]:.2f}]")
print(f"established flows evicted: {int(sum(r[4] for r in rows))}; half-open evictions: {int(sum(r[5] for r in rows))}")
print(f"SYNs answered by the proxy: {int(sum(r[6] for r in rows))}")
growth = [r[8] - r[7] for r in rows]
print(f"resident memory across each flood: {', '.join(f'{g:+.0f} KiB' for g in growth)} (from {rows[0][7] / 1024:.1f} MiB)")
PY
