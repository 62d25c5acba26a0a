#!/usr/bin/env python3
"""An 802.1Q trunk port in user space, for kernels built without VLAN support.

A switch in front of a load balancer usually gives it a trunk: the clients' and backends'
access ports are untagged, and the balancer's link carries their traffic tagged with the
VLAN. This does that switch's job between two interfaces, so the end-to-end test runs on a
kernel that has neither VLAN devices nor a VLAN-filtering bridge (this one has none):

  vlan_trunk.py ACCESS TRUNK VLAN

Every frame from ACCESS (the bridge's side, untagged) leaves on TRUNK (sluice's link) with
the tag for VLAN inserted after the addresses; every frame from TRUNK tagged with VLAN leaves
on ACCESS untagged. A frame from TRUNK that is untagged or on another VLAN is dropped and
counted, as a trunk that carries only this VLAN does: so the test sees it if sluice ever sends
a frame without its tag. The receiving kernel moves a tag out of the frame's bytes into the
packet's metadata; it is read back from the socket's auxiliary data (PACKET_AUXDATA).

SIGTERM prints the counts. Written once both sockets are bound: `ready` on standard output.
"""

import select
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4

counts = {"tagged": 0, "untagged": 0, "dropped_untagged": 0, "dropped_other_vlan": 0}


def report(*_):
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    sys.exit(0)


def open_socket(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((ifname, 0))
    return s


def receive(s):
    """(frame, tag or None), or None for a frame this socket itself sent."""
    data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(32))
    if addr[2] == PACKET_OUTGOING:
        return None
    tci = None
    for level, kind, body in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(body) >= 20:
            status, _len, _snap, _mac, _net, vtci, _tpid = struct.unpack("IIIHHHH", body[:20])
            if status & TP_STATUS_VLAN_VALID:
                tci = vtci
    if tci is None and len(data) >= 18 and data[12:14] == b"\x81\x00":
        # The tag is still in the bytes (no offload took it out).
        tci = struct.unpack("!H", data[14:16])[0]
        data = data[:12] + data[16:]
    return data, tci


def main():
    access, trunk, vlan = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGTERM, report)
    a, t = open_socket(access), open_socket(trunk)
    tag = struct.pack("!HH", 0x8100, vlan & 0x0FFF)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([a, t], [], [])
        for s in ready:
            got = receive(s)
            if got is None:
                continue
            frame, tci = got
            if s is a:
                if tci is not None or len(frame) < 14:
                    continue
                t.send(frame[:12] + tag + frame[12:])
                counts["tagged"] += 1
            else:
                if tci is None:
                    counts["dropped_untagged"] += 1
                elif tci & 0x0FFF != vlan:
                    counts["dropped_other_vlan"] += 1
                else:
                    a.send(frame)
                    counts["untagged"] += 1


if __name__ == "__main__":
    main()
