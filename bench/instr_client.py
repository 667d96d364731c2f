#!/usr/bin/env python3
"""bench/instr_client.py — a fixed number of keep-alive requests over C
connections, one request in flight per connection (no pipelining), for
bench/instr.sh. Deterministic: exactly N requests, each answer read in
full (Content-Length framing) and checked for status 200.

    instr_client.py HOST PORT PATH N [C] [-X METHOD] [-d BODY] [-H 'Name: value']...

A "{id}" in PATH is replaced by 1, 2, ... 10000, 1, ... in the order the
requests are sent (GET /db?id={id}).

    instr_client.py --register HOST PORT EMAIL PASSWORD

registers an account (POST /api/v1/auth/register) and prints its access
token (the real token of bench/instr.sh's keel-apime target).
"""
import argparse
import json
import selectors
import socket
import sys
import urllib.request


def register(host, port, email, password):
    req = urllib.request.Request(
        "http://%s:%d/api/v1/auth/register" % (host, port),
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        print(json.load(r)["access_token"])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--register":
        register(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("n", type=int)
    ap.add_argument("conns", type=int, nargs="?", default=8)
    ap.add_argument("-X", dest="method", default="GET")
    ap.add_argument("-d", dest="body", default="")
    ap.add_argument("-H", dest="headers", action="append", default=[])
    a = ap.parse_args()
    host, port, n = a.host, a.port, a.n
    body = a.body.encode()
    extra = "".join(h + "\r\n" for h in a.headers)
    if body:
        extra += "Content-Length: %d\r\n" % len(body)
    counter = [0]

    def request():
        path = a.path
        if "{id}" in path:
            path = path.replace("{id}", str(counter[0] % 10000 + 1))
            counter[0] += 1
        return ("%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n"
                % (a.method, path, host, port, extra)).encode() + body

    sel = selectors.DefaultSelector()
    state = {}
    sent = done = 0
    for _ in range(min(a.conns, n)):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        state[s] = bytearray()
        s.sendall(request())
        sent += 1
    while done < n:
        for key, _ in sel.select():
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("instr_client: server closed a connection after %d answers" % done)
            buf = state[s]
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end]).decode("latin-1")
                if not head.startswith("HTTP/1.1 200 "):
                    sys.exit("instr_client: unexpected answer: %r" % bytes(buf[:1200]))
                clen = 0
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v)
                if len(buf) < end + 4 + clen:
                    break
                del buf[: end + 4 + clen]
                done += 1
                if sent < n:
                    s.sendall(request())
                    sent += 1
    for s in state:
        sel.unregister(s)
        s.close()
    print(done)


if __name__ == "__main__":
    main()
