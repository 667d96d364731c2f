"""The storage layer end to end: the real binary serving GET /db and
GET /db/slow (src/app/demo.c) from SQLite and from a real PostgreSQL 15,
the same tests on both.

The `backend` fixture is module-scoped and parametrized: "sqlite" is a file
in a temporary directory, "postgres" a throw-away cluster this module
starts itself (tests/support/pg_tmp.sh, as the postgres user when run as
root) and destroys at the end. Every server of a backend shares its
database; the first one applies migration 0001 (10,000 seeded items) on
start, the others find it applied.

On both: rows by id, 404 / 400 problem documents, the critical `database`
health check and the db_* metrics, a statement timeout answering 503 in
time (on the pool, /db/slow, and as one asynchronous statement,
/db/sleep), a full pool queue answering 503 + Retry-After while liveness
stays fast, `keel migrate status`, a short burst of concurrent reads, and
requests that end (client gone, handler deadline) while their statement
runs. PostgreSQL only: the database stopped under a running keel answers
503 (never a hang, never a crash), readiness follows it down and back up,
and the same process serves again once the database returns; the
asynchronous path's own queue limit; concurrent reads over two workers.

GET /db and /db/sleep use keel_db_query_async: on PostgreSQL the statement
runs on the worker's loop (its own non-blocking connections), on SQLite on
the pool.
"""
import random
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import promtext
import rawhttp
from conftest import SANITIZED, SLACK, requests_in_flight, run_cli, sanitizer_report, wait_for

REPO = Path(__file__).resolve().parents[2]
PG_TMP = REPO / "tests" / "support" / "pg_tmp.sh"

# Bounds that must stay below the durations they guard against (a 3 s
# query, a 1.5 s pool job), so they cannot simply scale with SLACK.
TIMEOUT_ANSWER_S = 1.5 if SANITIZED else 1.0
LIVENESS_S = 0.1
REJECT_S = 0.5


# ---------------------------------------------------------------- helpers

def item(n):
    """Row n of the `items` table seeded by migration 0001 (both dialects)."""
    return {"id": n, "name": "item %05d" % n, "price_cents": 100 + (n * 7919) % 9900}


def get(srv, target, timeout=10.0):
    return rawhttp.get(srv.port, target, timeout=timeout * SLACK)


def timed_get(srv, target, timeout=10.0):
    t0 = time.monotonic()
    r = get(srv, target, timeout)
    return r, time.monotonic() - t0


def assert_unavailable(resp):
    """503 problem+json with Retry-After: 1."""
    doc = rawhttp.assert_problem(resp, 503)
    assert resp.header("Retry-After") == "1", resp
    return doc


def metrics(srv):
    r = get(srv, "/metrics")
    assert r.status == 200, r
    return promtext.parse(r.text)


def wait_status(srv, target, status, within):
    """Polls target until it answers `status`; returns (response, seconds)."""
    t0 = time.monotonic()
    deadline = t0 + within * SLACK
    last = None
    while True:
        try:
            last = get(srv, target, timeout=5.0)
            if last.status == status:
                return last, time.monotonic() - t0
        except (OSError, AssertionError, ValueError) as e:
            last = e
        assert srv.alive(), "keel exited:\n%s" % srv.stderr()[-3000:]
        if time.monotonic() > deadline:
            raise AssertionError("%s did not answer %d within %.1fs; last: %r"
                                 % (target, status, within * SLACK, last))
        time.sleep(0.1)


