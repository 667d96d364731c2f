"""Size limits and timeouts: what keel refuses, when, and that it keeps
serving afterwards. One server with small limits and short timeouts is
shared by the module so every case runs in about a second."""
import json
import socket
import time

import pytest

from conftest import SLACK, requests_in_flight, scrape_metric, server_connections, wait_for
from rawhttp import (assert_problem, assert_serving, chunked, connect, get, is_closed, raw,
                     read_exchange, send_tolerant)

LIMIT_LINE = 256
LIMIT_FIELD = 256
LIMIT_FIELDS = 10
LIMIT_HEAD = 1024
LIMIT_BODY = 64 * 1024
TIMEOUT_S = 1.0

LIMITS = {
    "MAX_REQUEST_LINE": str(LIMIT_LINE),
    "MAX_HEADER_SIZE": str(LIMIT_FIELD),
    "MAX_HEADERS": str(LIMIT_FIELDS),
    "MAX_HEAD_SIZE": "1kb",
    "BODY_LIMIT": "64kb",
    "HEADER_TIMEOUT": "1s",
    "BODY_TIMEOUT": "1s",
    "KEEPALIVE_TIMEOUT": "1s",
    "HANDLER_TIMEOUT": "500ms",
}


@pytest.fixture(scope="module")
def limited(keel_module):
    return keel_module(**LIMITS)


@pytest.fixture
def srv(limited):
    assert limited.alive(), limited.stderr()[-3000:]
    yield limited
    assert limited.alive(), "keel died during this test:\n%s" % limited.stderr()[-3000:]


def line_of(n):
    """A request line of exactly n bytes (CRLF not counted)."""
    fixed = len("GET /hello?p= HTTP/1.1")
    return b"GET /hello?p=" + b"a" * (n - fixed) + b" HTTP/1.1"


def head(line=b"GET /hello HTTP/1.1", fields=()):
    return line + b"\r\nHost: localhost\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def field_of(n, name=b"X-Pad"):
    """A field line of exactly n bytes (CRLF not counted)."""
    return name + b": " + b"v" * (n - len(name) - 2)


def json_of(n):
    """A JSON document of exactly n bytes."""
    doc = b'{"pad":"' + b"x" * (n - 10) + b'"}'
    assert len(doc) == n
    return doc


def echo_head(length=None, extra=b""):
    framing = (b"Content-Length: %d\r\n" % length) if length is not None \
        else b"Transfer-Encoding: chunked\r\n"
    return (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + framing + extra + b"\r\n")


# ----------------------------------------------------------------- sizes

# (request bytes, expected status): the limits table. 2xx rows show the limit
# is not hit early; 4xx rows are refusals (one problem, then close).
SIZES = [
    pytest.param(head(line_of(LIMIT_LINE - 8)), 200, id="request-line-under-limit"),
    pytest.param(head(line_of(LIMIT_LINE + 8)), 414, id="request-line-over-limit"),
    pytest.param(head(line_of(LIMIT_LINE * 40)), 414, id="request-line-far-over-limit"),
    pytest.param(head(fields=[field_of(LIMIT_FIELD - 8)]), 200, id="field-under-limit"),
    pytest.param(head(fields=[field_of(LIMIT_FIELD + 8)]), 431, id="field-over-limit"),
    pytest.param(head(fields=[field_of(LIMIT_FIELD * 40)]), 431, id="field-far-over-limit"),
    pytest.param(head(fields=[b"X-F%d: v" % i for i in range(LIMIT_FIELDS - 1)]), 200,
                 id="fields-at-limit"),
    pytest.param(head(fields=[b"X-F%d: v" % i for i in range(LIMIT_FIELDS)]), 431,
                 id="fields-over-limit"),
    pytest.param(head(fields=[field_of(200, b"X-F%d" % i) for i in range(3)]), 200,
                 id="head-under-limit"),
    pytest.param(head(fields=[field_of(200, b"X-F%d" % i) for i in range(6)]), 431,
                 id="head-over-limit"),
    pytest.param(echo_head(LIMIT_BODY) + json_of(LIMIT_BODY), 200, id="body-at-limit"),
    pytest.param(echo_head(LIMIT_BODY + 1), 413, id="content-length-over-limit"),
    pytest.param(echo_head(10 ** 12), 413, id="content-length-far-over-limit"),
    pytest.param(echo_head() + chunked(json_of(LIMIT_BODY), [4096] * 16), 200,
                 id="chunked-at-limit"),
    pytest.param(echo_head() + chunked(json_of(LIMIT_BODY + 1), [4096] * 17), 413,
                 id="chunked-over-limit"),
    pytest.param(echo_head() + b"7fffffff\r\n" + b"x" * 1000, 413,
                 id="chunk-size-over-limit"),
]


