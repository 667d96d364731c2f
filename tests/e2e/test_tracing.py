"""Tracing end to end: keel exports OTLP/HTTP JSON to a real receiver
(tests/e2e/otlp_receiver.py, python http.server on a free port).

Spans arrive with their parent/child structure (server span -> database
statement), trace ids and resource; a traceparent sent in is continued and
an invalid one starts a new trace; samplers (ratio 0 vs 1, parent-based);
with the receiver down or answering 503 keel keeps serving, counts what it
lost and its p99 stays flat; 429 + Retry-After is retried; SIGTERM sends
the last spans; the admin routes list the recent traces; the trace id is
the same in X-Trace-Id, the spans and the log lines.
"""
import http.client
import json
import re
import time

import pytest
import requests

from conftest import SLACK, free_port, run_cli, scrape_metric, wait_for
from otlp_receiver import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
PW = "correct horse battery staple"


def tp(flags="01", trace=TRACE, parent=PARENT):
    return "00-%s-%s-%s" % (trace, parent, flags)


@pytest.fixture
def rx():
    with OtlpReceiver() as r:
        yield r


def fast(rx_url, **extra):
    """Export quickly: small schedule delay, one worker (one queue)."""
    e = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx_url, "OTEL_BSP_SCHEDULE_DELAY": "50",
         "WORKERS": "1"}
    e.update(extra)
    return e


def get(srv, path, headers=None):
    return requests.get(srv.url + path, headers=headers or {}, timeout=10 * SLACK)


