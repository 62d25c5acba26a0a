#!/usr/bin/env bash
# Builds (or tears down) the ECMP topology: clients reach the VIP through a router that
# learns it over BGP from several sluice instances, each announcing it through ExaBGP.
#
#   PFX-cli   (client)     eth0 10.98.0.2/24, default route via the router
#   PFX-rtr   (router)     eth0 10.98.0.1/24 towards the client, eth1 10.99.0.254/24 on the
#                          lan; IP forwarding, multipath hashed on the 5-tuple
#                          (fib_multipath_hash_policy=1); BIRD (bird2) started by the test
#   PFX-lbN   (sluice N)   eth0 on the lan, MAC 02:00:00:00:00:0N; the kernel holds
#                          10.99.0.2N/24 for the BGP session (ExaBGP's "next-hop self"), sluice
#                          answers for its node address 10.99.0.N; sluice's XDP program passes
#                          the kernel's own traffic through
#   PFX-bN    (backend N)  eth0 10.99.0.1N/24, the VIP on loopback (DSR), replies to clients
#                          through the router; HTTP on :80 answering "bN" (and /big, 12 MB)
#   PFX-lan                the bridge joining the router, the instances and the backends
#
# Usage: ecmp.sh up PFX INSTANCES BACKENDS WORKDIR | down PFX
set -euo pipefail
cmd=$1; pfx=$2
. "$(dirname "$0")/netns.sh"
if [ "$cmd" = down ]; then down; exit 0; fi
instances=$3; n=$4; work=$5
down
ip netns add "$pfx-lan"
ns lan ip link add br0 type bridge
ns lan ip link set br0 up
port() { # name mac -> a namespace with eth0 bridged into the lan
  ip netns add "$pfx-$1" 2>/dev/null || true
  ns "$1" ip link set lo up
  ip link add "${pfx}$1" netns "$pfx-lan" type veth peer name "${3:-eth0}" netns "$pfx-$1"
  ns lan ip link set "${pfx}$1" master br0 up
  ns "$1" ip link set "${3:-eth0}" address "$2"
  ns "$1" ip link set "${3:-eth0}" up
  ns "$1" ethtool -K "${3:-eth0}" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
  ns lan ethtool -K "${pfx}$1" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
}
# The client and the router, joined directly.
ip netns add "$pfx-cli"
ip netns add "$pfx-rtr"
ns cli ip link set lo up
ip link add eth0 netns "$pfx-cli" type veth peer name eth0 netns "$pfx-rtr"
ns cli ip link set eth0 up
ns rtr ip link set eth0 up
ns cli ip addr add 10.98.0.2/24 dev eth0
ns cli ip route add default via 10.98.0.1
ns rtr ip addr add 10.98.0.1/24 dev eth0
port rtr 02:00:00:00:00:fe eth1
ns rtr ip addr add 10.99.0.254/24 dev eth1
ns rtr sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
  net.ipv6.conf.all.forwarding=1 net.ipv6.fib_multipath_hash_policy=1
for i in $(seq 1 "$instances"); do
  port "lb$i" "02:00:00:00:00:0$i"
  ns "lb$i" ip addr add "10.99.0.2$i/24" dev eth0
done
for i in $(seq 1 "$n"); do
  port "b$i" "02:00:00:00:01:0$i"
  ns "b$i" ip addr add "10.99.0.1$i/24" dev eth0
  ns "b$i" ip addr add 10.99.0.100/32 dev lo
  ns "b$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
  ns "b$i" ip route add 10.98.0.0/24 via 10.99.0.254
  mkdir -p "$work/b$i"
  printf 'b%s\n' "$i" > "$work/b$i/index.html"
  head -c 12000000 /dev/zero > "$work/b$i/big"
  ns "b$i" python3 -m http.server 80 --bind 0.0.0.0 --directory "$work/b$i" > /dev/null 2>&1 &
done
for i in $(seq 1 "$n"); do
  for _ in $(seq 50); do
    ns "b$i" curl -s -m 1 "http://10.99.0.1$i/" > /dev/null 2>&1 && break
    sleep 0.1
  done
done