@pytest.mark.parametrize("data, status", SIZES)
def test_size_limits(srv, data, status):
    ex = raw(srv.port, data, timeout=5 * SLACK, expect=1 if status < 400 else None)
    assert ex.statuses == [status], ex
    r = ex.responses[0]
    if status < 400:
        if data.startswith(b"POST"):
            assert json.loads(r.body) == json.loads(json_of(LIMIT_BODY)), "echo differs"
        return
    assert_problem(r, status)
    assert ex.eof, "connection left open after %d: %r" % (status, ex)
    assert not ex.rest
    # Refused at once, not after a read timeout.
    assert ex.elapsed < 0.8 * TIMEOUT_S * SLACK, ex
    assert_serving(srv.port)


def test_oversized_body_with_expect_gets_413_not_100(srv):
    with connect(srv.port) as s:
        s.sendall(echo_head(LIMIT_BODY + 1, extra=b"Expect: 100-continue\r\n"))
        ex = read_exchange(s, timeout=3 * SLACK)
    assert ex.data.startswith(b"HTTP/1.1 413 "), ex
    assert ex.statuses == [413], ex
    assert_problem(ex.responses[0], 413)
    assert ex.eof, ex
    assert_serving(srv.port)


# -------------------------------------------------------------- timeouts

def _wait_refusal(s, status, low, high):
    """Reads until EOF; expects one `status` problem between low and high s."""
    start = time.monotonic()
    ex = read_exchange(s, timeout=high * SLACK + 2, start=start)
    assert ex.statuses == [status], ex
    assert_problem(ex.responses[0], status)
    assert ex.eof, ex
    assert low <= ex.elapsed <= high * SLACK, "answered after %.2fs: %r" % (ex.elapsed, ex)
    return ex


