"""Distributed locks and the event bus end to end (docs/distributed.md):
two instances on one real Redis (tests/e2e/redisproc.py), one instance
without Redis (the in-process fallbacks), and Redis killed and restarted.

The endpoints need an admin or a service API key with admin:access: the
instances share one SQLite file so one key opens both."""
import http.client
import json
import queue
import socket
import threading
import time
import uuid

import pytest
import requests

from conftest import SLACK, run_cli
from test_redis import FAST, metric, wait_for

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"


class Admin:
    """A client of one instance with the shared API key."""

    def __init__(self, srv, key):
        self.srv = srv
        self.key = key
        self.s = requests.Session()

    def call(self, method, path, key=True, **kw):
        h = kw.pop("headers", {})
        if key:
            h["X-API-Key"] = self.key if key is True else key
        return self.s.request(method, self.srv.url + path, headers=h, timeout=30 * SLACK, **kw)

    def lock(self, name, **body):
        return self.call("POST", "/distributed/lock/" + name, json=body)

    def unlock(self, name, token):
        return self.call("DELETE", "/distributed/lock/" + name, headers={"X-Lock-Token": token})

    def publish(self, channel, payload):
        return self.call("POST", "/distributed/events/" + channel, json=payload)


def start(keel, tmp_path, n=1, **extra):
    """n instances sharing a database, and an admin:access key for them."""
    env = {"JWT_SECRET": SECRET, "DATABASE_URL": "sqlite:%s" % (tmp_path / "shared.db"),
           "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1", **extra}
    servers = [keel(**dict(env, INSTANCE_ID="inst-%s" % "ab"[i])) for i in range(n)]
    p = run_cli(["apikey", "create", "--name", "dist", "--scopes", "admin:access"], env=env,
                cwd=servers[0].workdir)
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    return [Admin(s, key) for s in servers]


class Stream:
    """A Server-Sent Events reader on a thread: data lines land in a queue."""

    def __init__(self, admin, channel):
        self.conn = http.client.HTTPConnection("127.0.0.1", admin.srv.port, timeout=30 * SLACK)
        self.conn.request("GET", "/distributed/events/%s/stream" % channel,
                          headers={"X-API-Key": admin.key})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("Content-Type").startswith("text/event-stream")
        self.events = queue.Queue()
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.subscribed.wait(10 * SLACK), "no subscribed line"

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == ": subscribed":
                    self.subscribed.set()
                elif line.startswith("data: "):
                    self.events.put(json.loads(line[6:]))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass
        self.events.put(None)

    def next(self, timeout=5.0):
        try:
            return self.events.get(timeout=timeout * SLACK)
        except queue.Empty:
            return None

    def close(self):
        # wakes the reader (a blocked read holds the response's buffer lock)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=10 * SLACK)
        self.conn.close()


def contend(admins, n=50, name="shared-counter"):
    """n threads, spread over the instances, each take the lock, check a
    shared counter (one holder at a time), and release it."""
    guard = threading.Lock()
    state = {"holders": 0, "max": 0}
    grants = []
    failures = []

    def run(i):
        a = Admin(admins[i % len(admins)].srv, admins[0].key)
        r = a.lock(name, ttl_ms=10000, wait_ms=60000)
        if r.status_code != 201:
            failures.append((r.status_code, r.text))
            return
        g = r.json()
        with guard:
            state["holders"] += 1
            state["max"] = max(state["max"], state["holders"])
            grants.append(g["fencing"])
        time.sleep(0.005)  # holds the lock a moment: overlapping holders would show
        with guard:
            state["holders"] -= 1
        r = a.unlock(name, g["token"])
        if r.status_code != 204:
            failures.append((r.status_code, r.text))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert state["max"] == 1, state
    assert len(grants) == n
    # fencing numbers grow with every grant, in the order granted
    assert grants == sorted(grants) and len(set(grants)) == n, grants
    return grants


