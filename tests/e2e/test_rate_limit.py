"""Rate limiting end to end: GCRA tiers (general, strict, burst), the
RateLimit-* / X-RateLimit-* headers, 429 problem+json with Retry-After,
exemptions, exact counting across workers and connections, keys by client
address (only believed from TRUST_PROXY peers), IPv6 grouping, bounded
memory under key spraying, metrics and start-up refusals."""
import http.client
import re
import threading
import time

import pytest

from conftest import SLACK, run_cli
from rawhttp import assert_problem, get, raw
from promtext import parse as parse_metrics

# Limits in these tests are small and windows long, so that timing never
# decides a status; the one test of refilling uses a short window.
OFF = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_BURST": "0"}


class Client:
    """A keep-alive HTTP client (one connection)."""

    def __init__(self, port, headers=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLACK)
        self.headers = headers or {}

    def get(self, path="/hello", headers=None):
        h = dict(self.headers)
        h.update(headers or {})
        self.conn.request("GET", path, headers=h)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def close(self):
        self.conn.close()


def metric(srv, name, **labels):
    """The sum of the samples of `name` matching labels, None when none."""
    m = parse_metrics(get(srv.port, "/metrics").text)
    found = m.find(name, **labels)
    return sum(s.value for s in found) if found else None


def test_general_tier_headers_and_429(keel):
    srv = keel(RATE_LIMIT_MAX=3, RATE_LIMIT_WINDOW="1m", **OFF)
    c = Client(srv.port)
    seen = []
    for want_remaining in (2, 1, 0):
        status, h, _ = c.get()
        assert status == 200
        assert h["ratelimit-limit"] == "3"
        assert h["ratelimit-remaining"] == str(want_remaining)
        assert h["ratelimit-policy"] == "3;w=60"
        assert h["x-ratelimit-limit"] == "3"
        assert h["x-ratelimit-remaining"] == str(want_remaining)
        # X-RateLimit-Reset is Unix time, RateLimit-Reset seconds from now
        assert abs(int(h["x-ratelimit-reset"]) - time.time() - int(h["ratelimit-reset"])) <= 2
        seen.append(int(h["ratelimit-reset"]))
    assert seen == sorted(seen) and 0 < seen[-1] <= 60
    r = get(srv.port, "/hello")
    doc = assert_problem(r, 429)
    assert doc["tier"] == "general" and doc["limit"] == 3
    # one request more fits after one emission interval: 60 s / 3
    retry = int(r.header("Retry-After"))
    assert 15 <= retry <= 20, r
    assert doc["retry_after"] == retry
    assert r.header("RateLimit-Remaining") == "0"
    # the refusal still carries the security headers and a request id
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("X-Request-Id")
    assert metric(srv, "rate_limit_rejections_total", tier="general") == 1
    c.close()


# Requests the connection layer refuses, each with its own status.
H = b"Host: localhost\r\n"
REFUSALS = [
    pytest.param(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="cl-and-te"),
    pytest.param(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"2\r\n{}\r\n0\r\nContent-Length: 9\r\n\r\n", 400, id="trailer-content-length"),
    pytest.param(b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"2 \r\n{}\r\n0\r\n\r\n", 400, id="chunk-size-bws"),
    pytest.param(b"BREW /hello HTTP/1.1\r\n" + H + b"\r\n", 501, id="unknown-method"),
]


@pytest.mark.parametrize("data, status", REFUSALS)
def test_refusal_status_wins_over_the_limiter(keel, data, status):
    """A request refused for its framing gets its own status, not the
    limiter's 429: the limiter (like authentication and validation) does
    not run for it, while the edge still does (request id, security
    headers, the access log)."""
    srv = keel(RATE_LIMIT_MAX=1, RATE_LIMIT_WINDOW="1h", **OFF)
    assert get(srv.port, "/hello").status == 200
    assert_problem(get(srv.port, "/hello"), 429)
    ex = raw(srv.port, data, timeout=5 * SLACK)
    [r] = ex.responses
    assert_problem(r, status)
    assert ex.eof, ex
    assert r.header("X-Request-Id"), r
    assert r.header("X-Content-Type-Options") == "nosniff", r
    assert not r.has("RateLimit-Limit"), r
    entry = srv.access_entry(r.header("X-Request-Id"))
    assert entry["status"] == status, entry
    # the refusal did not count as a rate-limit rejection either
    assert metric(srv, "rate_limit_rejections_total", tier="general") == 1
    assert_problem(get(srv.port, "/hello"), 429)