def status_rows(text):
    """`keel migrate status` as {version: (name, status)}."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[0].split()[:3] == ["VERSION", "NAME", "STATUS"], text
    return {int(cols[0]): (cols[1], cols[2]) for cols in (line.split() for line in lines[1:])}


# ---------------------------------------------------------------- backends

class PgCluster:
    """A throw-away PostgreSQL cluster (pg_tmp.sh start / stop / restart /
    destroy)."""

    def __init__(self):
        if not PG_TMP.exists():
            pytest.fail("tests/support/pg_tmp.sh is missing", pytrace=False)
        p = self._run("start")
        env = dict(line.replace("export ", "", 1).split("=", 1)
                   for line in p.stdout.splitlines() if line.startswith("export "))
        self.url = env["KEEL_TEST_PG_URL"]
        self.dir = env["KEEL_TEST_PG_DIR"]
        self.running = True

    @staticmethod
    def _run(*args):
        p = subprocess.run([str(PG_TMP)] + list(args), capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            pytest.fail("pg_tmp.sh %s failed: %s" % (" ".join(args), p.stderr), pytrace=False)
        return p

    def stop(self):
        self._run("stop", self.dir)
        self.running = False

    def restart(self):
        self._run("restart", self.dir)
        self.running = True

    def destroy(self):
        subprocess.run([str(PG_TMP), "destroy", self.dir], capture_output=True, timeout=120)


class Backend:
    def __init__(self, name, url):
        self.name = name
        self.url = url


@pytest.fixture(scope="module")
def pg_cluster():
    c = PgCluster()
    yield c
    c.destroy()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory):
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "keel.db"
        return Backend("sqlite", "sqlite:%s" % path)
    cluster = request.getfixturevalue("pg_cluster")
    if not cluster.running:  # an earlier test failed half-way through an outage
        cluster.restart()
    return Backend("postgres", cluster.url)


@pytest.fixture
def db_keel(keel, backend):
    """keel(**env) on the backend's database."""
    def start(**env):
        return keel(DATABASE_URL=backend.url, **env)
    return start


# ---------------------------------------------------------------- both backends

def test_rows_by_id(db_keel):
    srv = db_keel()
    for n in (1, 2, 42, 4711, 9999, 10000):
        r = get(srv, "/db?id=%d" % n)
        assert r.status == 200, r
        assert r.header("Content-Type", "").startswith("application/json"), r
        assert r.json() == item(n)


# (target, status): one server answers them all
BAD_IDS = [
    ("/db?id=10001", 404),
    ("/db?id=123456789", 404),
    ("/db?id=0", 400),
    ("/db?id=-1", 400),
    ("/db?id=abc", 400),
    ("/db?id=1x", 400),
    ("/db?id=1.5", 400),
    ("/db?id=99999999999999999999", 400),  # out of int64 range
    ("/db?id=", 400),
    ("/db", 400),
]


def test_missing_and_bad_ids_are_problems(db_keel):
    srv = db_keel()
    for target, status in BAD_IDS:
        doc = rawhttp.assert_problem(get(srv, target), status)
        assert doc["instance"] == "/db", (target, doc)
    # the server is still fine afterwards
    assert get(srv, "/db?id=1").json() == item(1)


def test_health_and_metrics(db_keel, backend):
    srv = db_keel()
    assert get(srv, "/db?id=7").status == 200  # at least one query observed

    r = get(srv, "/health/detailed")
    assert r.status == 200, r
    doc = r.json()
    assert doc["status"] == "healthy", doc
    check = doc["checks"]["database"]
    assert check["status"] == "pass" and check["critical"] is True, check
    assert check["detail"].startswith("%s ok" % backend.name), check
    assert "pool open=" in check["detail"], check
    r = get(srv, "/health/ready")
    assert r.status == 200 and r.json()["checks"]["database"]["status"] == "pass", r

    m = metrics(srv)
    assert m.types.get("db_query_duration_seconds") == "histogram", m.types
    assert m.types.get("db_errors_total") == "counter", m.types
    for gauge in ("db_pool_connections_open", "db_pool_connections_in_use",
                  "db_pool_connections_idle", "db_pool_waiting"):
        assert m.types.get(gauge) == "gauge", (gauge, m.types)
        assert m.find(gauge), gauge
    assert m.types.get("db_pool_rejected_total") == "counter", m.types
    assert m.value("db_query_duration_seconds_count", op="select") >= 1, \
        m.find("db_query_duration_seconds_count")
    assert m.value("db_pool_connections_open") >= 1
    assert m.value("db_pool_connections_in_use") == 0
    assert m.value("db_pool_waiting") == 0


