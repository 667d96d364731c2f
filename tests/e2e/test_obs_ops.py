"""Metrics, deep health and the ops endpoints (docs/observability.md):
series exported at 0 from the start, `promtool check metrics`, a real
Prometheus scraping keel, the health checks and their cache, the breaker
closed by the Redis health check after an outage, and the admin-only
/api/v1/admin/{loggers,config,info,routes,workers}."""
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

import rawhttp
from conftest import REPO, SLACK, free_port, run_cli, wait_for
from promtext import parse

SECRET = "obs-test-secret-0123456789abcdef0123456789"
PW = "correct horse battery staple"
ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1"}


def get(srv, path, **headers):
    return requests.get(srv.url + path, headers=headers, timeout=10 * SLACK)


def cli(srv, env, args):
    p = run_cli(args, env=env, cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def metrics(srv):
    return parse(rawhttp.get(srv.port, "/metrics", timeout=5 * SLACK).text)


def sel(m, family, **labels):
    """The samples of family with these labels (a label may be called
    "name", which Metrics.find cannot take)."""
    return [s for s in m.find(family) if all(s.labels.get(k) == v for k, v in labels.items())]


def breaker_state(srv):
    found = sel(metrics(srv), "circuit_breaker_state", name="redis")
    return found[0].value if found else None


# ---------------------------------------------------------------- metrics

def test_series_known_at_start_are_exported_at_zero(keel):
    srv = keel(**dict(ENV, RATE_LIMIT_ENABLED="true", RATE_LIMIT_TIERS="reports=10/1m"))
    m = metrics(srv)
    # one series per tier, at 0, before any request was refused
    for tier in ("general", "strict", "auth", "public", "burst", "reports"):
        assert m.find("rate_limit_rejections_total", tier=tier), tier
        assert m.value("rate_limit_rejections_total", tier=tier) == 0
    for kind in ("constraint", "unavailable", "timeout", "sql", "other"):
        assert m.find("db_errors_total", kind=kind), kind
    for reason in ("loop_lag", "in_flight", "memory"):
        assert m.find("load_shed_total", reason=reason), reason
    # unlabelled counters have their one series from the start
    for fam in ("rate_limit_store_errors_total", "cache_errors_total", "locks_acquired_total",
                "events_published_total"):
        assert m.find(fam), fam
    # every class of every route, e.g. the login route's 5xx
    assert m.find("http_responses_total", method="POST", route="/api/v1/auth/login",
                  **{"class": "5xx"})
    # loop lag per worker (WORKERS=2) and the pools' figures
    for w in ("0", "1"):
        assert m.find("event_loop_delay_seconds_count", worker=w), w
        assert m.find("event_loop_worker_lag_seconds", worker=w), w
    for pool in ("work", "db", "health"):
        assert m.find("work_pool_queue_depth", pool=pool), pool
        assert m.find("work_pool_threads", pool=pool)[0].value >= 1
        assert m.find("work_pool_wait_seconds_count", pool=pool), pool
    assert not m.find("event_loop_delay_seconds_count", worker="2")


def test_responses_by_class_and_pool_wait_are_counted(keel):
    srv = keel(**ENV)
    before = metrics(srv)
    for _ in range(3):
        assert get(srv, "/api/v1/users/1").status_code == 401
    r = requests.post(srv.url + "/api/v1/auth/login", json={"email": "a@example.com",
                                                           "password": "x" * 12},
                      timeout=10 * SLACK)
    assert r.status_code == 401
    m = metrics(srv)
    assert m.value("http_responses_total", method="GET", route="/api/v1/users/:id",
                   **{"class": "4xx"}) == 3
    # the login looked the user up on the db pool: its wait was observed
    assert (m.value("work_pool_wait_seconds_count", pool="db")
            > before.value("work_pool_wait_seconds_count", pool="db"))


def test_promtool_accepts_metrics(keel, redis_server):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not installed (Debian package prometheus; scripts/deps.sh test)")
    srv = keel(**dict(ENV, REDIS_URL=redis_server.url, RATE_LIMIT_ENABLED="true"))
    get(srv, "/health/detailed")
    get(srv, "/api/v1/users/1")
    text = rawhttp.get(srv.port, "/metrics", timeout=5 * SLACK).text
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    m = parse(text)
    for to in ("closed", "open", "half_open"):
        assert sel(m, "circuit_breaker_transitions_total", name="redis", to=to), to
    for kind in ("timeout", "connection", "reply", "unavailable"):
        assert m.find("redis_errors_total", kind=kind), kind


def test_real_prometheus_scrapes_keel(keel, tmp_path):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.fail("prometheus not installed (Debian package prometheus; scripts/deps.sh test)")
    srv = keel(**ENV)
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n  - job_name: keel\n    static_configs:\n"
                   "      - targets: ['127.0.0.1:%d']\n" % srv.port)
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen([prom, "--config.file=%s" % cfg,
                             "--storage.tsdb.path=%s" % (tmp_path / "data"),
                             "--web.listen-address=127.0.0.1:%d" % port,
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    api = "http://127.0.0.1:%d/api/v1/" % port
    try:
        def target_up():
            try:
                r = requests.get(api + "targets", timeout=2)
            except requests.ConnectionError:
                return None
            if r.status_code != 200:  # 503 "Service Unavailable" while it starts
                return None
            active = r.json()["data"]["activeTargets"]
            return active and active[0]["health"] == "up" and active[0]
        t = wait_for(target_up, timeout=20, what="prometheus to scrape keel", interval=0.2)
        assert t["labels"]["job"] == "keel"
        get(srv, "/api/v1/users/1")

        def query(q):
            r = requests.get(api + "query", params={"query": q}, timeout=2).json()
            assert r["status"] == "success", r
            return r["data"]["result"]
        assert query("up{job='keel'}")[0]["value"][1] == "1"
        wait_for(lambda: query("http_requests_total{route='/api/v1/users/:id',status='401'}"),
                 timeout=10, what="http_requests_total in prometheus", interval=0.2)
        for q in ("locks_acquired_total", "event_loop_delay_seconds_bucket",
                  "work_pool_queue_depth{pool='work'}", "process_resident_memory_bytes",
                  "http_responses_total{class='5xx'}"):
            assert query(q), q
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_loop_lag_is_measured_per_worker(keel):
    srv = keel(**dict(ENV, WORKERS=1))
    assert get(srv, "/block?ms=400").status_code == 200  # blocks the only loop
    def late_sample():
        m = metrics(srv)
        n = m.value("event_loop_delay_seconds_count", worker="0")
        fast = m.value("event_loop_delay_seconds_bucket", worker="0", le="0.25")
        return n - fast >= 1 and m
    wait_for(late_sample, timeout=3, what="a lag sample over 250 ms on worker 0")
    key = cli(srv, ENV, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    w = get(srv, "/api/v1/admin/workers", **{"X-API-Key": key}).json()["workers"]
    assert len(w) == 1 and w[0]["loop_lag_max_ms"] >= 250, w


# ---------------------------------------------------------------- health

def detailed(srv):
    r = get(srv, "/health/detailed")
    return r.status_code, r.json()


def test_detailed_health_reports_every_check(keel):
    srv = keel(**ENV)
    code, doc = detailed(srv)
    assert code == 200 and doc["status"] == "healthy", doc
    for name in ("disk", "memory", "work_pool", "circuit_breakers", "event_loop", "database"):
        c = doc["checks"][name]
        assert c["status"] == "pass" and c["latency_ms"] >= 0, (name, c)
    assert doc["checks"]["disk"]["data"]["free_bytes"] > 0
    assert doc["checks"]["memory"]["data"]["rss_bytes"] > 0
    assert ({p["pool"] for p in doc["checks"]["work_pool"]["data"]["pools"]}
            == {"work", "db", "health"})


def test_low_disk_degrades_and_memory_over_limit_is_unhealthy(keel):
    srv = keel(**dict(ENV, HEALTH_DISK_MIN_FREE="100000000gb", MEMORY_LIMIT="1mb"))
    code, doc = detailed(srv)
    assert code == 503 and doc["status"] == "unhealthy", doc
    assert doc["checks"]["disk"]["status"] == "warn", doc["checks"]["disk"]
    assert "below HEALTH_DISK_MIN_FREE" in doc["checks"]["disk"]["detail"]
    assert doc["checks"]["memory"]["status"] == "fail" and doc["checks"]["memory"]["critical"]
    assert get(srv, "/health/ready").status_code == 503
    # the disk alone only degrades
    srv2 = keel(**dict(ENV, HEALTH_DISK_MIN_FREE="100000000gb", MEMORY_LIMIT="64gb"))
    code, doc = detailed(srv2)
    assert code == 200 and doc["status"] == "degraded", doc
    assert doc["checks"]["memory"]["status"] == "pass"
    assert get(srv2, "/health/ready").status_code == 200


def test_saturated_work_pool_degrades_and_inline_checks_still_answer(keel):
    import threading
    srv = keel(**dict(ENV, WORK_POOL_SIZE=1, WORK_QUEUE_MAX=4, HEALTH_POOL_SATURATION=50))
    # one job runs, four wait: the queue stays at least 3/4 full for two jobs
    threads = [threading.Thread(target=get, args=(srv, "/work?ms=1000")) for _ in range(5)]
    for t in threads:
        t.start()
    wait_for(lambda: metrics(srv).value("work_pool_queue_depth", pool="work") >= 3,
             timeout=5, what="three jobs queued behind the busy thread")
    code, doc = detailed(srv)
    assert code == 200 and doc["status"] == "degraded", doc
    wp = doc["checks"]["work_pool"]
    assert wp["status"] == "warn", wp
    work = [p for p in wp["data"]["pools"] if p["pool"] == "work"][0]
    assert work["busy"] == 1 and work["queued"] >= 3 and work["saturation"] >= 0.5, work
    # the other checks run on the health pool: they answer all the same
    for name in ("disk", "memory", "database"):
        assert doc["checks"][name]["status"] == "pass", (name, doc["checks"][name])
    for t in threads:
        t.join()


def test_probe_storm_runs_the_checks_about_once_per_ttl(keel):
    srv = keel(**ENV)  # HEALTH_CACHE_TTL=1s
    s = requests.Session()
    runs0 = s.get(srv.url + "/health/detailed").json()["cache"]["runs"]
    t0 = time.monotonic()
    for i in range(200):
        r = s.get(srv.url + ("/health/ready" if i % 2 else "/health/detailed"))
        assert r.status_code == 200
    elapsed = time.monotonic() - t0
    runs = s.get(srv.url + "/health/detailed").json()["cache"]["runs"] - runs0
    assert runs <= elapsed / 1.0 + 2, (runs, elapsed)
    # without the cache every probe runs them: the counter does count
    srv2 = keel(**dict(ENV, HEALTH_CACHE_TTL="0"))
    r0 = s.get(srv2.url + "/health/detailed").json()["cache"]["runs"]
    for _ in range(20):
        s.get(srv2.url + "/health/detailed")
    assert s.get(srv2.url + "/health/detailed").json()["cache"]["runs"] - r0 == 21


def test_breaker_left_open_closes_once_redis_is_back_without_traffic(keel, redis_server):
    env = dict(ENV, REDIS_URL=redis_server.url, RATE_LIMIT_ENABLED="true",
               BREAKER_FAILURE_THRESHOLD="2", BREAKER_RECOVERY_TIMEOUT="1s",
               REDIS_RECONNECT_MAX="200ms", REDIS_COMMAND_TIMEOUT="200ms",
               REDIS_CONNECT_TIMEOUT="300ms", HEALTH_CACHE_TTL="200ms")
    srv = keel(**env)
    wait_for(lambda: detailed(srv)[1]["status"] == "healthy", timeout=10, what="healthy")
    redis_server.kill()
    # traffic through the limiter (on Redis) opens the breaker
    def opened():
        get(srv, "/distributed/rate-limit/test")
        return breaker_state(srv) == 1
    wait_for(opened, timeout=10, what="the redis breaker to open")
    wait_for(lambda: detailed(srv)[1]["status"] == "degraded", timeout=5, what="degraded")
    redis_server.restart()
    # no traffic now, only probes: the redis check closes the breaker
    doc = wait_for(lambda: (lambda d: d["status"] == "healthy" and d)(detailed(srv)[1]),
                   timeout=10, what="healthy again without traffic", interval=0.2)
    assert doc["checks"]["circuit_breakers"]["data"]["redis"]["state"] == "closed"
    assert breaker_state(srv) == 0


# ---------------------------------------------------------------- ops endpoints

OPS = ["/api/v1/admin/loggers", "/api/v1/admin/config", "/api/v1/admin/info",
       "/api/v1/admin/routes", "/api/v1/admin/workers"]


@pytest.fixture(scope="module")
def ops(keel_module):
    srv = keel_module(**ENV)
    key = cli(srv, ENV, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    cli(srv, dict(ENV, KEEL_ADMIN_PASSWORD=PW),
        ["user", "create", "--email", "plain@example.com", "--role", "user"])
    tok = requests.post(srv.url + "/api/v1/auth/login",
                        json={"email": "plain@example.com", "password": PW}).json()
    return srv, {"X-API-Key": key}, {"Authorization": "Bearer " + tok["access_token"]}


def test_ops_endpoints_refuse_anonymous_and_non_admins(ops):
    srv, admin, user = ops
    for path in OPS:
        assert get(srv, path).status_code == 401, path
        assert get(srv, path, **user).status_code == 403, path
        assert get(srv, path, **admin).status_code == 200, path
    r = requests.put(srv.url + OPS[0], json={"level": "debug"}, headers=user)
    assert r.status_code == 403
    assert requests.put(srv.url + OPS[0], json={"level": "debug"}).status_code == 401


def test_loggers_set_levels_per_module(ops):
    srv, admin, _ = ops
    put = lambda body: requests.put(srv.url + OPS[0], json=body, headers=admin,
                                    timeout=10 * SLACK)
    for bad in ({"level": "verbose"}, {"level": "loud", "module": "mw.access_log"},
                {"level": "debug", "module": "Bad Name!"}, {"level": "inherit"}):
        r = put(bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
    assert put({}).status_code == 422
    get(srv, "/ping")
    doc = get(srv, OPS[0], **admin).json()
    assert doc["root"] == "info"
    assert doc["modules"]["mw.access_log"]["effective"] == "info"
    # the access log (info lines of mw.access_log) goes quiet for this module only
    r = put({"module": "mw.access_log", "level": "warn"})
    assert r.status_code == 200, r.text
    assert r.json()["modules"]["mw.access_log"]["configured"] == "warn"
    rid = "quiet-%d" % time.monotonic_ns()
    assert requests.get(srv.url + "/ping", headers={"X-Request-Id": rid}).status_code == 200
    time.sleep(0.3 * SLACK)  # a line that must NOT appear: give it time to
    assert rid not in srv.stdout()
    # a parent module's level covers its children; inherit drops the module's own
    r = put({"module": "mw", "level": "error"})
    assert r.json()["modules"]["mw.access_log"]["effective"] == "warn"
    put({"module": "mw.access_log", "level": "inherit"})
    doc = get(srv, OPS[0], **admin).json()
    assert doc["modules"]["mw.access_log"]["configured"] is None
    assert doc["modules"]["mw.access_log"]["effective"] == "error"
    put({"module": "mw", "level": "inherit"})
    rid = "loud-%d" % time.monotonic_ns()
    requests.get(srv.url + "/ping", headers={"X-Request-Id": rid})
    wait_for(lambda: rid in srv.stdout(), timeout=3, what="the access log line again")
    # the root level at run time
    assert put({"module": "root", "level": "warn"}).json()["root"] == "warn"
    assert put({"level": "info"}).json()["root"] == "info"


def test_log_levels_from_the_environment(keel, tmp_path):
    srv = keel(**dict(ENV, LOG_LEVELS="mw.access_log=warn, store=debug"))
    key = cli(srv, ENV, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    doc = get(srv, OPS[0], **{"X-API-Key": key}).json()
    assert doc["modules"]["mw.access_log"]["configured"] == "warn"
    assert doc["modules"]["store"]["configured"] == "debug"
    rid = "env-quiet-%d" % time.monotonic_ns()
    requests.get(srv.url + "/ping", headers={"X-Request-Id": rid})
    time.sleep(0.3 * SLACK)  # a line that must NOT appear: give it time to
    assert rid not in srv.stdout()
    p = run_cli(["serve", "--print-config"], env=dict(ENV, LOG_LEVELS="store=loud"),
                cwd=tmp_path)
    assert p.returncode == 2 and "LOG_LEVELS" in p.stderr, p.stderr


def test_config_is_redacted_and_by_module(ops):
    srv, admin, _ = ops
    r = get(srv, OPS[1], **admin)
    assert r.headers["Cache-Control"] == "no-store"
    assert SECRET not in r.text
    mods = {m["name"]: {v["name"]: v for v in m["variables"]} for m in r.json()["modules"]}
    assert mods["app"]["JWT_SECRET"]["value"] == "[REDACTED]"
    assert mods["app"]["JWT_SECRET"]["secret"] is True
    assert mods["app"]["JWT_SECRET"]["source"] == "environment"
    assert mods["health"]["HEALTH_CACHE_TTL"]["value"] == "1000ms"
    assert mods["health"]["HEALTH_CACHE_TTL"]["source"] == "default"
    assert mods["core"]["WORKERS"]["value"] == "2"


def test_info_has_build_and_libraries(ops):
    srv, admin, _ = ops
    doc = get(srv, OPS[2], **admin).json()
    b = doc["build"]
    assert b["version"] and b["compiler"]
    assert b["git_revision"]
    # the binary was built from a commit of this repository (maybe not HEAD)
    if os.path.isdir(REPO / ".git") or (REPO / ".git").is_file():
        p = subprocess.run(["git", "cat-file", "-e", b["git_revision"] + "^{commit}"],
                           cwd=REPO, capture_output=True)
        assert p.returncode == 0, b
    libs = doc["libraries"]
    for name in ("libuv", "jansson", "sqlite", "zlib", "libsodium", "hiredis"):
        assert libs[name] and libs[name][0].isdigit(), (name, libs[name])
    assert libs["libcurl"]["version"][0].isdigit()
    assert libs["libpq"]["loaded"] is False  # SQLite: libpq is never loaded


def test_routes_table(ops):
    srv, admin, _ = ops
    doc = get(srv, OPS[3], **admin).json()
    by = {(r["method"], r["path"]): r for r in doc["routes"]}
    assert doc["count"] == len(doc["routes"])
    r = by[("PUT", "/api/v1/admin/loggers")]
    assert r["auth"] == "any" and r["permission"] == "admin:access" and r["tier"] == "general"
    assert r["validates"]["body"] is True
    assert by[("GET", "/health/detailed")]["tier"] == "exempt"
    assert by[("GET", "/health/detailed")]["auth"] == "none"
    assert by[("POST", "/api/v1/auth/login")]["tier"] == "auth"


def test_workers_view(ops):
    srv, admin, _ = ops
    before = get(srv, OPS[4], **admin).json()
    s = requests.Session()
    for _ in range(10):
        s.get(srv.url + "/ping")
    doc = get(srv, OPS[4], **admin).json()
    assert [w["worker"] for w in doc["workers"]] == [0, 1]
    for w in doc["workers"]:
        assert w["loop_lag_ms"] >= 0 and w["loop_lag_max_ms"] >= w["loop_lag_ms"]
        assert w["requests_in_flight"] >= 0 and w["connections_open"] >= 0
    served = sum(w["requests_total"] for w in doc["workers"])
    assert served - sum(w["requests_total"] for w in before["workers"]) >= 11
    assert doc["total"]["requests_total"] == served
    assert {p["pool"] for p in doc["pools"]} == {"work", "db", "health"}
