#!/usr/bin/env python3
"""A backend's tunnel endpoint in user space, for kernels built without ipip or fou.

Backends of an ipip or gue service normally take the encapsulation off with the kernel's
tunnel devices (`tunl0`, `ip fou add port 6080 gue`). Where the kernel has neither (some CI
VMs' kernels are built without them and cannot load modules), this does the same job: it
receives the encapsulated packets sluice sends, checks the outer headers, and hands the inner
datagram to the kernel through a TUN device, so the backend's own TCP stack and HTTP server
answer the client directly, exactly as with the kernel's decapsulation.

  decap.py ipip            raw socket for IP protocol 4 (the kernel keeps the outer header)
  decap.py gue PORT        UDP socket on PORT; GUE variant 0 header, inner IPv4 (proto 4)

Packets that are not well-formed tunnel packets are dropped and counted; SIGTERM prints the
counts. The TUN device is `decap0`, brought up with rp_filter off (the inner source, the
client, is not reachable through it).
"""

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

counts = {"decapsulated": 0, "malformed": 0}


def report(*_):
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    sys.exit(0)


def ipv4_checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def inner_of_ipip(packet: bytes):
    """The inner datagram of an IPv4 packet carrying IP-in-IP, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl + 20 or packet[9] != 4:
        return None
    if not ipv4_checksum_ok(packet[:ihl]):
        return None
    inner = packet[ihl:]
    return inner if inner[0] >> 4 == 4 else None


def inner_of_gue(payload: bytes):
    """The inner datagram of a GUE (variant 0) UDP payload, or None."""
    if len(payload) < 4:
        return None
    version = payload[0] >> 6
    control = (payload[0] >> 5) & 1
    hlen = (payload[0] & 0x1F) * 4
    proto = payload[1]
    if version != 0 or control or proto != 4 or len(payload) < 4 + hlen + 20:
        return None
    inner = payload[4 + hlen :]
    return inner if inner[0] >> 4 == 4 else None


def main():
    mode = sys.argv[1]
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"decap0", IFF_TUN | IFF_NO_PI))
    subprocess.run(["ip", "link", "set", "decap0", "up"], check=True)
    subprocess.run(
        ["sysctl", "-qw", "net.ipv4.conf.decap0.rp_filter=0"], check=True
    )
    if mode == "ipip":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
        unwrap = inner_of_ipip
    elif mode == "gue":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", int(sys.argv[2])))
        unwrap = inner_of_gue
    else:
        sys.exit(f"decap.py: unknown mode {mode!r} (ipip or gue)")
    signal.signal(signal.SIGTERM, report)
    print(f"decap.py: {mode} -> decap0", flush=True)
    while True:
        data = sock.recv(65535)
        inner = unwrap(data)
        if inner is None:
            counts["malformed"] += 1
            continue
        os.write(tun, inner)
        counts["decapsulated"] += 1


if __name__ == "__main__":
    main()
