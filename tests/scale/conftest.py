"""tests/scale: three keel instances on one PostgreSQL and one Redis behind
a real proxy (nginx, HAProxy, Caddy — the deploy/ files as shipped, only
the loopback ports replaced), all started by the suite on free ports.
`make test-scale` runs it (and `make test`).

Environment: KEEL_BIN (default build/keel), SCALE_REPORT (a JSON file the
suite appends its measured figures to; default build/scale-report.json)."""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "tests" / "e2e"
sys.path.insert(0, str(E2E))
_spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
# redisproc imports e2e's conftest by that name: give it that one
_mine = sys.modules.get("conftest")
sys.modules["conftest"] = e2e
try:
    from redisproc import RedisServer  # noqa: E402
    from otlp_receiver import OtlpReceiver  # noqa: E402
finally:
    if _mine is not None:
        sys.modules["conftest"] = _mine
    else:
        del sys.modules["conftest"]

PG_TMP = REPO / "tests" / "support" / "pg_tmp.sh"
SECRET = "scale-secret-0123456789abcdef0123456789abcdef"
REPORT = Path(os.environ.get("SCALE_REPORT") or REPO / "build" / "scale-report.json")
# On SIGTERM an instance stays up but unready for this long, above every
# proxy's health-check interval x fall count (deploy/: 1 s x 2).
DELAY = "3s"


def record(name, **figures):
    """Appends one measured result to the report (and prints it)."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = figures
    REPORT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print("scale: %s %s" % (name, figures))


ADMIN_PW = "scale admin pass phrase"


class PgCluster:
    def __init__(self):
        p = subprocess.run([str(PG_TMP), "start"], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            pytest.fail("could not start PostgreSQL: %s" % p.stderr, pytrace=False)
        env = dict(line.replace("export ", "", 1).split("=", 1)
                   for line in p.stdout.splitlines() if line.startswith("export "))
        self.url, self.dir = env["KEEL_TEST_PG_URL"], env["KEEL_TEST_PG_DIR"]

    def psql(self, sql, url=None):
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            url or self.url, "-c", sql], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, (sql, p.stderr)
        return p.stdout.strip()

    def new_database(self):
        name = "keel_scale_%s" % uuid.uuid4().hex[:10]
        self.psql("CREATE DATABASE %s" % name)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def destroy(self):
        subprocess.run([str(PG_TMP), "destroy", self.dir], capture_output=True, timeout=120)


class Proxy:
    """One proxy process in front of the given instance ports."""

    def __init__(self, kind, ports, workdir):
        self.kind, self.workdir = kind, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = e2e.free_port()
        self.proc = None
        self.start(ports)

    def _render(self, text, ports):
        for i, p in enumerate(ports):
            text = text.replace("127.0.0.1:%d" % (3001 + i), "127.0.0.1:%d" % p)
        return text

    def start(self, ports):
        w, out = self.workdir, open(self.workdir / "proxy.log", "ab")
        if self.kind == "nginx":
            body = self._render((REPO / "deploy/nginx/keel.conf").read_text(), ports)
            body = body.replace("listen 8080;", "listen 127.0.0.1:%d;" % self.port)
            (w / "keel.conf").write_text(body)
            (w / "nginx.conf").write_text(
                "pid %s/nginx.pid;\nerror_log %s/error.log warn;\nworker_processes 1;\n"
                "events { worker_connections 4096; }\nhttp {\n  access_log off;\n"
                "  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
                "  include %s/keel.conf;\n}\n" % (w, w, w, w, w))
            argv = ["nginx", "-c", str(w / "nginx.conf"), "-p", str(w), "-g", "daemon off;"]
        elif self.kind == "haproxy":
            body = self._render((REPO / "deploy/haproxy/haproxy.cfg").read_text(), ports)
            body = body.replace("bind 127.0.0.1:8080", "bind 127.0.0.1:%d" % self.port)
            (w / "haproxy.cfg").write_text(body)
            argv = ["haproxy", "-db", "-f", str(w / "haproxy.cfg")]
        elif self.kind == "caddy":
            body = self._render((REPO / "deploy/caddy/Caddyfile").read_text(), ports)
            body = body.replace("\n:8080 {", "\nhttp://127.0.0.1:%d {" % self.port)
            (w / "Caddyfile").write_text(body)
            argv = ["caddy", "run", "--config", str(w / "Caddyfile"), "--adapter", "caddyfile"]
        else:
            raise ValueError(self.kind)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(w),
               "XDG_DATA_HOME": str(w / "data"), "XDG_CONFIG_HOME": str(w / "config")}
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     cwd=w, start_new_session=True)
        self.url = "http://127.0.0.1:%d" % self.port
        e2e.wait_for(self._up, timeout=20, what="%s to serve /health/live" % self.kind)

    def _up(self):
        if self.proc.poll() is not None:
            pytest.fail("%s exited: %s" % (self.kind, self.log()[-2000:]), pytrace=False)
        try:
            return requests.get(self.url + "/health/live", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self):
        try:
            return (self.workdir / "proxy.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Three keel instances on one PostgreSQL database and one Redis."""

    def __init__(self, pg, redis, workdir, n=3, **extra):
        self.workdir = Path(workdir)
        self.env = dict(
            REDIS_KEY_PREFIX="%s:" % self.workdir.name,
            JWT_SECRET=SECRET, DATABASE_URL=pg.new_database(), REDIS_URL=redis.url,
            TRUST_PROXY="127.0.0.1/32", SHUTDOWN_DELAY=DELAY, SHUTDOWN_GRACE="10s",
            ACCESS_LOG="false", WORKERS="1", PASSWORD_HASH_MEMORY="8mb", PASSWORD_HASH_OPS="1",
            RATE_LIMIT_ENABLED="true", RATE_LIMIT_MAX="100000000", RATE_LIMIT_BURST="0",
            RATE_LIMIT_STRICT="20/10m", JOBS_QUEUES="default=2,scale=4",
            KEEL_ADMIN_PASSWORD=ADMIN_PW)
        self.env.update(extra)
        self.nodes = []
        self.generation = 0
        for i in range(n):
            self.nodes.append(self._start(i, e2e.free_port()))

    def _start(self, i, port):
        self.generation += 1
        env = dict(self.env, PORT=str(port), INSTANCE_ID="keel%d" % (i + 1))
        srv = e2e.start_server(env, self.workdir / ("keel%d-%d" % (i + 1, self.generation)))
        assert srv.port == port
        return srv

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def restart(self, i, sig=signal.SIGTERM):
        """Stops instance i (drain on SIGTERM, or SIGKILL) and starts a new
        one on the same port."""
        old = self.nodes[i]
        if sig == signal.SIGKILL:
            old.kill()
        else:
            old.proc.send_signal(sig)
            assert old.proc.wait(timeout=60) == 0, old.stderr()[-2000:]
        self.nodes[i] = self._start(i, old.port)
        return self.nodes[i]

    def cli(self, args):
        p = e2e.run_cli(args, env=e2e.build_env(self.env), cwd=self.workdir)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def stop(self):
        """Stops the instances at once: each drains through its own
        SHUTDOWN_DELAY in parallel (one after another took 3 x ~3.5 s)."""
        with ThreadPoolExecutor(max_workers=len(self.nodes) or 1) as ex:
            found = list(ex.map(lambda n: n.teardown_problems(), self.nodes))
        return [p for problems in found for p in problems]


