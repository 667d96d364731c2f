"""examples/orders-service: a second service on libkeel calling the
reference service with a service credential (an API key with the
users:read scope) through keel's outbound HTTP client — the happy path,
refusals, the caller's trace continued, and the reference service down
(retries, then the breaker open: 503 at once) and back."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import SLACK, build_env, free_port, run_cli, start_server, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = os.environ.get("KEEL_EXAMPLE_BIN") or str(REPO / "build" / "hello-service")
BIN = str(Path(EXAMPLE).parent / "orders-service")
SECRET = "orders-secret-0123456789abcdef0123456789abcdef"
REF_ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1"}


class Orders:
    def __init__(self, workdir, **env):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        e = build_env(dict({"PORT": str(self.port), "WORKERS": "1",
                            "BREAKER_FAILURE_THRESHOLD": "3", "BREAKER_RECOVERY_TIMEOUT": "1s"},
                           **env))
        self.log = open(self.workdir / "out.log", "wb")
        self.proc = subprocess.Popen([BIN, "serve"], env=e, cwd=self.workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._live, 15 * SLACK, "orders-service to start")

    def _live(self):
        assert self.proc.poll() is None, self.output()
        try:
            return requests.get(self.url + "/health/live", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def order(self, customer, headers=None):
        return requests.post(self.url + "/orders", timeout=30 * SLACK, headers=headers or {},
                             json={"customer_id": customer, "item": "keel mug", "quantity": 2})

    def output(self):
        return (self.workdir / "out.log").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30 * SLACK) == 0, self.output()[-3000:]
        self.log.close()
        assert "runtime error:" not in self.output() and "Sanitizer" not in self.output()


@pytest.fixture
def ref(keel):
    if not os.access(BIN, os.X_OK):
        pytest.fail("orders-service not built at %s" % BIN, pytrace=False)
    srv = keel(**REF_ENV)
    p = run_cli(["apikey", "create", "--name", "orders", "--scopes", "users:read"],
                env=dict(REF_ENV), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    srv.api_key = p.stdout.strip().splitlines()[-1].strip()
    r = requests.post(srv.url + "/api/v1/auth/register", timeout=30,
                      json={"email": "ann@example.com", "password": "correct horse battery staple",
                            "name": "Ann"})
    assert r.status_code == 201, r.text
    tok = r.json()["access_token"]
    srv.user_id = requests.get(srv.url + "/api/v1/auth/me", timeout=10,
                               headers={"Authorization": "Bearer " + tok}).json()["id"]
    return srv


def test_order_checks_the_customer_with_a_service_credential(ref, tmp_path):
    o = Orders(tmp_path / "orders", ORDERS_API_URL=ref.url, ORDERS_API_KEY=ref.api_key)
    try:
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        r = o.order(ref.user_id, headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % trace})
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["customer"] == {"id": ref.user_id, "name": "Ann", "email": "ann@example.com"}
        assert requests.get(o.url + "/orders/%d" % doc["id"], timeout=10).json() == doc
        assert requests.get(o.url + "/orders/999", timeout=10).status_code == 404
        # the reference service saw the call in the caller's trace, with the key
        line = ref.wait_log(lambda l: l.get("msg") == "request" and
                            l.get("path") == "/api/v1/users/%s" % ref.user_id)
        assert line["trace_id"] == trace and line["status"] == 200
        # no such customer, a body the schema refuses
        r = o.order("00000000-0000-4000-8000-000000000000")
        assert r.status_code == 422 and "no such customer" in r.text
        r = requests.post(o.url + "/orders", json={"customer_id": "../../admin"}, timeout=10)
        assert r.status_code == 422 and r.headers["Content-Type"].startswith("application/problem+json")
    finally:
        o.stop()


def test_a_refused_credential_is_a_502_not_a_leak(ref, tmp_path):
    o = Orders(tmp_path / "orders", ORDERS_API_URL=ref.url, ORDERS_API_KEY="keel_wrong_key")
    try:
        r = o.order(ref.user_id)
        assert r.status_code == 502 and "credential" in r.json()["detail"]
        assert "keel_wrong_key" not in r.text
    finally:
        o.stop()


def test_reference_down_breaker_opens_then_recovers(ref, tmp_path):
    o = Orders(tmp_path / "orders", ORDERS_API_URL=ref.url, ORDERS_API_KEY=ref.api_key)
    try:
        assert o.order(ref.user_id).status_code == 201
        port, workdir = ref.port, ref.workdir
        ref.stop()
        # unreachable: retried, then 503 with Retry-After
        r = o.order(ref.user_id)
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.text
        # a few more failures open the breaker: then 503 without touching the network
        for _ in range(3):
            o.order(ref.user_id)
        t0 = time.monotonic()
        r = o.order(ref.user_id)
        fast = time.monotonic() - t0
        assert r.status_code == 503 and fast < 0.2 * SLACK, (r.text, fast)
        m = requests.get(o.url + "/metrics", timeout=10).text
        assert 'http_client_requests_total{target="accounts",status="unavailable"}' in m or \
            'circuit_breaker_state{name="http:accounts"} 1' in m, m
        # the reference service comes back on the same port and database
        back = start_server(dict(REF_ENV, PORT=str(port),
                                 DATABASE_URL="sqlite:%s/data/keel.db" % workdir),
                            tmp_path / "ref-back")
        try:
            wait_for(lambda: o.order(ref.user_id).status_code == 201, 15 * SLACK,
                     "orders to succeed again once the breaker half-opens", interval=0.3)
        finally:
            back.stop()
    finally:
        o.stop()
