"""Process life cycle: graceful drain on SIGTERM, configuration errors, and
the command line (version, --help, routes, --print-config)."""
import os
import re
import signal
import socket
import threading
import time

import pytest

from conftest import SLACK, free_port, requests_in_flight, run_cli, sanitizer_report, wait_for
from rawhttp import connect, read_exchange, send_tolerant

SLOW = b"GET /slow?ms=%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
HELLO = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _in_flight(port, ms, n):
    """Starts n threads, each sending GET /slow?ms=ms on its own connection.
    Returns (threads, results) once every request is sent."""
    results = [None] * n
    sent = threading.Semaphore(0)

    def worker(i):
        try:
            with connect(port, timeout=10 * SLACK) as s:
                s.sendall(SLOW % ms)
                sent.release()
                results[i] = read_exchange(s, timeout=(ms / 1000.0 + 10) * SLACK, expect=1)
        except Exception as e:  # noqa: BLE001 - reported by the test
            results[i] = e
            sent.release()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        assert sent.acquire(timeout=10 * SLACK), "requests were not sent in time"
    return threads, results


def _try_new_connection(port):
    """'refused', 'closed' (EOF or reset without a success), 'served' or
    'hung' for one new connection."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1.0 * SLACK)
    except OSError:
        return "refused"
    with s:
        send_tolerant(s, HELLO)
        ex = read_exchange(s, timeout=1.0 * SLACK)
    if any(200 <= st < 300 for st in ex.statuses):
        return "served"
    return "closed" if ex.eof else "hung"


def test_sigterm_drains_in_flight_requests(keel):
    n, ms = 50, int(1500 * min(SLACK, 2))
    grace = 5.0 * SLACK
    k = keel(SHUTDOWN_GRACE="%dms" % (grace * 1000))
    threads, results = _in_flight(k.port, ms, n)
    wait_for(lambda: requests_in_flight(k.port) >= n, 10,
             "all %d requests accepted and suspended in their handlers" % n)

    signalled = time.monotonic()
    k.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: _try_new_connection(k.port) != "served", 5, "the drain to begin")
    attempts = [_try_new_connection(k.port) for _ in range(4)]
    during_drain = time.monotonic() - signalled

    for t in threads:
        t.join(timeout=(ms / 1000.0 + 15) * SLACK)
    try:
        rc = k.proc.wait(timeout=grace + 5)
    except Exception:
        rc = None
    exited_after = time.monotonic() - signalled

    assert during_drain < ms / 1000.0, "the new-connection probes ran after the drain ended"
    assert all(a in ("refused", "closed") for a in attempts), \
        "new connections during drain: %s" % attempts
    bad = [(i, r) for i, r in enumerate(results)
           if not (hasattr(r, "statuses") and r.statuses == [200]
                   and r.responses[0].body == b"done")]
    assert not bad, "%d of %d in-flight requests failed, e.g. %r" % (len(bad), n, bad[:3])
    assert rc == 0, "exit status %r\n%s" % (rc, k.stderr()[-3000:])
    assert exited_after < grace, "exited %.2fs after SIGTERM (grace %.1fs)" % (exited_after, grace)
    k.wait_log(lambda e: "shutting down" in str(e.get("msg", "")).lower())


def test_sigterm_idle_server_exits_at_once(keel):
    k = keel()
    start = time.monotonic()
    assert k.stop() == 0, k.stderr()[-3000:]
    assert time.monotonic() - start < 2 * SLACK
    k.wait_log(lambda e: "shutting down" in str(e.get("msg", "")).lower(), timeout=0.5)


def test_idle_keepalive_connections_do_not_hold_shutdown(keel):
    k = keel(KEEPALIVE_TIMEOUT="30s", SHUTDOWN_GRACE="10s")
    conns = [connect(k.port) for _ in range(5)]
    try:
        for s in conns:
            s.sendall(HELLO)
            assert read_exchange(s, timeout=3 * SLACK, expect=1).statuses == [200]
        start = time.monotonic()
        assert k.stop() == 0
        assert time.monotonic() - start < 2.5 * SLACK, "idle connections delayed shutdown"
        for s in conns:
            assert read_exchange(s, timeout=1).eof
    finally:
        for s in conns:
            s.close()


def test_grace_period_bounds_shutdown(keel):
    k = keel(SHUTDOWN_GRACE="500ms")
    k.check_exit_code = False  # cutting requests off may exit non-zero
    threads, results = _in_flight(k.port, 10000, 3)
    wait_for(lambda: requests_in_flight(k.port) >= 3, 10, "the requests in their handlers")
    start = time.monotonic()
    k.stop(timeout=10 * SLACK)
    took = time.monotonic() - start
    for t in threads:
        t.join(timeout=5)
    assert took < 0.5 + 1.5 * SLACK, "exited %.2fs after SIGTERM with a 500ms grace" % took
    for r in results:
        assert not (hasattr(r, "statuses") and 200 in r.statuses), r


# ------------------------------------------------------------------- config

BAD_CONFIG = [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("BODY_LIMIT", "lots"),
    ("LOG_LEVEL", "loud"),
    ("LOG_FORMAT", "xml"),
    ("WORKERS", "many"),
    ("HEADER_TIMEOUT", "soon"),
    ("SHUTDOWN_GRACE", "-1s"),
    ("ACCESS_LOG", "maybe"),
    ("MAX_HEADERS", "0"),
    ("KEEL_ENV", "staging"),
]


@pytest.mark.parametrize("name, value", BAD_CONFIG, ids=["%s=%s" % c for c in BAD_CONFIG])
def test_invalid_config_exits_2(tmp_path, name, value):
    env = {"PORT": str(free_port()), name: value}
    p = run_cli(["serve"], env=env, timeout=10 * SLACK, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr, p.stdout[-2000:])
    assert not sanitizer_report(p.stderr), p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, "expected one line on stderr: %r" % p.stderr
    assert name in lines[0], lines[0]


@pytest.mark.parametrize("secret", [None, "short", "change-me-0123456789abcdefghijklmnop"])
def test_production_refuses_a_weak_jwt_secret(tmp_path, secret):
    """The reference service's own check (its app config module)."""
    env = {"KEEL_ENV": "production", "JWT_SECRET": secret, "ENABLE_DEMO_ROUTES": None}
    p = run_cli(["serve", "--print-config"], env=env, cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("keel: JWT_SECRET: "), p.stderr
    assert not secret or secret not in p.stderr
    env["JWT_SECRET"] = "q8F3kZ1xV7mN2bT9rL4wY6pH0sD5jC8a"
    p = run_cli(["serve", "--print-config"], env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "ENABLE_DEMO_ROUTES=false" in p.stdout.splitlines()


def test_print_config_redacts_secrets(tmp_path):
    env = {"PORT": "12345", "BODY_LIMIT": "64kb", "JWT_SECRET": "e2e-jwt-SECRET-0123456789abcdefXYZ",
           "DATABASE_URL": "postgres://app:hunter2pw@db.example:5432/app",
           "REDIS_URL": "redis://:r3dispw@cache.example:6379/0"}
    p = run_cli(["serve", "--print-config"], env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not sanitizer_report(p.stderr), p.stderr
    values = {}
    for line in p.stdout.splitlines():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line), "not NAME=value: %r" % line
        name, _, value = line.partition("=")
        values[name] = value
    assert values["PORT"] == "12345"
    assert values["HOST"] == "127.0.0.1"
    assert values["JWT_SECRET"] == "[REDACTED]"
    for name in ("BODY_LIMIT", "WORKERS", "HEADER_TIMEOUT", "BODY_TIMEOUT", "KEEPALIVE_TIMEOUT",
                 "SHUTDOWN_GRACE", "MAX_CONNECTIONS", "LOG_LEVEL", "ACCESS_LOG", "DATABASE_URL"):
        assert name in values, name
    for secret in ("e2e-jwt-SECRET", "hunter2pw", "r3dispw"):
        assert secret not in p.stdout and secret not in p.stderr, secret


def test_version(tmp_path):
    p = run_cli(["version"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert re.search(r"\d+\.\d+", p.stdout), p.stdout


def test_help(tmp_path):
    p = run_cli(["--help"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    text = p.stdout.lower()
    assert "usage" in text and "serve" in text, p.stdout


def test_routes_table(tmp_path):
    p = run_cli(["routes"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.strip()]
    pairs = {(r[0], r[1]) for r in rows if len(r) >= 2}
    for method, path in [("GET", "/hello"), ("GET", "/json"), ("POST", "/echo"),
                         ("GET", "/health/live"), ("GET", "/metrics")]:
        assert (method, path) in pairs, p.stdout
    hello = [r for r in rows if r[:2] == ["GET", "/hello"]][0]
    assert len(hello) >= 3, "no name column: %r" % hello


def test_unknown_command_fails(tmp_path):
    p = run_cli(["frobnicate"], cwd=tmp_path)
    assert p.returncode != 0
    assert p.stderr.strip()


def test_port_in_use_refuses_to_start(keel, tmp_path):
    """SO_REUSEPORT must not let a second keel quietly share a port."""
    k = keel()
    res = run_cli(["serve"], env={"PORT": str(k.port)}, cwd=tmp_path, timeout=30 * SLACK)
    assert res.returncode == 1
    assert "already in use" in res.stdout
    assert rawhttp_get_ok(k.port)


def rawhttp_get_ok(port):
    from rawhttp import get
    return get(port, "/hello", timeout=5).status == 200


def test_configuration_doc_lists_every_variable(tmp_path):
    """docs/configuration.md is generated from the code's table: keep it so."""
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    res = run_cli(["config"], cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout.strip() in doc, "regenerate the table: build/keel config"


def test_second_signal_exits_at_once(keel):
    """SIGINT twice: the first starts the drain, the second leaves at once
    even with requests still in flight."""
    k = keel(SHUTDOWN_GRACE="30s")
    k.check_exit_code = False
    threads, results = _in_flight(k.port, 10000, 3)
    wait_for(lambda: requests_in_flight(k.port) >= 3, 10, "the requests in their handlers")
    start = time.monotonic()
    k.proc.send_signal(signal.SIGINT)
    # A check that nothing happens: a wrong exit on the first signal gets
    # this long to show (there is no event to poll for).
    time.sleep(0.2)
    assert k.proc.poll() is None, "the first signal only drains"
    k.proc.send_signal(signal.SIGINT)
    rc = k.proc.wait(timeout=5 * SLACK)
    assert time.monotonic() - start < 3 * SLACK
    assert rc == 1
    k.wait_log(lambda e: e.get("msg") == "second signal: exiting now")
    for t in threads:
        t.join(timeout=5)


def _thread_nices(pid):
    """nice value of every thread of pid (field 19 of /proc/PID/task/TID/stat)."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        out.append(int(fields[16]))
    return out


def test_work_pool_threads_run_below_the_loops(keel):
    """WORK_POOL_NICE: the work pool's threads (argon2, blocking jobs) run
    at a lower CPU priority than the event loops, so a CPU-bound job never
    delays a loop's next request on a shared core; 0 keeps them equal."""
    srv = keel(WORKERS="2", WORK_POOL_SIZE="3", WORK_POOL_NICE="7")
    # each thread lowers itself as it starts: poll
    wait_for(lambda: _thread_nices(srv.proc.pid).count(7) == 3, what="three threads at nice 7")
    nices = _thread_nices(srv.proc.pid)
    assert nices.count(7) == 3, nices
    assert nices.count(0) >= 3, nices  # main thread and the two loops at least
    srv.stop()
    same = keel(WORK_POOL_SIZE="3", WORK_POOL_NICE="0")
    assert set(_thread_nices(same.proc.pid)) == {0}
