#!/usr/bin/env python3
"""bench/instr_client.py — a fixed number of keep-alive GETs over C
connections, one request in flight per connection (no pipelining), for
bench/instr.sh. Deterministic: exactly N requests, each answer read in
full (Content-Length framing) and checked for status 200.

    instr_client.py HOST PORT PATH N [C]
"""
import selectors
import socket
import sys


def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()
    sel = selectors.DefaultSelector()
    state = {}
    sent = done = 0
    for _ in range(min(conns, n)):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        state[s] = bytearray()
        s.sendall(req)
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
                    sys.exit("instr_client: unexpected answer: %r" % head[:80])
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
                    s.sendall(req)
                    sent += 1
    for s in state:
        sel.unregister(s)
        s.close()
    print(done)


if __name__ == "__main__":
    main()