@pytest.fixture(scope="session")
def otlp():
    """One OTLP/HTTP receiver every instance (and orders-service) exports to."""
    rx = OtlpReceiver()
    rx.__enter__()
    yield rx
    rx.close()


@pytest.fixture(scope="session")
def pg():
    c = PgCluster()
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def redis():
    r = RedisServer()
    yield r
    r.stop()


PROXIES = ["nginx", "haproxy", "caddy"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "one_proxy: the property is the instances' own, not the proxy's: "
        "checked through the first proxy (nginx) only")


def pytest_collection_modifyitems(config, items):
    """A one_proxy test runs behind PROXIES[0] only (10,000 jobs and the
    cross-service trace take the same path through every proxy: a request
    in, an answer out); everything about the proxy itself (health checks,
    restarts, kills, WebSocket upgrade, forwarded client address) stays per
    proxy."""
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        if (item.get_closest_marker("one_proxy") and cs is not None
                and cs.params.get("stack", PROXIES[0]) != PROXIES[0]):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="module", params=PROXIES)
def stack(request, pg, redis, otlp, tmp_path_factory):
    """(proxy, cluster): three instances behind one proxy kind."""
    kind = request.param
    if not shutil.which(kind):
        pytest.fail("%s is not installed (make deps-test)" % kind, pytrace=False)
    work = tmp_path_factory.mktemp("scale-" + kind)
    cluster = Cluster(pg, redis, work, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
                      OTEL_SERVICE_NAME="keel", OTEL_BSP_SCHEDULE_DELAY="200ms")
    proxy = Proxy(kind, cluster.ports, work / kind)
    yield proxy, cluster
    proxy.stop()
    problems = cluster.stop()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def wrk(url, seconds, connections=16, threads=2):
    """Starts wrk against url; returns a handle whose .result() waits and
    parses the summary: requests, non_2xx, socket errors."""
    p = subprocess.Popen(["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
                          "--timeout", "10s", url], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)

    class Run:
        def stop(self):
            """Ends the run now (wrk prints its summary on SIGINT)."""
            p.send_signal(signal.SIGINT)

        def result(self):
            out = p.communicate(timeout=seconds + 60)[0]
            m = re.search(r"(\d+) requests in", out)
            assert m, out
            errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            return {"requests": int(m.group(1)),
                    "non_2xx": int(non2.group(1)) if non2 else 0,
                    "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
                    "output": out}
    return Run()
