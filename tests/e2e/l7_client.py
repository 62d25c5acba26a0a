#!/usr/bin/env python3
"""Clients for the L7 end-to-end tests that curl cannot be:

  raw HOST PORT TEXT      sends TEXT (Python escapes allowed, e.g. \\r\\n, \\x00) and prints
                          the status line of the answer (or "closed")
  ws HOST PORT            upgrades /ws to a byte stream and checks 1 MB echoed back
  slowloris HOST PORT N   opens N connections, each sending half a request head and then a
                          byte every second; prints how many the server closed within 8 s
"""
import socket, sys, time


def status(s):
    buf = b""
    s.settimeout(5)
    try:
        while b"\r\n" not in buf:
            b = s.recv(4096)
            if not b:
                break
            buf += b
    except OSError:
        pass
    return buf.split(b"\r\n")[0].decode("latin-1") or "closed"


cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cmd == "raw":
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(sys.argv[4].encode("latin-1").decode("unicode_escape").encode("latin-1"))
    print(status(s))
elif cmd == "ws":
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    data = bytes(range(256)) * 4096
    got = b""
    sent = 0
    s.setblocking(True)
    while len(got) < len(data):
        if sent < len(data):
            sent += s.send(data[sent:sent + 65536])
        s.settimeout(0.05 if sent < len(data) else 5)
        try:
            b = s.recv(65536)
            if not b:
                break
            got += b
        except socket.timeout:
            pass
    print("echoed" if got == data else "mismatch %d of %d" % (len(got), len(data)))
elif cmd == "slowloris":
    n = int(sys.argv[4])
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        s.setblocking(False)
        conns.append(s)
    closed = set()
    start = time.time()
    while time.time() - start < 8 and len(closed) < n:
        time.sleep(1)
        for i, s in enumerate(conns):
            if i in closed:
                continue
            try:
                s.send(b"a")
                if s.recv(4096) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
    print("closed %d of %d" % (len(closed), n))