def test_statement_timeout_answers_503_in_time(db_keel):
    srv = db_keel(DATABASE_STATEMENT_TIMEOUT="300ms")
    # under the limit; a value that is not a number means the default (100 ms)
    for target in ("/db/slow?ms=50", "/db/slow?ms=-5", "/db/slow?ms=abc"):
        r, took = timed_get(srv, target)
        assert (r.status, r.text) == (200, "done"), (target, r)
        assert took < TIMEOUT_ANSWER_S, (target, took)

    r_slow, took = timed_get(srv, "/db/slow?ms=3000")
    doc = assert_unavailable(r_slow)
    assert doc["instance"] == "/db/slow", doc
    assert took < TIMEOUT_ANSWER_S, "a 300 ms statement timeout answered after %.2fs" % took

    # the connection (or its replacement) serves the next query at once
    r, took = timed_get(srv, "/db?id=1")
    assert r.status == 200 and r.json() == item(1), r
    assert took < TIMEOUT_ANSWER_S, took
    assert metrics(srv).value("db_errors_total", kind="timeout") >= 1
    # the log line names the statement and the request; the client saw neither
    rid = r_slow.header("X-Request-Id")
    entry = srv.wait_log(lambda e: e.get("msg") == "query failed" and e.get("request_id") == rid)
    assert entry["level"] == "error" and entry["error"] == "timeout", entry
    assert ("pg_sleep" in entry["sql"]) or ("RECURSIVE" in entry["sql"]), entry
    assert entry["sql"] not in r_slow.text


def test_full_pool_queue_answers_503_and_liveness_stays_fast(db_keel, backend):
    """One connection, one queue slot: of four concurrent 1.5 s jobs one
    runs, one waits and two are refused at once; /health and /health/live
    do not wait behind the database."""
    srv = db_keel(DATABASE_POOL_MAX=1, DATABASE_QUEUE_MAX=1)
    results = [None] * 4

    def call(i):
        t0 = time.monotonic()
        try:
            r = requests.get(srv.url + "/db/slow?ms=1500", timeout=30 * SLACK)
            results[i] = (r.status_code, r.headers.get("Retry-After"),
                          r.headers.get("Content-Type"), r.text, time.monotonic() - t0)
        except requests.RequestException as e:
            results[i] = (None, None, None, repr(e), time.monotonic() - t0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]

    def pool(name):
        return metrics(srv).value(name)

    # in order: one job on the connection, one in the queue, two refused
    threads[0].start()
    wait_for(lambda: pool("db_pool_connections_in_use") == 1 and pool("db_pool_waiting") == 0,
             5, "the first job on the connection")
    threads[1].start()
    wait_for(lambda: pool("db_pool_waiting") == 1, 5, "the second job in the queue")
    threads[2].start()
    threads[3].start()
    wait_for(lambda: pool("db_pool_rejected_total") == 2, 5, "two jobs refused")

    # while the pool is full: liveness is fast, the database queue is not
    for target in ("/health", "/health/live"):
        t0 = time.monotonic()
        r = requests.get(srv.url + target, timeout=5)
        took = time.monotonic() - t0
        assert r.status_code == 200, (target, r.status_code, r.text)
        assert took < LIVENESS_S, "%s took %.3fs while the pool was full" % (target, took)
    r = get(srv, "/db?id=1")
    if backend.name == "sqlite":
        assert_unavailable(r)  # one statement goes to the same pool
    else:
        # PostgreSQL: one statement runs on the worker's own connections,
        # not behind the pool's busy thread
        assert r.status == 200 and r.json() == item(1), r
        # that connection is counted idle again just after the answer went
        # out (db_pg_async.c calls back before it updates in_use): a scrape
        # on the other worker can see it busy for a moment
        wait_for(lambda: metrics(srv).value("db_pool_connections_in_use") == 1, 2,
                 "the worker's own connection to be counted idle")
    m = metrics(srv)
    assert m.value("db_pool_connections_in_use") == 1, m.find("db_pool_connections_in_use")
    assert m.value("db_pool_waiting") == 1, m.find("db_pool_waiting")

    for t in threads:
        t.join()
    codes = sorted(r[0] or 0 for r in results)
    assert codes == [200, 200, 503, 503], results
    for status, retry, ctype, body, took in results:
        if status == 503:
            assert retry == "1", results
            assert ctype == "application/problem+json", results
            assert '"status":503' in body, results
            assert took < REJECT_S * SLACK, "refused only after %.2fs" % took
        else:
            assert body == "done" and took >= 1.4, results

    # the two refused /db/slow, and on SQLite the refused /db
    assert metrics(srv).value("db_pool_rejected_total") >= (3 if backend.name == "sqlite" else 2)
    assert get(srv, "/db?id=10000").json() == item(10000)


