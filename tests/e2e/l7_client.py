#!/usr/bin/env python3
"""Clients for the L7 end-to-end tests that curl cannot be:

  raw HOST PORT TEXT      sends TEXT (Python escapes allowed, e.g. \\r\\n, \\x00) and prints
                          the status line of the answer (or "closed")
  ws HOST PORT            upgrades /ws to a byte stream and checks 1 MB echoed back
  slowloris HOST PORT N   opens N connections, each sending half a request head and then a
                          byte every second; prints how many the server closed within 8 s
  idle HOST PORT N SECS   opens N keep-alive connections (200 at a time), makes one request
                          on each, holds them all idle for SECS seconds, then asks again on
                          every 100th; prints "held N, answered M of K"
  flood HOST PORT N       sends a head of N header fields (a header flood); prints the
                          status line of the answer
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
elif cmd == "flood":
    s = socket.create_connection((host, port), timeout=5)
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Flood: aaaaaaaaaaaaaaaa\r\n" * int(sys.argv[4])
    try:
        s.sendall(head + b"\r\n")
    except OSError:
        pass
    print(status(s))
elif cmd == "idle":
    import selectors
    n, secs = int(sys.argv[4]), float(sys.argv[5])
    req = b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"

    def answered(batch):
        """Waits for one whole answer on each socket of batch; returns how many came."""
        sel = selectors.DefaultSelector()
        bufs = {}
        for c in batch:
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            bufs[c] = b""
        done, deadline = 0, time.time() + 20
        while bufs and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                c = key.fileobj
                try:
                    b = c.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    b = b""
                if b:
                    bufs[c] += b
                head, sep, body = bufs[c].partition(b"\r\n\r\n")
                length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if not b or (sep and length and len(body) >= length[0]):
                    if b:
                        done += 1
                    sel.unregister(c)
                    del bufs[c]
        sel.close()
        return done

    conns = []
    for start in range(0, n, 200):
        batch = []
        for _ in range(min(200, n - start)):
            c = socket.create_connection((host, port), timeout=10)
            c.sendall(req)
            batch.append(c)
        if answered(batch) != len(batch):
            print("setup failed at", start)
            sys.exit(1)
        conns.extend(batch)
    time.sleep(secs)
    probe = conns[::100]
    for c in probe:
        c.setblocking(True)
        c.sendall(req)
    print("held %d, answered %d of %d" % (len(conns), answered(probe), len(probe)))
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
