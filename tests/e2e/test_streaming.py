"""Streaming responses and slow readers: chunked coding with backpressure,
the close-delimited HTTP/1.0 form, the write timeout, and a client that
leaves mid-stream."""
import socket
import time

import requests

from conftest import SLACK, requests_in_flight, wait_for
from rawhttp import get


def test_stream_large_body_with_backpressure(keel):
    k = keel(OUTPUT_BUFFER_MAX="256kb")
    kb = 20 * 1024
    with requests.get(k.url + "/stream?kb=%d" % kb, stream=True, timeout=60 * SLACK) as r:
        assert r.status_code == 200
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in r.headers
        total = 0
        for chunk in r.iter_content(65536):
            assert set(chunk) == {ord("k")}
            total += len(chunk)
    assert total == kb * 1024
    # the connection is reusable after the last chunk
    assert get(k.port, "/hello", timeout=5).status == 200


def test_stream_http10_is_close_delimited(keel):
    k = keel()
    s = socket.create_connection(("127.0.0.1", k.port), timeout=10 * SLACK)
    s.sendall(b"GET /stream?kb=100 HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower() and b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert len(body) == 100 * 1024


def test_slow_reader_is_closed_after_write_timeout(keel):
    k = keel(WRITE_TIMEOUT="1s", WORKERS=1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", k.port))
    s.sendall(b"GET /bytes?kb=32768 HTTP/1.1\r\nHost: a\r\n\r\n")
    # the response is handed to the connection (its access-log line), and
    # stalls behind the 4 KiB receive buffer
    k.wait_log(lambda e: e.get("route") == "/bytes" and "status" in e, timeout=5)
    # others are served while the reader stalls
    t0 = time.monotonic()
    assert get(k.port, "/hello", timeout=5).status == 200
    assert time.monotonic() - t0 < 1.0 * SLACK
    # past WRITE_TIMEOUT plus a sweep, the server gives up on the reader
    log = k.wait_log(lambda e: e.get("msg") == "closing connection: write timeout", timeout=5)
    assert log
    got = 0
    s.settimeout(10)
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert got < 32 * 1024 * 1024, "the stalled response should have been cut off"


def test_client_leaving_mid_stream_releases_the_request(keel):
    k = keel(WORKERS=1)
    s = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    s.sendall(b"GET /stream?kb=1048576 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.close()
    wait_for(lambda: requests_in_flight(k.port) == 0, 10, "the abandoned stream to end")
    entry = k.wait_log(lambda e: e.get("route") == "/stream", timeout=5)
    assert entry["status"] == 499
