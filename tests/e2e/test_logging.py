"""Structured logs, the access log, request ids and trace context."""
import re
import time
import uuid

import pytest

from conftest import wait_for
from rawhttp import get

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
LEVELS = {"trace", "debug", "info", "warn", "error", "fatal"}


def rid():
    return "e2e-" + uuid.uuid4().hex


def test_every_line_is_a_json_object(serving):
    get(serving.port, "/hello", headers=[("X-Request-Id", rid())])
    get(serving.port, "/nope")
    entries = serving.logs()
    assert entries
    for e in entries:
        assert "_raw" not in e, "not a JSON object: %r" % e["_raw"]
        assert {"time", "level", "msg"} <= set(e), e
        assert e["level"] in LEVELS, e
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", str(e["time"])), e


def test_access_log_line(serving):
    request_id = rid()
    r = get(serving.port, "/hello", headers=[("X-Request-Id", request_id),
                                             ("User-Agent", "e2e-agent/1.0")])
    assert r.status == 200
    e = serving.access_entry(request_id)
    assert e["method"] == "GET"
    assert e["route"] == "/hello"
    assert e["path"] == "/hello"
    assert e["status"] == 200
    assert isinstance(e["bytes"], int) and e["bytes"] >= 2, e
    assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0, e
    assert "127.0.0.1" in str(e["remote"]), e
    assert e["user_agent"] == "e2e-agent/1.0"
    assert e["level"] == "info"


def test_access_log_uses_route_template_and_error_status(serving):
    request_id = rid()
    r = get(serving.port, "/echo", method="POST", body=b"{",
            headers=[("X-Request-Id", request_id), ("Content-Type", "application/json")])
    assert r.status == 400
    e = serving.access_entry(request_id)
    assert (e["method"], e["route"], e["path"], e["status"]) == ("POST", "/echo", "/echo", 400)


def test_one_access_line_per_request(serving):
    request_id = rid()
    for _ in range(3):
        get(serving.port, "/hello", headers=[("X-Request-Id", request_id)])
    def access_lines():
        return [e for e in serving.logs() if e.get("request_id") == request_id and "status" in e]

    # Workers flush their log buffers independently: wait for all three.
    wait_for(lambda: len(access_lines()) >= 3, 3, "three access-log lines")
    # A check that nothing more comes: a fourth (duplicate) line gets this
    # long to show (an absence cannot be polled for).
    time.sleep(0.1)
    lines = access_lines()
    assert len(lines) == 3, lines


@pytest.mark.parametrize("level", ["info", "trace"])
def test_secrets_never_logged(keel, level):
    k = keel(LOG_LEVEL=level)
    request_id = rid()
    token, cookie = "e2e-SECRET-token-8472", "e2e-COOKIE-value-1234"
    r = get(k.port, "/hello", headers=[("X-Request-Id", request_id),
                                       ("Authorization", "Bearer " + token),
                                       ("Cookie", "sid=" + cookie),
                                       ("Proxy-Authorization", "Basic " + token)])
    assert r.status == 200
    k.access_entry(request_id)
    out = k.stdout() + k.stderr()
    assert token not in out
    assert cookie not in out


def test_access_log_can_be_disabled(keel):
    k = keel(ACCESS_LOG="false")
    request_id = rid()
    assert get(k.port, "/hello", headers=[("X-Request-Id", request_id)]).status == 200
    assert get(k.port, "/ping").status == 200
    k.stop()
    assert not [e for e in k.logs() if "status" in e and "method" in e], k.stdout()[-2000:]


def test_slow_requests_are_logged_at_warn(keel):
    k = keel(SLOW_REQUEST_THRESHOLD="200ms")
    slow, fast = rid(), rid()
    assert get(k.port, "/slow?ms=400", headers=[("X-Request-Id", slow)]).body == b"done"
    assert get(k.port, "/hello", headers=[("X-Request-Id", fast)]).status == 200
    e = k.access_entry(slow)
    assert e["level"] == "warn", e
    assert e["duration_ms"] >= 350, e
    assert k.access_entry(fast)["level"] == "info"


# ------------------------------------------------------------ request ids

# (headers sent, expected X-Request-Id or None when a new one must be made)
REQUEST_IDS = [
    pytest.param([("X-Request-Id", "abc-123")], "abc-123", id="echo"),
    pytest.param([("X-Request-Id", "A.b_c:d-9")], "A.b_c:d-9", id="echo-all-classes"),
    pytest.param([("X-Request-Id", "x" * 128)], "x" * 128, id="echo-128"),
    pytest.param([("x-request-id", "lower-name")], "lower-name", id="field-name-case"),
    pytest.param([("X-Correlation-Id", "corr-42")], "corr-42", id="correlation-id"),
    pytest.param([("X-Request-Id", "x" * 129)], None, id="too-long"),
    pytest.param([("X-Request-Id", "has space")], None, id="space"),
    pytest.param([("X-Request-Id", "bad/char")], None, id="slash"),
    pytest.param([("X-Request-Id", "quote\"d")], None, id="quote"),
    pytest.param([("X-Request-Id", "caf\xe9")], None, id="non-ascii"),
    pytest.param([("X-Request-Id", "")], None, id="empty"),
    pytest.param([("X-Request-Id", "inject\"},{\"level\":\"fatal")], None, id="json-injection"),
    pytest.param([], None, id="absent"),
]


