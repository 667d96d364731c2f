"""GET /api/v1/admin/stream (the dashboard's live figures over Server-Sent
Events) and the /dashboard page itself (docs/observability.md,
"Dashboard"): admin only, the event format, snapshots that follow the load
and the errors, heartbeat comments, the ADMIN_STREAM_MAX limit, the end
of a stream when the server drains, and the page's strict CSP."""
import http.client
import json
import queue
import re
import socket
import threading
import time

import pytest
import requests

from conftest import SLACK, run_cli, wait_for

SECRET = "stream-test-secret-0123456789abcdef0123456789"
PW = "correct horse battery staple"
ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1",
       "ADMIN_STREAM_INTERVAL": "200ms", "ADMIN_STREAM_HEARTBEAT": "300ms",
       "ADMIN_STREAM_MAX": "2", "HANDLER_TIMEOUT": "300ms"}
SNAPSHOT_KEYS = {"seq", "ts", "interval_s", "requests_total", "errors_total", "request_rate",
                 "error_rate", "latency_ms", "in_flight", "connections", "db_pool", "cache",
                 "websockets", "redis", "memory_rss_bytes", "streams"}


def cli(srv, args, **extra):
    p = run_cli(args, env=dict(ENV, **extra), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture(scope="module")
def stream_srv(keel_module):
    srv = keel_module(**ENV)
    key = cli(srv, ["apikey", "create", "--name", "dash", "--scopes", "admin:access"])
    cli(srv, ["user", "create", "--email", "plain@example.com", "--role", "user"],
        KEEL_ADMIN_PASSWORD=PW)
    tok = requests.post(srv.url + "/api/v1/auth/login",
                        json={"email": "plain@example.com", "password": PW},
                        timeout=10 * SLACK).json()["access_token"]
    return srv, {"X-API-Key": key}, {"Authorization": "Bearer " + tok}


class Stream:
    """One open stream, read by a thread into a queue of
    ("comment", text) / ("event", name, data) / ("eof",)."""

    def __init__(self, srv, headers):
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30 * SLACK)
        self.conn.request("GET", "/api/v1/admin/stream", headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.q = queue.Queue()
        self.raw = []
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        name, data = "message", []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode()
                self.raw.append(line)
                line = line.rstrip("\n")
                if line == "":
                    if data:
                        self.q.put(("event", name, "\n".join(data)))
                    name, data = "message", []
                elif line.startswith(":"):
                    self.q.put(("comment", line[1:].strip()))
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed under the reader
        self.q.put(("eof",))

    def next(self, timeout=5.0):
        try:
            return self.q.get(timeout=timeout * SLACK)
        except queue.Empty:
            raise AssertionError("nothing on the stream for %.1fs" % (timeout * SLACK))

    def snapshot(self, timeout=5.0):
        deadline = time.monotonic() + timeout * SLACK
        while time.monotonic() < deadline:
            item = self.next(timeout)
            assert item[0] != "eof", "stream ended"
            if item[0] == "event" and item[1] == "snapshot":
                return json.loads(item[2])
        raise AssertionError("no snapshot")

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def test_stream_refuses_anonymous_and_non_admins(stream_srv):
    srv, _, user = stream_srv
    for headers, status in (({}, 401), (user, 403), ({"Authorization": "Bearer nope"}, 401)):
        r = requests.get(srv.url + "/api/v1/admin/stream", headers=headers, timeout=5 * SLACK)
        assert r.status_code == status, (headers, r.status_code)
        assert r.headers["Content-Type"].startswith("application/problem+json")


def test_head_answers_at_once(stream_srv):
    srv, admin, _ = stream_srv
    r = requests.head(srv.url + "/api/v1/admin/stream", headers=admin, timeout=5 * SLACK)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")


def test_stream_format_figures_and_heartbeat(stream_srv):
    srv, admin, _ = stream_srv
    s = Stream(srv, admin)
    try:
        assert s.status == 200
        assert s.resp.getheader("Content-Type").startswith("text/event-stream")
        assert s.resp.getheader("Cache-Control") == "no-store"
        assert s.resp.getheader("Transfer-Encoding") == "chunked"
        first = s.snapshot()
        assert set(first) >= SNAPSHOT_KEYS, set(first) ^ SNAPSHOT_KEYS
        assert s.raw[0] == "retry: 2000\n"
        assert first["redis"] == {"state": "not_configured"}
        assert first["db_pool"]["open"] >= 1 and first["streams"] >= 1
        base = first["requests_total"]
        # load: 40 good requests and 3 that overrun HANDLER_TIMEOUT (503)
        with requests.Session() as h:
            for _ in range(40):
                assert h.get(srv.url + "/hello", timeout=5 * SLACK).status_code == 200
        for _ in range(3):
            assert requests.get(srv.url + "/slow?ms=2000",
                                timeout=10 * SLACK).status_code == 503
        seen, beats, err_rate, p99 = None, 0, 0, 0
        deadline = time.monotonic() + 5 * SLACK
        while time.monotonic() < deadline:
            item = s.next()
            assert item[0] != "eof"
            if item[0] == "comment" and item[1] == "heartbeat":
                beats += 1
            elif item[0] == "event":
                assert item[1] == "snapshot"
                snap = json.loads(item[2])
                err_rate = max(err_rate, snap["error_rate"] or 0)
                p99 = max(p99, snap["latency_ms"]["p99"] or 0)
                if snap["requests_total"] >= base + 43 and snap["errors_total"] >= 3:
                    seen = snap
            if seen and beats and err_rate > 0 and p99 > 0:
                break
        assert seen, "the counters never reached the load"
        assert beats >= 1, "no heartbeat comment"
        assert err_rate > 0, "error rate never above 0"
        # the three 503s took the handler deadline (300 ms): p99 reflects it
        assert p99 >= 100, p99
        assert 0 < seen["interval_s"] < 2
    finally:
        s.close()


def streams_open(srv):
    m = requests.get(srv.url + "/metrics", timeout=5 * SLACK).text
    return int(float(re.search(r"^admin_streams_open (\S+)$", m, re.M).group(1)))


def test_latency_quantiles_interpolate_within_a_bucket(stream_srv):
    """Requests of ~150 ms all fall in the (0.1 s, 0.25 s] bucket: every
    quantile of an interval with only them is interpolated inside it, as
    histogram_quantile does: p50 = 100 + 150 * 0.5 ms, p95, p99 alike."""
    srv, admin, _ = stream_srv
    s = Stream(srv, admin)
    try:
        wait_for(lambda: s.snapshot()["request_rate"] == 0, timeout=5 * SLACK,
                 what="an idle interval")
        done = threading.Event()

        def load():
            with requests.Session() as h:
                for _ in range(6):
                    assert h.get(srv.url + "/slow?ms=150", timeout=5 * SLACK).status_code == 200
            done.set()
        t = threading.Thread(target=load)
        t.start()
        seen = []
        deadline = time.monotonic() + 10 * SLACK
        while not done.is_set() or len(seen) < 1:
            assert time.monotonic() < deadline, "no latency seen (%r)" % seen
            lat = s.snapshot()["latency_ms"]
            if lat["p50"] is not None:
                seen.append(lat)
        t.join()
        for lat in seen:
            assert lat == {"p50": 175, "p95": 242.5, "p99": 248.5}, seen
    finally:
        s.close()


def test_bus_messages_on_alert_channels_are_forwarded(stream_srv):
    srv, admin, _ = stream_srv
    s = Stream(srv, admin)
    try:
        s.snapshot()
        for channel, payload in (("other", {"x": 1}), ("alerts", {"id": "a1", "state": "firing"})):
            r = requests.post(srv.url + "/distributed/events/" + channel, json=payload,
                              headers=admin, timeout=5 * SLACK)
            assert r.status_code == 202, r.text
        deadline = time.monotonic() + 5 * SLACK
        got = []
        while not got:
            assert time.monotonic() < deadline, "no bus event"
            item = s.next()
            assert item[0] != "eof"
            if item[0] == "event" and item[1] == "bus":
                got.append(json.loads(item[2]))
        # only the alerts channel (ADMIN_STREAM_BUS_PATTERN=alerts*), as its envelope
        assert got[0]["channel"] == "alerts" and got[0]["payload"] == {"id": "a1",
                                                                        "state": "firing"}
    finally:
        s.close()


def test_stream_limit_and_release(stream_srv):
    srv, admin, _ = stream_srv
    # an earlier test's stream is let go at its next tick
    wait_for(lambda: streams_open(srv) == 0, timeout=5 * SLACK, what="no stream open")
    a, b = Stream(srv, admin), Stream(srv, admin)
    try:
        assert a.status == 200 and b.status == 200
        a.snapshot(), b.snapshot()
        r = requests.get(srv.url + "/api/v1/admin/stream", headers=admin, timeout=5 * SLACK)
        assert r.status_code == 503 and r.headers.get("Retry-After")
        assert "ADMIN_STREAM_MAX" in r.json()["detail"]
        m = requests.get(srv.url + "/metrics", timeout=5 * SLACK).text
        assert re.search(r"^admin_stream_rejected_total [1-9]", m, re.M), m
        assert re.search(r"^admin_streams_open 2$", m, re.M)
    finally:
        a.close()
    try:
        # the closed stream's place is given back (its tick notices the close)
        def reopened():
            c = Stream(srv, admin)
            if c.status == 200:
                c.close()
                return True
            c.close()
            return False
        wait_for(reopened, timeout=5 * SLACK, what="a stream slot freed")
    finally:
        b.close()


def test_stream_ends_when_the_server_drains(keel):
    srv = keel(**ENV)
    key = cli(srv, ["apikey", "create", "--name", "dash", "--scopes", "admin:access"])
    s = Stream(srv, {"X-API-Key": key})
    try:
        s.snapshot()
        t0 = time.monotonic()
        srv.proc.send_signal(15)
        events = []
        while True:
            item = s.next(10)
            if item[0] == "eof":
                break
            if item[0] == "event":
                events.append(item[1])
        assert events and events[-1] == "shutdown", events
        assert srv.proc.wait(timeout=10 * SLACK) == 0
        assert time.monotonic() - t0 < 3 * SLACK  # not SHUTDOWN_GRACE (5 s)
    finally:
        s.close()


def test_stream_ends_after_its_max_duration_and_reports_redis(keel, redis_server):
    srv = keel(**dict(ENV, ADMIN_STREAM_MAX_DURATION="1s", REDIS_URL=redis_server.url))
    key = cli(srv, ["apikey", "create", "--name", "dash", "--scopes", "admin:access"],
              REDIS_URL=redis_server.url)
    s = Stream(srv, {"X-API-Key": key})
    try:
        # a real Redis behind REDIS_URL: up, its breaker closed
        wait_for(lambda: s.snapshot()["redis"]["state"] == "up", timeout=5 * SLACK,
                 what="redis up on the stream")
        assert s.snapshot()["redis"]["breaker"] == "closed"
        t0 = time.monotonic()
        events = []
        while True:
            item = s.next(5)
            if item[0] == "eof":
                break
            if item[0] == "event" and item[1] == "shutdown":
                events.append(json.loads(item[2]))
        assert events == [{"reason": "max_duration"}], events
        assert time.monotonic() - t0 < 2 * SLACK
        assert srv.alive()
    finally:
        s.close()


# ---------------------------------------------------------------- the page

def test_dashboard_page_is_served_with_a_strict_csp(stream_srv):
    srv, _, _ = stream_srv
    r = requests.get(srv.url + "/dashboard", timeout=5 * SLACK)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = r.text
    # nothing inline: every script has a src, no <style> and no style=""
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script type="module" src="/dashboard/dashboard.js">']
    assert "<style" not in html and not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    for path, ctype in (("/dashboard/dashboard.js", "text/javascript"),
                        ("/dashboard/dashboard.css", "text/css")):
        a = requests.get(srv.url + path, timeout=5 * SLACK)
        assert a.status_code == 200 and a.headers["Content-Type"].startswith(ctype), path
        assert a.headers["Content-Security-Policy"] == csp
    js = requests.get(srv.url + "/dashboard/dashboard.js", timeout=5 * SLACK).text
    assert "/api/v1/admin/stream" in js
    # no URL of another origin (the SVG namespace is a name, not a fetch)
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", js)


def test_dashboard_can_be_switched_off(keel):
    # DASHBOARD_CSP=false: the page is left to the global CSP
    srv = keel(**dict(ENV, DASHBOARD_CSP="false", CSP="default-src 'self'; img-src *"))
    r = requests.get(srv.url + "/dashboard", timeout=5 * SLACK)
    assert r.status_code == 200
    assert r.headers["Content-Security-Policy"] == "default-src 'self'; img-src *"
    srv = keel(**dict(ENV, DASHBOARD="false"))
    assert requests.get(srv.url + "/dashboard", timeout=5 * SLACK).status_code == 404
    # the stream is an admin API of its own: still there (401 without a key)
    assert requests.get(srv.url + "/api/v1/admin/stream",
                        timeout=5 * SLACK).status_code == 401
