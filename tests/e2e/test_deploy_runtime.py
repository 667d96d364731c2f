"""systemd Type=notify (READY=1 once the port answers, STOPPING=1 when the
drain starts) and `keel healthcheck` (the container HEALTHCHECK without
curl). deploy/systemd/keel.service and the Dockerfile rely on both."""
import os
import signal
import socket
import subprocess

import requests

from conftest import KEEL_BIN, build_env


def http_get(port, path):
    r = requests.get("http://127.0.0.1:%d%s" % (port, path), timeout=10)
    return r.status_code, r.text


def _notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    return s, path


def test_ready_then_stopping(keel, tmp_path):
    sock, path = _notify_socket(tmp_path)
    srv = keel(NOTIFY_SOCKET=path)
    msg = sock.recv(256).decode()
    assert "READY=1" in msg.split("\n")
    assert "MAINPID=%d" % srv.proc.pid in msg.split("\n")
    # READY means the port answers
    assert http_get(srv.port, "/health/ready")[0] == 200
    srv.proc.send_signal(signal.SIGTERM)
    assert sock.recv(256).decode() == "STOPPING=1"
    from conftest import SLACK
    assert srv.proc.wait(timeout=30 * SLACK) == 0  # no second signal: that one exits at once


def test_abstract_notify_socket(keel):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = "keel-test-%d" % os.getpid()
    s.bind("\0" + name)
    s.settimeout(10)
    keel(NOTIFY_SOCKET="@" + name)
    assert "READY=1" in s.recv(256).decode()


def test_no_notify_socket_is_fine(serving):
    assert http_get(serving.port, "/health/live")[0] == 200


