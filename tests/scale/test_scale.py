"""Through a real proxy in front of three instances on one PostgreSQL and
one Redis: shared rate limits, cache and locks; a rolling restart under
load with no failed request; an instance killed under load, the failures
counted. docs/deploy.md describes the recipe these tests prove."""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ADMIN_PW, e2e, record, wrk

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


def admin_token(proxy, cluster):
    if not hasattr(cluster, "admin_token"):
        cluster.cli(["user", "create", "--email", "root@example.com", "--role", "admin"])
        r = requests.post(proxy.url + "/api/v1/auth/login", timeout=30,
                          json={"email": "root@example.com", "password": ADMIN_PW})
        assert r.status_code == 200, r.text
        cluster.admin_token = r.json()["access_token"]
    return cluster.admin_token


@pytest.mark.one_proxy
def test_jobs_enqueued_through_the_proxy_run_exactly_once(stack):
    """10,000 jobs enqueued through the proxy (so on every instance, in
    batches of 1,000: POST /api/v1/admin/jobs) are run once each by the
    three instances' runners on one PostgreSQL: every row completed on its
    first attempt, and the handlers' executions summed over the instances'
    jobs_completed_total is exactly 10,000, none discarded."""
    proxy, cluster = stack
    h = {"Authorization": "Bearer " + admin_token(proxy, cluster)}
    n, batch = 10000, 1000
    t0 = time.monotonic()
    for b in range(n // batch):
        r = requests.post(proxy.url + "/api/v1/admin/jobs", headers=h, timeout=60, json={
            "jobs": [{"kind": "system.noop", "queue": "scale", "args": {"i": b * batch + i}}
                     for i in range(batch)]})
        assert r.status_code == 201 and len(r.json()["ids"]) == batch, r.text

    def completed():
        r = requests.get(proxy.url + "/api/v1/admin/job-queues", headers=h, timeout=30)
        q = [q for q in r.json()["queues"] if q["queue"] == "scale"]
        return q[0].get("completed", 0) if q else 0
    e2e.wait_for(lambda: completed() >= n, timeout=120, interval=0.5, what="10,000 jobs run")
    took = time.monotonic() - t0
    per = [e2e.scrape_metric(node.port, "jobs_completed_total", queue="scale",
                             result="completed") or 0 for node in cluster.nodes]
    assert sum(per) == n, per  # each job's handler ran once, on some instance
    assert sum(e2e.scrape_metric(node.port, "jobs_completed_total", queue="scale",
                                 result="discarded") or 0 for node in cluster.nodes) == 0
    assert sum(1 for x in per if x > 0) >= 2, per  # the instances shared the queue
    assert completed() == n
    record("jobs_%s" % proxy.kind, seconds=round(took, 1), per_instance=per)


@pytest.mark.one_proxy
def test_trace_crosses_two_services_as_one(stack, otlp, tmp_path):
    """orders-service calls the reference service through the proxy; the
    caller's traceparent is continued by both, and the OTLP receiver gets
    one trace: orders-service's server span, its client span, and the
    reference instance's server span whose parent is that client span."""
    proxy, cluster = stack
    key = cluster.cli(["apikey", "create", "--name", "orders-%s" % proxy.kind,
                       "--scopes", "users:read"]).splitlines()[-1].strip()
    r = requests.post(proxy.url + "/api/v1/auth/register", timeout=30, json={
        "email": "ann-%s@example.com" % proxy.kind, "password": "correct horse battery staple"})
    assert r.status_code == 201, r.text
    uid = r.json()["user"]["id"]
    binary = str(Path(os.environ.get("KEEL_BIN") or e2e.REPO / "build" / "keel").parent /
                 "orders-service")
    port = e2e.free_port()
    env = e2e.build_env({"PORT": str(port), "WORKERS": "1", "ORDERS_API_URL": proxy.url,
                         "ORDERS_API_KEY": key, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
                         "OTEL_SERVICE_NAME": "orders", "OTEL_BSP_SCHEDULE_DELAY": "200ms"})
    log = open(tmp_path / "orders.log", "wb")
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = "http://127.0.0.1:%d" % port
        def up():
            assert proc.poll() is None, (tmp_path / "orders.log").read_text()[-3000:]
            try:
                return requests.get(url + "/health/live", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        e2e.wait_for(up, timeout=15, what="orders-service up")
        trace = os.urandom(16).hex()
        r = requests.post(url + "/orders", timeout=60,
                          headers={"traceparent": "00-%s-%s-01" % (trace, os.urandom(8).hex())},
                          json={"customer_id": uid, "item": "keel mug", "quantity": 1})
        assert r.status_code == 201, r.text
        def by_service():
            out = {}
            for sp in otlp.spans():
                if sp["traceId"] == trace:
                    out.setdefault(sp["_resource"].get("service.name"), []).append(sp)
            return out
        # each process exports on its own schedule: wait for both
        e2e.wait_for(lambda: set(by_service()) == {"orders", "keel"}, timeout=15,
                     what="the trace's spans from both services")
        by_service = by_service()
        client = [sp for sp in by_service["orders"] if sp.get("kind") == 3]  # SPAN_KIND_CLIENT
        served = [sp for sp in by_service["keel"] if sp.get("kind") == 2]   # SPAN_KIND_SERVER
        assert client and served, by_service
        assert served[0]["parentSpanId"] == client[0]["spanId"], (served[0], client[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_websocket_room_message_crosses_instances(stack):
    """A member connected to instance 1 and one connected through the
    proxy (its WebSocket upgrade) receive a room message sent on instance
    3: stored there, published on the shared Redis bus, delivered by the
    others (docs/realtime.md)."""
    import asyncio
    import json
    import websockets
    proxy, cluster = stack
    one, three = cluster.nodes[0], cluster.nodes[2]
    pw = "correct horse battery staple"

    def user(name):
        r = requests.post(proxy.url + "/api/v1/auth/register", timeout=30, json={
            "email": "%s-%s@example.com" % (name, proxy.kind), "password": pw})
        assert r.status_code == 201, r.text
        return r.json()["access_token"]
    ann, bob, cat = user("ws-ann"), user("ws-bob"), user("ws-cat")
    r = requests.post(proxy.url + "/api/v1/rooms", timeout=30, json={"name": "scale"},
                      headers={"Authorization": "Bearer " + ann})
    assert r.status_code == 201, r.text
    room = r.json()["id"]

    def ticket(base, tok):
        r = requests.post(base + "/api/v1/realtime/ticket", timeout=30,
                          headers={"Authorization": "Bearer " + tok})
        assert r.status_code == 201, r.text
        return r.json()["ticket"]

    async def main():
        async def connect(base, tok):
            ws = await websockets.connect(base.replace("http", "ws", 1) + "/ws?ticket=" +
                                          ticket(base, tok), open_timeout=20)
            assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "welcome"
            await ws.send(json.dumps({"type": "room:join", "id": "j", "room": room}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m.get("id") == "j":
                    assert m["type"] == "ack", m
                    return ws

        async def received(ws, body):
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m.get("type") == "message:received" and m["message"]["body"] == body:
                    return m
        b = await connect(one.url, bob)           # on instance 1
        c = await connect(proxy.url, cat)         # through the proxy's upgrade
        a = await connect(three.url, ann)         # the sender, on instance 3
        body = "hello across instances via %s" % proxy.kind
        await a.send(json.dumps({"type": "message:send", "id": "s", "room": room, "body": body}))
        mb, mc = await received(b, body), await received(c, body)
        assert mb["message"]["seq"] == mc["message"]["seq"] == 1, (mb, mc)
        for ws in (a, b, c):
            await ws.close()
    asyncio.run(asyncio.wait_for(main(), 90))


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
