"""The auth state served from the cache (src/app/auth.c, "auth state";
docs/api.md): an authenticated request needs no database query once the
user's state is cached, and a disable, a demotion, a logout, a logout-all
and a password change still take effect on the very next request — on
SQLite and on PostgreSQL with the in-process cache, and with two keel
instances on one Redis and one PostgreSQL, the write on instance A and the
next request on instance B."""
import base64
import json
import time

import pytest
import requests

from conftest import SLACK, run_cli, wait_past_second
from test_migrate import Pg
from test_redis import metric

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
PW = "correct horse battery staple"
BASE = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1"}


class Node:
    def __init__(self, srv, env):
        self.srv, self.env = srv, env
        self.s = requests.Session()

    def call(self, method, path, token=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = "Bearer " + token
        return self.s.request(method, self.srv.url + "/api/v1" + path, headers=h,
                              timeout=20 * SLACK, **kw)

    def me(self, token):
        return self.call("GET", "/auth/me", token=token).status_code

    def login(self, email, password=PW):
        r = self.call("POST", "/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def m(self, family, **labels):
        return metric(self.srv, family, **labels) or 0


@pytest.fixture
def nodes(request, keel, tmp_path):
    """nodes(db, redis, n, **env): n instances on one database ("sqlite":
    a file, "postgres": a fresh database in the module's cluster), sharing
    a throw-away Redis when redis is true."""
    def make(db, redis=False, n=1, **extra):
        env = dict(BASE, **extra)
        if db == "postgres":
            d = Pg(request.getfixturevalue("pg_cluster"))
            request.addfinalizer(d.drop)
            env["DATABASE_URL"] = d.url
        else:
            env["DATABASE_URL"] = "sqlite:%s/shared.db" % tmp_path
        if redis:
            env["REDIS_URL"] = request.getfixturevalue("redis_server").url
        return [Node(keel(**env), env) for _ in range(n)]
    return make


def iat(token):
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["iat"]


def next_second(token):
    """tokens_valid_after is in whole seconds and a token issued in that
    second stays valid: wait until the server's clock has left the
    token's second (conftest.wait_past_second)."""
    wait_past_second(iat(token))


CASES = [("sqlite", False, 1), ("postgres", False, 1), ("postgres", True, 2)]


@pytest.mark.parametrize("db,redis,n", CASES, ids=["sqlite", "postgres", "postgres+redis-2x"])
def test_writes_take_effect_on_the_next_request(request, nodes, db, redis, n):
    a, b = (nodes(db, redis, n) * 2)[:2]  # one instance plays both parts without Redis
    p = run_cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
                env=dict(a.env, KEEL_ADMIN_PASSWORD=PW), cwd=a.srv.workdir)
    assert p.returncode == 0, p.stderr
    admin = a.login("root@example.com")
    r = a.call("POST", "/auth/register", json={"email": "ann@example.com", "password": PW})
    assert r.status_code == 201, r.text
    tok = r.json()["access_token"]
    uid = r.json()["user"]["id"]

    # served from memory: after the first request, no load of the state
    assert b.me(tok) == 200
    loads = b.m("cache_loads_total", ns="auth")
    hits = b.m("cache_hits_total", ns="auth")
    for _ in range(20):
        assert b.me(tok) == 200
    assert b.m("cache_loads_total", ns="auth") == loads
    assert b.m("cache_hits_total", ns="auth") >= hits + 20
    if redis:
        assert request.getfixturevalue("redis_server").command("EXISTS", "keel:cache:auth:" + uid) == 1

    def admin_patch(body):
        r = a.call("PATCH", "/admin/users/" + uid, token=admin, json=body)
        assert r.status_code == 200, r.text

    # disable, then enable again
    admin_patch({"status": "disabled"})
    assert b.me(tok) == 401
    admin_patch({"status": "active"})
    assert b.me(tok) == 200

    # promotion and demotion: the role comes from the state, not the token
    assert b.call("GET", "/admin/users", token=tok).status_code == 403
    admin_patch({"role": "admin"})
    assert b.call("GET", "/admin/users", token=tok).status_code == 200
    admin_patch({"role": "user"})
    assert b.call("GET", "/admin/users", token=tok).status_code == 403

    # logout: this token only; another session of the user goes on
    tok2 = a.login("ann@example.com")
    assert b.me(tok2) == 200
    assert a.call("POST", "/auth/logout", token=tok).status_code == 204
    assert b.me(tok) == 401
    assert b.me(tok2) == 200

    # password change: every older token
    tok3 = a.login("ann@example.com")
    next_second(tok3)
    r = a.call("POST", "/auth/me/password", token=tok3,
               json={"current_password": PW, "new_password": "n3w pass phrase"})
    assert r.status_code == 204, r.text
    assert b.me(tok2) == 401 and b.me(tok3) == 401

    # logout-all: every token, the one it was called with included
    tok4 = a.login("ann@example.com", "n3w pass phrase")
    tok5 = a.login("ann@example.com", "n3w pass phrase")
    assert b.me(tok4) == 200 and b.me(tok5) == 200
    next_second(tok5)
    assert a.call("POST", "/auth/logout-all", token=tok4).status_code == 204
    assert b.me(tok4) == 401 and b.me(tok5) == 401

    # soft delete
    tok6 = a.login("ann@example.com", "n3w pass phrase")
    assert b.me(tok6) == 200
    assert a.call("DELETE", "/users/" + uid, token=tok6).status_code == 204
    assert b.me(tok6) == 401


def test_state_without_cache_still_checks(nodes):
    """AUTH_STATE_CACHE_TTL=0: a query per request, the same answers."""
    (a,) = nodes("sqlite", AUTH_STATE_CACHE_TTL="0")
    r = a.call("POST", "/auth/register", json={"email": "bo@example.com", "password": PW})
    tok = r.json()["access_token"]
    assert a.me(tok) == 200
    assert a.call("POST", "/auth/logout", token=tok).status_code == 204
    assert a.me(tok) == 401
    assert a.m("cache_loads_total", ns="auth") == 0


def test_tampered_state_in_redis_refuses(nodes, redis_server):
    """What is in Redis is trusted only when it reads as a valid state:
    anything else refuses (fail closed), and a deleted entry is reloaded."""
    (a,) = nodes("sqlite", redis=True)
    r = a.call("POST", "/auth/register", json={"email": "cy@example.com", "password": PW})
    tok, uid = r.json()["access_token"], r.json()["user"]["id"]
    assert a.me(tok) == 200
    key = "keel:cache:auth:" + uid
    state = json.loads(redis_server.command("GET", key))
    assert state["active"] is True and state["role"] == "user" and state["revoked"] == []
    redis_server.command("SET", key, json.dumps({"active": True}), "PX", "60000")
    assert a.me(tok) == 401
    redis_server.command("SET", key, json.dumps({"gone": True}), "PX", "60000")
    assert a.me(tok) == 401
    # not JSON: a miss, reloaded from the database and stored again
    redis_server.command("SET", key, "not json", "PX", "60000")
    assert a.me(tok) == 200
    assert json.loads(redis_server.command("GET", key))["active"] is True