def test_migrate_status_shows_0001_applied(db_keel, backend, tmp_path):
    db_keel()  # migrates on start (a no-op when an earlier test did)
    p = run_cli(["migrate", "status"], env={"DATABASE_URL": backend.url}, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not sanitizer_report(p.stderr), p.stderr
    assert status_rows(p.stdout)[1] == ("demo_items", "applied"), p.stdout


def test_concurrent_reads(db_keel):
    srv = db_keel()
    local = threading.local()
    rng = random.Random(20240601)
    ids = [rng.randint(1, 10000) for _ in range(200)]

    def fetch(n):
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
        r = s.get("%s/db?id=%d" % (srv.url, n), timeout=10 * SLACK)
        return n, r.status_code, r.json() if r.status_code == 200 else r.text

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as ex:
        got = list(ex.map(fetch, ids))
    took = time.monotonic() - t0
    bad = [(n, status, body) for n, status, body in got if status != 200 or body != item(n)]
    assert not bad, bad[:10]
    assert took < 10 * SLACK, took


def test_async_statement_timeout_answers_503_in_time(db_keel):
    srv = db_keel(DATABASE_STATEMENT_TIMEOUT="300ms")
    r, took = timed_get(srv, "/db/sleep?ms=20")
    assert (r.status, r.text) == (200, "done"), r
    r_slow, took = timed_get(srv, "/db/sleep?ms=3000")
    doc = assert_unavailable(r_slow)
    assert doc["instance"] == "/db/sleep", doc
    assert took < TIMEOUT_ANSWER_S, "a 300 ms statement timeout answered after %.2fs" % took
    # the same connection serves the next statement at once
    r, took = timed_get(srv, "/db?id=3")
    assert r.status == 200 and r.json() == item(3), r
    assert took < TIMEOUT_ANSWER_S, took
    assert metrics(srv).value("db_errors_total", kind="timeout") >= 1
    rid = r_slow.header("X-Request-Id")
    entry = srv.wait_log(lambda e: e.get("msg") == "query failed" and e.get("request_id") == rid)
    assert entry["level"] == "error" and entry["error"] == "timeout", entry
    assert ("pg_sleep" in entry["sql"]) or ("RECURSIVE" in entry["sql"]), entry


def test_async_query_logging_and_slow_queries(db_keel, backend):
    srv = db_keel(ENABLE_QUERY_LOGGING="true", SLOW_QUERY_THRESHOLD="150ms")
    r = get(srv, "/db?id=4242")
    assert r.status == 200, r
    rid = r.header("X-Request-Id")
    entry = srv.wait_log(lambda e: e.get("msg") == "query" and e.get("request_id") == rid)
    assert entry["level"] == "info" and entry["op"] == "select" and entry["rows"] == 1, entry
    assert entry["sql"] == "SELECT id, name, price_cents FROM items WHERE id = $1", entry
    texts = [v for k, v in entry.items() if isinstance(v, str) and k not in ("ts", "time")]
    assert not any("4242" in t for t in texts), entry  # never a parameter value
    r = get(srv, "/db/sleep?ms=300")
    assert r.status == 200, r
    rid = r.header("X-Request-Id")
    entry = srv.wait_log(lambda e: e.get("msg") == "slow query" and e.get("request_id") == rid)
    assert entry["level"] == "warn" and entry["duration_ms"] >= 150, entry
    m = metrics(srv)
    # SQLite's sleep is a WITH RECURSIVE count: op "other"
    assert m.value("db_query_duration_seconds_count", op="select") + \
        m.value("db_query_duration_seconds_count", op="other") >= 2, \
        m.find("db_query_duration_seconds_count")


def send_raw(port, target, request_id):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n\r\n"
               % (target, request_id)).encode())
    return s