def _healthcheck(port, *args):
    env = build_env({"PORT": str(port)})
    return subprocess.run([KEEL_BIN, "healthcheck", *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_healthcheck_command(serving):
    r = _healthcheck(serving.port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/health/live -> 200" in r.stdout
    r = _healthcheck(serving.port, "/health/ready")
    assert r.returncode == 0
    r = _healthcheck(serving.port, "/no/such/path")
    assert r.returncode == 1 and "-> 404" in r.stdout
    r = _healthcheck(serving.port, "no-slash")
    assert r.returncode == 2


def test_healthcheck_nothing_listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = _healthcheck(port)
    assert r.returncode == 1 and "no answer" in r.stdout


def test_shutdown_delay_keeps_serving_while_not_ready(keel):
    import time
    from conftest import SLACK, wait_for
    srv = keel(SHUTDOWN_DELAY="1500ms")
    s = requests.Session()  # a keep-alive connection opened before the signal
    assert s.get(srv.url + "/hello", timeout=10).status_code == 200
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: requests.get(srv.url + "/health/ready", timeout=5).status_code == 503,
             what="readiness 503 after SIGTERM")
    # not ready, but new connections and the old keep-alive one are served
    assert requests.get(srv.url + "/hello", timeout=5).status_code == 200
    assert s.get(srv.url + "/hello", timeout=5).status_code == 200
    assert http_get(srv.port, "/health/live")[0] == 200
    assert time.monotonic() - t0 < 1.5 * SLACK
    # after the delay: no longer accepting, and the process exits 0
    assert srv.proc.wait(timeout=10 * SLACK) == 0
    assert time.monotonic() - t0 >= 1.4
    assert any(l.get("msg") == "shutdown delay over: draining" for l in srv.logs())


def _wrk(url, seconds, connections=16):
    return subprocess.Popen(["wrk", "-t2", "-c%d" % connections, "-d%ds" % seconds,
                             "--timeout", "10s", url], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wrk_summary(p):
    import re
    out = p.communicate(timeout=120)[0]
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return n, (sum(map(int, errs.groups())) if errs else 0), (int(non2.group(1)) if non2 else 0), out


def test_binary_upgrade_under_load_fails_nothing(keel, tmp_path):
    """A new process takes the port over from the one in PID_FILE (both
    listen with SO_REUSEPORT, then the old one drains): wrk sees no error
    and no non-2xx, and the new process serves afterwards."""
    from conftest import SLACK, wait_for
    pidfile = str(tmp_path / "keel.pid")
    old = keel(PID_FILE=pidfile, ACCESS_LOG="false")
    wait_for(lambda: os.path.exists(pidfile), what="PID_FILE written")
    assert open(pidfile).read().strip() == str(old.proc.pid)
    # wrk runs until the upgrade is over and the new process has served on
    # its own for a second, then is stopped (it prints its summary on SIGINT)
    load = _wrk(old.url + "/hello", seconds=int(60 * SLACK))
    import time
    time.sleep(1.5)
    work = tmp_path / "new"
    (work / "data").mkdir(parents=True)
    with open(work / "out.log", "wb") as out:
        new = subprocess.Popen([KEEL_BIN, "serve", "--upgrade"], env=old.env, cwd=work,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert old.proc.wait(timeout=30 * SLACK) == 0
        assert open(pidfile).read().strip() == str(new.pid)
        time.sleep(1.0)
        assert load.poll() is None, "wrk ended before the upgrade did"
        load.send_signal(signal.SIGINT)
        n, errors, non2xx, out = _wrk_summary(load)
        assert n > 1000 and errors == 0 and non2xx == 0, out
        assert http_get(old.port, "/hello")[0] == 200
        assert new.poll() is None
        log = (work / "out.log").read_text()
        assert "upgrade: serving beside the old process" in log, log[-2000:]
    finally:
        new.send_signal(signal.SIGTERM)
        assert new.wait(timeout=30 * SLACK) == 0
    assert not os.path.exists(pidfile), "removed by the process it names"


def test_upgrade_without_a_running_process_is_refused(tmp_path):
    env = build_env({"PID_FILE": str(tmp_path / "none.pid"), "PORT": "0"})
    r = subprocess.run([KEEL_BIN, "serve", "--upgrade"], env=env, capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 2 and "no running process named in PID_FILE" in r.stderr
    env = build_env({"PORT": "0"})
    r = subprocess.run([KEEL_BIN, "serve", "--upgrade"], env=env, capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 2 and "needs PID_FILE" in r.stderr


def test_sighup_reloads_log_level_cors_and_tiers(tmp_path):
    """SIGHUP reads the env file again: LOG_LEVEL, CORS_ORIGIN and the
    rate-limit tiers change for the next requests, a keep-alive connection
    opened before stays open, and an invalid file changes nothing."""
    from conftest import start_server, wait_for
    work = tmp_path / "srv"
    (work / "try0").mkdir(parents=True)
    envfile = work / "try0" / ".env"

    def write(level, origin, strict):
        envfile.write_text("LOG_LEVEL=%s\nCORS_ORIGIN=%s\nRATE_LIMIT_ENABLED=true\n"
                           "RATE_LIMIT_STRICT=%s\nRATE_LIMIT_BURST=0\nRATE_LIMIT_MAX=100000\n"
                           % (level, origin, strict))

    write("info", "https://a.example", "50/1m")
    srv = start_server({"LOG_LEVEL": None, "RATE_LIMIT_ENABLED": None}, work)
    try:
        keep = requests.Session()
        assert keep.get(srv.url + "/hello", timeout=5).status_code == 200

        def cors(origin):
            r = requests.get(srv.url + "/hello", headers={"Origin": origin}, timeout=5)
            return r.headers.get("Access-Control-Allow-Origin")

        def strict_codes(n):
            return [requests.get(srv.url + "/distributed/rate-limit/test", timeout=5).status_code
                    for _ in range(n)]

        assert cors("https://a.example") == "https://a.example"
        assert cors("https://b.example") is None
        assert strict_codes(3) == [200, 200, 200]
        assert any(l.get("msg") == "request" for l in srv.logs())  # access log at info

        write("warn", "https://b.example", "3/1m")
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_log(lambda l: l.get("msg") == "reload done", timeout=10)
        assert cors("https://b.example") == "https://b.example"
        assert cors("https://a.example") is None
        # the strict tier is now 3/min (GCRA keeps the client's state: 3
        # requests at 50/min used 3.6 s of the minute, so 2 more fit)
        assert strict_codes(3) == [200, 200, 429]
        # LOG_LEVEL=warn: the access log's info lines stop
        before = sum(1 for l in srv.logs() if l.get("msg") == "request")
        for _ in range(3):
            requests.get(srv.url + "/hello", timeout=5)
        import time
        time.sleep(0.3)
        assert sum(1 for l in srv.logs() if l.get("msg") == "request") == before
        assert keep.get(srv.url + "/hello", timeout=5).status_code == 200  # same connection

        # an invalid file: refused as a whole, nothing changes
        envfile.write_text("LOG_LEVEL=loud\nCORS_ORIGIN=https://c.example\n")
        srv.proc.send_signal(signal.SIGHUP)
        line = srv.wait_log(lambda l: l.get("msg", "").startswith("reload refused"), timeout=10)
        # (logged at error: above warn)
        assert "LOG_LEVEL" in line["error"]
        assert cors("https://b.example") == "https://b.example"
        assert cors("https://c.example") is None
        assert srv.proc.poll() is None
    finally:
        srv.stop()
