#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/TARGET/) from files in this checkout:

  frame    every 13th frame of examples/sample.pcap (web over IPv4 and IPv6, DNS, ARP,
           other hosts' traffic, malformed frames), one file each
  burst    runs of 8 consecutive frames of it, each frame as [len_hi, len_lo, bytes...]
  control  one control-protocol request per line, one of every verb, valid and not
  config   examples/*.toml, packaging/sluice.toml and the fuzz configuration
  cookie   a flow, an ISN, a cookie and a time, then a SYN's options (Linux's, none, cut)

    python3 fuzz/make-seeds.py      (from the checkout; replaces the corpus directories)
"""

import glob
import hashlib
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    at, out = 24, []
    while at + 16 <= len(data):
        _s, _f, incl, _orig = struct.unpack(endian + "IIII", data[at : at + 16])
        out.append(data[at + 16 : at + 16 + incl])
        at += 16 + incl
    return out


def write(target, blob):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(blob).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


CONTROL = [
    '{"version": 1, "op": "status"}',
    '{"version": 1, "op": "service-list"}',
    '{"version": 1, "op": "backend-drain", "service": "web", "address": "10.1.0.2:8080"}',
    '{"version": 1, "op": "backend-enable", "service": "web", "address": "10.1.0.2:8080"}',
    '{"version": 1, "op": "backend-set-weight", "service": "web", "address": "10.1.0.1:8080", "weight": 3}',
    '{"version": 1, "op": "backend-set-weight", "service": "web", "address": "10.1.0.1:8080", "weight": 0}',
    '{"version": 1, "op": "backend-add", "service": "web", "backend": {"address": "10.1.0.3:8080", "mac": "02:00:00:00:01:03"}}',
    '{"version": 1, "op": "backend-remove", "service": "web", "address": "10.1.0.1:8080", "force": true}',
    '{"version": 1, "op": "backend-remove", "service": "web", "address": "10.1.0.2:8080", "force": true}',
    '{"version": 1, "op": "service-add", "spec": {"name": "dns", "vip": "198.51.100.53:53", "protocol": "udp", "forwarding": "nat", "backends": [{"address": "10.2.0.1:53"}]}}',
    '{"version": 1, "op": "service-remove", "service": "web"}',
    '{"version": 1, "op": "batch", "ops": [{"op": "backend-drain", "service": "web", "address": "10.1.0.1:8080"}, {"op": "backend-set-weight", "service": "nope", "address": "10.1.0.1:8080", "weight": 2}]}',
    '{"version": 1, "op": "node-drain"}',
    '{"version": 1, "op": "node-standby"}',
    '{"version": 1, "op": "node-activate"}',
    '{"version": 1, "op": "reload"}',
    '{"version": 1, "op": "limits"}',
    '{"version": 2, "op": "status"}',
    '{"op": "status", "extra": 1}',
]


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    sample = frames(os.path.join(ROOT, "examples", "sample.pcap"))
    for f in sample[::13]:
        write("frame", f)
    for i in range(0, len(sample) - 8, 40):
        write("burst", b"".join(struct.pack(">H", len(f)) + f for f in sample[i : i + 8]))
    for i in range(0, len(CONTROL), 3):
        write("control", ("\n".join(CONTROL[i : i + 3]) + "\n").encode())
    configs = glob.glob(os.path.join(ROOT, "examples", "*.toml"))
    configs.append(os.path.join(ROOT, "packaging", "sluice.toml"))
    for c in configs:
        with open(c, "rb") as f:
            write("config", f.read())
    with open(os.path.join(ROOT, "fuzz", "src", "lib.rs")) as f:
        src = f.read()
    burst_config = src.split('pub const BURST_CONFIG: &str = r#"', 1)[1].split('"#;', 1)[0]
    write("config", burst_config.encode())
    # cookie: src, dst, ports, ISN, cookie, time / 16, then a SYN's options (Linux's, none,
    # and a malformed run).
    head = struct.pack(">IIIIII", 0xCB007109, 0xC633640A, (80 << 16) | 40000, 12345, 0, 112500000)
    for opts in (bytes([2, 4, 5, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]), b"", bytes([2, 4, 5])):
        write("cookie", head + opts)
    for t in sorted(os.listdir(OUT)):
        print(t, len(os.listdir(os.path.join(OUT, t))))


if __name__ == "__main__":
    main()