@pytest.mark.parametrize("partial", [
    pytest.param(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n", id="head-without-end"),
    pytest.param(b"GET /hello HTT", id="request-line-cut"),
    pytest.param(b"G", id="one-byte"),
])
def test_slowloris_head_gets_408(srv, partial):
    with connect(srv.port) as s:
        s.sendall(partial)
        _wait_refusal(s, 408, 0.8 * TIMEOUT_S, 2.5 * TIMEOUT_S)
    assert_serving(srv.port)


def test_trickled_head_gets_408(srv):
    """HEADER_TIMEOUT bounds the whole head: a byte every 100 ms does not
    reset it."""
    data = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"s" * 200
    start = time.monotonic()
    with connect(srv.port) as s:
        for b in data:
            if not send_tolerant(s, bytes([b])):
                break
            s.settimeout(0.1)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                break
            if time.monotonic() - start > 5 * SLACK:
                break
        ex = read_exchange(s, timeout=3 * SLACK, start=start)
    assert ex.statuses == [408], ex
    assert ex.eof, ex
    assert 0.8 * TIMEOUT_S <= ex.elapsed <= 2.5 * TIMEOUT_S * SLACK, ex
    assert_serving(srv.port)


def test_silent_connection_is_closed(srv):
    """A connection that never sends a byte is closed after a timeout; it
    may get a 408 or nothing, but nothing else."""
    with connect(srv.port) as s:
        ex = read_exchange(s, timeout=4 * SLACK)
    assert ex.eof, "idle connection still open after %.1fs" % ex.elapsed
    assert ex.statuses in ([], [408]), ex
    assert_serving(srv.port)


@pytest.mark.parametrize("framing, sent", [
    pytest.param(100, b'{"a":"', id="content-length"),
    pytest.param(None, b'a\r\n{"a":"bbbb', id="chunked"),
    pytest.param(100, b"", id="no-body-byte"),
])
def test_stalled_body_gets_408(srv, framing, sent):
    with connect(srv.port) as s:
        s.sendall(echo_head(framing) + sent)
        _wait_refusal(s, 408, 0.8 * TIMEOUT_S, 2.5 * TIMEOUT_S)
    assert_serving(srv.port)


def test_body_timeout_is_per_pause_not_total(srv):
    """BODY_TIMEOUT bounds each pause; a body that keeps arriving may take
    longer than it in total."""
    body = json_of(500)
    with connect(srv.port) as s:
        s.sendall(echo_head(len(body)))
        for i in range(0, len(body), 100):
            s.sendall(body[i:i + 100])
            time.sleep(0.35 * TIMEOUT_S)  # a slow sender on purpose: pauses under the timeout
        ex = read_exchange(s, timeout=3 * SLACK, expect=1)
    assert ex.statuses == [200], ex
    assert ex.responses[0].json() == json.loads(body)


def test_idle_keepalive_connection_is_closed(srv):
    with connect(srv.port) as s:
        s.sendall(head())
        assert read_exchange(s, timeout=3 * SLACK, expect=1).statuses == [200]
        start = time.monotonic()
        ex = read_exchange(s, timeout=4 * SLACK, start=start)
    assert ex.eof and ex.data == b"", "expected a silent close, got %r" % ex
    assert 0.8 * TIMEOUT_S <= ex.elapsed <= 2.5 * TIMEOUT_S * SLACK, ex


def test_active_keepalive_connection_stays_open(srv):
    """Each request restarts the keep-alive timer."""
    with connect(srv.port) as s:
        for _ in range(5):
            s.sendall(head())
            ex = read_exchange(s, timeout=3 * SLACK, expect=1)
            assert ex.statuses == [200], ex
            assert not is_closed(s, 0.5 * TIMEOUT_S)


def test_slow_handler_under_deadline(srv):
    r = get(srv.port, "/slow?ms=100")
    assert r.status == 200 and r.body == b"done", r


@pytest.mark.parametrize("target", ["/slow?ms=1500", "/work?ms=1500"])
def test_handler_deadline_gets_503(srv, target):
    start = time.monotonic()
    with connect(srv.port) as s:
        s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        ex = read_exchange(s, timeout=4 * SLACK, expect=1, start=start)
    assert ex.statuses == [503], ex
    assert_problem(ex.responses[0], 503)
    # Never before the deadline; a little after it is fine.
    assert 0.49 <= ex.elapsed <= 1.3 * SLACK, "deadline 500ms, answered after %.2fs" % ex.elapsed
    assert_serving(srv.port)
    # Let the abandoned timer / work item finish; the server must survive it.
    # Nothing outside shows when it ends, so wait out its 1.5 s.
    time.sleep(max(0.0, 1.7 - (time.monotonic() - start)))
    assert_serving(srv.port)


# A handler gets its whole deadline from the first request on: these run
# on a server started just before, with requests sent as soon as it is ready.
FRESH_DEADLINES = [
    pytest.param({}, "/slow?ms=400", id="slow-default-timeout"),
    pytest.param({}, "/work?ms=400", id="work-default-timeout"),
    pytest.param({"HANDLER_TIMEOUT": "2s"}, "/slow?ms=700", id="slow-2s-timeout"),
]


@pytest.mark.parametrize("env, target", FRESH_DEADLINES)
def test_first_requests_get_the_full_deadline(keel, env, target):
    k = keel(**env)
    for _ in range(2):
        r = get(k.port, target, timeout=5 * SLACK)
        assert r.status == 200 and r.body == b"done", r


# ---------------------------------------------------------- connections

def test_max_connections_per_worker(keel):
    k = keel(WORKERS=1, MAX_CONNECTIONS=3)
    held = [connect(k.port) for _ in range(3)]
    try:
        for s in held:
            s.sendall(head())
            assert read_exchange(s, timeout=3 * SLACK, expect=1).statuses == [200]
        ex = raw(k.port, head(), timeout=3 * SLACK)
        assert ex.statuses == [503], ex
        assert_problem(ex.responses[0], 503)
        assert ex.eof, ex
        # The held connections are unaffected.
        for s in held:
            s.sendall(head())
            assert read_exchange(s, timeout=3 * SLACK, expect=1).statuses == [200]
    finally:
        for s in held:
            s.close()
    # With the slots free again, new connections are served.
    wait_for(lambda: server_connections(k.port) == 0, 3, "the server to close every connection")
    r = raw(k.port, head(), timeout=3 * SLACK, expect=1)
    assert r.statuses == [200], r


# A connection's slot is free once both sides have closed it, however the
# close began. (request, expected status) on a server with two slots.
SLOT_REUSE = [
    pytest.param(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", 200,
                 id="client-closes-keepalive"),
    pytest.param(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 200,
                 id="connection-close"),
    pytest.param(b"GET /hello HTTP/1.0\r\n\r\n", 200, id="http10"),
    pytest.param(b"GET /hello HTTP/1.1\r\n\r\n", 400, id="refused-400"),
]


@pytest.mark.parametrize("data, status", SLOT_REUSE)
def test_closed_connections_free_their_slot(keel, data, status):
    k = keel(WORKERS=1, MAX_CONNECTIONS=2)
    closed = lambda: server_connections(k.port) == 0  # noqa: E731
    got = []
    for _ in range(6):
        got += raw(k.port, data, timeout=3 * SLACK, expect=1).statuses
        wait_for(closed, 3, "the server to see our FIN and close its side")
    assert got == [status] * 6, got



def test_work_queue_full_answers_503_with_retry_after(keel):
    """One pool thread, one queue slot: the third concurrent blocking job is
    refused at once with 503 + Retry-After, liveness stays fast, and the
    pool serves again afterwards."""
    import threading
    import requests
    k = keel(WORK_POOL_SIZE=1, WORK_QUEUE_MAX=1, WORKERS=1)
    results = []

    def call():
        r = requests.get(k.url + "/work?ms=1000", timeout=30 * SLACK)
        results.append((r.status_code, r.headers.get("Retry-After"),
                        r.headers.get("Content-Type"), r.text))

    threads = [threading.Thread(target=call) for _ in range(4)]

    def pool(name):
        return scrape_metric(k.port, name)

    # in order: one job on the pool thread, one in the queue, two refused
    threads[0].start()
    wait_for(lambda: requests_in_flight(k.port) == 1 and pool("work_pool_queued") == 0, 5,
             "the first job on the pool thread")
    threads[1].start()
    wait_for(lambda: pool("work_pool_queued") == 1, 5, "the second job in the queue")
    threads[2].start()
    threads[3].start()
    wait_for(lambda: pool("work_pool_rejected_total") == 2, 5, "two jobs refused")
    t0 = time.monotonic()
    assert requests.get(k.url + "/health/live", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 0.5 * SLACK
    for t in threads:
        t.join()
    codes = sorted(r[0] for r in results)
    assert codes == [200, 200, 503, 503], results
    for status, retry, ctype, body in results:
        if status == 503:
            assert retry == "1"
            assert ctype == "application/problem+json"
            assert '"status":503' in body
    assert requests.get(k.url + "/work?ms=10", timeout=10).status_code == 200
