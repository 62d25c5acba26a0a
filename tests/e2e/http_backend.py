#!/usr/bin/env python3
"""An HTTP/1.1 keep-alive backend for the L7 end-to-end tests: real sockets, real threads.

  GET /...          "NAME PATH\n", and the request's X-Forwarded-For / Forwarded / Cookie
                    echoed as response headers (X-Saw-*)
  GET /stats        "connections=N requests=M": what this server has accepted so far
                    (/stats?from=IP: connections from that address only)
  GET /blob/N       N bytes, chunked, from a seeded generator (the test makes the same bytes)
  POST|PUT /digest  the SHA-256 of the request body (Content-Length or chunked)
  GET /hang         never answers
  GET /ws           a WebSocket-style upgrade (101), then echoes bytes until closed

Usage: http_backend.py PORT NAME
"""
import hashlib, http.server, socketserver, sys, threading, time

PORT, NAME = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
counts = {"connections": 0, "requests": 0}
by_source = {}


def blob(n):
    """n bytes: the repeating SHA-256 chain of b'sluice' (the test computes the same)."""
    out, h = bytearray(), hashlib.sha256(b"sluice").digest()
    while len(out) < n:
        out += h
        h = hashlib.sha256(h).digest()
    return bytes(out[:n])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with lock:
            counts["connections"] += 1
            ip = self.client_address[0]
            by_source[ip] = by_source.get(ip, 0) + 1

    def log_message(self, *a):
        pass

    def reply(self, body, code=200, extra=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            h = hashlib.sha256()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return h
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    h.update(chunk)
                    left -= len(chunk)
                self.rfile.readline()
        h, left = hashlib.sha256(), int(self.headers.get("Content-Length", "0"))
        while left:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        return h

    def do_GET(self):
        with lock:
            counts["requests"] += 1
        p = self.path
        if p == "/stats" or p.startswith("/stats?from="):
            with lock:
                conns = counts["connections"] if p == "/stats" else by_source.get(p.split("=", 1)[1], 0)
                s = "connections=%d requests=%d\n" % (conns, counts["requests"])
            return self.reply(s.encode())
        if p.startswith("/blob/"):
            data = blob(int(p[6:]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 1 << 16):
                c = data[i:i + (1 << 16)]
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if p == "/hang":
            time.sleep(3600)
        if p == "/ws" and self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                b = self.connection.recv(65536)
                if not b:
                    break
                self.connection.sendall(b)
            self.close_connection = True
            return
        saw = [("X-Saw-" + k, self.headers.get(k, "-")) for k in ("X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "Cookie", "X-Canary")]
        self.reply(("%s %s\n" % (NAME, p)).encode(), extra=saw)

    def do_POST(self):
        with lock:
            counts["requests"] += 1
        if self.path == "/digest":
            return self.reply((self.body().hexdigest() + "\n").encode())
        self.body()
        self.reply(("%s %s\n" % (NAME, self.path)).encode())

    do_PUT = do_POST


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("0.0.0.0", PORT), Handler).serve_forever()