def test_async_requests_ending_first_drop_their_result(db_keel, backend):
    """The client goes away, or the handler deadline passes, while the
    statement runs: the request ends (499 / 503), the statement still
    completes on its connection, its late result goes nowhere, and the
    connection serves the next requests (no leak, no use after free:
    the ASan run)."""
    srv = db_keel(ENABLE_QUERY_LOGGING="true", HANDLER_TIMEOUT="300ms")
    gone = "gone%016x" % random.getrandbits(64)
    s = send_raw(srv.port, "/db/sleep?ms=700", gone)
    wait_for(lambda: metrics(srv).value("db_pool_connections_in_use") >= 1, 2,
             "the statement to be running")
    s.close()
    entry = srv.access_entry(gone)
    assert entry["status"] == 499, entry

    r, took = timed_get(srv, "/db/sleep?ms=900")
    rawhttp.assert_problem(r, 503)  # the handler deadline
    assert took < 0.9 * SLACK, took
    late = r.header("X-Request-Id")
    # both statements finish in the database afterwards and are logged
    for rid in (gone, late):
        q = srv.wait_log(lambda e, rid=rid: e.get("msg") in ("query", "slow query")
                         and e.get("request_id") == rid, timeout=5)
        assert "rows" in q and "error" not in q, q
    for n in (1, 77, 10000):
        assert get(srv, "/db?id=%d" % n).json() == item(n)
    m = metrics(srv)
    assert m.value("db_pool_connections_in_use") == 0, m.find("db_pool_connections_in_use")
    assert m.value("db_pool_waiting") == 0
    assert srv.alive()


# ---------------------------------------------------------------- PostgreSQL only

def test_async_queue_full_answers_503(keel, pg_cluster):
    """One worker, one connection (16 statements in flight), one queue
    slot: of 20 concurrent statements 17 run or wait and 3 are refused at
    once with 503 + Retry-After. The connection runs its statements one
    after another: the first sleeps 2 s (× SLACK: every request must arrive
    while it runs), the others 0.1 s each behind it."""
    first_ms = int(2000 * SLACK)
    srv = keel(DATABASE_URL=pg_cluster.url, WORKERS=1, DATABASE_POOL_MAX=1,
               DATABASE_QUEUE_MAX=1)
    n = 20
    results = [None] * n

    def call(i):
        t0 = time.monotonic()
        try:
            r = requests.get(srv.url + "/db/sleep?ms=%d" % (first_ms if i == 0 else 100),
                             timeout=30 * SLACK)
            results[i] = (r.status_code, r.headers.get("Retry-After"), r.text,
                          time.monotonic() - t0)
        except requests.RequestException as e:
            results[i] = (None, None, repr(e), time.monotonic() - t0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]

    def arrived():
        return requests_in_flight(srv.port) + metrics(srv).value("db_pool_rejected_total")

    # one at a time: each request reaches its handler before the next is sent
    for i, t in enumerate(threads):
        t.start()
        wait_for(lambda: arrived() >= i + 1, 5, "request %d in its handler or refused" % i)
    m = metrics(srv)
    assert m.value("db_pool_waiting") == 1, m.find("db_pool_waiting")
    assert m.value("db_pool_connections_in_use") >= 1, m.find("db_pool_connections_in_use")
    for t in threads:
        t.join()
    codes = sorted(r[0] or 0 for r in results)
    assert codes == [200] * 17 + [503] * 3, results
    for status, retry, body, took in results:
        if status == 503:
            assert retry == "1" and '"status":503' in body, results
            assert took < REJECT_S * SLACK, "refused only after %.2fs" % took
        else:
            assert body == "done" and took >= 1.4, results
    assert metrics(srv).value("db_pool_rejected_total") == 3
    assert get(srv, "/db?id=10000").json() == item(10000)