def lock_semantics(a, name):
    r = a.lock(name, ttl_ms=5000)
    assert r.status_code == 201, r.text
    g = r.json()
    assert len(g["token"]) == 32 and g["fencing"] >= 1
    assert g["expires_at"] > time.time() * 1000
    # held: 409 at once, and after waiting
    assert a.lock(name).status_code == 409
    t0 = time.monotonic()
    assert a.lock(name, wait_ms=300).status_code == 409
    assert time.monotonic() - t0 >= 0.25
    # a wrong token is refused, the right one releases, then it is gone
    assert a.unlock(name, "0" * 32).status_code == 409
    assert a.call("DELETE", "/distributed/lock/" + name,
                  json={"token": g["token"]}).status_code == 204
    assert a.unlock(name, g["token"]).status_code == 404
    # the next grant has a larger fencing number
    r = a.lock(name, ttl_ms=300)
    assert r.status_code == 201 and r.json()["fencing"] > g["fencing"]
    # TTL: it expires by itself; a waiter gets it once it has
    r = a.lock(name, ttl_ms=1000, wait_ms=3000)
    assert r.status_code == 201, r.text
    assert a.unlock(name, r.json()["token"]).status_code == 204


def bad_input(a):
    problem = "application/problem+json"
    for path in ("/distributed/lock/a%20b", "/distributed/lock/" + "k" * 129,
                 "/distributed/lock/%C3%A9"):
        r = a.call("POST", path, json={})
        assert r.status_code == 422, (path, r.text)
        assert r.headers["Content-Type"].startswith(problem)
    for body in ({"ttl_ms": 0}, {"ttl_ms": "5"}, {"wait_ms": -1}, {"wait_ms": 10 ** 6},
                 {"other": 1}):
        assert a.lock("k", **body).status_code == 422, body
    assert a.call("POST", "/distributed/lock/k", data="{",
                  headers={"Content-Type": "application/json"}).status_code == 400
    assert a.call("DELETE", "/distributed/lock/k").status_code == 422  # no token
    assert a.unlock("k", "not-a-token").status_code == 422
    assert a.call("POST", "/distributed/events/a*b", json={}).status_code == 422
    # admin or service key only
    assert a.call("POST", "/distributed/lock/k", key=False, json={}).status_code == 401
    assert a.call("POST", "/distributed/events/c", key=False, json={}).status_code == 401
    assert a.call("GET", "/distributed/events/c/stream", key=False).status_code == 401
    assert a.call("POST", "/distributed/lock/k", key="keel_x_bogus", json={}).status_code == 401


def check_envelope(env, eid, channel, payload, source):
    assert env["id"] == eid
    assert env["channel"] == channel
    assert env["payload"] == payload
    assert env["source_instance"] == source
    assert abs(env["ts"] - time.time() * 1000) < 60000 * SLACK
    uuid.UUID(env["id"])


# ---------------------------------------------------------------- two instances, one Redis

@pytest.fixture
def pair(keel, redis_server, tmp_path):
    a, b = start(keel, tmp_path, 2, REDIS_URL=redis_server.url)
    for x in (a, b):
        wait_for(lambda: metric(x.srv, "events_subscriber_connected") == 1, 10,
                 "the event subscriber")
    return a, b


def test_fifty_concurrent_attempts_one_holder_across_two_instances(pair, redis_server, report):
    a, b = pair
    t0 = time.monotonic()
    grants = contend([a, b])
    report("50 lock holders in turn across two instances in %.2f s"
           % (time.monotonic() - t0))
    # the state is Redis's: the counter key holds the last fencing number
    assert int(redis_server.command("GET", "keel:fence:shared-counter")) == grants[-1]
    assert redis_server.command("EXISTS", "keel:lock:shared-counter") == 0
    assert metric(a.srv, "locks_acquired_total") + metric(b.srv, "locks_acquired_total") == 50


def test_lock_semantics_on_redis(pair, redis_server):
    a, b = pair
    lock_semantics(a, "sem")
    # a lock taken on A is held on B, and B can release it with the token
    g = a.lock("cross", ttl_ms=5000).json()
    assert b.lock("cross").status_code == 409
    assert 0 < redis_server.command("PTTL", "keel:lock:cross") <= 5000
    assert b.unlock("cross", g["token"]).status_code == 204
    bad_input(b)


