"""The cache end to end (docs/distributed.md, "Cache"): the admin
/distributed/cache/:key endpoints, GET /api/v1/users/:id through the cache
with invalidation on every write, single-flight (no stampede), each with no
Redis at all (the in-process store) and with a real redis-server shared by
two instances; and Redis killed under load, then restarted."""
import threading
import time

import pytest
import requests

from conftest import SLACK, run_cli
from test_redis import FAST, metric, wait_for

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
PW = "correct horse battery staple"
BASE = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1"}


class Node:
    """One keel instance and a session to it."""

    def __init__(self, srv, env):
        self.srv, self.env = srv, env
        self.s = requests.Session()

    def call(self, method, path, token=None, key=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = "Bearer " + token
        if key:
            h["X-API-Key"] = key
        return self.s.request(method, self.srv.url + path, headers=h, timeout=20 * SLACK, **kw)

    def cli(self, args, **extra):
        p = run_cli(args, env=dict(self.env, **extra), cwd=self.srv.workdir)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def metric(self, family, **labels):
        return metric(self.srv, family, **labels) or 0


@pytest.fixture
def cluster(keel, tmp_path):
    """cluster(n, redis=None, **env): n instances on one SQLite file (and one
    Redis when given)."""
    def make(n=1, redis=None, **extra):
        env = dict(BASE, DATABASE_URL="sqlite:%s/shared.db" % tmp_path, **extra)
        if redis:
            env["REDIS_URL"] = redis.url
        return [Node(keel(**env), env) for _ in range(n)]
    return make


def admin_key(node):
    return node.cli(["apikey", "create", "--name", "ops", "--scopes", "admin:access"])


def new_user(node, email, name="Ann"):
    r = node.call("POST", "/api/v1/auth/register",
                  json={"email": email, "password": PW, "name": name})
    assert r.status_code == 201, r.text
    tok = r.json()["access_token"]
    me = node.call("GET", "/api/v1/auth/me", token=tok).json()
    return me["id"], tok


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    return r.json()


MODES = ["memory", "redis"]


def nodes_for(mode, cluster, request, n=2, **extra):
    if mode == "redis":
        return cluster(n, redis=request.getfixturevalue("redis_server"), **extra)
    return cluster(1, **extra) * n  # in process: one instance plays both parts


# ---------------------------------------------------------------- /distributed/cache

@pytest.mark.parametrize("mode", MODES)
def test_cache_endpoints(mode, cluster, request):
    a, b = nodes_for(mode, cluster, request)
    key = admin_key(a)
    path = "/distributed/cache/greeting:1"
    problem(b.call("GET", path, key=key), 404)
    r = a.call("PUT", path, key=key, json={"value": {"hello": ["world", 1]}, "ttl_seconds": 60})
    assert r.status_code == 204, r.text
    # written on one instance, read on the other
    r = b.call("GET", path, key=key)
    assert r.status_code == 200, r.text
    assert r.json() == {"key": "greeting:1", "value": {"hello": ["world", 1]}}
    # any JSON value, replaced in place
    assert a.call("PUT", path, key=key, json={"value": 42}).status_code == 204
    assert b.call("GET", path, key=key).json()["value"] == 42
    assert b.call("DELETE", path, key=key).status_code == 204
    problem(a.call("GET", path, key=key), 404)
    problem(a.call("DELETE", path, key=key), 404)
    if mode == "redis":
        redis = request.getfixturevalue("redis_server")
        assert a.call("PUT", path, key=key, json={"value": "x", "ttl_seconds": 30}).status_code \
            == 204
        assert redis.command("GET", "keel:cache:dist:greeting:1") == '"x"'
        assert 0 < redis.command("PTTL", "keel:cache:dist:greeting:1") <= 30000
    assert b.metric("cache_hits_total", ns="dist") >= 1
    assert a.metric("cache_misses_total", ns="dist") >= 1


@pytest.mark.parametrize("mode", MODES)
def test_cache_ttl_expires(mode, cluster, request):
    a, b = nodes_for(mode, cluster, request)
    key = admin_key(a)
    assert a.call("PUT", "/distributed/cache/short", key=key,
                  json={"value": True, "ttl_seconds": 1}).status_code == 204
    assert b.call("GET", "/distributed/cache/short", key=key).status_code == 200
    time.sleep(1.3)  # waits out the 1 s TTL: the expiry is what is tested
    problem(b.call("GET", "/distributed/cache/short", key=key), 404)


def test_cache_endpoints_refuse_bad_input_and_callers(cluster):
    (a,) = cluster(1)
    key = admin_key(a)
    for bad in ("a%20b", "x" * 129, "semi;colon", "%C3%A9"):
        r = a.call("GET", "/distributed/cache/" + bad, key=key)
        assert r.status_code in (400, 422), (bad, r.text)
        problem(r, r.status_code)
    for body in ({}, {"value": 1, "ttl_seconds": 0}, {"value": 1, "ttl_seconds": "60"},
                 {"value": 1, "extra": 2}, [1]):
        r = a.call("PUT", "/distributed/cache/k", key=key, json=body)
        assert r.status_code in (400, 422), (body, r.text)
    r = a.call("PUT", "/distributed/cache/k", key=key, data="{not json",
               headers={"Content-Type": "application/json"})
    problem(r, 400)
    # admin or service key only
    problem(a.call("GET", "/distributed/cache/k"), 401)
    _, tok = new_user(a, "plain@example.com")
    problem(a.call("GET", "/distributed/cache/k", token=tok), 403)
    weak = a.cli(["apikey", "create", "--name", "ro", "--scopes", "users:read"])
    problem(a.call("GET", "/distributed/cache/k", key=weak), 403)


# ---------------------------------------------------------------- users through the cache

@pytest.mark.parametrize("mode", MODES)
def test_user_reads_are_cached_and_writes_invalidate(mode, cluster, request):
    a, b = nodes_for(mode, cluster, request)
    uid, tok = new_user(a, "ann@example.com", "Ann")
    path = "/api/v1/users/" + uid
    assert a.call("GET", path, token=tok).json()["name"] == "Ann"
    nodes = [a] if a is b else [a, b]
    hits = sum(n.metric("cache_hits_total", ns="users") for n in nodes)
    assert b.call("GET", path, token=tok).json()["name"] == "Ann"
    after = sum(n.metric("cache_hits_total", ns="users") for n in nodes)
    assert after == hits + 1  # the second read, on the other instance, hit
    if mode == "redis":
        redis = request.getfixturevalue("redis_server")
        assert 0 < redis.command("PTTL", "keel:cache:users:" + uid) <= 60000
    # every write is visible at once on the next read, on either instance
    r = a.call("PATCH", path, token=tok, json={"name": "Ann B"})
    assert r.status_code == 200, r.text
    assert b.call("GET", path, token=tok).json()["name"] == "Ann B"
    assert a.call("GET", path, token=tok).json()["name"] == "Ann B"
    r = b.call("PATCH", "/api/v1/auth/me", token=tok, json={"name": "Ann C"})
    assert r.status_code == 200, r.text
    assert a.call("GET", path, token=tok).json()["name"] == "Ann C"
    # an administrator disables the account
    a.cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
          KEEL_ADMIN_PASSWORD=PW)
    root = a.call("POST", "/api/v1/auth/login",
                  json={"email": "root@example.com", "password": PW}).json()["access_token"]
    assert b.call("GET", path, token=root).json()["status"] == "active"
    r = a.call("PATCH", "/api/v1/admin/users/" + uid, token=root, json={"status": "disabled"})
    assert r.status_code == 200, r.text
    assert b.call("GET", path, token=root).json()["status"] == "disabled"
    r = b.call("DELETE", path, token=root)
    assert r.status_code == 204, r.text
    problem(a.call("GET", path, token=root), 404)


