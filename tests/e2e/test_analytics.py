"""Analytics end to end against the real binary: 100,000 events from 20
clients then SIGTERM (every accepted event in the table exactly once), the
batch refused as a whole with the bad events listed by index, the ts
window, credentials and scopes, the per-key rate limit, a full buffer
(503 + Retry-After, never unbounded), rollups equal to direct SQL counts
and the same after a re-run (SQLite and PostgreSQL), metrics, raw events
cursor-paged, the streamed export, the retention purge; then the review
queue (report, reject hides, approve shows, audited) and admin stats.

Under ASan (KEEL_SANITIZED=1, set by the Makefile's asan run) the ingestion
test sends 20,000 events instead of 100,000: the same paths, a fifth of the
time."""
import csv
import io
import json
import socket
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import SANITIZED, SLACK, run_cli, scrape_metric, wait_for
from test_auth import Api, env, make_admin, problem
from test_migrate import Pg
from test_uploads import B, body, part

TOTAL = 20000 if SANITIZED else 100000
CLIENTS = 20
BATCH = 100


def iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now():
    return datetime.now(timezone.utc)


def sql(api, q):
    """One query on the service's database: the rows as tuples."""
    url = api.srv_env.get("DATABASE_URL")
    if not url:
        con = sqlite3.connect(str(api.srv.workdir / "data" / "keel.db"))
        try:
            return con.execute(q).fetchall()
        finally:
            con.close()
    out = api.pg.cluster.psql(url, q)
    return [tuple(line.split("|")) for line in out.splitlines() if line]


@pytest.fixture
def make(keel):
    def mk(pg=None, **extra):
        e = env(pg.url if pg else None, **extra)
        a = Api(keel(**e))
        a.srv_env = e
        a.pg = pg
        return a
    return mk


def post(api, token=None, key=None, events=(), **kw):
    return api.call("POST", "/analytics/events", token=token, key=key,
                    json={"events": list(events)}, **kw)


def ev(name="page_view", ts=None, **props):
    return {"name": name, "ts": iso(ts or now()), "properties": props}


# ------------------------------------------------------------ ingestion under load

def test_100k_events_from_20_clients_then_sigterm_nothing_lost(make):
    # a long flush interval: at SIGTERM much is still buffered, so the exit
    # flush is what writes it; small buffers: clients meet 503 + Retry-After
    # whenever the database falls behind (and the exit flush stays short)
    api = make(WORKERS=2, ANALYTICS_FLUSH_MS=2000, ANALYTICS_FLUSH_ROWS=1000,
               ANALYTICS_BUFFER_MAX=5000)
    tokens = [api.register("load%d@example.com" % i)["access_token"] for i in range(CLIENTS)]
    per_client = TOTAL // CLIENTS
    accepted = [0] * CLIENTS
    errors = []
    t0 = iso(now())

    def client(ci):
        s = requests.Session()
        h = {"Authorization": "Bearer " + tokens[ci]}
        seq = 0
        try:
            while seq < per_client:
                batch = [{"name": "load", "ts": t0, "properties": {"client": ci, "seq": seq + k}}
                         for k in range(min(BATCH, per_client - seq))]
                r = s.post(api.base + "/analytics/events", headers=h, json={"events": batch},
                           timeout=30 * SLACK)
                if r.status_code == 503:  # buffer full: retry the same batch later
                    assert r.headers.get("Retry-After") == "1"
                    time.sleep(0.05)
                    continue
                assert r.status_code == 202, r.text
                assert r.json() == {"accepted": len(batch)}
                accepted[ci] += len(batch)
                seq += len(batch)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert sum(accepted) == TOTAL
    buffered = scrape_metric(api.srv.port, "analytics_buffered_events")
    assert api.srv.stop(timeout=60 * SLACK) == 0
    rows = sql(api, "SELECT json_extract(properties, '$.client'), COUNT(*), "
                    "COUNT(DISTINCT json_extract(properties, '$.seq')) FROM analytics_events "
                    "GROUP BY 1 ORDER BY 1")
    assert [(c, n, d) for c, n, d in rows] == [(i, per_client, per_client)
                                               for i in range(CLIENTS)]
    # the exit flush had work to do (not everything was written before)
    assert buffered and buffered > 0, buffered
    assert "events lost at exit" not in api.srv.stderr() + api.srv.stdout()