def test_async_concurrent_reads_over_two_workers(keel, pg_cluster):
    srv = keel(DATABASE_URL=pg_cluster.url, WORKERS=2, DATABASE_POOL_MAX=4,
               DATABASE_POOL_MIN=0)
    rng = random.Random(77)
    ids = [rng.randint(1, 10000) for _ in range(400)]
    local = threading.local()

    def fetch(n):
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
        r = s.get("%s/db?id=%d" % (srv.url, n), timeout=10 * SLACK)
        return n, r.status_code, r.json() if r.status_code == 200 else r.text

    with ThreadPoolExecutor(max_workers=32) as ex:
        got = list(ex.map(fetch, ids))
    bad = [(n, status, body) for n, status, body in got if status != 200 or body != item(n)]
    assert not bad, bad[:10]
    m = metrics(srv)
    # POOL_MIN 0: every open connection is a worker's; at most POOL_MAX
    assert 1 <= m.value("db_pool_connections_open") <= 4, m.find("db_pool_connections_open")
    assert m.value("db_errors_total", kind="unavailable") == 0, m.find("db_errors_total")
    assert srv.stop() == 0, srv.stderr()[-3000:]


def test_postgres_outage_and_recovery_same_process(keel, pg_cluster):
    # Both pool connections open from the start: the first query after the
    # stop runs on a connection the server closed (the "lost" path), later
    # ones on a connection revalidated or opened again (the backoff path).
    srv = keel(DATABASE_URL=pg_cluster.url, DATABASE_TIMEOUT="2s", DATABASE_POOL_MIN=2,
               DATABASE_POOL_MAX=2)
    pid = srv.proc.pid
    assert get(srv, "/db?id=1").json() == item(1)
    _, took = wait_status(srv, "/health/ready", 200, 5)

    pg_cluster.stop()
    try:
        # every query answers 503 quickly: the lost connection, then the
        # reconnection attempts (refused, or skipped during the backoff)
        for _ in range(5):
            r, took = timed_get(srv, "/db?id=1", timeout=10)
            assert_unavailable(r)
            assert took < 3.0 * SLACK, "a query during the outage took %.2fs" % took
            assert srv.alive() and srv.proc.pid == pid
            time.sleep(0.1)  # spreads the queries over the reconnection backoff, on purpose
        r, took = wait_status(srv, "/health/ready", 503, 5)
        assert r.json()["checks"]["database"]["status"] == "fail", r
        r = get(srv, "/health/detailed")
        assert r.status == 503 and r.json()["status"] == "unhealthy", r
        assert get(srv, "/health/live").status == 200
    finally:
        pg_cluster.restart()

    r, took = wait_status(srv, "/health/ready", 200, 5)
    assert r.json()["checks"]["database"]["status"] == "pass", r
    # the pool reconnects by itself (after at most one backoff interval)
    r, took = wait_status(srv, "/db?id=2", 200, 8)
    assert r.json() == item(2)
    for n in (1, 5000, 10000):
        assert get(srv, "/db?id=%d" % n).json() == item(n)

    assert srv.alive() and srv.proc.pid == pid and srv.proc.returncode is None
    msgs = [e.get("msg") for e in srv.logs()]
    assert "database connection lost; reconnecting on next use" in msgs, msgs
    assert "database connected" in msgs, msgs
    m = metrics(srv)
    assert m.value("db_errors_total", kind="unavailable") >= 1, m.find("db_errors_total")
    assert srv.stop() == 0, srv.stderr()[-3000:]  # a clean drain after all that