def test_authorization_stays_before_the_cache(cluster):
    (a,) = cluster(1)
    uid, tok = new_user(a, "owner@example.com")
    _, other = new_user(a, "other@example.com")
    assert a.call("GET", "/api/v1/users/" + uid, token=tok).status_code == 200  # now cached
    problem(a.call("GET", "/api/v1/users/" + uid, token=other), 403)
    problem(a.call("GET", "/api/v1/users/" + uid), 401)


def test_login_and_password_change_invalidate(cluster):
    (a,) = cluster(1)
    uid, tok = new_user(a, "bo@example.com")
    path = "/api/v1/users/" + uid
    first = a.call("GET", path, token=tok).json()
    assert first.get("last_login_at") in (None, "")
    tok = a.call("POST", "/api/v1/auth/login",
                 json={"email": "bo@example.com", "password": PW}).json()["access_token"]
    assert a.call("GET", path, token=tok).json()["last_login_at"]


@pytest.mark.parametrize("mode", MODES)
def test_fifty_concurrent_reads_one_load(mode, cluster, request):
    """No stampede: 50 requests at once for one uncached user (on both
    workers of an instance) run the loader once."""
    (a,) = nodes_for(mode, cluster, request, n=1)
    uid, tok = new_user(a, "many@example.com")
    # new_user's GET /auth/me cached the record: a write drops it again
    r = a.call("PATCH", "/api/v1/users/" + uid, token=tok, json={"name": "Many"})
    assert r.status_code == 200, r.text
    loads = a.metric("cache_loads_total", ns="users")
    start = threading.Barrier(50)
    results = []
    lock = threading.Lock()

    def go():
        s = requests.Session()
        start.wait()
        r = s.get(a.srv.url + "/api/v1/users/" + uid, timeout=20 * SLACK,
                  headers={"Authorization": "Bearer " + tok})
        with lock:
            results.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=go) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, uid)] * 50, results
    assert a.metric("cache_loads_total", ns="users") == loads + 1