# ------------------------------------------------------------ the contract of one batch

def test_batch_validation_credentials_scopes_and_rate_limit(make):
    api = make(WORKERS=1, RATE_LIMIT_ENABLED=True, RATE_LIMIT_BURST="0",
               RATE_LIMIT_ANALYTICS="4/1m", RATE_LIMIT_MAX=100000, ANALYTICS_FLUSH_MS=50,
               ANALYTICS_MAX_PROPERTIES_BYTES=200)
    tok = api.register("one@example.com")["access_token"]
    old, future = now() - timedelta(days=8), now() + timedelta(minutes=6)
    # one bad event refuses the batch as a whole, listing each bad one by index
    d = problem(post(api, tok, events=[ev(), ev(ts=old), ev(), ev(ts=future),
                                       ev(pad="x" * 300)]), 422)
    ptrs = sorted(e["pointer"] for e in d["errors"])
    assert ptrs == ["/events/1/ts", "/events/3/ts", "/events/4/properties"], d
    # schema errors: named per index too (the validator's)
    d = problem(post(api, tok, events=[ev(), {"name": "bad name!", "ts": iso(now())},
                                       {"ts": iso(now())}]), 422)
    ptrs = " ".join(e["pointer"] for e in d["errors"])
    assert "/events/1/name" in ptrs and "/events/2" in ptrs, d
    # more than ANALYTICS_MAX_BATCH (4 requests of the tier spent above and below)
    problem(api.call("POST", "/analytics/events", token=tok,
                     json={"events": [ev() for _ in range(101)]}), 422)
    r = post(api, tok, events=[ev("signup", plan="pro")])
    assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
    # the fifth request of this user in the minute: 429 (the tier is per key)
    problem(post(api, tok, events=[ev()]), 429)
    other = api.register("two@example.com")["access_token"]
    assert post(api, other, events=[ev()]).status_code == 202
    # credentials and the analytics:write scope
    problem(post(api, events=[ev()]), 401)
    p = api.cli(["apikey", "create", "--name", "ro", "--scopes", "events:read"])
    assert p.returncode == 0, p.stderr
    ro = p.stdout.strip().split()[-1]
    p = api.cli(["apikey", "create", "--name", "ingest", "--scopes", "analytics:write"])
    ingest = p.stdout.strip().split()[-1]
    problem(post(api, key=ro, events=[ev()]), 403)
    r = post(api, key=ingest, events=[ev("from_key")])
    assert r.status_code == 202, r.text
    # not JSON, malformed JSON
    problem(api.call("POST", "/analytics/events", token=other, data="x",
                     headers={"Content-Type": "text/plain"}), 415)
    problem(api.call("POST", "/analytics/events", token=other, data="{\"events\": [",
                     headers={"Content-Type": "application/json"}), 400)
    wait_for(lambda: sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0] == 3,
             timeout=5 * SLACK, what="the three accepted events written")
    rows = sql(api, "SELECT name, user_id IS NULL, api_key_id IS NULL FROM analytics_events "
                    "ORDER BY name")
    assert rows == [("from_key", 1, 0), ("page_view", 0, 1), ("signup", 0, 1)], rows


def test_full_buffer_answers_503_and_sigterm_writes_what_was_taken(make):
    api = make(WORKERS=1, ANALYTICS_BUFFER_MAX=150, ANALYTICS_FLUSH_MS=600000,
               ANALYTICS_FLUSH_ROWS=1000)
    tok = api.register("full@example.com")["access_token"]
    assert post(api, tok, events=[ev(n=i) for i in range(100)]).status_code == 202
    r = post(api, tok, events=[ev(n=i) for i in range(100)])
    problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    # a full buffer wakes the flusher (the interval is 10 minutes here)
    wait_for(lambda: scrape_metric(api.srv.port, "analytics_buffered_events") == 0,
             timeout=5 * SLACK, what="the full buffer written")
    assert post(api, tok, events=[ev(n=i) for i in range(50)]).status_code == 202
    assert scrape_metric(api.srv.port, "analytics_buffered_events") == 50
    assert scrape_metric(api.srv.port, "analytics_events_received_total",
                         result="buffer_full") == 100
    assert api.srv.stop() == 0
    assert sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0] == 150


# ------------------------------------------------------------ rollups, metrics, export

