"""examples/hello-service: a service of its own on libkeel, started like
keel itself, with its own routes and middleware and keel's health,
metrics, request ids and drain."""
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("KEEL_EXAMPLE_BIN") or str(REPO / "build" / "hello-service")
SANITIZED = os.environ.get("KEEL_SANITIZED") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    if not os.access(BIN, os.X_OK):
        pytest.fail("hello-service not built at %s" % BIN, pytrace=False)
    port = free_port()
    work = tmp_path_factory.mktemp("hello")
    env = {"PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": str(port),
           "WORKERS": "1", "SHUTDOWN_GRACE": "5s",
           "RATE_LIMIT_MAX": "100000", "RATE_LIMIT_BURST": "100000/1s"}  # limiter on, out of the way
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    out = open(work / "stdout.log", "wb")
    err = open(work / "stderr.log", "wb")
    proc = subprocess.Popen([BIN, "serve"], env=env, cwd=work, stdout=out, stderr=err)
    url = "http://127.0.0.1:%d" % port
    def live():
        try:
            return requests.get(url + "/health/live", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(live, 15, "hello-service to start")  # 60 s under the sanitizer
    except AssertionError:
        proc.kill()
        pytest.fail("hello-service did not start")
    yield url, proc, work
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    out.close()
    err.close()


def test_own_routes_and_middleware(service):
    url, _, _ = service
    r = requests.get(url + "/")
    assert r.status_code == 200 and r.text == "hello from hello-service"
    assert r.headers["X-Api-Version"] == "1"
    assert r.headers["X-Request-Id"]
    r = requests.get(url + "/greet/ada%20lovelace")
    assert r.status_code == 200
    assert r.json() == {"greeting": "hello, ada lovelace"}


# Names that need escaping in JSON, and names the service must refuse.
@pytest.mark.parametrize("raw,name", [
    ("%22", '"'),
    ("a%5Cb", "a\\b"),
    ("%22%7D%2C%22x%22%3A1%2C%22y%22%3A%22", '"},"x":1,"y":"'),
    ("tab%09nl%0A", "tab\tnl\n"),
    ("caf%C3%A9", "caf\u00e9"),
])
def test_greet_escapes_json(service, raw, name):
    url, _, _ = service
    r = requests.get(url + "/greet/" + raw)
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "hello, " + name}


@pytest.mark.parametrize("raw,why", [("%FF", "UTF-8"), ("x" * 65, "64")])
def test_greet_refuses_bad_names(service, raw, why):
    url, _, _ = service
    r = requests.get(url + "/greet/" + raw)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert why in r.json()["detail"]


def test_keel_standard_routes(service):
    url, _, _ = service
    assert requests.get(url + "/health/ready").status_code == 200
    assert requests.get(url + "/health/detailed").json()["status"] == "healthy"
    metrics = requests.get(url + "/metrics").text
    assert 'http_requests_total{method="GET",route="/greet/:name",status="200"}' in metrics
    assert 'keel_build_info{version="1.0.0"} 1' in metrics
    assert requests.get(url + "/hello").status_code == 404  # no demo routes here
    r = requests.delete(url + "/")
    assert r.status_code == 405
    assert r.headers["Content-Type"] == "application/problem+json"


def test_cli(service):
    out = subprocess.run([BIN, "routes"], capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", "")}, cwd=service[2])
    assert out.returncode == 0
    assert "/greet/:name" in out.stdout and "/metrics" in out.stdout
    out = subprocess.run([BIN, "version"], capture_output=True, text=True)
    assert out.returncode == 0 and "hello-service 1.0.0" in out.stdout


def test_drain_on_sigterm(service):
    url, proc, work = service
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = (work / "stdout.log").read_text()
    assert '"msg":"shutting down: draining"' in log and '"msg":"stopped"' in log
    err = (work / "stderr.log").read_text()
    assert "Sanitizer" not in err and "runtime error" not in err, err


APP_ONLY = ("DATABASE_URL", "DATABASE_POOL_MAX", "MIGRATE_ON_START", "MIGRATIONS_DIR",
            "ENABLE_QUERY_LOGGING", "JWT_SECRET", "JWT_EXPIRES_IN", "REFRESH_TOKEN_EXPIRY",
            "PASSWORD_MIN_LENGTH", "PASSWORD_HASH_MEMORY", "LOGIN_MAX_ATTEMPTS",
            "USER_CACHE_TTL", "ENABLE_DEMO_ROUTES")
SHARED = ("PORT", "BODY_LIMIT", "LOG_LEVEL", "TRUST_PROXY", "CORS_ORIGIN", "RATE_LIMIT_MAX",
          "REDIS_URL", "CACHE_MAX_BYTES", "BREAKER_WINDOW", "INSTANCE_ID")


def _names(text, pattern):
    import re
    return set(re.findall(pattern, text, re.M))


def test_config_lists_only_the_modules_it_uses(tmp_path):
    """hello-service has no database and no accounts: its `config` and
    `serve --print-config` leave those variables out (and it does not read
    them), while the reference service lists them all."""
    env = {"PATH": os.environ.get("PATH", ""), "LOGIN_MAX_ATTEMPTS": "oops",
           "DATABASE_URL": "", "KEEL_ENV": "production"}  # invalid for keel, not read here
    doc = subprocess.run([BIN, "config"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert doc.returncode == 0, doc.stderr
    documented = _names(doc.stdout, r"^\| `([A-Z0-9_]+)` \|")
    pc = subprocess.run([BIN, "serve", "--print-config"], capture_output=True, text=True,
                        env=env, cwd=tmp_path)
    assert pc.returncode == 0, pc.stderr
    printed = _names(pc.stdout, r"^([A-Z0-9_]+)=")
    assert documented == printed
    for name in SHARED:
        assert name in printed, name
    for name in APP_ONLY:
        assert name not in printed, name
    # tracing is keel_main's own (every service is traced): its module is listed
    assert {"OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_ENDPOINT", "TRACE_BUFFER_SIZE"} <= printed
    assert "HELLO_GREETING=hello" in pc.stdout.splitlines()  # its own module
    bad = subprocess.run([BIN, "serve", "--print-config"], capture_output=True, text=True,
                         env=dict(env, HELLO_GREETING=""), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("keel: HELLO_GREETING: ") and bad.stderr.count("\n") == 1

    keel = os.environ.get("KEEL_BIN") or str(REPO / "build" / "keel")
    full = subprocess.run([keel, "config"], capture_output=True, text=True, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    everything = _names(full.stdout, r"^\| `([A-Z0-9_]+)` \|")
    assert documented - {"HELLO_GREETING"} < everything
    assert "HELLO_GREETING" not in everything
    for name in APP_ONLY + SHARED:
        assert name in everything, name
    assert "### app" in full.stdout and "### db" in full.stdout
    assert "### app" not in doc.stdout and "### db" not in doc.stdout