def test_spans_structure_resource_and_continued_trace(keel, rx):
    srv = keel(**fast(rx.url, OTEL_SERVICE_NAME="orders",
                      OTEL_RESOURCE_ATTRIBUTES="deployment.environment=e2e,team=a%20b%2Cc",
                      ENABLE_QUERY_LOGGING="true"))
    r = get(srv, "/db?id=1", {"traceparent": tp(), "tracestate": "congo=t61rcWkgMzE",
                              "X-Request-Id": "trace-e2e-1"})
    assert r.status_code in (200, 404), r.text
    assert r.headers["X-Trace-Id"] == TRACE
    server = rx.wait_spans(lambda s: s["traceId"] == TRACE and s["kind"] == 2)[0]
    assert server["name"] == "GET /db"
    assert server["parentSpanId"] == PARENT, "the incoming traceparent's span is the parent"
    assert server["traceState"] == "congo=t61rcWkgMzE"
    a = server["_attrs"]
    assert a["http.request.method"] == "GET" and a["url.path"] == "/db"
    assert a["http.route"] == "/db" and a["client.address"] == "127.0.0.1"
    assert a["http.response.status_code"] == str(r.status_code)
    assert re.fullmatch(r"[0-9a-f]{16}", server["spanId"])
    assert re.fullmatch(r"[0-9]+", server["startTimeUnixNano"])
    # the database statement is a child of the server span
    db = rx.wait_spans(lambda s: s["traceId"] == TRACE and
                       s.get("parentSpanId") == server["spanId"])[0]
    assert db["name"] == "SELECT" and db["kind"] == 3
    assert db["_attrs"]["db.system.name"] == "sqlite"
    assert "select" in db["_attrs"]["db.query.text"].lower()
    assert int(db["startTimeUnixNano"]) >= int(server["startTimeUnixNano"])
    assert int(db["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    # the resource
    res = server["_resource"]
    assert res["service.name"] == "orders"
    assert res["deployment.environment"] == "e2e" and res["team"] == "a b,c"
    # exported as JSON to /v1/traces
    path, hdrs = rx.requests[0][1], rx.requests[0][2]
    assert path == "/v1/traces" and hdrs["content-type"] == "application/json"
    # the same trace id in every log line of the request: access log and
    # the query line written on the pool thread
    access = srv.access_entry("trace-e2e-1")
    assert access["trace_id"] == TRACE
    q = srv.wait_log(lambda e: e.get("msg") == "query" and e.get("request_id") == "trace-e2e-1")
    assert q["trace_id"] == TRACE
    wait_for(lambda: (scrape_metric(srv.port, "otel_spans_exported_total") or 0) >= 2, 5,
             "otel_spans_exported_total")


@pytest.mark.parametrize("value", [
    "00-%s-%s-01" % (TRACE.upper(), PARENT),
    "ff-%s-%s-01" % (TRACE, PARENT),
    "00-%s-%s-01" % ("0" * 32, PARENT),
    "00-%s-%s-01-x" % (TRACE, PARENT),
])
def test_invalid_traceparent_starts_a_new_trace(keel, rx, value):
    srv = keel(**fast(rx.url))
    r = get(srv, "/hello", {"traceparent": value})
    new = r.headers["X-Trace-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new) and new != TRACE.lower()
    span = rx.wait_spans(lambda s: s["traceId"] == new)[0]
    assert "parentSpanId" not in span, "a new trace has a root span"


def test_samplers(keel, rx):
    # ratio 0 at the root: nothing; a sampled parent still wins (parent-based)
    srv = keel(**fast(rx.url, OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                      OTEL_TRACES_SAMPLER_ARG="0"))
    unsampled = [get(srv, "/hello").headers["X-Trace-Id"] for _ in range(5)]
    other = "a" * 32
    get(srv, "/hello", {"traceparent": tp("00", trace="b" * 32)})  # parent says no
    get(srv, "/hello", {"traceparent": tp("01", trace=other)})     # parent says yes: marker
    rx.wait_spans(lambda s: s["traceId"] == other)
    ids = {s["traceId"] for s in rx.spans()}
    assert ids == {other}, "only the parent-sampled request is traced: %r" % ids
    assert len(set(unsampled)) == 5  # ids all the same, never sampled
    srv.stop()

    # ratio 1 at the root: every request; a parent that says no still wins
    rx2 = OtlpReceiver().__enter__()
    try:
        srv = keel(**fast(rx2.url, OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                          OTEL_TRACES_SAMPLER_ARG="1"))
        roots = [get(srv, "/hello").headers["X-Trace-Id"] for _ in range(3)]
        get(srv, "/hello", {"traceparent": tp("00", trace="c" * 32)})
        marker = get(srv, "/hello", {"traceparent": tp("01", trace="d" * 32)})
        rx2.wait_spans(lambda s: s["traceId"] == "d" * 32)
        ids = {s["traceId"] for s in rx2.spans() if s["_attrs"].get("url.path") == "/hello"}
        assert ids == set(roots) | {"d" * 32}, ids
        assert marker.status_code == 200
        srv.stop()
    finally:
        rx2.close()

    # always_off: not even a sampled parent
    rx3 = OtlpReceiver().__enter__()
    try:
        srv = keel(**fast(rx3.url, OTEL_TRACES_SAMPLER="always_off"))
        r = get(srv, "/hello", {"traceparent": tp("01")})
        assert r.headers["X-Trace-Id"] == TRACE  # still continued for the logs
        srv.stop()  # the shutdown flush would send anything queued
        assert rx3.spans() == []
    finally:
        rx3.close()


def burst_p99(srv, n=300):
    """p99 latency (s) of n sequential GET /hello on one keep-alive connection."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10 * SLACK)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("GET", "/hello")
        resp = c.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
        assert resp.status == 200
    c.close()
    lat.sort()
    return lat[int(len(lat) * 0.99) - 1]


def test_receiver_down_or_503_keeps_serving_and_counts(keel, rx):
    # baseline: receiver up
    up = keel(**fast(rx.url, OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64"))
    p99_up = burst_p99(up)
    up.stop()

    # nothing listens on the endpoint
    down = keel(**fast("http://127.0.0.1:%d" % free_port(), OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64",
                       OTEL_BSP_MAX_QUEUE_SIZE="128"))
    p99_down = burst_p99(down)
    wait_for(lambda: (scrape_metric(down.port, "otel_spans_dropped_total") or 0) > 0, 5,
             "dropped spans counted")
    assert (scrape_metric(down.port, "otel_export_failures_total") or 0) > 0
    assert get(down, "/health/ready").status_code == 200, "a collector down is not our health"
    # generous: the machine is shared; a blocked loop would cost seconds
    assert p99_down <= max(5 * p99_up, p99_up + 0.05), (p99_up, p99_down)

    # a receiver answering 503: retried within the export timeout, then dropped
    with OtlpReceiver(mode="503") as bad:
        srv = keel(**fast(bad.url, OTEL_BSP_EXPORT_TIMEOUT="1500"))
        p99_503 = burst_p99(srv, 200)
        wait_for(lambda: scrape_metric(srv.port, "otel_spans_dropped_total",
                                       reason="export_failed"), 10, "spans dropped after 503s")
        assert scrape_metric(srv.port, "otel_export_failures_total") >= 2
        assert bad.count >= 2, "a 503 is retried"
        assert p99_503 <= max(5 * p99_up, p99_up + 0.05), (p99_up, p99_503)


def test_429_with_retry_after_is_retried(keel):
    with OtlpReceiver(script=[(429, {"Retry-After": "1"})]) as r429:
        srv = keel(**fast(r429.url))
        tid = get(srv, "/hello").headers["X-Trace-Id"]
        r429.wait_spans(lambda s: s["traceId"] == tid, timeout=10)
        (t1, _, _, s1), (t2, _, _, s2) = r429.requests[:2]
        assert (s1, s2) == (429, 200)
        assert t2 - t1 >= 0.9, "Retry-After: 1 was honoured"
        assert scrape_metric(srv.port, "otel_export_failures_total") == 1
        # the batch: /hello and the start-up probe's span
        wait_for(lambda: (scrape_metric(srv.port, "otel_spans_exported_total") or 0) >= 1, 5,
                 "exported")


def test_partial_success_is_counted(keel):
    with OtlpReceiver(reject=1) as rej:
        srv = keel(**fast(rej.url))
        get(srv, "/hello")
        wait_for(lambda: scrape_metric(srv.port, "otel_spans_rejected_total") == 1, 5,
                 "rejected spans counted")


def test_shutdown_sends_the_last_spans(keel, rx):
    srv = keel(OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, OTEL_BSP_SCHEDULE_DELAY="60000",
               WORKERS="2")
    ids = [get(srv, "/hello").headers["X-Trace-Id"] for _ in range(5)]
    assert rx.spans() == []  # nothing yet: the batch waits for its timer
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 10 * SLACK
    got = {s["traceId"] for s in rx.spans()}
    assert set(ids) <= got, "every span sent at shutdown"


def test_admin_traces(keel):
    # no OTEL endpoint: nothing is exported, the recent traces still work
    srv = keel(WORKERS="1", JWT_SECRET="e2e-secret-0123456789abcdef0123456789abcdef",
               PASSWORD_HASH_MEMORY="8mb", PASSWORD_HASH_OPS="1")
    p = run_cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
                env=dict(srv.env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    api = srv.url + "/api/v1"
    tok = requests.post(api + "/auth/login", json={"email": "root@example.com", "password": PW},
                        timeout=10 * SLACK).json()["access_token"]
    auth = {"Authorization": "Bearer " + tok}
    get(srv, "/db?id=1", {"traceparent": tp()})
    # admin only
    assert requests.get(api + "/admin/traces", timeout=10).status_code == 401
    r = requests.get(api + "/admin/traces?limit=100", headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    lst = r.json()["traces"]
    mine = [t for t in lst if t["trace_id"] == TRACE]
    assert mine and mine[0]["name"] == "GET /db" and mine[0]["span_count"] >= 2
    assert mine[0]["status"] in ("unset", "ok") and mine[0]["duration_ms"] >= 0
    assert re.match(r"\d{4}-\d\d-\d\dT", mine[0]["start"])
    starts = [t["start_unix_nano"] for t in lst]
    assert starts == sorted(starts, reverse=True), "newest first"
    one = requests.get(api + "/admin/traces/" + TRACE, headers=auth, timeout=10).json()
    spans = one["spans"]
    root = [s for s in spans if s.get("parentSpanId") == PARENT][0]
    assert any(s.get("parentSpanId") == root["spanId"] for s in spans)
    # bad input
    assert requests.get(api + "/admin/traces/" + "A" * 32, headers=auth,
                        timeout=10).status_code == 422
    r = requests.get(api + "/admin/traces/" + "e" * 32, headers=auth, timeout=10)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/problem+json")
    assert requests.get(api + "/admin/traces?limit=0", headers=auth, timeout=10).status_code == 422
    assert scrape_metric(srv.port, "otel_spans_exported_total") == 0
    assert scrape_metric(srv.port, "http_client_requests_total") is None, "no export attempted"


def test_x_trace_id_on_every_response(keel, rx):
    srv = keel(**fast(rx.url))
    for path in ("/hello", "/nope", "/health/live"):
        r = get(srv, path)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Trace-Id"]), path
    # a refusal from the connection layer too (header too large -> 431)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.request("GET", "/hello", headers={"X-Big": "x" * 70000})
    resp = c.getresponse()
    assert resp.status in (431, 400, 413)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.getheader("X-Trace-Id"))


@pytest.mark.parametrize("env,msg", [
    ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
])
def test_bad_tracing_config_stops_start_up(tmp_path, env, msg):
    from conftest import build_env
    p = run_cli(["serve"], env=build_env(dict(env, PORT="0")), cwd=tmp_path)
    assert p.returncode == 2 and msg in p.stderr, (p.returncode, p.stderr)


def test_redis_commands_are_child_spans(keel, rx, redis_server):
    """The Redis rate-limit store runs its script in the limiter's middleware,
    inside the request: each command is a client span under the server span."""
    srv = keel(**fast(rx.url, REDIS_URL=redis_server.url, RATE_LIMIT_ENABLED="true",
                      RATE_LIMIT_MAX="100000", RATE_LIMIT_BURST="100000/1s"))
    r = get(srv, "/hello", {"traceparent": tp()})
    assert r.status_code == 200
    server = rx.wait_spans(lambda s: s["traceId"] == TRACE and s["kind"] == 2)[0]
    red = rx.wait_spans(lambda s: s["traceId"] == TRACE and
                        s["_attrs"].get("db.system.name") == "redis")
    assert all(s["parentSpanId"] == server["spanId"] and s["kind"] == 3 for s in red)
    assert red[0]["name"] in ("EVALSHA", "EVAL", "SCRIPT"), red[0]["name"]
    assert red[0]["_attrs"]["server.port"] == str(redis_server.port)


def test_postgres_statement_span_from_the_async_engine(keel, rx, pg_cluster):
    """With PostgreSQL, GET /db runs its statement on the loop (the async
    engine): the span is made there, a child of the server span."""
    from test_migrate import Pg
    db = Pg(pg_cluster)
    try:
        srv = keel(**fast(rx.url, DATABASE_URL=db.url))
        assert get(srv, "/db?id=1", {"traceparent": tp()}).status_code in (200, 404)
        server = rx.wait_spans(lambda s: s["traceId"] == TRACE and s["kind"] == 2)[0]
        st = rx.wait_spans(lambda s: s["traceId"] == TRACE and
                           s.get("parentSpanId") == server["spanId"])[0]
        assert st["name"] == "SELECT" and st["_attrs"]["db.system.name"] == "postgresql"
        assert "$1" in st["_attrs"]["db.query.text"], "placeholders, never values"
        srv.stop()
    finally:
        db.drop()
