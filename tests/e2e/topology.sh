#!/usr/bin/env bash
# Builds (or tears down) the end-to-end test topology: network namespaces joined by veth
# links to a bridge, one shared L2 segment:
#
#   PFX-cli  (client)    eth0 10.98.0.2/24 and fd98::2/64, MAC 02:00:00:00:00:fe; the VIPs
#                        10.99.0.100 and fd99::100 on-link
#   PFX-lb   (sluice)    eth0 MAC 02:00:00:00:00:01, no kernel address: sluice owns it (its
#                        node addresses are 10.99.0.1 and fd99::1)
#   PFX-bN   (backend N) eth0 10.99.0.1N/24 and fd99::1N/64, MAC 02:00:00:00:01:0N; HTTP
#                        servers (both families) on :8080 and :80 answering "bN" (and /big,
#                        3 MB), an iperf3 server on :5201
#   PFX-lan              the bridge joining them
#
# Every host is dual-stack (IPv6 without duplicate address detection, so addresses work at
# once): the client finds the IPv6 VIP, and the backends the IPv6 node address, by neighbour
# discovery, which sluice answers itself.
#
# A second subnet, 10.97.0.0/24 (client .2, backend N .1N), joins the client and the backends
# directly over the same links, without sluice: the reference path for measurements.
#
# The client finds the VIP, and the backends sluice's node address, by ARP, which sluice
# answers itself (no static neighbour entries). Checksum, segmentation and receive offloads are off on the
# veths, so every frame sluice sees is a real one with a complete checksum.
#
# MODE sets up the backends as operators do for each forwarding mode:
#   nat   replies to clients go back through sluice (route to 10.98.0.0/24 via 10.99.0.1)
#   snat  nothing more: sluice's node address is on-link
#   dsr   the VIP on loopback, arp_ignore=1 / arp_announce=2, replies straight to the client
#   ipip  as dsr, plus the kernel's ipip tunnel device up to decapsulate (rp_filter off)
#   gue   as ipip, plus `ip fou add port 6080 gue` to take the UDP encapsulation off
#   Where the kernel has no ipip (or fou), tests/e2e/decap.py takes the encapsulation off in
#   user space and hands the inner packet to the kernel through a TUN device; which one ran
#   is written to WORKDIR/decapsulator.
#
# QUEUES (default 1) gives sluice's veth that many queues each way (the kernel spreads flows
# over them by hash), for more than one AF_XDP worker.
#
# With VLAN set in the environment (an 802.1Q id), sluice's link is a trunk, as a switch
# gives a balancer: the hosts stay untagged on their access ports, and everything between
# the segment and sluice's eth0 is tagged with VLAN. This kernel has neither VLAN devices nor
# a VLAN-filtering bridge, so tests/e2e/vlan_trunk.py is that switch port: it sits between
# the bridge (through the veth pair PFXacc0/PFXacc1) and sluice's link (PFXlb), tags what goes
# to sluice, and untags (or, untagged or on another VLAN, drops and counts) what comes back.
#
# Usage: topology.sh up PFX BACKENDS WORKDIR MODE [QUEUES] | down PFX
set -euo pipefail
cmd=$1; pfx=$2
. "$(dirname "$0")/netns.sh"
if [ "$cmd" = down ]; then down; exit 0; fi
n=$3; work=$4; mode=${5:-nat}; queues=${6:-1}
down
ip netns add "$pfx-lan"
ns lan ip link add br0 type bridge
ns lan ip link set br0 up
ns lan ip link set lo up
port() { # name mac [queues] -> a namespace with eth0 bridged into the lan
  local q=${3:-1}
  ip netns add "$pfx-$1"
  ns "$1" ip link set lo up
  ip link add "${pfx}$1" netns "$pfx-lan" numtxqueues "$q" numrxqueues "$q" type veth \
    peer name eth0 netns "$pfx-$1" numtxqueues "$q" numrxqueues "$q"
  if [ -n "${VLAN:-}" ] && [ "$1" = lb ]; then
    ns lan ip link set "${pfx}$1" up  # the trunk, not a bridge port (below)
  else
    ns lan ip link set "${pfx}$1" master br0 up
  fi
  ns "$1" ip link set eth0 address "$2"
  ns "$1" ip link set eth0 up
  ns "$1" ethtool -K eth0 tx off rx off tso off gso off gro off txvlan off rxvlan off >/dev/null 2>&1 || true
  ns lan ethtool -K "${pfx}$1" tx off rx off tso off gso off gro off txvlan off rxvlan off >/dev/null 2>&1 || true
}
dev=eth0
port cli 02:00:00:00:00:fe
ns cli ip addr add 10.98.0.2/24 dev "$dev"
ns cli ip addr add 10.97.0.2/24 dev "$dev"
ns cli ip route add 10.99.0.100/32 dev "$dev"
ns cli ip -6 addr add fd98::2/64 dev "$dev" nodad
ns cli ip -6 route add fd99::100/128 dev "$dev"
port lb 02:00:00:00:00:01 "$queues"
if [ -n "${VLAN:-}" ]; then
  ns lan ip link add "${pfx}acc0" type veth peer name "${pfx}acc1"
  ns lan ip link set "${pfx}acc0" master br0 up
  ns lan ip link set "${pfx}acc1" up
  for i in "${pfx}acc0" "${pfx}acc1" "${pfx}lb"; do
    ns lan ethtool -K "$i" tx off rx off tso off gso off gro off txvlan off rxvlan off >/dev/null 2>&1 || true
  done
  ns lan sysctl -qw "net.ipv6.conf.${pfx}acc1.disable_ipv6=1" "net.ipv6.conf.${pfx}lb.disable_ipv6=1"
  ns lan python3 "$(dirname "$0")/vlan_trunk.py" "${pfx}acc1" "${pfx}lb" "$VLAN" > "$work/vlan-trunk.log" 2>&1 &
  for _ in $(seq 50); do grep -q ready "$work/vlan-trunk.log" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/vlan-trunk.log"