def test_health_and_metrics_are_exempt(keel):
    srv = keel(RATE_LIMIT_MAX=1, RATE_LIMIT_WINDOW="1h", **OFF)
    assert get(srv.port, "/hello").status == 200
    assert get(srv.port, "/hello").status == 429
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/ping"):
        for _ in range(3):
            r = get(srv.port, path)
            assert r.status == 200, (path, r)
            assert not r.has("RateLimit-Limit"), (path, r)


def test_unmatched_requests_count_as_general(keel):
    srv = keel(RATE_LIMIT_MAX=2, RATE_LIMIT_WINDOW="1h", **OFF)
    assert get(srv.port, "/no/such/thing").status == 404
    assert get(srv.port, "/no/such/thing").status == 404
    assert_problem(get(srv.port, "/no/such/thing"), 429)
    assert_problem(get(srv.port, "/hello"), 429)


def test_strict_tier_route_is_separate(keel):
    srv = keel(RATE_LIMIT_MAX=100, RATE_LIMIT_STRICT="2/1h", **OFF)
    c = Client(srv.port)
    for remaining in (1, 0):
        status, h, body = c.get("/distributed/rate-limit/test")
        assert status == 200
        assert h["ratelimit-limit"] == "2"
        doc = __import__("json").loads(body)
        assert doc["tier"] == "strict" and doc["remaining"] == remaining
        assert doc["client"] == "127.0.0.1"
    status, h, body = c.get("/distributed/rate-limit/test")
    assert status == 429 and "retry-after" in h
    assert __import__("json").loads(body)["tier"] == "strict"
    # the general tier is a different budget
    status, h, _ = c.get("/hello")
    assert status == 200 and h["ratelimit-limit"] == "100"
    assert metric(srv, "rate_limit_rejections_total", tier="strict") == 1


def test_burst_tier_applies_to_every_limited_route(keel):
    srv = keel(RATE_LIMIT_ENABLED="true", RATE_LIMIT_MAX=1000, RATE_LIMIT_BURST="5/1h")
    c = Client(srv.port)
    statuses = [c.get(p)[0] for p in ("/hello", "/json", "/hello", "/json", "/hello", "/json")]
    assert statuses == [200] * 5 + [429]
    status, h, body = c.get("/hello")
    assert status == 429
    assert __import__("json").loads(body)["tier"] == "burst"
    assert h["ratelimit-limit"] == "5"
    assert metric(srv, "rate_limit_rejections_total", tier="burst") == 2


def test_quota_refills_over_time(keel):
    # 2 per second: one more every 500 ms
    srv = keel(RATE_LIMIT_MAX=2, RATE_LIMIT_WINDOW="1s", **OFF)
    c = Client(srv.port)
    assert [c.get()[0] for _ in range(3)] == [200, 200, 429]
    time.sleep(0.6)  # waits out 500 ms of the window: the refill is what is tested
    assert c.get()[0] == 200
    assert c.get()[0] == 429


