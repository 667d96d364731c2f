"""Fixtures for the keel end-to-end suite.

`keel(**env)` starts `keel serve` on a free loopback port with a small,
explicit environment (nothing leaks in from the caller's shell but PATH,
locale and sanitizer options), waits until GET /health/live answers, and
stops it with SIGTERM at teardown. stdout (JSON log lines) and stderr go to
files in a per-server directory, which is also the server's working
directory (so ./data and .env never touch the repository).

Environment of the suite itself:
  KEEL_BIN        the binary (default build/keel under the repository root)
  KEEL_SANITIZED  1 when the binary is built with ASan/UBSan: start-up and
                  timing slack grow, and every server must exit 0 and print
                  no sanitizer report.
"""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import rawhttp

REPO = Path(__file__).resolve().parents[2]
KEEL_BIN = os.path.abspath(os.environ.get("KEEL_BIN") or str(REPO / "build" / "keel"))
SANITIZED = os.environ.get("KEEL_SANITIZED") == "1"
# Multiplier for waits that depend on the server's speed.
SLACK = 4.0 if SANITIZED else 1.0
STARTUP_TIMEOUT = 60.0 if SANITIZED else 10.0
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# Variables passed through from the caller's environment.
_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR",
                 "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "ASAN_SYMBOLIZER_PATH",
                 "LLVM_SYMBOLIZER_PATH")

DEFAULT_ENV = {
    "HOST": "127.0.0.1",
    "WORKERS": "2",
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "json",
    "ACCESS_LOG": "true",
    "KEEL_ENV": "test",
    "ENABLE_DEMO_ROUTES": "true",
    "SHUTDOWN_GRACE": "5s",
    # The suite sends thousands of requests from 127.0.0.1: the default
    # limits (100 per 15 min, 10/s bursts) would refuse most of them.
    # test_rate_limit.py turns the limiter on with limits of its own.
    "RATE_LIMIT_ENABLED": "false",
}


def require_binary():
    if not os.access(KEEL_BIN, os.X_OK):
        pytest.fail("keel binary not found at %s (run make, or set KEEL_BIN)" % KEEL_BIN,
                    pytrace=False)


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    return {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}


def build_env(overrides):
    """DEFAULT_ENV with overrides; a value of None removes the variable."""
    env = base_env()
    env.update(DEFAULT_ENV)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        elif isinstance(v, bool):
            env[k] = "true" if v else "false"
        else:
            env[k] = str(v)
    return env


def run_cli(args, env=None, timeout=None, cwd=None):
    """Runs `keel ARGS` to completion with DEFAULT_ENV + env."""
    require_binary()
    return subprocess.run([KEEL_BIN] + list(args), env=build_env(env or {}),
                          cwd=cwd, capture_output=True, text=True,
                          timeout=timeout or (30 * SLACK))


def sanitizer_report(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def wait_past_second(t):
    """Waits until the server's clock has surely left whole second t.
    Token times (iat, tokens_valid_after) are whole seconds from time(2),
    which reads the kernel's coarse clock: it can lag the precise clock
    Python reads by up to a tick (4 ms at HZ=250), so "the next second"
    here may still be second t there. 50 ms past the boundary is safe."""
    wait_for(lambda: time.time() >= t + 1.05, timeout=3, what="second %d to pass" % t,
             interval=0.01)


def wait_for(pred, timeout=5.0, what="a condition", interval=0.02):
    """Polls pred() every `interval` seconds until it returns a true value,
    and returns that value. After timeout * SLACK seconds raises
    AssertionError naming `what` and pred's last value. Exceptions from
    pred are not swallowed. Use it instead of a fixed sleep: it waits only
    as long as needed, and a slow machine gets the whole timeout."""
    limit = timeout * SLACK
    deadline = time.monotonic() + limit
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (limit, what, last))
        time.sleep(interval)


