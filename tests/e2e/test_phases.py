"""Middleware phases and routes that fail closed (docs/architecture.md).

- A service on libkeel whose routes declare auth, a permission or a
  rate-limit tier that nothing it installed enforces does not start: exit
  2 and one line naming the route (tests/tools/phase_service.c).
- The reference service, with the limiter on and off: an unauthenticated
  request to a protected route with an invalid body gets 401, a user
  without the permission 403 — never 422 — and OpenAPI advertises the
  security that is enforced."""
import os
import subprocess
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
PHASE_BIN = os.environ.get("KEEL_PHASE_BIN") or str(REPO / "build" / "phase_service")
PW = "a long enough passphrase"


def phase_service(case, *args):
    env = {"PATH": os.environ.get("PATH", ""), "PHASE_CASE": case, "HOST": "127.0.0.1",
           "PORT": "0", "LOG_LEVEL": "error"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    return subprocess.run([PHASE_BIN, *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("case,line", [
    ("auth", 'route guarded (GET /guarded): auth = "user" but no installed middleware '
             'enforces auth'),
    ("permission", 'route guarded (GET /guarded): permission = "users:read" but no installed '
                   'middleware enforces permission'),
    ("tier", 'route guarded (GET /guarded): rate_limit = "nope" is not a configured tier'),
])
@pytest.mark.parametrize("cmd", ["serve", "routes", "openapi"])
def test_unenforced_declaration_stops_startup(case, line, cmd):
    r = phase_service(case, cmd)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert line in r.stderr, r.stderr
    assert r.stdout == "" or cmd == "serve"


def test_plain_service_starts():
    r = phase_service("ok", "routes")
    assert r.returncode == 0, r.stderr
    assert "/guarded" in r.stdout


@pytest.mark.parametrize("limiter", [True, False], ids=["limiter-on", "limiter-off"])
def test_auth_runs_before_validation(keel, limiter):
    env = {"RATE_LIMIT_ENABLED": limiter}
    if limiter:  # on, but out of the way of this test's few requests
        env.update(RATE_LIMIT_MAX="10000", RATE_LIMIT_BURST="10000/1s", RATE_LIMIT_AUTH="100/1m")
    srv = keel(**env)
    api = srv.url + "/api/v1"
    invalid = {"name": 42}  # no email, no password, name not a string: 422 if validated
    r = requests.post(api + "/users", json=invalid, timeout=10)
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert "WWW-Authenticate" in r.headers
    r = requests.post(api + "/users", data=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    # a user without users:write: 403, still not 422
    reg = requests.post(api + "/auth/register", timeout=30,
                        json={"email": "phase-%s@example.com" % limiter, "password": PW})
    assert reg.status_code == 201, reg.text
    h = {"Authorization": "Bearer " + reg.json()["access_token"]}
    r = requests.post(api + "/users", json=invalid, headers=h, timeout=10)
    assert r.status_code == 403, r.text
    assert "users:write" in r.json()["detail"]
    # the route's own record path validates once authorised
    r = requests.patch(api + "/auth/me", json={"unknown": 1}, headers=h, timeout=10)
    assert r.status_code in (400, 422), r.text


def test_openapi_security_is_what_is_enforced(server):
    doc = requests.get(server.url + "/openapi.json", timeout=10).json()
    op = doc["paths"]["/api/v1/users"]["post"]
    assert {"bearerAuth": ["users:write"]} in op["security"]
    assert "401" in op["responses"] and "403" in op["responses"]
    assert doc["paths"]["/health"]["get"]["security"] == []