def test_published_on_a_reaches_a_subscriber_on_b(pair):
    a, b = pair
    s = Stream(b, "orders")
    other = Stream(b, "other")
    try:
        r = a.publish("orders", {"n": 1, "text": "line\nbreak"})
        assert r.status_code == 202, r.text
        eid = r.json()["id"]
        env = s.next()
        assert env is not None, "the event did not arrive on B"
        check_envelope(env, eid, "orders", {"n": 1, "text": "line\nbreak"}, "inst-a")
        # not on another channel; a non-object payload travels as is
        assert a.publish("orders", [1, "two"]).status_code == 202
        assert s.next()["payload"] == [1, "two"]
        assert other.next(timeout=0.5) is None
    finally:
        s.close()
        other.close()
    wait_for(lambda: metric(b.srv, "events_received_total") >= 2, 5, "the received count")
    assert metric(a.srv, "events_published_total") == 2


# ---------------------------------------------------------------- without Redis

def test_without_redis_locks_and_events_in_process(keel, tmp_path):
    (a,) = start(keel, tmp_path, 1)
    lock_semantics(a, "local")
    bad_input(a)
    contend([a], name="local-counter")
    assert metric(a.srv, "events_subscriber_connected") == 1
    s = Stream(a, "local")
    try:
        r = a.publish("local", {"x": True})
        assert r.status_code == 202 and r.json()["backend"] == "memory"
        check_envelope(s.next(), r.json()["id"], "local", {"x": True}, "inst-a")
    finally:
        s.close()


def test_slow_sse_reader_drops_and_counts(keel, tmp_path):
    """A subscriber that stops reading falls behind: the server keeps a
    bounded queue for it, drops the rest (counted) and stays responsive."""
    (a,) = start(keel, tmp_path, 1, OUTPUT_BUFFER_MAX="64kb")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", a.srv.port))
    sock.sendall(b"GET /distributed/events/flood/stream HTTP/1.1\r\nHost: x\r\n"
                 b"X-API-Key: " + a.key.encode() + b"\r\n\r\n")
    try:
        assert b"200" in sock.recv(12)  # and never read again
        big = {"blob": "x" * 30000}
        for i in range(400):
            assert a.publish("flood", big).status_code == 202
            if i % 50 == 49 and (metric(a.srv, "events_dropped_total",
                                        reason="slow_reader") or 0) > 0:
                break
        assert metric(a.srv, "events_dropped_total", reason="slow_reader") > 0
        assert a.call("GET", "/health/live", key=False).status_code == 200
    finally:
        sock.close()


# ---------------------------------------------------------------- faults

def test_redis_killed_then_restarted(keel, redis_server, tmp_path):
    a, b = start(keel, tmp_path, 2, REDIS_URL=redis_server.url, **FAST)
    for x in (a, b):
        wait_for(lambda: metric(x.srv, "events_subscriber_connected") == 1, 10, "subscriber")
    g = a.lock("k", ttl_ms=60000).json()
    s = Stream(b, "ch")
    try:
        redis_server.kill()
        # answered quickly with 503 (never a hang), the processes live on
        for _ in range(6):
            t0 = time.monotonic()
            r = a.lock("k2", ttl_ms=1000)
            assert r.status_code == 503, r.text
            assert r.headers.get("Retry-After")
            assert time.monotonic() - t0 < 2 * SLACK
        assert a.unlock("k", g["token"]).status_code == 503
        assert a.publish("ch", {"lost": 1}).status_code == 503
        wait_for(lambda: metric(b.srv, "events_subscriber_connected") == 0, 10,
                 "the subscriber to notice")
        assert a.srv.alive() and b.srv.alive()
        # A fixed outage, on purpose: Redis stays down this long while
        # the processes keep answering (nothing to poll for).
        time.sleep(0.5)
        redis_server.restart()
        # recovery: locks work again (on an empty Redis), events flow again
        wait_for(lambda: a.lock("k3", ttl_ms=1000).status_code == 201, 15, "locks to recover")
        wait_for(lambda: metric(b.srv, "events_subscriber_connected") == 1, 15,
                 "the subscriber to reconnect")
        wait_for(lambda: a.publish("ch", {"n": 2}).status_code == 202, 15, "publish")
        env = s.next(timeout=10)
        assert env is not None and env["payload"] == {"n": 2}, env
    finally:
        s.close()
