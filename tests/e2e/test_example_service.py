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
           "WORKERS": "1", "SHUTDOWN_GRACE": "5s"}
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
