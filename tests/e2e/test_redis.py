"""Redis end to end (docs/distributed.md): a real redis-server on a free
loopback port (tests/e2e/redisproc.py), two keel instances sharing it, and
faults — Redis killed under load and restarted."""
import json
import threading
import time

from conftest import SLACK, run_cli, wait_for  # noqa: F401 - wait_for used by other modules
from promtext import parse as parse_metrics
from rawhttp import get
from test_rate_limit import Client

LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_BURST": "0"}
# Short timeouts so faults are noticed and recovered from within a test.
FAST = {"REDIS_COMMAND_TIMEOUT": "300ms", "REDIS_CONNECT_TIMEOUT": "300ms",
        "REDIS_RECONNECT_MAX": "300ms", "BREAKER_FAILURE_THRESHOLD": "3",
        "BREAKER_RECOVERY_TIMEOUT": "500ms"}


def metric(srv, family, **labels):
    """The sum of the samples of `family` matching labels, None when none."""
    m = parse_metrics(get(srv.port, "/metrics").text)
    found = [s for s in m.find(family)
             if all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(s.value for s in found) if found else None


def health(srv):
    import json
    return json.loads(get(srv.port, "/health/detailed", timeout=10 * SLACK).text)


def test_global_limit_holds_across_two_instances(keel, redis_server):
    env = dict(LIMITED, REDIS_URL=redis_server.url, RATE_LIMIT_STRICT="10/1m")
    a, b = keel(**env), keel(**env)
    ca, cb = Client(a.port), Client(b.port)
    statuses = []
    for i in range(30):
        c = ca if i % 2 == 0 else cb
        statuses.append(c.get("/distributed/rate-limit/test")[0])
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20
    assert statuses[:10] == [200] * 10
    # the state is Redis's: one key, under the prefix, with a TTL
    assert redis_server.command("EXISTS", "keel:rl:strict:ip:127.0.0.1") == 1
    assert 0 < redis_server.command("PTTL", "keel:rl:strict:ip:127.0.0.1") <= 60000
    assert metric(a, "redis_commands_total", command="EVALSHA") >= 1
    h = health(a)
    assert h["checks"]["redis"]["status"] == "pass" and not h["checks"]["redis"]["critical"]
    assert "PING" in h["checks"]["redis"]["detail"]


def test_burst_and_route_tier_in_one_round_trip(keel, redis_server):
    """Burst and the route's tier: one EVALSHA per request, checked in
    that order and stopping at the first refusal — a request the route's
    tier refuses is still charged to the burst tier (docs/rate-limiting.md)."""
    srv = keel(REDIS_URL=redis_server.url, RATE_LIMIT_ENABLED="true",
               RATE_LIMIT_BURST="6/1m", RATE_LIMIT_STRICT="3/1m")
    c = Client(srv.port)
    path = "/distributed/rate-limit/test"
    assert c.get(path)[0] == 200  # loads the script (EVALSHA, maybe EVAL)
    before = metric(srv, "redis_commands_total", command="EVALSHA")
    seen = []
    for _ in range(6):
        status, headers, body = c.get(path)
        seen.append((status, json.loads(body).get("tier") if status == 429 else
                     headers.get("ratelimit-limit")))
    # 2 more within strict's 3, 3 refused by strict (charged to burst: 6
    # of 6 used), then burst refuses
    assert seen == [(200, "3"), (200, "3"), (429, "strict"), (429, "strict"),
                    (429, "strict"), (429, "burst")], seen
    assert metric(srv, "redis_commands_total", command="EVALSHA") - before == 6
    assert redis_server.command("EXISTS", "keel:rl:burst:ip:127.0.0.1") == 1
    assert redis_server.command("EXISTS", "keel:rl:strict:ip:127.0.0.1") == 1
    c.close()


def test_concurrent_checks_are_exact(keel, redis_server):
    """Many clients at once on two instances: exactly the limit passes."""
    env = dict(LIMITED, REDIS_URL=redis_server.url, RATE_LIMIT_STRICT="25/1m")
    servers = [keel(**env), keel(**env)]
    results = []
    lock = threading.Lock()

    def run(srv):
        c = Client(srv.port)
        for _ in range(10):
            s = c.get("/distributed/rate-limit/test")[0]
            with lock:
                results.append(s)
        c.close()

    threads = [threading.Thread(target=run, args=(servers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert results.count(200) == 25, results


def test_kill_redis_under_load_then_restart(keel, redis_server, report):
    srv = keel(REDIS_URL=redis_server.url, RATE_LIMIT_STRICT="5/1m", RATE_LIMIT_MAX="1000000",
               **LIMITED, **FAST)
    stop = threading.Event()
    seen = {}
    errors = []
    lock = threading.Lock()

    def load():
        c = Client(srv.port)
        while not stop.is_set():
            try:
                t0 = time.monotonic()
                s = c.get("/hello")[0]
                dt = time.monotonic() - t0
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
                return
            with lock:
                seen[s] = seen.get(s, 0) + 1
                seen["max_s"] = max(seen.get("max_s", 0), dt)
        c.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    def served():
        with lock:
            return sum(v for k, v in seen.items() if k != "max_s") >= 20 or errors

    try:
        wait_for(served, 10, "the load to get going")
        redis_server.kill()
        # answered throughout (RATE_LIMIT_FAIL_OPEN=true), the breaker opens,
        # health says degraded (Redis is not critical)
        wait_for(lambda: metric(srv, "circuit_breaker_state", name="redis") == 1, 10,
                 "the breaker to open")
        h = health(srv)
        assert h["status"] == "degraded", h
        assert h["checks"]["redis"]["status"] == "fail"
        assert "redis open" in h["checks"]["circuit_breakers"]["detail"]
        assert get(srv.port, "/health/ready").status == 200
        # A fixed outage, on purpose: the load keeps running against a
        # Redis that stays down this long (nothing to poll for).
        time.sleep(1.0)
        redis_server.restart()
        wait_for(lambda: health(srv)["status"] == "healthy", 15, "health to recover")
        wait_for(lambda: metric(srv, "circuit_breaker_state", name="redis") == 0, 15,
                 "the breaker to close")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30 * SLACK)
    assert not errors, errors
    assert set(k for k in seen if k != "max_s") == {200}, seen
    assert seen["max_s"] < 2.0 * SLACK, seen  # no request waited on the dead Redis
    report("%d requests during the outage and recovery, slowest %.0f ms"
           % (seen[200], seen["max_s"] * 1000))
    assert metric(srv, "redis_errors_total") > 0
    assert metric(srv, "circuit_breaker_transitions_total", name="redis", to="open") >= 1
    # shared limits resume on the new (empty) Redis
    c = Client(srv.port)
    wait_for(lambda: c.get("/distributed/rate-limit/test")[0] == 200 and
             redis_server.command("EXISTS", "keel:rl:strict:ip:127.0.0.1") == 1, 10,
             "limits to be counted in Redis again")
    statuses = [c.get("/distributed/rate-limit/test")[0] for _ in range(6)]
    assert statuses.count(200) == 4 and statuses[-1] == 429, statuses


def test_fail_closed_answers_503_while_redis_is_down(keel, redis_server):
    srv = keel(REDIS_URL=redis_server.url, RATE_LIMIT_FAIL_OPEN="false", **LIMITED, **FAST)
    assert get(srv.port, "/hello").status == 200
    redis_server.kill()
    r = get(srv.port, "/hello", timeout=10 * SLACK)
    assert r.status == 503
    assert r.header("retry-after")
    # the health probes are exempt from the limiter and keep answering
    assert get(srv.port, "/health/live").status == 200


def test_redis_unset_uses_in_process_fallbacks(keel):
    srv = keel(RATE_LIMIT_STRICT="2/1m", **LIMITED)
    c = Client(srv.port)
    assert [c.get("/distributed/rate-limit/test")[0] for _ in range(3)] == [200, 200, 429]
    h = health(srv)
    assert "redis" not in h["checks"]
    assert h["checks"]["circuit_breakers"]["status"] == "pass"


def test_invalid_redis_url_stops_start_up(tmp_path):
    for url, why in (("redis://", "invalid value"),
                     ("redis://no-such-host.invalid:6379/0", "cannot resolve"),
                     ("redis://127.0.0.1:99999/0", "invalid value")):
        res = run_cli(["serve"], env={"REDIS_URL": url, "PORT": "0"}, cwd=tmp_path)
        assert res.returncode == 2, (url, res.stderr)
        assert "REDIS_URL" in res.stderr and why in res.stderr, res.stderr
