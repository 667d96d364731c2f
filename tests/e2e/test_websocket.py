"""WebSocket transport (RFC 6455) end to end: the handshake and its
refusals, echo through python3-websockets, raw frames written byte by byte
with the exact close code each violation gets, limits (message and frame
size, message rate, outbound queue, connections per address), pings, the
close handshake and its timeout, SIGTERM, metrics and health.

Docs: docs/realtime.md."""
import asyncio
import json
import signal
import socket
import struct
import threading
import time

import pytest

import rawhttp
import wsraw
from conftest import SLACK, run_cli, scrape_metric, wait_for

websockets = pytest.importorskip("websockets")

LIMITS = {
    "WS_MAX_MESSAGE": "16kb",
    "WS_MAX_FRAME": "8kb",
    "WS_MAX_OUTBOUND": "64kb",
    "WS_MESSAGE_RATE": "0",
    "WS_MAX_PER_IP": "0",
}


@pytest.fixture(scope="module")
def srv(keel_module):
    return keel_module(**LIMITS)


def ws_url(s, path="/ws/echo"):
    return "ws://127.0.0.1:%d%s" % (s.port, path)


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- echo


def test_echo_text_and_binary(srv):
    async def go():
        async with websockets.connect(ws_url(srv), max_size=None) as ws:
            for msg in ["hello", "héllo wörld ✓ 😀", "", "x" * 6000]:
                await ws.send(msg)
                assert await ws.recv() == msg
            for msg in [bytes(range(256)), b"", b"\x00" * 8000]:
                await ws.send(msg)
                assert await ws.recv() == msg
            # a message of several frames comes back as one
            await ws.send(["frag", "mented ", "✓"])
            assert await ws.recv() == "fragmented ✓"
    run(go())


def test_many_clients_echo(srv):
    async def one(i):
        async with websockets.connect(ws_url(srv)) as ws:
            for j in range(20):
                await ws.send("c%d m%d" % (i, j))
                assert await ws.recv() == "c%d m%d" % (i, j)

    async def go():
        await asyncio.gather(*(one(i) for i in range(10)))
    run(go())


def test_handshake_101_and_middleware(srv):
    c = wsraw.Conn(srv.port)
    head = c.head.lower()
    assert "upgrade: websocket" in head
    assert "connection: upgrade" in head
    assert "content-length" not in head
    # the request went through the chain: the edge middleware gave it an id
    assert "x-request-id:" in head
    assert "sec-websocket-extensions" not in head  # no permessage-deflate
    c.close()


def test_no_permessage_deflate(srv):
    async def go():
        async with websockets.connect(ws_url(srv), compression="deflate") as ws:
            assert ws.response_headers.get("Sec-WebSocket-Extensions") is None
            await ws.send("plain")
            assert await ws.recv() == "plain"
    run(go())


# ---------------------------------------------------------------- refusals

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def hs(**over):
    h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
         "Sec-WebSocket-Version": "13"}
    h.update(over)
    return [(k, v) for k, v in h.items() if v is not None]