# ---------------------------------------------------------------- faults

def test_kill_redis_under_load_then_restart(cluster, redis_server, report):
    a, b = cluster(2, redis=redis_server, **FAST)
    key = admin_key(a)
    uid, tok = new_user(a, "load@example.com", "Lo")
    path = "/api/v1/users/" + uid
    stop = threading.Event()
    seen, errors = {}, []
    lock = threading.Lock()

    def load(node, p, headers):
        s = requests.Session()
        while not stop.is_set():
            try:
                t0 = time.monotonic()
                r = s.get(node.srv.url + p, headers=headers, timeout=20 * SLACK)
                dt = time.monotonic() - t0
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
                return
            with lock:
                k = (p.split("/")[1], r.status_code)
                seen[k] = seen.get(k, 0) + 1
                seen["max_s"] = max(seen.get("max_s", 0), dt)
                if p == path and r.status_code == 200 and r.json()["name"] != "Lo":
                    errors.append(r.text)

    threads = [threading.Thread(target=load, args=(n, path, {"Authorization": "Bearer " + tok}))
               for n in (a, b, a)]
    threads.append(threading.Thread(target=load, args=(b, "/distributed/cache/k",
                                                       {"X-API-Key": key})))
    for t in threads:
        t.start()
    def served():
        with lock:
            return sum(v for k, v in seen.items() if k != "max_s") >= 20 or errors

    try:
        wait_for(served, 10, "the load to get going")
        redis_server.kill()
        wait_for(lambda: metric(a.srv, "circuit_breaker_state", name="redis") == 1 and
                 metric(b.srv, "circuit_breaker_state", name="redis") == 1, 10,
                 "the breakers to open")
        # A fixed outage, on purpose: the load keeps running with the
        # breakers open for this long (nothing to poll for).
        time.sleep(0.5)
        redis_server.restart()
        wait_for(lambda: metric(a.srv, "circuit_breaker_state", name="redis") == 0 and
                 metric(b.srv, "circuit_breaker_state", name="redis") == 0, 15,
                 "the breakers to close")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30 * SLACK)
    assert not errors, errors[:5]
    # users: always answered from the database while Redis was away
    statuses = [k for k in seen if k != "max_s"]
    assert set(s for (p, s) in statuses if p == "api") == {200}, seen
    # the cache API itself: a miss (404) or 503 while Redis is away
    assert set(s for (p, s) in statuses if p == "distributed") <= {404, 503}, seen
    assert seen["max_s"] < 2.0 * SLACK, seen  # nobody waited on the dead Redis
    report("%d user reads during the outage and recovery, slowest %.0f ms"
           % (seen.get(("api", 200), 0), seen["max_s"] * 1000))
    assert a.metric("cache_errors_total") > 0
    # Redis is used again: writes visible across instances, reads hit
    wait_for(lambda: a.call("PUT", "/distributed/cache/back", key=key,
                            json={"value": 1}).status_code == 204, 10, "writes to Redis")
    assert redis_server.command("EXISTS", "keel:cache:dist:back") == 1
    # B's connection to the restarted Redis comes back on its own schedule:
    # a read there may still miss (or 503) right after A's write went through
    wait_for(lambda: (lambda r: r.status_code == 200 and r.json().get("value") == 1)(
        b.call("GET", "/distributed/cache/back", key=key)), 10, "the write read on B")
    r = a.call("PATCH", path, token=tok, json={"name": "Lo 2"})
    assert r.status_code == 200, r.text
    assert b.call("GET", path, token=tok).json()["name"] == "Lo 2"
    assert redis_server.command("EXISTS", "keel:cache:users:" + uid) == 1


def test_no_redis_no_shared_state_needed(cluster):
    """Without REDIS_URL the in-process store answers; no Redis metrics
    move, and the cache is bounded by CACHE_MAX_ENTRIES."""
    (a,) = cluster(1, CACHE_MAX_ENTRIES="16")
    key = admin_key(a)
    for i in range(40):
        assert a.call("PUT", "/distributed/cache/k%d" % i, key=key,
                      json={"value": i}).status_code == 204
    present = sum(a.call("GET", "/distributed/cache/k%d" % i, key=key).status_code == 200
                  for i in range(40))
    assert 1 <= present <= 16, present
    assert a.call("GET", "/distributed/cache/k39", key=key).json()["value"] == 39
    assert a.metric("redis_commands_total") == 0
