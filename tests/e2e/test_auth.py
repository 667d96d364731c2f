"""Accounts, tokens and RBAC end to end against the real binary, each test
on SQLite and on a real PostgreSQL (a throw-away cluster, a fresh database
per test):
register/login/refresh/logout, lockout, refresh-token rotation and reuse
detection (50 parallel refreshes), revocation, self-or-permission access
(no IDOR), admin role changes, API keys from the CLI, and what the JWT
verifier refuses."""
import base64
import hashlib
import hmac
import json
import statistics
import threading
import time

import pytest
import requests

from conftest import SLACK, run_cli, wait_past_second
from test_migrate import Pg

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
FAST_HASH = {"PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1"}
PW = "correct horse battery staple"


def env(url, **extra):
    e = {"JWT_SECRET": SECRET, **FAST_HASH}
    if url:
        e["DATABASE_URL"] = url
    e.update(extra)
    return e


class Api:
    def __init__(self, srv):
        self.srv = srv
        self.base = srv.url + "/api/v1"
        self.s = requests.Session()

    def call(self, method, path, token=None, key=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = "Bearer " + token
        if key:
            h["X-API-Key"] = key
        return self.s.request(method, self.base + path, headers=h, timeout=20 * SLACK, **kw)

    def register(self, email, password=PW, name="", expect=201):
        r = self.call("POST", "/auth/register", json={"email": email, "password": password,
                                                     "name": name})
        assert r.status_code == expect, r.text
        return r.json()

    def login(self, email, password=PW, expect=200):
        r = self.call("POST", "/auth/login", json={"email": email, "password": password})
        assert r.status_code == expect, r.text
        return r.json()

    def cli(self, args, **extra):
        return run_cli(args, env=dict(self.srv_env, **extra), cwd=self.srv.workdir)


@pytest.fixture(params=["sqlite", "postgres"])
def make_api(request, keel):
    """make_api(**env): a server on a fresh database of either kind."""
    url = None
    if request.param == "postgres":
        db = Pg(request.getfixturevalue("pg_cluster"))
        request.addfinalizer(db.drop)
        url = db.url

    def make(**extra):
        e = env(url, **extra)
        a = Api(keel(**e))
        a.srv_env = e
        return a
    return make


@pytest.fixture
def api(make_api):
    return make_api()


def make_admin(api, email="root@example.com", role="admin"):
    p = api.cli(["user", "create", "--email", email, "--role", role],
                KEEL_ADMIN_PASSWORD=PW)
    assert p.returncode == 0, p.stderr
    return api.login(email)["access_token"]


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    return r.json()


# ---------------------------------------------------------------- register / login

def test_register_login_me(api):
    doc = api.register("  Alice@Example.COM ", name="Alice")
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 900
    assert doc["user"]["email"] == "alice@example.com"
    assert doc["user"]["role"] == "user" and doc["user"]["status"] == "active"
    r = api.call("GET", "/auth/me", token=doc["access_token"])
    assert r.status_code == 200 and r.json()["name"] == "Alice"
    assert r.headers["Cache-Control"] == "no-store"
    tokens = api.login("alice@example.com")
    assert api.call("GET", "/auth/me", token=tokens["access_token"]).status_code == 200
    # the same address again, in another case
    problem(api.call("POST", "/auth/register", json={"email": "ALICE@example.com",
                                                     "password": PW}), 409)


@pytest.mark.parametrize("body,pointer", [
    ({"email": "not-an-address", "password": PW}, "/email"),
    ({"email": "a@b.co", "password": "short"}, "/password"),
    ({"email": "a@b.co", "password": "Password123"}, "/password"),
    ({"email": "a@b.co", "password": "x" * 1025}, "/password"),
    ({"password": PW}, "/email"),
    ({"email": "a@b.co", "password": 12345678}, "/password"),
])
def test_register_refuses_bad_input(api, body, pointer):
    doc = problem(api.call("POST", "/auth/register", json=body), 422)
    assert any(e["pointer"] == pointer for e in doc["errors"]), doc


def errors_by_pointer(doc):
    assert all(e["in"] == "body" for e in doc["errors"]), doc
    return {e["pointer"]: e["message"] for e in doc["errors"]}


def test_register_reports_every_invalid_field_at_once(api):
    """The password policy is checked in the schema step with everything
    else: one 422 names the e-mail, the password and the unknown fields."""
    doc = problem(api.call("POST", "/auth/register", json={"email": "not-an-address",
                                                         "password": "x"}), 422)
    errs = errors_by_pointer(doc)
    assert set(errs) == {"/email", "/password"}, doc
    assert "too short" in errs["/password"], doc
    assert "2 fields" in doc["detail"], doc
    doc = problem(api.call("POST", "/auth/register",
                           json={"email": "nope", "password": "Password123", "name": 7,
                                 "isAdmin": True, "role": "admin"}), 422)
    errs = errors_by_pointer(doc)
    assert set(errs) == {"/email", "/password", "/name", "/isAdmin", "/role"}, doc
    assert "common" in errs["/password"], doc
    assert errs["/isAdmin"] == errs["/role"] == "is not allowed: unknown field", doc


def test_register_refuses_unknown_fields(api):
    """{"isAdmin": true, "role": "admin"} is refused, not silently ignored."""
    body = {"email": "mallory@example.com", "password": PW, "isAdmin": True, "role": "admin"}
    doc = problem(api.call("POST", "/auth/register", json=body), 422)
    assert set(errors_by_pointer(doc)) == {"/isAdmin", "/role"}, doc
    # nothing was created: the same address registers afterwards, as a user
    doc = api.register("mallory@example.com")
    assert doc["user"]["role"] == "user"


def test_password_minimum_is_the_configured_one(make_api):
    api = make_api(PASSWORD_MIN_LENGTH="12")
    doc = problem(api.call("POST", "/auth/register",
                           json={"email": "min@example.com", "password": "elevenchars"}), 422)
    assert set(errors_by_pointer(doc)) == {"/password"}, doc
    api.register("min@example.com", password="twelve chars")
    # and the API document says so
    spec = api.s.get(api.srv.url + "/openapi.json", timeout=10).json()
    body = spec["paths"]["/api/v1/auth/register"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert body["additionalProperties"] is False
    pw = body["properties"]["password"]
    assert pw["format"] == "password"
    assert pw["x-keel-password"] == {"minBytes": 12, "maxBytes": 1024, "refusesCommon": True}


def test_register_malformed_and_non_json(api):
    r = api.call("POST", "/auth/register", data='{"email": ', headers={"Content-Type":
                                                                       "application/json"})
    problem(r, 400)
    r = api.call("POST", "/auth/register", data="email=a", headers={"Content-Type":
                                                                    "application/x-www-form-urlencoded"})
    problem(r, 415)


def test_unknown_email_and_wrong_password_look_alike(api):
    api.register("bob@example.com")
    times = {"unknown": [], "wrong": []}
    bodies = set()
    for _ in range(5):
        for kind, email in (("unknown", "nobody@example.com"), ("wrong", "bob@example.com")):
            t0 = time.monotonic()
            r = api.call("POST", "/auth/login", json={"email": email, "password": "nope-nope-9"})
            times[kind].append(time.monotonic() - t0)
            doc = problem(r, 401)
            bodies.add((doc["title"], doc["detail"], r.headers.get("WWW-Authenticate")))
    assert len(bodies) == 1, bodies
    u, w = statistics.median(times["unknown"]), statistics.median(times["wrong"])
    # both hash a password: neither is a fast path
    assert u > w / 3 and w > u / 3, times


def test_lockout_grows_and_ends(make_api):
    api = make_api(LOGIN_MAX_ATTEMPTS=3, LOGIN_LOCK_TIME="2s")
    api.register("carol@example.com")
    for _ in range(3):
        problem(api.call("POST", "/auth/login", json={"email": "carol@example.com",
                                                      "password": "wrong-wrong"}), 401)
    # locked: even the right password waits
    r = api.call("POST", "/auth/login", json={"email": "carol@example.com", "password": PW})
    problem(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    time.sleep(2.2)  # waits out the lockout (Retry-After <= 2 s): its end is what is tested
    api.login("carol@example.com")
    # the counter was reset by the success
    problem(api.call("POST", "/auth/login", json={"email": "carol@example.com",
                                                  "password": "wrong-wrong"}), 401)
    api.login("carol@example.com")


# ---------------------------------------------------------------- tokens

def test_refresh_rotates_and_reuse_revokes_family(api):
    first = api.register("dave@example.com")
    r = api.call("POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    # the rotated token again: theft; the whole family ends
    problem(api.call("POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}), 401)
    problem(api.call("POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]}),
            401)
    # another session (family) of the same user is untouched
    other = api.login("dave@example.com")
    assert api.call("POST", "/auth/refresh",
                    json={"refresh_token": other["refresh_token"]}).status_code == 200
    problem(api.call("POST", "/auth/refresh", json={"refresh_token": "made-up"}), 401)


def test_fifty_parallel_refreshes_one_wins(api):
    doc = api.register("erin@example.com")
    statuses = []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def go():
        s = requests.Session()
        barrier.wait()
        r = s.post(api.base + "/auth/refresh", json={"refresh_token": doc["refresh_token"]},
                   timeout=30 * SLACK)
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=go) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 49, statuses


def test_logout_revokes_access_and_refresh(api):
    doc = api.register("frank@example.com")
    at, rt = doc["access_token"], doc["refresh_token"]
    r = api.call("POST", "/auth/logout", token=at, json={"refresh_token": rt})
    assert r.status_code == 204, r.text
    r = api.call("GET", "/auth/me", token=at)
    problem(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    problem(api.call("POST", "/auth/refresh", json={"refresh_token": rt}), 401)


def test_logout_all_ends_every_session(api):
    first = api.register("gina@example.com")
    # iat has one-second granularity: the second session starts in a later second
    wait_past_second(int(time.time()))
    second = api.login("gina@example.com")
    assert api.call("POST", "/auth/logout-all", token=second["access_token"]).status_code == 204
    for t in (first, second):
        problem(api.call("GET", "/auth/me", token=t["access_token"]), 401)
        problem(api.call("POST", "/auth/refresh", json={"refresh_token": t["refresh_token"]}), 401)
    third = api.login("gina@example.com")
    assert api.call("GET", "/auth/me", token=third["access_token"]).status_code == 200


def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def forge(header, payload, key=SECRET, alg="sha256"):
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    mac = hmac.new(key.encode(), ("%s.%s" % (h, p)).encode(), getattr(hashlib, alg)).digest()
    return "%s.%s.%s" % (h, p, b64(mac))


def test_forged_and_malformed_tokens_refused(api):
    doc = api.register("hank@example.com")
    good = doc["access_token"]
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    now = int(time.time())
    cases = {
        "alg none": "%s.%s." % (b64(b'{"alg":"none"}'), good.split(".")[1]),
        "HS512 same key": forge({"alg": "HS512"}, claims, alg="sha512"),
        "lower-case alg": forge({"alg": "hs256"}, claims),
        "crit": forge({"alg": "HS256", "crit": ["x"]}, claims),
        "wrong key": forge({"alg": "HS256"}, claims, key="guess"),
        "admin role by hand": forge({"alg": "HS256"}, dict(claims, role="admin"), key="guess"),
        "expired": forge({"alg": "HS256"}, dict(claims, exp=now - 3600)),
        "other audience": forge({"alg": "HS256"}, dict(claims, aud="other")),
        "future nbf": forge({"alg": "HS256"}, dict(claims, nbf=now + 3600)),
        "garbage": "abc.def",
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
    }
    for name, tok in cases.items():
        r = api.call("GET", "/auth/me", token=tok)
        assert r.status_code == 401, (name, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
    # a correctly signed token with a stale role still gets the stored role
    t = forge({"alg": "HS256", "typ": "JWT"}, dict(claims, role="admin", jti="x" * 8))
    r = api.call("GET", "/users", token=t)
    assert r.status_code == 403, r.text
    # no credentials at all; a non-Bearer scheme; an oversized header
    r = api.call("GET", "/auth/me")
    problem(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="keel"'
    problem(api.call("GET", "/auth/me", headers={"Authorization": "Basic YTpi"}), 401)
    problem(api.call("GET", "/auth/me", headers={"Authorization": "Bearer " + "a" * 5000}), 401)


# ---------------------------------------------------------------- profile and password

def test_me_update_and_password_change(api):
    doc = api.register("ivy@example.com")
    at = doc["access_token"]
    r = api.call("PATCH", "/auth/me", token=at, json={"name": "Ivy"})
    assert r.status_code == 200 and r.json()["name"] == "Ivy"
    # role is no field of one's own record: named as unknown (bodies are closed)
    bad = problem(api.call("PATCH", "/auth/me", token=at, json={"role": "admin"}), 422)
    assert errors_by_pointer(bad) == {"/role": "is not allowed: unknown field"}, bad
    api.register("taken@example.com")
    problem(api.call("PATCH", "/auth/me", token=at, json={"email": "taken@example.com"}), 409)
    problem(api.call("POST", "/auth/me/password", token=at,
                     json={"current_password": "wrong-wrong", "new_password": "n3w pass phrase"}),
            403)
    problem(api.call("POST", "/auth/me/password", token=at,
                     json={"current_password": PW, "new_password": "password"}), 422)
    # every failing field at once: the policy, a missing field, an unknown one
    bad = problem(api.call("POST", "/auth/me/password", token=at,
                           json={"new_password": "x", "logout_others": False}), 422)
    errs = errors_by_pointer(bad)
    assert set(errs) == {"/current_password", "/new_password", "/logout_others"}, bad
    assert "too short" in errs["/new_password"], bad
    bad = problem(api.call("POST", "/auth/me/password", token=at,
                           json={"current_password": PW, "new_password": "y" * 1025}), 422)
    assert "too long" in errors_by_pointer(bad)["/new_password"], bad
    r = api.call("POST", "/auth/me/password", token=at,
                 json={"current_password": PW, "new_password": "n3w pass phrase"})
    assert r.status_code == 204, r.text
    problem(api.call("POST", "/auth/refresh", json={"refresh_token": doc["refresh_token"]}), 401)
    api.login("ivy@example.com", expect=401)
    api.login("ivy@example.com", password="n3w pass phrase")


# ---------------------------------------------------------------- RBAC

def test_users_self_or_permission(api):
    admin = make_admin(api)
    mod = make_admin(api, "mod@example.com", role="moderator")
    u1 = api.register("u1@example.com")
    u2 = api.register("u2@example.com")
    id1, id2 = u1["user"]["id"], u2["user"]["id"]
    t1 = u1["access_token"]
    # own record: yes; someone else's: no (no IDOR)
    assert api.call("GET", "/users/" + id1, token=t1).status_code == 200
    problem(api.call("GET", "/users/" + id2, token=t1), 403)
    problem(api.call("PATCH", "/users/" + id2, token=t1, json={"name": "x"}), 403)
    problem(api.call("DELETE", "/users/" + id2, token=t1), 403)
    problem(api.call("GET", "/users", token=t1), 403)
    # nobody raises their own role
    problem(api.call("PATCH", "/users/" + id1, token=t1, json={"role": "admin"}), 403)
    # a moderator reads but does not write
    assert api.call("GET", "/users/" + id2, token=mod).status_code == 200
    assert api.call("GET", "/users", token=mod).status_code == 200
    problem(api.call("PATCH", "/users/" + id2, token=mod, json={"name": "x"}), 403)
    problem(api.call("PATCH", "/admin/users/" + id2, token=mod, json={"role": "admin"}), 403)
    # an admin changes roles, not their own
    r = api.call("PATCH", "/admin/users/" + id2, token=admin, json={"role": "moderator"})
    assert r.status_code == 200 and r.json()["role"] == "moderator", r.text
    me = api.call("GET", "/auth/me", token=admin).json()
    problem(api.call("PATCH", "/admin/users/" + me["id"], token=admin, json={"role": "user"}), 403)
    # the new role counts at once (read from the database, not the token)
    assert api.call("GET", "/users", token=u2["access_token"]).status_code == 200
    # disabling ends the sessions
    r = api.call("PATCH", "/admin/users/" + id1, token=admin, json={"status": "disabled"})
    assert r.status_code == 200
    problem(api.call("GET", "/auth/me", token=t1), 401)
    problem(api.call("POST", "/auth/login", json={"email": "u1@example.com", "password": PW}), 403)
    problem(api.call("PATCH", "/admin/users/" + id2, token=admin, json={"role": "root"}), 422)


def test_list_pagination_filters_and_limits(api):
    admin = make_admin(api)
    for i in range(12):
        api.register("list%02d@example.com" % i)
    r = api.call("GET", "/users?limit=5&page=2&sort=email&q=list", token=admin)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["total"] == 12 and doc["pages"] == 3 and doc["limit"] == 5
    assert [u["email"] for u in doc["data"]] == ["list%02d@example.com" % i for i in range(5, 10)]
    doc = api.call("GET", "/users?role=admin", token=admin).json()
    assert [u["email"] for u in doc["data"]] == ["root@example.com"]
    problem(api.call("GET", "/users?limit=101", token=admin), 422)
    problem(api.call("GET", "/users?sort=password_hash", token=admin), 422)
    # a LIKE pattern in q is taken literally
    assert api.call("GET", "/users?q=%25", token=admin).json()["total"] == 0


def test_soft_delete_self(api):
    doc = api.register("jo@example.com")
    admin = make_admin(api)
    assert api.call("DELETE", "/users/" + doc["user"]["id"],
                    token=doc["access_token"]).status_code == 204
    problem(api.call("GET", "/auth/me", token=doc["access_token"]), 401)
    api.login("jo@example.com", expect=401)
    assert api.call("GET", "/users?q=jo", token=admin).json()["total"] == 0
    r = api.call("GET", "/admin/users?q=jo&include_deleted=true", token=admin)
    assert r.json()["total"] == 1 and "deleted_at" in r.json()["data"][0]


def test_admin_creates_users(api):
    admin = make_admin(api)
    r = api.call("POST", "/users", token=admin,
                 json={"email": "new@example.com", "password": PW, "role": "moderator"})
    assert r.status_code == 201 and r.json()["role"] == "moderator", r.text
    user = api.register("plain@example.com")
    problem(api.call("POST", "/users", token=user["access_token"],
                     json={"email": "x@example.com", "password": PW}), 403)
    # the policy and unknown fields, with every other failure, in one 422
    doc = problem(api.call("POST", "/users", token=admin,
                           json={"email": "x@", "password": "12345678", "role": "root",
                                 "is_admin": True}), 422)
    errs = errors_by_pointer(doc)
    assert set(errs) == {"/email", "/password", "/role", "/is_admin"}, doc
    assert "common" in errs["/password"], doc


# ---------------------------------------------------------------- API keys

def test_api_keys_from_the_cli(api):
    api.register("k1@example.com")
    p = api.cli(["apikey", "create", "--name", "reporting", "--scopes", "users:read"])
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    assert key.startswith("keel_") and len(key) > 40
    assert api.call("GET", "/users", key=key).status_code == 200
    # a key's scopes bound it
    problem(api.call("POST", "/users", key=key, json={"email": "z@example.com", "password": PW}),
            403)
    # user-only routes do not take keys
    problem(api.call("GET", "/auth/me", key=key), 401)
    problem(api.call("GET", "/users", key=key[:-2] + "xx"), 401)
    listing = api.cli(["apikey", "list"])
    assert "reporting" in listing.stdout and key not in listing.stdout
    key_id = [l.split()[0] for l in listing.stdout.splitlines() if "reporting" in l][0]
    assert api.cli(["apikey", "revoke", key_id]).returncode == 0
    problem(api.call("GET", "/users", key=key), 401)
    assert api.cli(["apikey", "revoke", key_id]).returncode == 1


def test_cli_user_create_refuses_bad_input(api):
    p = api.cli(["user", "create", "--email", "x@example.com", "--role", "root"],
                KEEL_ADMIN_PASSWORD=PW)
    assert p.returncode == 2 and "--role" in p.stderr
    p = api.cli(["user", "create", "--email", "x@example.com"], KEEL_ADMIN_PASSWORD="password1")
    assert p.returncode == 2 and "common" in p.stderr
    make_admin(api, "dup@example.com")
    p = api.cli(["user", "create", "--email", "dup@example.com"], KEEL_ADMIN_PASSWORD=PW)
    assert p.returncode == 1 and "already exists" in p.stderr


# ---------------------------------------------------------------- limits follow the user

def test_auth_tier_and_per_user_limits(make_api):
    api = make_api(RATE_LIMIT_ENABLED="true", RATE_LIMIT_AUTH="4/1h", RATE_LIMIT_BURST="0",
                   RATE_LIMIT_MAX=3, RATE_LIMIT_WINDOW="1h")
    a = api.register("la@example.com")
    b = api.register("lb@example.com")
    api.login("la@example.com")
    api.login("lb@example.com")
    r = api.call("POST", "/auth/login", json={"email": "la@example.com", "password": PW})
    assert r.status_code == 429 and r.json()["tier"] == "auth", r.text
    # the general tier counts per user, not per address: 3 each
    for tok in (a["access_token"], b["access_token"]):
        for _ in range(3):
            assert api.call("GET", "/auth/me", token=tok).status_code == 200
        assert api.call("GET", "/auth/me", token=tok).status_code == 429


def test_api_key_expiry(api):
    p = api.cli(["apikey", "create", "--name", "short", "--scopes", "users:read",
                 "--expires", "2s"])
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    assert api.call("GET", "/users", key=key).status_code == 200
    time.sleep(2.2)  # waits out the key's 2 s lifetime: the expiry is what is tested
    problem(api.call("GET", "/users", key=key), 401)
    assert "expired" in api.cli(["apikey", "list"]).stdout
    p = api.cli(["apikey", "create", "--name", "x", "--scopes", "a", "--expires", "soon"])
    assert p.returncode == 2 and "--expires" in p.stderr