REFUSALS = [
    ("plain GET, no upgrade", "1.1", hs(Upgrade=None, Connection=None,
                                        **{"Sec-WebSocket-Key": None,
                                           "Sec-WebSocket-Version": None}), 426),
    ("missing key", "1.1", hs(**{"Sec-WebSocket-Key": None}), 400),
    ("key not base64 of 16 bytes", "1.1", hs(**{"Sec-WebSocket-Key": "abc"}), 400),
    ("key of 17 bytes", "1.1", hs(**{"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAA="}), 400),
    ("key with a bad character", "1.1", hs(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZ*=="}), 400),
    ("version 12", "1.1", hs(**{"Sec-WebSocket-Version": "12"}), 426),
    ("version 8", "1.1", hs(**{"Sec-WebSocket-Version": "8"}), 426),
    ("missing version", "1.1", hs(**{"Sec-WebSocket-Version": None}), 426),
    ("HTTP/1.0", "1.0", hs(), 400),
    ("no Connection: upgrade", "1.1", hs(Connection="keep-alive"), 400),
    ("no Connection header", "1.1", hs(Connection=None), 400),
    ("Upgrade: h2c", "1.1", hs(Upgrade="h2c"), 426),
]


@pytest.mark.parametrize("name,version,headers,status", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_handshake_refusals(srv, name, version, headers, status):
    data = rawhttp.request("GET", "/ws/echo", headers, version=version)
    ex = rawhttp.raw(srv.port, data, expect=1, methods=["GET"])
    r = ex.responses[0]
    rawhttp.assert_problem(r, status)
    if status == 426 and "version" in name:
        assert r.header("Sec-WebSocket-Version") == "13", r
    if name.startswith("plain GET"):
        assert r.header("Upgrade") == "websocket", r
    assert not r.has("Sec-WebSocket-Accept")


def test_connection_token_list_accepted(srv):
    data = rawhttp.request("GET", "/ws/echo", hs(Connection="keep-alive, Upgrade"))
    with rawhttp.connect(srv.port) as s:
        s.sendall(data)
        s.settimeout(3)
        got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 101 "), got
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in got, got


def test_keel_routes_shows_websocket_kind():
    out = run_cli(["routes"], env={"ENABLE_DEMO_ROUTES": "true"})
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if "/ws/echo" in l]
    assert line and line[0].split()[0] == "GET", out.stdout
    assert line[0].split()[-1] == "websocket", out.stdout
    hello = [l for l in out.stdout.splitlines() if " /hello " in l]
    assert hello and hello[0].split()[-1] == "http", out.stdout


def test_origin_checked_before_the_upgrade(keel):
    s = keel(CORS_ORIGIN="https://app.example")
    def status(extra):
        data = rawhttp.request("GET", "/ws/echo", hs() + extra)
        with rawhttp.connect(s.port) as sock:
            sock.sendall(data)
            sock.settimeout(3)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        return int(got.split(b" ", 2)[1])
    assert status([("Origin", "https://evil.example")]) == 403
    assert status([("Origin", "https://app.example")]) == 101
    assert status([]) == 101  # no Origin: not a browser


# ---------------------------------------------------------------- raw frames

Z = b"\0\0\0\0"

VIOLATIONS = [
    ("unmasked client frame", wsraw.frame(1, b"hi", mask=False), 1002),
    ("rsv1", wsraw.frame(1, b"hi", rsv=4), 1002),
    ("rsv3", wsraw.frame(2, b"hi", rsv=1), 1002),
    ("reserved opcode 3", wsraw.frame(3, b""), 1002),
    ("reserved opcode 0xb", wsraw.frame(0xB, b""), 1002),
    ("fragmented ping", wsraw.frame(9, b"", fin=False), 1002),
    ("ping of 126 bytes", wsraw.frame(9, b"p" * 126), 1002),
    ("close of 126 bytes", wsraw.frame(8, b"\x03\xe8" + b"r" * 124), 1002),
    ("continuation without a start", wsraw.frame(0, b"x"), 1002),
    ("new message inside a fragmented one",
     wsraw.frame(1, b"a", fin=False) + wsraw.frame(1, b"b"), 1002),
    ("64-bit length with the top bit set", wsraw.frame(2, b"", length=1 << 63), 1002),
    ("close with a 1-byte payload", wsraw.frame(8, b"\x03"), 1002),
    ("close code 1005", wsraw.frame(8, wsraw.close_payload(1005)), 1002),
    ("close code 1006", wsraw.frame(8, wsraw.close_payload(1006)), 1002),
    ("close code 999", wsraw.frame(8, wsraw.close_payload(999)), 1002),
    ("close code 1015", wsraw.frame(8, wsraw.close_payload(1015)), 1002),
    ("close code 2000", wsraw.frame(8, wsraw.close_payload(2000)), 1002),
    ("close code 5000", wsraw.frame(8, wsraw.close_payload(5000)), 1002),
    ("invalid utf-8", wsraw.frame(1, b"\xc3\x28"), 1007),
    ("invalid utf-8 split across fragments",
     wsraw.frame(1, b"ok \xe2", fin=False) + wsraw.frame(0, b"\x28\xa1"), 1007),
    ("message ends inside a utf-8 sequence",
     wsraw.frame(1, b"\xe2\x82", fin=False) + wsraw.frame(0, b""), 1007),
    ("close reason not utf-8", wsraw.frame(8, wsraw.close_payload(1000, b"\xff")), 1007),
    ("frame over WS_MAX_FRAME", wsraw.frame(2, b"a" * 9000, key=Z), 1009),
    ("message over WS_MAX_MESSAGE",
     b"".join(wsraw.frame(2 if i == 0 else 0, b"a" * 6000, fin=(i == 2), key=Z)
              for i in range(3)), 1009),
    ("HTTP bytes after the upgrade", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1002),
]


@pytest.mark.parametrize("name,data,code", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_protocol_violations_close_code(srv, name, data, code):
    c = wsraw.Conn(srv.port)
    c.send(data)
    got, reason = c.recv_close()
    assert got == code, (name, got, reason)
    assert c.at_eof(), "the server should end the TCP connection after a violation"
    c.close()


def test_fragmentation_with_interleaved_ping(srv):
    c = wsraw.Conn(srv.port)
    c.send(wsraw.frame(1, "frag", fin=False) + wsraw.frame(9, b"ping!") +
           wsraw.frame(0, "men", fin=False) + wsraw.frame(10, b"unsolicited") +
           wsraw.frame(0, "ted €"))
    fin, op, payload = c.recv_frame()
    assert (fin, op, payload) == (True, 10, b"ping!")  # the pong first
    fin, op, payload = c.recv_frame()
    assert (fin, op, payload.decode()) == (True, 1, "fragmented €")
    c.close()


def test_utf8_split_across_fragments_is_fine(srv):
    c = wsraw.Conn(srv.port)
    euro = "€".encode()
    c.send(wsraw.frame(1, euro[:1], fin=False) + wsraw.frame(0, euro[1:2], fin=False) +
           wsraw.frame(0, euro[2:]))
    assert c.recv_frame() == (True, 1, euro)
    c.close()


def test_frame_sent_byte_by_byte(srv):
    c = wsraw.Conn(srv.port)
    data = wsraw.frame(2, bytes(range(200)))
    for i in range(len(data)):
        c.send(data[i:i + 1])
    assert c.recv_frame() == (True, 2, bytes(range(200)))
    c.close()


def test_client_close_is_echoed(srv):
    c = wsraw.Conn(srv.port)
    c.send(wsraw.frame(8, wsraw.close_payload(4000, b"bye")))
    code, _ = c.recv_close()
    assert code == 4000
    assert c.at_eof()
    c.close()
    c = wsraw.Conn(srv.port)
    c.send(wsraw.frame(8, b""))  # no code: an empty close back
    assert c.recv_close() == (None, b"")
    c.close()


def test_data_after_close_is_ignored(srv):
    c = wsraw.Conn(srv.port)
    c.send(wsraw.frame(8, wsraw.close_payload(1000)) + wsraw.frame(1, "late"))
    fin, op, payload = c.recv_frame()
    assert op == 8, (op, payload)
    assert c.at_eof()
    c.close()


# ---------------------------------------------------------------- slow consumer


def test_slow_consumer_closed_1013_others_keep_working(srv):
    before = scrape_metric(srv.port, "ws_dropped_total", reason="slow_consumer") or 0
    closes = scrape_metric(srv.port, "ws_closes_total", code="1013") or 0
    slow = wsraw.Conn(srv.port, rcvbuf=4096)
    stop = threading.Event()
    errors = []

    def pusher():
        # echo requests of 8000 bytes; the client never reads the echoes
        msg = wsraw.frame(2, b"s" * 8000, key=Z)
        try:
            while not stop.is_set():
                slow.sock.sendall(msg * 16)
        except OSError:
            pass

    def healthy():
        async def go():
            async with websockets.connect(ws_url(srv)) as ws:
                n = 0
                while not stop.is_set() or n < 50:
                    await ws.send("still here %d" % n)
                    assert await ws.recv() == "still here %d" % n
                    n += 1
                return n
        try:
            counts.append(asyncio.run(go()))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    counts = []
    threads = [threading.Thread(target=pusher)] + [threading.Thread(target=healthy)
                                                   for _ in range(5)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: (scrape_metric(srv.port, "ws_dropped_total",
                                        reason="slow_consumer") or 0) > before,
                 timeout=20, what="a message dropped for a slow consumer")
    finally:
        stop.set()
        slow.sock.settimeout(5)
        code, reason = slow.recv_close()
        for t in threads:
            t.join(10)
    assert code == 1013, (code, reason)
    slow.send(wsraw.frame(8, wsraw.close_payload(1013)))  # the handshake completes
    assert slow.at_eof()
    wait_for(lambda: scrape_metric(srv.port, "ws_closes_total", code="1013") > closes,
             what="the 1013 close counted")
    assert not errors, errors
    assert len(counts) == 5 and all(n >= 50 for n in counts), counts
    assert (scrape_metric(srv.port, "ws_dropped_total", reason="slow_consumer") or 0) >= 1
    slow.close()


# ---------------------------------------------------------------- metrics, health


def test_metrics_and_health(srv):
    c1, c2 = wsraw.Conn(srv.port), wsraw.Conn(srv.port)
    c1.send(wsraw.frame(1, "count me"))
    assert c1.recv_frame()[2] == b"count me"
    wait_for(lambda: scrape_metric(srv.port, "ws_connections") >= 2, what="ws_connections")
    assert scrape_metric(srv.port, "ws_messages_total", direction="in") >= 1
    assert scrape_metric(srv.port, "ws_bytes_total", direction="out") >= 8
    assert scrape_metric(srv.port, "ws_outbound_queue_bytes_count") >= 1
    for code in ("1000", "1001", "1002", "1007", "1008", "1009", "1011", "1013"):
        assert scrape_metric(srv.port, "ws_closes_total", code=code) is not None, code
    r = rawhttp.get(srv.port, "/health/detailed")
    doc = json.loads(r.body)
    text = json.dumps(doc)
    assert "websocket" in text and "connections" in text, doc
    c1.close()
    c2.close()
    wait_for(lambda: scrape_metric(srv.port, "ws_connections") == 0, what="connections gone")
    assert scrape_metric(srv.port, "ws_closes_total", code="1006") >= 2


# ---------------------------------------------------------------- timers, caps, SIGTERM


@pytest.fixture(scope="module")
def tight(keel_module):
    return keel_module(WS_MESSAGE_RATE="20", WS_MESSAGE_BURST="5", WS_PING_INTERVAL="300ms",
                       WS_PONG_TIMEOUT="300ms", WS_MAX_PER_IP="3", WS_CLOSE_TIMEOUT="500ms")


def test_message_rate_1008(tight):
    c = wsraw.Conn(tight.port)
    c.send(b"".join(wsraw.frame(1, "m%d" % i) for i in range(50)))
    code, reason = c.recv_close()
    assert code == 1008, (code, reason)
    assert c.at_eof()
    c.close()


def test_ping_pong_and_timeout(tight):
    silent = wsraw.Conn(tight.port)
    # the silent client gets a ping, does not answer, and is closed (1001)
    fin, op, payload = silent.recv_frame()
    assert op == 9, (op, payload)
    code, reason = silent.recv_close()
    assert code == 1001 and b"pong" in reason, (code, reason)
    assert silent.at_eof()
    # one that answers its pings stays
    answered = wsraw.Conn(tight.port)
    deadline = time.monotonic() + 1.2
    pings = 0
    while time.monotonic() < deadline:
        answered.sock.settimeout(1.5 * SLACK)
        fin, op, payload = answered.recv_frame()
        assert op == 9, (op, payload)
        pings += 1
        answered.send(wsraw.frame(10, payload))
    assert pings >= 2
    answered.send(wsraw.frame(1, "alive"))
    while True:
        fin, op, payload = answered.recv_frame()
        if op == 1:
            break
    assert payload == b"alive"
    answered.close()
    silent.close()


def test_connections_per_ip_429(tight):
    # earlier tests' connections on this server must be gone from the count
    wait_for(lambda: scrape_metric(tight.port, "ws_connections") == 0, what="no connections")
    conns = [wsraw.Conn(tight.port) for _ in range(3)]
    data = rawhttp.request("GET", "/ws/echo", hs())
    r = rawhttp.raw(tight.port, data, expect=1, methods=["GET"]).responses[0]
    rawhttp.assert_problem(r, 429)
    conns[0].close()
    wait_for(lambda: scrape_metric(tight.port, "ws_connections") <= 2, what="one gone")
    c = wsraw.Conn(tight.port)  # a slot again
    c.close()
    for x in conns[1:]:
        x.close()


def test_sigterm_closes_1001_and_close_timeout(keel):
    s = keel(WS_CLOSE_TIMEOUT="500ms", SHUTDOWN_GRACE="10s")
    polite = [wsraw.Conn(s.port) for _ in range(3)]
    deaf = wsraw.Conn(s.port)  # never answers the close
    wait_for(lambda: scrape_metric(s.port, "ws_connections") == 4, what="4 connections")
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    for c in polite:
        code, reason = c.recv_close()
        assert code == 1001, (code, reason)
        c.send(wsraw.frame(8, wsraw.close_payload(1001)))
        assert c.at_eof()
        c.close()  # our FIN ends the server's linger at once
    assert deaf.recv_close()[0] == 1001
    # the deaf one is cut after WS_CLOSE_TIMEOUT: the server exits long
    # before its 10 s grace
    s.proc.wait(timeout=5 * SLACK)
    assert s.proc.returncode == 0
    assert time.monotonic() - t0 < 5 * SLACK
    assert deaf.at_eof()
    deaf.close()
