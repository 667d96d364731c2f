"""The built-in routes, health checks and the Prometheus exposition."""
import json
import math
import time

import pytest
import requests

import promtext
from conftest import SLACK, wait_for
from rawhttp import assert_problem, get

TIMEOUT = 5 * SLACK


def ctype(r):
    return r.headers.get("Content-Type", "").split(";")[0].strip().lower()


# ---------------------------------------------------------------- routes

# (method, path, request kwargs, status, content type, body check)
ROUTES = [
    pytest.param("GET", "/hello", {}, 200, "text/plain", b"ok", id="hello"),
    pytest.param("GET", "/json", {}, 200, "application/json",
                 {"message": "Hello, World!"}, id="json"),
    pytest.param("GET", "/ping", {}, 200, "text/plain", b"pong", id="ping"),
    pytest.param("POST", "/echo", {"json": {"a": [1, 2.5, None, True], "b": {"c": "d\u00e9"}}},
                 200, "application/json", {"a": [1, 2.5, None, True], "b": {"c": "d\u00e9"}},
                 id="echo"),
    pytest.param("POST", "/echo", {"data": b"[]", "headers": {"Content-Type": "application/json"}},
                 200, "application/json", [], id="echo-array"),
    pytest.param("POST", "/echo", {"data": b'{"a":', "headers": {"Content-Type": "application/json"}},
                 400, "application/problem+json", None, id="echo-malformed-json"),
    pytest.param("POST", "/echo", {"data": b'{"a":1} x',
                                   "headers": {"Content-Type": "application/json"}},
                 400, "application/problem+json", None, id="echo-trailing-garbage"),
    pytest.param("POST", "/echo", {"data": b'{"a":1}', "headers": {"Content-Type": "text/plain"}},
                 415, "application/problem+json", None, id="echo-text-plain"),
    pytest.param("POST", "/echo", {"data": b"a=1", "headers": {
        "Content-Type": "application/x-www-form-urlencoded"}},
                 415, "application/problem+json", None, id="echo-form"),
    pytest.param("GET", "/does-not-exist", {}, 404, "application/problem+json", None,
                 id="not-found"),
    pytest.param("GET", "/hello/extra", {}, 404, "application/problem+json", None,
                 id="not-found-below-route"),
]


@pytest.mark.parametrize("method, path, kwargs, status, content_type, body", ROUTES)
def test_route(serving, method, path, kwargs, status, content_type, body):
    r = requests.request(method, serving.url + path, timeout=TIMEOUT, **kwargs)
    assert r.status_code == status, r.text
    assert ctype(r) == content_type, r.headers
    assert r.headers.get("Content-Length") == str(len(r.content))
    if isinstance(body, bytes):
        assert r.content == body
    elif body is not None:
        assert r.json() == body
    if status >= 400:
        doc = r.json()
        for key in ("type", "title", "status", "detail"):
            assert key in doc, doc
        assert doc["status"] == status
        if "request_id" in doc:
            assert doc["request_id"] == r.headers["X-Request-Id"]


def test_hello_is_plain_text(serving):
    r = requests.get(serving.url + "/hello", timeout=TIMEOUT)
    assert r.headers["Content-Type"].lower().startswith("text/plain")
    assert r.headers["Server"] == "keel"


# ---------------------------------------------------------------- health

@pytest.mark.parametrize("path", ["/health", "/health/live"])
def test_health_ok(serving, path):
    r = requests.get(serving.url + path, timeout=TIMEOUT)
    assert r.status_code == 200
    assert ctype(r) == "application/json"
    assert r.json()["status"] == "ok"


