"""The job queue end to end (docs/jobs.md).

- the reference service's admin API (/api/v1/admin/jobs, /api/v1/admin/
  job-queues), its `keel jobs` CLI and the jobs_* metrics (SQLite);
- a worker SIGKILLed in the middle of a job: the job is rescued once and
  runs to completion once on another process (SQLite and PostgreSQL);
- two processes on one PostgreSQL: 10,000 jobs, each executed exactly once
  (the handler inserts into a table whose primary key is the job id).

The multi-process cases use tests/tools/jobs_service (KEEL_JOBS_BIN): a
service on libkeel with a job queue and no migrations of its own, so they
also show that the jobs module brings its table along.
"""
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import (REPO, SLACK, STARTUP_TIMEOUT, KeelServer, build_env, free_port,
                      run_cli, scrape_metric, wait_for)
from test_auth import PW, SECRET, FAST_HASH, problem
from test_migrate import Pg

JOBS_BIN = os.path.abspath(os.environ.get("KEEL_JOBS_BIN") or str(REPO / "build" / "jobs_service"))


# ---------------------------------------------------------------- helpers

class JobsServer(KeelServer):
    """`jobs_service serve` with the e2e suite's life cycle and checks."""

    def _spawn(self):
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([JOBS_BIN, "serve"], env=self.env, cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)


@pytest.fixture
def jobs_proc(tmp_path_factory):
    started = []

    def start(**env):
        if not os.access(JOBS_BIN, os.X_OK):
            pytest.fail("jobs_service not found at %s (make, or set KEEL_JOBS_BIN)" % JOBS_BIN,
                        pytrace=False)
        e = build_env(dict({"PORT": free_port(), "ACCESS_LOG": "false"}, **env))
        srv = JobsServer(e, tmp_path_factory.mktemp("jobs"))
        srv._spawn()
        started.append(srv)
        assert srv._wait_ready(), srv.stderr()[-3000:]
        return srv

    yield start
    problems = []
    for srv in started:
        if srv.alive():
            problems += srv.teardown_problems()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def enqueue(url, n, sleep_ms=0):
    p = subprocess.run([JOBS_BIN, "enqueue", str(n), str(sleep_ms)],
                       env=build_env({"DATABASE_URL": url, "LOG_LEVEL": "warn"}),
                       capture_output=True, text=True, timeout=120 * SLACK)
    assert p.returncode == 0, p.stderr


class Sql:
    """Counts in the test's database, SQLite (sqlite3) or PostgreSQL (psql)."""

    def __init__(self, url):
        self.url = url

    def scalar(self, sql):
        if self.url.startswith("sqlite:"):
            con = sqlite3.connect(self.url[len("sqlite:"):], timeout=10)
            try:
                return con.execute(sql).fetchone()[0]
            finally:
                con.close()
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url,
                            "-c", sql], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (sql, p.stderr)
        return int(p.stdout.strip())

    def count(self, table, where="TRUE"):
        try:
            return self.scalar("SELECT count(*) FROM %s WHERE %s" % (table, where))
        except (sqlite3.OperationalError, AssertionError):
            return -1  # not created yet


def fresh_pg(request):
    db = Pg(request.getfixturevalue("pg_cluster"))
    request.addfinalizer(db.drop)
    return db.url


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:%s" % (tmp_path / "jobs.db")
    return fresh_pg(request)


# ---------------------------------------------------------------- admin API, CLI, metrics

