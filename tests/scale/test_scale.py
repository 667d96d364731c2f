"""Through a real proxy in front of three instances on one PostgreSQL and
one Redis: shared rate limits, cache and locks; a rolling restart under
load with no failed request; an instance killed under load, the failures
counted. docs/deploy.md describes the recipe these tests prove."""
import signal
import threading
import time

import requests

from conftest import e2e, record, wrk

HELLO = "/hello"


def admin_key(cluster):
    if not hasattr(cluster, "admin_key"):
        cluster.admin_key = cluster.cli(["apikey", "create", "--name", "scale",
                                         "--scopes", "admin:access"])
    return cluster.admin_key


def test_every_instance_serves_through_the_proxy(stack):
    proxy, cluster = stack
    seen = set()
    s = requests.Session()
    for _ in range(30):
        r = s.get(proxy.url + "/distributed/info", timeout=10)
        assert r.status_code == 200, r.text
        seen.add(r.json()["instance_id"])
    assert seen == {"keel1", "keel2", "keel3"}, seen


def test_rate_limit_is_global_not_per_instance(stack):
    """RATE_LIMIT_STRICT=20/10m: 20 answers through the proxy in total, not
    20 per instance; the limit applies to the client behind the proxy."""
    proxy, cluster = stack
    codes = []
    for _ in range(45):
        r = requests.get(proxy.url + "/distributed/rate-limit/test", timeout=10)
        codes.append(r.status_code)
        if r.status_code == 200:
            # TRUST_PROXY: the client behind the proxy, from X-Forwarded-For
            assert r.json()["client"] == "127.0.0.1", r.text
    assert codes.count(200) == 20, codes
    assert codes.count(429) == 25, codes


def test_cache_and_lock_are_shared(stack):
    proxy, cluster = stack
    key = admin_key(cluster)
    h = {"X-API-Key": key}
    a, b, c = (n.url for n in cluster.nodes)
    r = requests.put(a + "/distributed/cache/scale-%s" % proxy.kind, json={"value": proxy.kind},
                     headers=h, timeout=10)
    assert r.status_code in (200, 201, 204), r.text
    r = requests.get(c + "/distributed/cache/scale-%s" % proxy.kind, headers=h, timeout=10)
    assert r.status_code == 200 and proxy.kind in r.text, r.text
    lock = "/distributed/lock/scale-%s" % proxy.kind
    r = requests.post(a + lock, json={"ttl_ms": 30000}, headers=h, timeout=10)
    assert r.status_code in (200, 201), r.text
    for other in (b, c):
        r = requests.post(other + lock, json={"ttl_ms": 30000}, headers=h, timeout=10)
        assert r.status_code == 409, r.text


def test_rolling_restart_under_load_fails_nothing(stack):
    """Each instance in turn: SIGTERM (unready first, SHUTDOWN_DELAY, drain),
    a new process on the same port, the proxy back on it — while wrk runs
    through the proxy. Not one failed request, not one non-2xx."""
    proxy, cluster = stack
    run = wrk(proxy.url + HELLO, seconds=60)
    time.sleep(1.5)
    t0 = time.monotonic()
    for i in range(3):
        node = cluster.restart(i)
        # the proxy takes it back (active checks: 2 successes at 1 s)
        # nginx (passive checks) retries a server fail_timeout (5 s) after
        # its refused connects
        e2e.wait_for(lambda: e2e.scrape_metric(node.port, "http_requests_total", route=HELLO) or False,
                     timeout=10, what="traffic on the restarted instance", interval=0.2)
    took = time.monotonic() - t0
    time.sleep(1)
    run.stop()
    res = run.result()
    record("rolling_restart_%s" % proxy.kind, requests=res["requests"],
           non_2xx=res["non_2xx"], socket_errors=res["socket_errors"], restart_s=round(took, 1))
    assert took < 55, "the restarts must finish while wrk still runs"
    assert res["requests"] > 1000, res["output"]
    assert res["non_2xx"] == 0 and res["socket_errors"] == 0, res["output"]


def test_sigkill_one_instance_under_load(stack):
    """SIGKILL: only requests in flight on the killed instance may fail, and
    the proxy routes around it within its health-check interval. The
    number is recorded in the report."""
    proxy, cluster = stack
    run = wrk(proxy.url + HELLO, seconds=8, connections=16)
    time.sleep(2)
    victim = cluster.nodes[1]
    victim.kill()
    killed_at = time.monotonic()
    res = run.result()
    # after the kill, every request succeeds again well within the interval
    ok_since = None
    s = requests.Session()
    for _ in range(200):
        try:
            ok = s.get(proxy.url + HELLO, timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        if ok and ok_since is None:
            ok_since = time.monotonic()
        if not ok:
            ok_since = None
    failed = res["non_2xx"] + res["socket_errors"]
    record("sigkill_%s" % proxy.kind, requests=res["requests"], failed=failed,
           non_2xx=res["non_2xx"], socket_errors=res["socket_errors"])
    assert ok_since is not None and ok_since - killed_at < 10
    # at most the requests in flight at the kill: one per client connection
    assert failed <= 16, res["output"]
    cluster.restart(1, sig=signal.SIGKILL)  # already dead: just start it again