def wait_job(api, admin, job_id):
    def done():
        r = api.call("GET", "/admin/jobs/%d" % job_id, token=admin)
        return r.status_code == 200 and r.json().get("state") in ("completed", "dead")
    wait_for(done, timeout=20 * SLACK, what="job %d finished" % job_id)
    st = api.call("GET", "/admin/jobs/%d" % job_id, token=admin).json()
    assert st["state"] == "completed", st


def to_int(v):
    return int(v) if v not in (None, "") else None


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_rollups_equal_sql_counts_metrics_events_export_purge(make, request, db):
    pg = None
    if db == "postgres":
        pg = Pg(request.getfixturevalue("pg_cluster"))
        request.addfinalizer(pg.drop)
    api = make(pg, WORKERS=2, ANALYTICS_FLUSH_MS=50, ANALYTICS_ROLLUP_PROPERTIES="plan,ok",
               ANALYTICS_RETENTION="5d", JOBS_POLL_INTERVAL="100ms")
    admin = make_admin(api)
    users = [api.register("r%d@example.com" % i)["access_token"] for i in range(3)]
    base = now().replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    n = 0
    for u, tok in enumerate(users):
        batch = []
        for h in range(0, 40, 3):  # spread over two days of hours
            for k in range(u + 1):
                batch.append(ev("view" if k % 2 else "click", ts=base + timedelta(hours=h,
                                                                                  minutes=k),
                                plan=["free", "pro"][(h + k) % 2], ok=bool(k % 2)))
        batch.append(ev("old", ts=now() - timedelta(days=6)))
        assert post(api, tok, events=batch).status_code == 202
        n += len(batch)
    wait_for(lambda: int(sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0]) == n,
             timeout=5 * SLACK, what="events written")
    frm, to = iso(now() - timedelta(days=7)), iso(now() + timedelta(hours=1))

    def rollup():
        r = api.call("POST", "/admin/analytics/rollup", token=admin, json={"from": frm, "to": to})
        assert r.status_code == 202, r.text
        wait_job(api, admin, r.json()["job_id"])
        return sorted((g, int(p), nm, k, v, int(c)) for g, p, nm, k, v, c in sql(
            api, "SELECT granularity, period, name, prop_key, prop_value, count "
                 "FROM analytics_rollups"))

    first = rollup()
    # the same numbers as a direct count over the raw events
    fn = "json_extract(properties, '$.plan')" if not pg else "properties->>'plan'"
    okx = ("CASE json_type(properties, '$.ok') WHEN 'true' THEN 'true' WHEN 'false' THEN "
           "'false' END" if not pg else "properties->>'ok'")
    direct = []
    for g, div in (("hour", 3600000), ("day", 86400000)):
        for q in ("SELECT (ts / %d) * %d, name, '', '', COUNT(*) FROM analytics_events "
                  "GROUP BY 1, 2" % (div, div // 1000),
                  "SELECT (ts / %d) * %d, name, 'plan', %s, COUNT(*) FROM analytics_events "
                  "WHERE %s IS NOT NULL GROUP BY 1, 2, 4" % (div, div // 1000, fn, fn),
                  "SELECT (ts / %d) * %d, name, 'ok', %s, COUNT(*) FROM analytics_events "
                  "WHERE %s IS NOT NULL GROUP BY 1, 2, 4" % (div, div // 1000, okx, okx)):
            direct += [(g, int(p), nm, k, v, int(c)) for p, nm, k, v, c in sql(api, q)]
    assert first == sorted(direct)
    assert any(r[3] == "plan" for r in first) and any(r[4] == "true" for r in first)
    # DAU: distinct users per day
    dau = sorted((int(p), int(u)) for p, u in sql(
        api, "SELECT period, users FROM analytics_active_users WHERE granularity = 'day'"))
    want = sorted((int(p), int(u)) for p, u in sql(
        api, "SELECT (ts / 86400000) * 86400, COUNT(DISTINCT user_id) FROM analytics_events "
             "GROUP BY 1"))
    assert dau == want
    # idempotent: a re-run gives the same rows
    assert rollup() == first

    # metrics from the rollups
    m = api.call("GET", "/admin/analytics/metrics", token=admin,
                 params={"from": frm, "to": to, "granularity": "day", "property": "plan"})
    assert m.status_code == 200, m.text
    m = m.json()
    assert m["total_events"] == n
    assert sum(p["events"] for p in m["series"]) == n
    top = {t["name"]: t["count"] for t in m["top_events"]}
    assert top == {nm: int(c) for nm, c in sql(
        api, "SELECT name, COUNT(*) FROM analytics_events GROUP BY name")}
    assert sum(m["by_property"]["click"].values()) == top["click"]
    problem(api.call("GET", "/admin/analytics/metrics", token=admin,
                     params={"property": "nope"}), 422)
    problem(api.call("GET", "/admin/analytics/metrics", token=admin,
                     params={"granularity": "minute"}), 422)
    problem(api.call("GET", "/admin/analytics/metrics", token=users[0]), 403)

    # raw events: cursor pages cover everything once, newest first
    seen, cursor = [], None
    while True:
        params = {"from": frm, "to": to, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        r = api.call("GET", "/admin/analytics/events", token=admin, params=params)
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
        assert 'rel="next"' in r.headers["Link"]
    assert len(seen) == n and len({e["id"] for e in seen}) == n
    assert [e["ts"] for e in seen] == sorted((e["ts"] for e in seen), reverse=True)
    r = api.call("GET", "/admin/analytics/events", token=admin,
                 params={"from": frm, "to": to, "name": "old"})
    assert len(r.json()["data"]) == 3 and all(e["name"] == "old" for e in r.json()["data"])
    problem(api.call("GET", "/admin/analytics/events", token=admin, params={"cursor": "zz"}),
            422)

    # the export, streamed (chunked), oldest first, both formats
    r = api.call("GET", "/admin/analytics/export", token=admin,
                 params={"from": frm, "to": to, "format": "jsonl"}, stream=True)
    assert r.status_code == 200 and r.headers.get("Transfer-Encoding") == "chunked"
    lines = [json.loads(x) for x in r.iter_lines() if x]
    assert len(lines) == n and [e["ts"] for e in lines] == sorted(e["ts"] for e in lines)
    assert {e["id"] for e in lines} == {e["id"] for e in seen}
    r = api.call("GET", "/admin/analytics/export", token=admin,
                 params={"from": frm, "to": to, "format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["id", "name", "ts"] and len(rows) == n + 1
    assert json.loads(rows[1][7]) is not None

    # retention: events older than ANALYTICS_RETENTION (5d) go
    r = api.call("POST", "/admin/analytics/purge", token=admin)
    assert r.status_code == 202, r.text
    wait_job(api, admin, r.json()["job_id"])
    assert int(sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0]) == n - 3
    assert int(sql(api, "SELECT COUNT(*) FROM analytics_events WHERE name = 'old'")[0][0]) == 0


# ------------------------------------------------------------ the review queue

@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_review_queue_report_reject_hides_approve_shows_audited_and_stats(make, request, db):
    pg = None
    if db == "postgres":
        pg = Pg(request.getfixturevalue("pg_cluster"))
        request.addfinalizer(pg.drop)
    api = make(pg, WORKERS=1, UPLOAD_MAX_FILE_SIZE="10kb")
    admin = make_admin(api)
    mod = make_admin(api, "mod@example.com", role="moderator")
    owner = api.register("owner@example.com")["access_token"]
    other = api.register("other@example.com")["access_token"]
    r = api.call("POST", "/files", token=owner, data=body(part("file", b"hello", filename="a.txt")),
                 headers={"Content-Type": "multipart/form-data; boundary=" + B})
    assert r.status_code == 201, r.text
    fid = r.json()["data"][0]["id"]
    # another user cannot see the file, so cannot report it (no existence leak)
    problem(api.call("POST", "/files/%s/report" % fid, token=other, json={"reason": "spam"}), 404)
    problem(api.call("POST", "/files/%s/report" % fid, token=owner, json={}), 422)
    r = api.call("POST", "/files/%s/report" % fid, token=owner, json={"reason": "oops"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["status"] == "pending"
    problem(api.call("POST", "/files/%s/report" % fid, token=owner, json={"reason": "again"}), 409)
    # the queue: moderators and admins, not users
    problem(api.call("GET", "/admin/reviews", token=owner), 403)
    q = api.call("GET", "/admin/reviews", token=mod, params={"status": "pending"}).json()
    assert [i["id"] for i in q["data"]] == [rid] and q["data"][0]["reports"] == 1
    one = api.call("GET", "/admin/reviews/" + rid, token=admin).json()
    assert one["resource"]["id"] == fid and one["report_list"][0]["reason"] == "oops"
    problem(api.call("POST", "/admin/reviews/%s/decision" % rid, token=mod,
                     json={"decision": "maybe", "reason": "x"}), 422)
    problem(api.call("POST", "/admin/reviews/nope/decision", token=mod,
                     json={"decision": "reject", "reason": "x"}), 404)
    # reject: hidden from the owner, still there for reviewers
    r = api.call("POST", "/admin/reviews/%s/decision" % rid, token=mod,
                 json={"decision": "reject", "reason": "not allowed"})
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    problem(api.call("GET", "/files/" + fid, token=owner), 404)
    problem(api.call("GET", "/files/%s/content" % fid, token=owner), 404)
    assert api.call("GET", "/files", token=owner).json()["total"] == 0
    r = api.call("GET", "/files/%s/content" % fid, token=admin)
    assert r.status_code == 200 and r.content == b"hello"
    # stats while it is hidden
    st = api.call("GET", "/admin/stats", token=admin)
    assert st.status_code == 200, st.text
    st = st.json()
    assert st["users"]["by_role"] == {"admin": 1, "moderator": 1, "user": 2}
    assert st["users"]["by_status"] == {"active": 4}
    assert st["files"]["count"] == 1 and st["files"]["bytes"] == 5 and st["files"]["hidden"] == 1
    assert st["queues"]["reviews"] == {"rejected": 1}
    assert len(st["analytics_events_per_day"]) == 14
    problem(api.call("GET", "/admin/stats", token=mod), 403)
    # approve: visible again
    r = api.call("POST", "/admin/reviews/%s/decision" % rid, token=admin,
                 json={"decision": "approve", "reason": "fine after all"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert api.call("GET", "/files/" + fid, token=owner).status_code == 200
    # each decision audited, in order
    a = api.call("GET", "/admin/audit", token=admin, params={"entity_type": "review"}).json()
    acts = [(x["action"], x["entity_id"]) for x in a["data"]]
    assert acts == [("review.approve", rid), ("review.reject", rid)], a
    v = api.cli(["audit", "verify"])
    assert v.returncode == 0, v.stdout + v.stderr
    # the queue in pages: three more reported files, two per page
    for i in range(3):
        r = api.call("POST", "/files", token=owner,
                     data=body(part("file", b"x%d" % i, filename="b%d.txt" % i)),
                     headers={"Content-Type": "multipart/form-data; boundary=" + B})
        f = r.json()["data"][0]["id"]
        assert api.call("POST", "/files/%s/report" % f, token=owner,
                        json={"reason": "r%d" % i}).status_code == 201
    seen, cursor = [], None
    while True:
        params = {"status": "pending", "resource_type": "file", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.call("GET", "/admin/reviews", token=mod, params=params).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 3 and len(set(seen)) == 3 and rid not in seen
    assert api.call("GET", "/admin/reviews", token=mod,
                    params={"resource_type": "event"}).json()["data"] == []


# ------------------------------------------------------------ failure paths

def test_database_refusing_writes_keeps_the_events_until_it_accepts(make):
    """SQLite locked by another writer: the flusher's INSERT fails (busy),
    the events stay buffered and are written once the lock is gone."""
    api = make(WORKERS=1, ANALYTICS_FLUSH_MS=50, DATABASE_STATEMENT_TIMEOUT="100ms")
    tok = api.register("busy@example.com")["access_token"]
    assert post(api, tok, events=[ev("warm")]).status_code == 202  # the auth state cached
    wait_for(lambda: sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0] == 1,
             timeout=5 * SLACK, what="the first event written")
    con = sqlite3.connect(str(api.srv.workdir / "data" / "keel.db"), timeout=10,
                          isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        assert post(api, tok, events=[ev("held", i=i) for i in range(40)]).status_code == 202
        wait_for(lambda: (scrape_metric(api.srv.port, "analytics_flush_errors_total") or 0) >= 2,
                 timeout=15 * SLACK, what="failed flushes while the database is locked")
        assert scrape_metric(api.srv.port, "analytics_buffered_events") == 40
        assert con.execute("SELECT COUNT(*) FROM analytics_events").fetchone()[0] == 1
    finally:
        con.execute("COMMIT")
        con.close()
    wait_for(lambda: sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0] == 41,
             timeout=10 * SLACK, what="the held events written after the lock")
    assert scrape_metric(api.srv.port, "analytics_events_dropped_total") == 0


def test_a_row_the_database_refuses_is_dropped_alone(make):
    """A trigger makes SQLite refuse one event: the batch's statement fails,
    the flusher writes its rows one by one, and only that one is dropped."""
    api = make(WORKERS=1, ANALYTICS_FLUSH_MS=50)
    tok = api.register("poison@example.com")["access_token"]
    con = sqlite3.connect(str(api.srv.workdir / "data" / "keel.db"), timeout=10)
    con.execute("CREATE TRIGGER no_poison BEFORE INSERT ON analytics_events "
                "WHEN NEW.name = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()
    batch = [ev("good", i=i) for i in range(20)]
    batch[7] = ev("poison")
    assert post(api, tok, events=batch).status_code == 202
    wait_for(lambda: scrape_metric(api.srv.port, "analytics_events_dropped_total") == 1,
             timeout=5 * SLACK, what="the refused event dropped")
    assert sql(api, "SELECT name, COUNT(*) FROM analytics_events GROUP BY name") == [("good", 19)]
    assert scrape_metric(api.srv.port, "analytics_buffered_events") == 0
    assert api.srv.wait_log(lambda e: "refuses was dropped" in e.get("msg", ""))


def test_postgres_copy_every_byte_a_poison_row_alone_and_sigterm_loses_nothing(make, request):
    r"""PostgreSQL: the flusher writes with COPY ... FROM STDIN. Every byte
    COPY's text format treats specially (tab, newline, CR, backslash, \N,
    \.) and UTF-8 reads back identical, in session_id and in the jsonb
    properties; a row the database refuses fails the COPY, whose rows then
    go through the INSERTs and only that one is dropped; at SIGTERM what is
    still buffered is written, every event exactly once."""
    pg = Pg(request.getfixturevalue("pg_cluster"))
    request.addfinalizer(pg.drop)
    api = make(pg, WORKERS=2, ANALYTICS_FLUSH_MS=1000, ANALYTICS_FLUSH_ROWS=1000,
               ANALYTICS_COPY_ROWS=700, ENABLE_QUERY_LOGGING="true")
    tok = api.register("copy@example.com")["access_token"]

    def rows(where):
        out = pg.cluster.psql(pg.url, "SELECT json_build_object('s', session_id, 'p', properties, "
                                      "'n', name)::text FROM analytics_events WHERE " + where)
        return [json.loads(line) for line in out.splitlines() if line]

    tricky = ["tab\there", "nl\nhere", "cr\rhere", "bs\\here", "\\N", "\\.", "\\", "\t\n\r\\",
              'q"uote \\"', "caf\u00e9 \u20ac \U0001F600", "a|b,c;'d", " "]
    sent = [{"name": "tricky", "ts": iso(now()), "session_id": t,
             "properties": {"s": t, "k\t\\\"\n": [t, 1, None, 2.5, True]}} for t in tricky]
    assert post(api, tok, events=sent).status_code == 202
    wait_for(lambda: len(rows("name = 'tricky'")) == len(sent), timeout=5 * SLACK,
             what="the tricky events written")
    got = sorted((r["s"], json.dumps(r["p"], sort_keys=True)) for r in rows("name = 'tricky'"))
    assert got == sorted((e["session_id"], json.dumps(e["properties"], sort_keys=True))
                         for e in sent)
    assert api.srv.wait_log(lambda e: e.get("op") == "copy"
                            and "FROM STDIN" in e.get("sql", "") and e.get("rows") == len(sent))
    assert scrape_metric(api.srv.port, "analytics_copy_fallbacks_total") == 0

    # a row PostgreSQL refuses: the COPY fails whole, the INSERTs write the rest
    pg.cluster.psql(pg.url, "CREATE FUNCTION no_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                            "BEGIN IF NEW.name = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; "
                            "RETURN NEW; END $$; CREATE TRIGGER no_poison BEFORE INSERT ON "
                            "analytics_events FOR EACH ROW EXECUTE FUNCTION no_poison()")
    batch = [ev("good", i=i) for i in range(20)]
    batch[7] = ev("poison")
    assert post(api, tok, events=batch).status_code == 202
    wait_for(lambda: scrape_metric(api.srv.port, "analytics_events_dropped_total") == 1,
             timeout=5 * SLACK, what="the refused event dropped")
    assert pg.scalar("SELECT COUNT(*) FROM analytics_events WHERE name = 'good'") == 19
    assert scrape_metric(api.srv.port, "analytics_copy_fallbacks_total") == 1
    pg.cluster.psql(pg.url, "DROP TRIGGER no_poison ON analytics_events")

    # SIGTERM with events still buffered: written at exit (several COPYs), once each
    toks = [tok] + [api.register("copy%d@example.com" % i)["access_token"] for i in range(3)]

    def client(ci):
        s = requests.Session()
        for b in range(5):
            r = s.post(api.base + "/analytics/events",
                       headers={"Authorization": "Bearer " + toks[ci]},
                       json={"events": [{"name": "exit", "ts": iso(now()),
                                         "properties": {"c": ci, "seq": b * 100 + k}}
                                        for k in range(100)]}, timeout=30 * SLACK)
            assert r.status_code == 202, r.text

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(toks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buffered = scrape_metric(api.srv.port, "analytics_buffered_events")
    assert api.srv.stop(timeout=60 * SLACK) == 0
    assert buffered and buffered > 0, buffered
    out = pg.cluster.psql(pg.url, "SELECT properties->>'c', COUNT(*), "
                                  "COUNT(DISTINCT properties->>'seq') FROM analytics_events "
                                  "WHERE name = 'exit' GROUP BY 1 ORDER BY 1")
    assert out.splitlines() == ["%d|500|500" % i for i in range(len(toks))]
    assert pg.scalar("SELECT COUNT(*) FROM analytics_events") == len(sent) + 19 + 500 * len(toks)
    assert "events lost at exit" not in api.srv.stderr() + api.srv.stdout()


def test_export_of_many_pages_and_a_client_leaving_half_way(make):
    api = make(WORKERS=1, ANALYTICS_FLUSH_MS=50, OUTPUT_BUFFER_MAX="64kb")
    admin = make_admin(api)
    t = iso(now())
    for b in range(30):
        assert post(api, admin, events=[{"name": "bulk", "ts": t,
                                         "properties": {"pad": "y" * 400, "i": b * 100 + k}}
                                        for k in range(100)]).status_code == 202
    wait_for(lambda: sql(api, "SELECT COUNT(*) FROM analytics_events")[0][0] == 3000,
             timeout=10 * SLACK, what="written")
    s = socket.create_connection(("127.0.0.1", api.srv.port))
    s.sendall(("GET /api/v1/admin/analytics/export?format=jsonl HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\n\r\n" % admin).encode())
    got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200")
    s.close()  # without reading the rest: the server stops at the next write
    # then whole exports, over three pages (1,000 rows each)
    r = api.call("GET", "/admin/analytics/export", token=admin, params={"format": "csv"})
    assert r.status_code == 200 and r.text.count("\r\n") == 3001
    r = api.call("GET", "/admin/analytics/export", token=admin, params={"format": "jsonl"},
                 stream=True)
    got = sorted(json.loads(x)["properties"]["i"] for x in r.iter_lines() if x)
    assert got == list(range(3000))


@pytest.mark.parametrize("var,value", [
    ("ANALYTICS_ROLLUP_PROPERTIES", "plan,a-b"),
    ("ANALYTICS_ROLLUP_PROPERTIES", "plan,plan"),
    ("ANALYTICS_MAX_BATCH", "0"),
    ("ANALYTICS_FLUSH_ROWS", "1001"),
    ("ANALYTICS_BUFFER_MAX", "99"),
    ("ANALYTICS_BUFFER_BYTES", "100kb"),
    ("RATE_LIMIT_ANALYTICS", "lots"),
])
def test_invalid_analytics_config_stops_start_up(tmp_path, var, value):
    # (tiers are checked when the limiter is on)
    p = run_cli(["serve", "--print-config"], env={var: value, "RATE_LIMIT_ENABLED": "true"},
                cwd=tmp_path)
    assert p.returncode == 2 and var in p.stderr, (p.returncode, p.stderr)
