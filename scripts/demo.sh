#!/usr/bin/env bash
# sluice's main job, live, on an embedded default: builds a small network in namespaces on
# this machine (tests/e2e/topology.sh: a client, three backends running HTTP servers that
# answer with their own name, and sluice's namespace, on one bridged segment), starts
# `sluice run` there on AF_XDP balancing the VIP 10.99.0.100:80 over the backends with
# weights 1:1:2 (NAT), and beside it an HTTP service on 10.99.0.100:81 that sluice's L7 pool
# terminates and routes by host name to two pools (one with a sticky cookie); sends requests
# with curl and shows where they went, drains a backend with sluicectl and shows that new
# requests avoid it, then stops and removes everything.
#
#   scripts/demo.sh            the live demo above (root: namespaces, XDP)
#   scripts/demo.sh --replay   the same data path offline: replays examples/sample.pcap
#                              through examples/sluice.toml (sluice itself needs no privileges)
#
# Run as root on Debian 12 from anywhere in the checkout. Outputs land in target/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages build-essential pkg-config libdpdk-dev libclang-dev libxdp-dev libbpf-dev clang \
  iproute2 ethtool curl python3 iperf3
ensure_rust
cargo build --release -q -p sluice -p ctl --bin sluice --bin sluicectl
mkdir -p target/demo
demo=$(cd target/demo && pwd)

if [ "${1:-}" = --replay ]; then
  ./target/release/sluice replay \
    --config examples/sluice.toml \
    --input examples/sample.pcap \
    --output target/demo/out.pcap \
    --host-output target/demo/host.pcap \
    --stats target/demo/stats.json
  echo
  echo "written: target/demo/out.pcap (forwarded frames), target/demo/host.pcap (not ours), target/demo/stats.json"
  exit 0
fi

pfx=demo
topo=tests/e2e/topology.sh
pid=
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  bash $topo down $pfx
}
trap cleanup EXIT
echo "== building the network: client 10.98.0.2, backends b1-b3 at 10.99.0.11-13:8080, VIP 10.99.0.100:80"
bash $topo up $pfx 3 "$demo/www" nat
core=$(( $(nproc) - 1 ))
cat > "$demo/sluice.toml" <<TOML
[node]
mac = "02:00:00:00:00:01"          # sluice's interface in the demo-lb namespace
ipv4 = "10.99.0.1"                  # the backends' route back to clients
gateway_mac = "02:00:00:00:00:fe"   # the client, on-link

[control]
socket = "$demo/control.sock"
drain_timeout = 30

[dataplane]
driver = "xdp"
cores = [$core]

[dataplane.xdp]
interface = "eth0"

[[service]]
name = "web"
vip = "10.99.0.100:80"
protocol = "tcp"
forwarding = "nat"

[[service.backend]]
address = "10.99.0.11:8080"
mac = "02:00:00:00:01:01"
weight = 1

[[service.backend]]
address = "10.99.0.12:8080"
mac = "02:00:00:00:01:02"
weight = 1

[[service.backend]]
address = "10.99.0.13:8080"
mac = "02:00:00:00:01:03"
weight = 2

# An HTTP service on the same address: TCP ends in sluice's L7 pool, each request is routed
# by its Host to a pool, and balanced there (connections to the backends come from 10.99.0.1).
[[service]]
name = "site"
vip = "10.99.0.100:81"
protocol = "tcp"
forwarding = "l7"
l7 = "http"
default_pool = "app"

[[service.route]]
host = "static.example"
pool = "static"

[[service.pool]]
name = "static"
[[service.pool.backend]]
address = "10.99.0.11:8080"

[[service.pool]]
name = "app"
sticky_cookie = "SLUICE_AFFINITY"
[[service.pool.backend]]
address = "10.99.0.12:8080"
[[service.pool.backend]]
address = "10.99.0.13:8080"
TOML
rm -f "$demo/control.sock"
ip netns exec $pfx-lb ./target/release/sluice run --config "$demo/sluice.toml" &
pid=$!
for _ in $(seq 100); do [ -S "$demo/control.sock" ] && break; sleep 0.1; done
ctl() { ./target/release/sluicectl --socket "$demo/control.sock" "$@"; }
requests() {
  ip netns exec $pfx-cli bash -c "for i in \$(seq $1); do curl -s -m 3 http://10.99.0.100/ || echo FAILED; done" \
    | sort | uniq -c | awk '{ printf "   %4d answered by %s\n", $1, $2 }'
}
echo
echo "== 100 requests from the client to the VIP (weights 1:1:2):"
requests 100
echo
echo "== the L7 service: 20 requests to 10.99.0.100:81 (default pool \"app\", round-robin over b2 and b3):"
ip netns exec $pfx-cli bash -c "for i in \$(seq 20); do curl -s -m 3 http://10.99.0.100:81/ || echo FAILED; done" \
  | sort | uniq -c | awk '{ printf "   %4d answered by %s\n", $1, $2 }'
echo "== 10 requests with Host: static.example (its route goes to pool \"static\": b1):"
ip netns exec $pfx-cli bash -c "for i in \$(seq 10); do curl -s -m 3 -H 'Host: static.example' http://10.99.0.100:81/ || echo FAILED; done" \
  | sort | uniq -c | awk '{ printf "   %4d answered by %s\n", $1, $2 }'
echo "== 10 requests carrying the sticky cookie sluice set on the first answer:"
ip netns exec $pfx-cli bash -c "curl -s -m 3 -c $demo/jar -o /dev/null http://10.99.0.100:81/; for i in \$(seq 10); do curl -s -m 3 -b $demo/jar http://10.99.0.100:81/ || echo FAILED; done" \
  | sort | uniq -c | awk '{ printf "   %4d answered by %s\n", $1, $2 }'
echo
echo "== sluicectl backend list web"
ctl backend list web
echo
echo "== sluicectl backend drain web 10.99.0.13:8080, then 60 more requests:"
ctl backend drain web 10.99.0.13:8080
requests 60
ctl backend enable web 10.99.0.13:8080 >/dev/null
echo
echo "== sluicectl stats"
ctl stats
echo
echo "== stopping sluice"
kill -INT $pid; wait $pid || true; pid=