def test_exact_across_workers_and_connections(keel):
    """50 allowed of 400 concurrent requests over 20 connections spread on
    two workers: the shared store counts each exactly once."""
    srv = keel(WORKERS=2, RATE_LIMIT_MAX=50, RATE_LIMIT_WINDOW="1h", **OFF)
    counts = {}
    lock = threading.Lock()

    def run():
        c = Client(srv.port)
        for _ in range(20):
            status = c.get()[0]
            with lock:
                counts[status] = counts.get(status, 0) + 1
        c.close()

    threads = [threading.Thread(target=run) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {200: 50, 429: 350}, counts
    assert metric(srv, "rate_limit_rejections_total", tier="general") == 350


def test_forwarded_for_ignored_from_untrusted_peer(keel):
    """Without TRUST_PROXY a client cannot pick its own key."""
    srv = keel(RATE_LIMIT_MAX=2, RATE_LIMIT_WINDOW="1h", **OFF)
    for i in range(2):
        assert get(srv.port, "/hello", headers=[("X-Forwarded-For", "10.9.8.%d" % i)]).status == 200
    r = get(srv.port, "/hello", headers=[("X-Forwarded-For", "10.9.8.77")])
    assert r.status == 429


def test_trusted_proxy_keys_by_client(keel):
    srv = keel(RATE_LIMIT_MAX=2, RATE_LIMIT_WINDOW="1h", TRUST_PROXY="127.0.0.1", **OFF)
    for client in ("203.0.113.1", "203.0.113.2"):
        for _ in range(2):
            r = get(srv.port, "/hello", headers=[("X-Forwarded-For", "198.51.100.9, " + client)])
            assert r.status == 200, r
        r = get(srv.port, "/hello", headers=[("X-Forwarded-For", client)])
        assert r.status == 429, r
    # a spoofed leftmost hop does not change the key: the proxy's hop does
    r = get(srv.port, "/hello", headers=[("X-Forwarded-For", "1.2.3.4, 203.0.113.1")])
    assert r.status == 429


def test_ipv6_clients_grouped_by_prefix(keel):
    srv = keel(RATE_LIMIT_MAX=2, RATE_LIMIT_WINDOW="1h", TRUST_PROXY="127.0.0.1", **OFF)
    xff = lambda a: [("X-Forwarded-For", a)]
    assert get(srv.port, "/hello", headers=xff("2001:db8:1:2::1")).status == 200
    assert get(srv.port, "/hello", headers=xff("2001:db8:1:2:aaaa::9")).status == 200
    # same /64: same budget
    assert get(srv.port, "/hello", headers=xff("2001:db8:1:2::ffff")).status == 429
    # another /64
    assert get(srv.port, "/hello", headers=xff("2001:db8:1:3::1")).status == 200


def test_key_spraying_keeps_memory_bounded(keel):
    """Thousands of distinct clients (via a trusted proxy) against a store
    of 640 keys: it never holds more, evicts the rest, and keeps serving."""
    srv = keel(RATE_LIMIT_MAX=5, RATE_LIMIT_WINDOW="1h", RATE_LIMIT_MAX_KEYS=640,
               TRUST_PROXY="127.0.0.1", ACCESS_LOG="false", **OFF)
    c = Client(srv.port)
    n = 6000
    for i in range(n):
        status, _, _ = c.get(headers={"X-Forwarded-For": "10.%d.%d.%d" % (i >> 16, (i >> 8) & 255,
                                                                          i & 255)})
        assert status == 200
    keys = metric(srv, "rate_limit_keys")
    evicted = metric(srv, "rate_limit_evictions_total")
    assert keys is not None and keys <= 640, keys
    assert evicted >= n - 640, evicted
    c.close()


def test_disabled_sends_no_headers(keel):
    srv = keel(RATE_LIMIT_ENABLED="false")
    for _ in range(30):
        r = get(srv.port, "/hello")
        assert r.status == 200 and not r.has("RateLimit-Limit")
    assert metric(srv, "rate_limit_rejections_total") is None


@pytest.mark.parametrize("var,value,needle", [
    ("RATE_LIMIT_STRICT", "abc", "RATE_LIMIT_STRICT"),
    ("RATE_LIMIT_BURST", "10/", "RATE_LIMIT_BURST"),
    ("RATE_LIMIT_AUTH", "5/0s", "RATE_LIMIT_AUTH"),
    ("RATE_LIMIT_TIERS", "reports", "RATE_LIMIT_TIERS"),
    ("RATE_LIMIT_TIERS", "strict=1/1m", "RATE_LIMIT_TIERS"),
    ("RATE_LIMIT_TIERS", "Bad Name=1/1m", "RATE_LIMIT_TIERS"),
    ("RATE_LIMIT_MAX", "0", "RATE_LIMIT_MAX"),
])
def test_bad_rate_config_refused(var, value, needle):
    p = run_cli(["serve", "--print-config"], env={"RATE_LIMIT_ENABLED": "true", var: value})
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_custom_tiers_accepted():
    p = run_cli(["serve", "--print-config"],
                env={"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_TIERS": "reports=10/1m, upload=5/1h"})
    assert p.returncode == 0, p.stderr
    assert re.search(r"^RATE_LIMIT_TIERS=reports=10/1m, upload=5/1h$", p.stdout, re.M)


def test_routes_lists_tiers():
    p = run_cli(["routes"])
    assert p.returncode == 0, p.stderr
    line = [l for l in p.stdout.splitlines() if "/distributed/rate-limit/test" in l]
    assert line and "strict" in line[0], p.stdout