def scrape_metric(port, family, **labels):
    """The sum of the samples of `family` on GET /metrics whose labels
    match, or None when there are none."""
    from promtext import parse
    m = parse(rawhttp.get(port, "/metrics", timeout=5 * SLACK).text)
    found = [s for s in m.find(family) if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(s.value for s in found) if found else None


def requests_in_flight(port):
    """Requests being processed, not counting the scrape that asks."""
    return scrape_metric(port, "http_requests_in_flight") - 1


# /proc/net/tcp states in which the server still holds its socket:
# ESTABLISHED, FIN_WAIT1, FIN_WAIT2 (a lingering close), CLOSE_WAIT.
_SERVER_HOLDS = {"01", "04", "05", "08"}


def server_connections(port):
    """Server-side sockets of 127.0.0.1:port that the server has not
    closed yet, read from /proc/net/tcp: looking takes no connection of
    its own, so it works on a server whose connection slots are all
    taken. (Conservative: an orphaned FIN_WAIT socket still counts.)"""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            if int(local.split(":")[1], 16) == port and state in _SERVER_HOLDS:
                n += 1
    return n


def parse_duration(s, default_ms):
    s = (s or "").strip().lower()
    for unit, mult in (("ms", 1), ("s", 1000), ("m", 60000)):
        if s.endswith(unit) and s[: -len(unit)].strip().isdigit():
            return int(s[: -len(unit)]) * mult
    return int(s) if s.isdigit() else default_ms


class KeelServer:
    """One running `keel serve`."""

    def __init__(self, env, workdir):
        self.env = env
        self.workdir = Path(workdir)
        self.port = int(env["PORT"])
        self.url = "http://127.0.0.1:%d" % self.port
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.proc = None
        self.returncode = None
        # Set False in a test that expects a non-zero exit (e.g. a grace
        # period that runs out).
        self.check_exit_code = True

    # -- life cycle ------------------------------------------------------
    def _spawn(self):
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([KEEL_BIN, "serve"], env=self.env, cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = rawhttp.get(self.port, "/health/live", timeout=2.0)
                if r.status == 200:
                    return True
                last = r
            except (OSError, AssertionError) as e:
                last = e
            time.sleep(0.01)  # a start takes ~50 ms (~150 ms under ASan)
        self.kill()
        raise AssertionError("keel did not become ready on port %d within %.0fs (last: %r)\n"
                             "stderr:\n%s\nstdout:\n%s" % (self.port, STARTUP_TIMEOUT, last,
                                                          self.stderr()[-3000:],
                                                          self.stdout()[-3000:]))

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signals the server and waits for it to exit; returns the exit
        status. Fails (after SIGKILL) if it does not exit in time."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if timeout is None:
                grace = parse_duration(self.env.get("SHUTDOWN_GRACE"), 30000) / 1000.0
                timeout = grace + 5.0 * SLACK
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("keel (port %d) did not exit within %.1fs of signal %d"
                                     % (self.port, timeout, sig))
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.returncode = self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def teardown_problems(self):
        """Stops the server; returns a list of problems found."""
        problems = []
        try:
            rc = self.stop()
        except AssertionError as e:
            problems.append(str(e))
            rc = self.returncode
        err = self.stderr()
        found = sanitizer_report(err)
        if found:
            problems.append("sanitizer report from keel (port %d): %s\n%s"
                            % (self.port, found, err[-6000:]))
        if SANITIZED and self.check_exit_code and rc != 0:
            problems.append("keel (port %d) exited with status %r under the sanitizer\n%s"
                            % (self.port, rc, err[-3000:]))
        return problems

    # -- output ----------------------------------------------------------
    def stdout(self):
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def logs(self):
        """The JSON log lines written so far, parsed. Lines that are not a
        JSON object are returned as {"_raw": line}."""
        out = []
        for line in self.stdout().splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            out.append(obj if isinstance(obj, dict) else {"_raw": line})
        return out

    def wait_log(self, pred, timeout=3.0):
        """The first log entry satisfying pred, waiting up to timeout."""
        deadline = time.monotonic() + timeout * SLACK
        while True:
            for entry in self.logs():
                if pred(entry):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError("no matching log line; stdout tail:\n%s" % self.stdout()[-4000:])
            time.sleep(0.05)

    def access_entry(self, request_id, timeout=3.0):
        """The access-log line of the request with this X-Request-Id."""
        return self.wait_log(lambda e: e.get("request_id") == request_id and "status" in e,
                             timeout=timeout)

    def __repr__(self):
        return "<keel port=%d pid=%s>" % (self.port, self.proc and self.proc.pid)


def start_server(env_overrides, workdir):
    require_binary()
    workdir = Path(workdir)
    for attempt in range(3):
        env = build_env(dict({"PORT": free_port()}, **env_overrides))
        srv = KeelServer(env, workdir / ("try%d" % attempt))
        srv.workdir.mkdir(parents=True, exist_ok=True)
        srv._spawn()
        if srv._wait_ready():
            return srv
        err = srv.stderr()
        if "in use" in err.lower() and attempt < 2:
            continue  # lost the port race; try another
        raise AssertionError("keel exited with status %r before becoming ready\nstderr:\n%s\n"
                             "stdout:\n%s" % (srv.proc.returncode, err[-3000:], srv.stdout()[-3000:]))
    raise AssertionError("unreachable")


class _Factory:
    def __init__(self, mkdir):
        self._mkdir = mkdir
        self.servers = []

    def __call__(self, **env):
        srv = start_server(env, self._mkdir())
        self.servers.append(srv)
        # The readiness probe's connection holds a slot (MAX_CONNECTIONS,
        # MAX_CONNECTIONS_PER_IP) until the server has seen its FIN (the
        # server closes with a lingering close): a test gets a server that
        # holds no connection.
        wait_for(lambda: server_connections(srv.port) == 0, 3,
                 "the server to close the readiness probe's connection", interval=0.005)
        return srv

    def finish(self):
        problems = []
        for srv in self.servers:
            problems += srv.teardown_problems()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def keel(tmp_path_factory):
    """Factory: keel(**env) starts a server with DEFAULT_ENV + env."""
    f = _Factory(lambda: tmp_path_factory.mktemp("keel"))
    yield f
    f.finish()


@pytest.fixture(scope="module")
def keel_module(tmp_path_factory):
    """The same factory, for servers shared by a whole module."""
    f = _Factory(lambda: tmp_path_factory.mktemp("keel"))
    yield f
    f.finish()


@pytest.fixture(scope="module")
def server(keel_module):
    """A server with the default configuration, shared by a module."""
    return keel_module()


@pytest.fixture
def serving(server):
    """`server`, checked to be up before and after the test."""
    assert server.alive(), "the shared server died earlier:\n%s" % server.stderr()[-3000:]
    yield server
    assert server.alive(), "the server died during this test:\n%s" % server.stderr()[-3000:]


# ---------------------------------------------------------------- figures
# Tests may report a measured figure (e.g. a latency under attack); they
# are printed in the run's summary, so they show in CI output.
_REPORTS = []


@pytest.fixture
def report(request):
    """report("text"): a line for the end-of-run summary."""
    def add(text):
        _REPORTS.append("%s: %s" % (request.node.name, text))
    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORTS:
        terminalreporter.section("figures")
        for line in _REPORTS:
            terminalreporter.write_line(line)


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster for the run (tests/support/pg_tmp.sh,
    started on first use, ~3 s): every test takes a database of its own in
    it (test_migrate.Pg) and drops it after. test_storage keeps a cluster of
    its own (it stops and restarts it)."""
    from test_migrate import PgCluster
    c = PgCluster()
    yield c
    c.destroy()


# ---------------------------------------------------------------- redis
@pytest.fixture
def redis_server():
    """A throw-away redis-server (tests/e2e/redisproc.py), torn down after."""
    from redisproc import RedisServer
    r = RedisServer()
    yield r
    r.stop()