def test_ready_when_serving(serving):
    r = requests.get(serving.url + "/health/ready", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert ctype(r) == "application/json"


def test_health_detailed(serving):
    r = requests.get(serving.url + "/health/detailed", timeout=TIMEOUT)
    doc = r.json()
    assert doc["status"] in ("healthy", "degraded", "unhealthy"), doc
    assert isinstance(doc["checks"], dict), doc
    assert r.status_code in (200, 503), (r.status_code, doc)


# ------------------------------------------------------------- config

@pytest.mark.parametrize("value, expected", [("acme/2", "acme/2"), ("", None)])
def test_server_header_is_configurable(keel, value, expected):
    k = keel(SERVER_HEADER=value)
    for path in ("/hello", "/nope"):
        r = get(k.port, path)
        assert r.header("Server") == expected, r


def test_demo_routes_can_be_disabled(keel):
    k = keel(ENABLE_DEMO_ROUTES="false")
    assert get(k.port, "/hello").status == 404
    assert get(k.port, "/health/live").status == 200
    assert get(k.port, "/metrics").status == 200


# --------------------------------------------------------------- metrics

def scrape(srv):
    r = requests.get(srv.url + "/metrics", timeout=TIMEOUT)
    assert r.status_code == 200
    ct = r.headers["Content-Type"].replace(" ", "").lower()
    assert ct.startswith("text/plain;") and "version=0.0.4" in ct.split(";"), ct
    return promtext.parse(r.text)


def req_count(m, route, status="200", method="GET"):
    return m.value("http_requests_total", method=method, route=route, status=status)


def hist(m, **labels):
    """(buckets [(le, value)] sorted by le, sum, count) for one series."""
    buckets = sorted(((float(s.labels["le"].replace("+Inf", "inf")), s.value, s.labels["le"])
                      for s in m.find("http_request_duration_seconds_bucket", **labels)
                      if {k: v for k, v in s.labels.items() if k != "le"} == labels))
    return (buckets, m.value("http_request_duration_seconds_sum", **labels),
            m.value("http_request_duration_seconds_count", **labels))


REQUIRED = ["http_requests_total", "http_request_duration_seconds_bucket",
            "http_request_duration_seconds_sum", "http_request_duration_seconds_count",
            "http_requests_in_flight", "http_connections_open", "process_resident_memory_bytes",
            "process_open_fds", "process_start_time_seconds", "process_cpu_seconds_total",
            "keel_build_info"]

TYPES = {"http_requests_total": "counter", "http_request_duration_seconds": "histogram",
         "http_requests_in_flight": "gauge", "http_connections_open": "gauge",
         "process_resident_memory_bytes": "gauge", "process_open_fds": "gauge",
         "process_start_time_seconds": "gauge", "process_cpu_seconds_total": "counter",
         "keel_build_info": "gauge"}


def test_metrics_exposition_is_well_formed(serving):
    requests.get(serving.url + "/hello", timeout=TIMEOUT)
    m = scrape(serving)
    missing = [n for n in REQUIRED if not m.find(n)]
    assert not missing, "missing metrics: %s" % missing
    for sample in m.samples:
        assert m.family_type(sample.name), "no # TYPE for %s" % sample.name
    for family, typ in TYPES.items():
        assert m.family_type(family if typ != "histogram" else family + "_count") == typ, family
        assert family in m.helps or family.replace("_total", "") in m.helps, "no HELP: " + family


def test_metrics_process_values_are_sane(serving):
    m = scrape(serving)
    assert m.value("process_resident_memory_bytes") > 1024 * 1024
    assert m.value("process_open_fds") >= 3
    start = m.value("process_start_time_seconds")
    assert time.time() - 600 < start <= time.time() + 1, start
    assert m.value("process_cpu_seconds_total") >= 0
    [info] = m.find("keel_build_info")
    assert info.value == 1 and info.labels.get("version"), info
    assert m.value("http_connections_open") >= 1  # ours
    assert m.value("http_requests_in_flight") >= 0


def test_request_counters_and_histograms(serving):
    before = scrape(serving)
    for _ in range(3):
        assert get(serving.port, "/hello").status == 200
    for _ in range(2):
        assert get(serving.port, "/ping").status == 200
    # The counters may be bumped just after the response is written.
    def counted():
        m = scrape(serving)
        if (req_count(m, "/hello") - req_count(before, "/hello") >= 3
                and req_count(m, "/ping") - req_count(before, "/ping") >= 2):
            return m
        return None

    after = wait_for(counted, 2, "the requests to be counted")
    assert req_count(after, "/hello") - req_count(before, "/hello") == 3
    assert req_count(after, "/ping") - req_count(before, "/ping") == 2
    for route, n in (("/hello", 3), ("/ping", 2)):
        series = [s.labels for s in after.find("http_request_duration_seconds_count", route=route)]
        assert series, "no duration histogram for %s" % route
        labels = series[0]
        buckets, total, count = hist(after, **labels)
        _, _, count_before = hist(before, **labels)
        assert count - count_before == n, (route, count, count_before)
        assert buckets and buckets[-1][2] == "+Inf", buckets
        values = [v for _, v, _ in buckets]
        assert values == sorted(values), "buckets not cumulative: %s" % buckets
        assert len({le for le, _, _ in buckets}) == len(buckets)
        assert values[-1] == count
        assert total >= 0 and not math.isnan(total)


def test_every_histogram_ends_with_inf_equal_to_count(serving):
    get(serving.port, "/json")
    m = scrape(serving)
    for s in m.find("http_request_duration_seconds_count"):
        buckets, _, count = hist(m, **s.labels)
        assert buckets[-1][2] == "+Inf" and buckets[-1][1] == count, (s.labels, buckets)
        values = [v for _, v, _ in buckets]
        assert values == sorted(values), (s.labels, buckets)


def test_error_statuses_are_counted(serving):
    before = scrape(serving)
    r = get(serving.port, "/echo", method="POST", body=b"{",
            headers=[("Content-Type", "application/json")])
    assert_problem(r, 400)

    def counted():
        m = scrape(serving)
        return m if req_count(m, "/echo", "400", "POST") > req_count(before, "/echo", "400", "POST") \
            else None

    # The counter may be bumped just after the response is written.
    after = wait_for(counted, 2, "the 400 to be counted")
    assert req_count(after, "/echo", "400", "POST") - req_count(before, "/echo", "400", "POST") == 1


def test_metrics_json(serving):
    r = requests.get(serving.url + "/metrics/json", timeout=TIMEOUT)
    assert r.status_code == 200
    assert ctype(r) == "application/json"
    doc = r.json()
    assert isinstance(doc, dict) and doc
    json.dumps(doc)