def test_admin_api_cli_and_metrics(keel, tmp_path):
    dbfile = tmp_path / "keel.db"
    env = dict({"JWT_SECRET": SECRET, "DATABASE_URL": "sqlite:%s" % dbfile,
                "JOBS_QUEUES": "default=2,email=1"}, **FAST_HASH)
    srv = keel(**env)
    base = srv.url + "/api/v1"
    p = run_cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
                env=dict(env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    s = requests.Session()
    tok = s.post(base + "/auth/login", json={"email": "root@example.com", "password": PW},
                 timeout=20).json()["access_token"]
    # a user made by the CLI: a registration would enqueue its verification mail
    p = run_cli(["user", "create", "--email", "u@example.com", "--role", "user"],
                env=dict(env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    utok = s.post(base + "/auth/login", json={"email": "u@example.com", "password": PW},
                  timeout=20).json()["access_token"]
    H = {"Authorization": "Bearer " + tok}

    # jobs no handler of the reference service takes: far in the future, or finished
    now = int(time.time() * 1000)
    con = sqlite3.connect(str(dbfile), timeout=10)
    rows = [("email", "welcome", "scheduled", now + 3600000, None),
            ("email", "welcome", "dead", now, now),
            ("default", "report", "running", now, None)]
    ids = []
    for q, k, st, run_at, fin in rows:
        cur = con.execute("INSERT INTO keel_jobs (queue, kind, args, state, attempt, max_attempts,"
                          " run_at, created_at, finished_at, heartbeat_at, locked_by) VALUES "
                          "(?, ?, '{\"to\":\"a@b.c\"}', ?, 1, 1, ?, ?, ?, ?, ?)",
                          (q, k, st, run_at, now, fin, now if st == "running" else None,
                           "other-host:1:x" if st == "running" else None))
        ids.append(cur.lastrowid)
    con.commit()
    con.close()
    scheduled, dead, running = ids

    # who may look
    assert s.get(base + "/admin/jobs", timeout=20).status_code == 401
    problem(s.get(base + "/admin/jobs", headers={"Authorization": "Bearer " + utok}, timeout=20),
            403)

    r = s.get(base + "/admin/jobs", headers=H, params={"queue": "email"}, timeout=20)
    assert r.status_code == 200, r.text
    assert [j["id"] for j in r.json()["jobs"]] == [dead, scheduled]
    r = s.get(base + "/admin/jobs", headers=H, params={"state": "dead", "kind": "welcome"},
              timeout=20)
    assert [j["id"] for j in r.json()["jobs"]] == [dead]
    page = s.get(base + "/admin/jobs", headers=H, params={"limit": 1}, timeout=20).json()
    assert len(page["jobs"]) == 1 and page["next_before"] == running
    page2 = s.get(base + "/admin/jobs", headers=H,
                  params={"limit": 5, "before": page["next_before"]}, timeout=20).json()
    assert [j["id"] for j in page2["jobs"]] == [dead, scheduled] and page2["next_before"] is None
    for bad in ({"state": "zombie"}, {"limit": 0}, {"limit": 501}, {"before": "x"},
                {"nope": "1"}):
        problem(s.get(base + "/admin/jobs", headers=H, params=bad, timeout=20), 422)

    job = s.get(base + "/admin/jobs/%d" % dead, headers=H, timeout=20).json()
    assert job["args"] == {"to": "a@b.c"} and job["state"] == "dead"
    for bad in ("abc", "0", "-1", "99999999", "1e3"):
        problem(s.get(base + "/admin/jobs/" + bad, headers=H, timeout=20), 404)

    # cancel: unfinished only
    r = s.post(base + "/admin/jobs/%d/cancel" % scheduled, headers=H, timeout=20)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    problem(s.post(base + "/admin/jobs/%d/cancel" % scheduled, headers=H, timeout=20), 409)
    # retry / delete refuse a running job
    problem(s.post(base + "/admin/jobs/%d/retry" % running, headers=H, timeout=20), 409)
    problem(s.delete(base + "/admin/jobs/%d" % running, headers=H, timeout=20), 409)
    # a dead job retried gets one more attempt
    r = s.post(base + "/admin/jobs/%d/retry" % dead, headers=H, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["max_attempts"] == 2 and r.json()["finished_at"] is None
    r = s.delete(base + "/admin/jobs/%d" % scheduled, headers=H, timeout=20)
    assert r.status_code == 204
    problem(s.get(base + "/admin/jobs/%d" % scheduled, headers=H, timeout=20), 404)
    problem(s.post(base + "/admin/jobs/99999/retry", headers=H, timeout=20), 404)

    # pause / resume
    r = s.post(base + "/admin/job-queues/email/pause", headers=H, timeout=20)
    assert r.status_code == 200 and r.json() == {"queue": "email", "paused": True}
    qs = {q["queue"]: q for q in
          s.get(base + "/admin/job-queues", headers=H, timeout=20).json()["queues"]}
    assert qs["email"]["paused"] is True and qs["default"]["running"] == 1
    r = s.post(base + "/admin/job-queues/email/resume", headers=H, timeout=20)
    assert r.json()["paused"] is False

    # the CLI sees the same table
    p = run_cli(["jobs", "list", "--queue", "default"], env=env, cwd=srv.workdir)
    assert p.returncode == 0 and "report" in p.stdout and "running" in p.stdout, p.stdout
    p = run_cli(["jobs", "cancel", str(running)], env=env, cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    p = run_cli(["jobs", "cancel", str(running)], env=env, cwd=srv.workdir)
    assert p.returncode == 1 and "not possible" in p.stderr
    p = run_cli(["jobs", "retry", "abc"], env=env, cwd=srv.workdir)
    assert p.returncode == 2

    # metrics: the known queues and results exported at 0 from the start
    assert scrape_metric(srv.port, "jobs_running", queue="email") == 0
    assert scrape_metric(srv.port, "jobs_completed_total", queue="default",
                         result="completed") == 0
    assert scrape_metric(srv.port, "jobs_enqueued_total", queue="email") == 0
    wait_for(lambda: scrape_metric(srv.port, "jobs_queue_depth", queue="email",
                                   state="available") is not None, timeout=10 * SLACK,
             what="jobs_queue_depth")


# ---------------------------------------------------------------- a worker killed mid-job

def test_sigkill_mid_job_rescued_exactly_once(jobs_proc, any_db):
    sql = Sql(any_db)
    fast = {"DATABASE_URL": any_db, "JOBS_RESCUE_AFTER": "1s", "JOBS_POLL_INTERVAL": "100ms",
            "JOBS_QUEUES": "default=2"}
    a = jobs_proc(**fast)
    enqueue(any_db, 1, sleep_ms=60000)
    wait_for(lambda: sql.count("job_starts") == 1, timeout=10 * SLACK, what="the first start")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.check_exit_code = False
    b = jobs_proc(**fast)
    c = jobs_proc(**fast)  # two rescuers: still one rescue
    wait_for(lambda: sql.count("job_runs") == 1, timeout=20 * SLACK, what="the rescued run")
    time.sleep(1.5)  # a second (wrong) rescue or run would show up by now
    assert sql.count("job_starts") == 2
    assert sql.count("job_starts", "attempt = 2") == 1
    assert sql.count("job_dups") == 0
    assert sql.count("keel_jobs", "state = 'completed' AND attempt = 2") == 1
    rescued = [e for s in (b, c) for e in s.logs() if e.get("msg") == "job rescued"]
    assert len(rescued) == 1, rescued


# ---------------------------------------------------------------- two instances, one queue

def test_two_instances_run_10000_jobs_exactly_once(jobs_proc, request):
    url = fresh_pg(request)
    sql = Sql(url)
    n = 10000
    enqueue(url, n)
    env = {"DATABASE_URL": url, "JOBS_QUEUES": "default=6", "JOBS_POLL_INTERVAL": "200ms",
           "DATABASE_POOL_MAX": "2"}
    a = jobs_proc(**env)
    b = jobs_proc(**env)
    t0 = time.monotonic()
    wait_for(lambda: sql.count("job_runs") >= n, timeout=240 * SLACK, interval=0.5,
             what="%d jobs run" % n)
    took = time.monotonic() - t0
    assert sql.count("job_runs") == n
    assert sql.count("job_dups") == 0
    assert sql.count("job_starts") == n  # no job started twice
    wait_for(lambda: sql.count("keel_jobs", "state = 'completed'") == n, timeout=30 * SLACK,
             interval=0.5, what="every job completed")
    per = sql.scalar("SELECT count(DISTINCT runner) FROM job_runs")
    assert per == 2, "both instances took jobs"
    print("10000 jobs on two instances in %.1fs" % took)
    for s in (a, b):
        assert s.stop() == 0


# ---------------------------------------------------------------- graceful shutdown

def test_sigterm_waits_for_the_running_job(jobs_proc, tmp_path):
    url = "sqlite:%s" % (tmp_path / "jobs.db")
    sql = Sql(url)
    a = jobs_proc(DATABASE_URL=url, JOBS_SHUTDOWN_GRACE="20s", JOBS_QUEUES="default=1")
    enqueue(url, 2, sleep_ms=1500)
    wait_for(lambda: sql.count("job_starts") == 1, timeout=10 * SLACK, what="the first start")
    assert a.stop() == 0  # SIGTERM: no new fetch, the running job finishes
    assert sql.count("job_runs") == 1
    assert sql.count("keel_jobs", "state = 'completed'") == 1
    # the second was never started: still available, its attempt unspent
    assert sql.count("keel_jobs", "state = 'available' AND attempt = 0") == 1
    assert any(e.get("msg") == "jobs runner stopped" for e in a.logs())


def test_enqueue_route(keel, tmp_path):
    """POST /api/v1/admin/jobs: one job or {"jobs": [...]} in one
    transaction, registered kinds only (system.noop in the reference
    service), admin only."""
    env = dict({"JWT_SECRET": SECRET, "DATABASE_URL": "sqlite:%s" % (tmp_path / "k.db")},
               **FAST_HASH)
    srv = keel(**env)
    base = srv.url + "/api/v1"
    assert run_cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
                   env=dict(env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir).returncode == 0
    s = requests.Session()
    tok = s.post(base + "/auth/login", json={"email": "root@example.com", "password": PW},
                 timeout=20).json()["access_token"]
    s.headers["Authorization"] = "Bearer " + tok
    r = s.post(base + "/admin/jobs", json={"kind": "system.noop", "unique_key": "once"}, timeout=20)
    assert r.status_code == 201 and r.json()["duplicates"] == 0, r.text
    again = s.post(base + "/admin/jobs", json={"kind": "system.noop", "unique_key": "once"},
                   timeout=20).json()
    assert again["ids"] == r.json()["ids"] or again["duplicates"] == 0  # finished already: a new one
    r = s.post(base + "/admin/jobs", json={"jobs": [{"kind": "system.noop", "args": {"n": i}}
                                                     for i in range(300)]}, timeout=20)
    assert r.status_code == 201 and len(set(r.json()["ids"])) == 300, r.text
    wait_for(lambda: s.get(base + "/admin/jobs", params={"kind": "system.noop",
                                                         "state": "completed", "limit": 500},
                           timeout=20).json()["jobs"].__len__() >= 301, timeout=20,
             what="the noop jobs done")
    # refusals: an unknown kind (nothing would run it), a mix, no kind, a bad field; all or none
    for body, ptr in [({"jobs": [{"kind": "system.noop"}, {"kind": "nosuch"}]}, "/jobs/1/kind"),
                      ({"kind": "system.noop", "jobs": [{"kind": "system.noop"}]}, "/jobs"),
                      ({"args": {}}, "/kind"), ({"kind": "system.noop", "args": []}, "/args")]:
        d = problem(s.post(base + "/admin/jobs", json=body, timeout=20), 422)
        assert ptr in json.dumps(d), (body, d)
    problem(s.post(base + "/admin/jobs", json={"jobs": [{"kind": "system.noop"}] * 1001},
                   timeout=20), 422)
    s.post(base + "/auth/register", json={"email": "u@example.com", "password": PW}, timeout=20)
    utok = s.post(base + "/auth/login", json={"email": "u@example.com", "password": PW},
                  timeout=20).json()["access_token"]
    problem(requests.post(base + "/admin/jobs", json={"kind": "system.noop"}, timeout=20,
                          headers={"Authorization": "Bearer " + utok}), 403)
    total = s.get(base + "/admin/jobs", params={"kind": "system.noop", "limit": 500},
                  timeout=20).json()["jobs"]
    assert len(total) == 301 + (again["duplicates"] == 0)  # the refused batches left nothing


# ---------------------------------------------------------------- schedules (CRON_JOBS)

def test_cron_two_instances_fire_once_per_tick_and_once_after_downtime(jobs_proc, request):
    """CRON_JOBS on two instances of one PostgreSQL: every tick runs once
    (cron_runs' primary key is (schedule, fire_time); a second run lands in
    cron_dups). After both stop, the downtime's missed ticks run once —
    the latest — not once per slot (docs/scheduler.md)."""
    url = fresh_pg(request)
    sql = Sql(url)
    env = {"DATABASE_URL": url, "JOBS_QUEUES": "default=2", "JOBS_POLL_INTERVAL": "200ms",
           "CRON_JOBS": "every=@every 1s => tick", "DATABASE_POOL_MAX": "2"}
    a = jobs_proc(**env)
    b = jobs_proc(**env)
    wait_for(lambda: sql.count("cron_runs") >= 5, timeout=20, what="5 ticks")
    for s in (a, b):
        assert s.stop() == 0
    assert sql.count("cron_dups") == 0
    n = sql.count("cron_runs")
    assert sql.count("keel_jobs", "kind = 'tick'") == n  # one job per tick, no duplicate enqueue
    last = sql.scalar("SELECT max(fire_time) FROM cron_runs")
    assert sql.scalar("SELECT count(*) FROM keel_job_schedules WHERE name = 'every' AND "
                      "last_fire_at = %d" % last) == 1

    wait_for(lambda: time.time() >= last + 4.2, timeout=10, what="a 4 s downtime")
    t_start = int(time.time())
    c = jobs_proc(**env)
    wait_for(lambda: sql.count("cron_runs", "fire_time > %d" % last) >= 1, timeout=15,
             what="the tick after the downtime")
    first = sql.scalar("SELECT min(fire_time) FROM cron_runs WHERE fire_time > %d" % last)
    # one tick for the whole downtime, and it is the latest: none of the ~4 slots in between
    assert first >= t_start, (last, first, t_start)
    assert c.stop() == 0
    assert sql.count("cron_dups") == 0


def test_cron_refuses_what_cannot_run(tmp_path):
    """A schedule whose kind has no handler, or a bad expression, stops
    start-up with a message naming it."""
    url = "sqlite:%s" % (tmp_path / "jobs.db")
    for cron, want in [("x=@every 1s => nosuch", "no handler is registered"),
                       ("x=61 * * * * => tick", "minute: 61 is out of range")]:
        e = build_env({"PORT": free_port(), "DATABASE_URL": url, "CRON_JOBS": cron})
        p = subprocess.run([JOBS_BIN, "serve"], env=e, cwd=tmp_path, capture_output=True,
                           text=True, timeout=30 * SLACK)
        assert p.returncode != 0 and want in p.stdout + p.stderr, (cron, p.stdout, p.stderr)