@pytest.mark.parametrize("headers, expected", REQUEST_IDS)
def test_request_id(serving, headers, expected):
    r = get(serving.port, "/hello", headers=headers)
    got = r.header("X-Request-Id")
    assert got and ID_RE.fullmatch(got), r
    assert len(r.headers_all("X-Request-Id")) == 1
    if expected is not None:
        assert got == expected
    else:
        assert got not in [v for _, v in headers], got
    e = serving.access_entry(got)
    assert e["path"] == "/hello"


def test_generated_request_ids_are_unique(serving):
    ids = {get(serving.port, "/hello").header("X-Request-Id") for _ in range(20)}
    assert len(ids) == 20


def test_problem_carries_request_id(serving):
    request_id = rid()
    r = get(serving.port, "/nope", headers=[("X-Request-Id", request_id)])
    assert r.status == 404
    assert r.header("X-Request-Id") == request_id
    doc = r.json()
    assert doc.get("request_id", request_id) == request_id


# --------------------------------------------------------- trace context

def test_traceparent_trace_id_is_logged(serving):
    request_id = rid()
    r = get(serving.port, "/hello", headers=[("X-Request-Id", request_id),
                                             ("traceparent", "00-%s-%s-01" % (TRACE, PARENT))])
    assert r.status == 200
    assert serving.access_entry(request_id)["trace_id"] == TRACE


INVALID_TRACEPARENTS = [
    pytest.param("garbage", id="garbage"),
    pytest.param("00-%s-%s-01" % ("0" * 32, PARENT), id="zero-trace-id"),
    pytest.param("00-%s-%s-01" % (TRACE, "0" * 16), id="zero-parent-id"),
    pytest.param("ff-%s-%s-01" % (TRACE, PARENT), id="version-ff"),
    pytest.param("00-%s-%s-01" % (TRACE.upper(), PARENT), id="uppercase"),
    pytest.param("00-%s-%s-01" % (TRACE[:-1], PARENT), id="short-trace-id"),
    pytest.param("00-%sz-%s-01" % (TRACE[:-1], PARENT), id="non-hex"),
    pytest.param("00-%s-%s-01-extra" % (TRACE, PARENT), id="version-00-extra-field"),
    pytest.param("00-%s-%s" % (TRACE, PARENT), id="missing-flags"),
]


@pytest.mark.parametrize("value", INVALID_TRACEPARENTS)
def test_invalid_traceparent_is_ignored(serving, value):
    request_id = rid()
    r = get(serving.port, "/hello", headers=[("X-Request-Id", request_id), ("traceparent", value)])
    assert r.status == 200
    trace_id = serving.access_entry(request_id).get("trace_id")
    assert trace_id and re.fullmatch(r"[0-9a-f]{32}", trace_id), trace_id
    assert trace_id != "0" * 32
    assert trace_id.lower() != TRACE.lower(), "an invalid traceparent was honoured"


def test_trace_ids_are_generated_per_request(serving):
    ids = []
    for _ in range(3):
        request_id = rid()
        get(serving.port, "/hello", headers=[("X-Request-Id", request_id)])
        ids.append(serving.access_entry(request_id).get("trace_id"))
    assert all(i and re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3


def test_log_file_rotates_by_size(keel, tmp_path):
    import json as _json
    from rawhttp import get as _get
    path = tmp_path / "keel.log"
    k = keel(LOG_FILE=str(path), LOG_FILE_MAX_SIZE="4kb", LOG_FILE_KEEP="2")
    for _ in range(120):
        assert _get(k.port, "/hello", timeout=5).status == 200
    k.stop()
    assert path.exists() and (tmp_path / "keel.log.1").exists() and (tmp_path / "keel.log.2").exists()
    assert not (tmp_path / "keel.log.3").exists(), "LOG_FILE_KEEP=2 keeps two rotated files"
    lines = []
    for f in (tmp_path / "keel.log.2", tmp_path / "keel.log.1", path):
        assert f.stat().st_size < 4096 + 2048  # rotated once past the size
        lines += [_json.loads(line) for line in f.read_text().splitlines()]
    assert any(e.get("msg") == "request" for e in lines)
    # stdout still gets every line
    assert k.stdout().count('"route":"/hello"') == 120


def test_pretty_format_is_for_humans(keel):
    from rawhttp import get as _get
    k = keel(LOG_FORMAT="pretty")
    assert _get(k.port, "/hello", timeout=5).status == 200
    k.stop()
    out = k.stdout()
    line = next(l for l in out.splitlines() if "route=/hello" in l)
    assert not line.startswith("{")
    assert "info" in line and "status=200" in line and "route=/hello" in line