fi
case $mode in ipip|gue) ns lb ip link set eth0 mtu 1600; ns lan ip link set "${pfx}lb" mtu 1600 ;; esac
for i in $(seq 1 "$n"); do
  port "b$i" "02:00:00:00:01:0$i"
  ns "b$i" ip addr add "10.99.0.1$i/24" dev "$dev"
  ns "b$i" ip addr add "10.97.0.1$i/24" dev "$dev"
  ns "b$i" ip -6 addr add "fd99::1$i/64" dev "$dev" nodad
  case $mode in
    nat)
      ns "b$i" ip route add 10.98.0.0/24 via 10.99.0.1 dev "$dev" onlink
      ns "b$i" ip -6 route add fd98::/64 via fd99::1 dev "$dev" onlink
      ;;
    snat) ;;
    dsr|ipip|gue)
      # (IPv6 answers neighbour solicitations only for addresses of the interface asked,
      # so the VIP on lo needs no arp_ignore counterpart.)
      ns "b$i" ip -6 addr add fd99::100/128 dev lo nodad
      ns "b$i" ip -6 route add fd98::/64 dev "$dev"
      ns "b$i" ip addr add 10.99.0.100/32 dev lo
      ns "b$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
        net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
      ns "b$i" ip route add 10.98.0.0/24 dev "$dev"
      if [ "$mode" != dsr ]; then
        # The tunnel adds 20 (ipip) or 32 (gue) bytes to the client's full-size segments: as
        # operators do, the balancer-to-backend links carry a larger MTU than the clients'.
        ns "b$i" ip link set eth0 mtu 1600
        ns lan ip link set "${pfx}b$i" mtu 1600
        modprobe ipip 2>/dev/null || true
        [ "$mode" = gue ] && { modprobe fou 2>/dev/null || true; }
        ns "b$i" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
          net.ipv4.conf.eth0.rp_filter=0
        if ns "b$i" ip link set tunl0 up 2>/dev/null &&
          { [ "$mode" = ipip ] || ns "b$i" ip fou add port 6080 gue 2>/dev/null; }; then
          ns "b$i" sysctl -qw net.ipv4.conf.tunl0.rp_filter=0
          echo kernel > "$work/decapsulator"
        else
          # No ipip/fou in this kernel: the user-space tunnel endpoint does the same job.
          ns "b$i" python3 "$(dirname "$0")/decap.py" "$mode" 6080 > "$work/decap-b$i.log" 2>&1 &
          for _ in $(seq 50); do ns "b$i" ip link show decap0 >/dev/null 2>&1 && break; sleep 0.1; done
          ns "b$i" ip link show decap0 >/dev/null
          echo user-space > "$work/decapsulator"
        fi
      fi
      ;;
    *) echo "topology.sh: unknown mode $mode" >&2; exit 2 ;;
  esac
  mkdir -p "$work/b$i"
  printf 'b%s\n' "$i" > "$work/b$i/index.html"
  head -c 3000000 /dev/zero > "$work/b$i/big"
  for p in 8080 80; do
    # `::` binds both families (http.server's dual-stack socket).
    ns "b$i" python3 -m http.server $p --bind :: --directory "$work/b$i" >/dev/null 2>&1 &
  done
  ns "b$i" iperf3 -s -D -p 5201 --idle-timeout 30 >/dev/null 2>&1
done
# Wait for the servers.
for i in $(seq 1 "$n"); do
  for _ in $(seq 50); do
    ns "b$i" curl -s -m 1 "http://10.99.0.1$i:8080/" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
