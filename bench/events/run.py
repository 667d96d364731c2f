#!/usr/bin/python3
"""bench/events/run.py — keel's events routes against an Express 5 + Knex
implementation of the same two routes (bench/events/server.js), on one
throw-away PostgreSQL, in one run (docs/performance.md, "Events").

    make bench-events                    (3 rounds, 10 s per measurement)
    bench/events/run.sh --rounds 5 --duration 10

Run under tests/support/with_pg.sh (run.sh does): KEEL_TEST_PG_URL is the
database. What it does:
  1. `keel migrate up` creates the schema (both servers use it); one user
     (`keel user create`) whose access token both verify (same secret,
     issuer, audience); 100,000 events seeded by SQL (5 % restricted and
     owned by another user, so the visibility condition filters), then
     VACUUM ANALYZE;
  2. keel's JSON Schema of POST /api/v1/events taken from `keel openapi`
     for the Express peer's ajv (same validation);
  3. per round, per target (keel, express, interleaved): the server pinned
     to CPU 0 (keel WORKERS=1, DATABASE_POOL_MAX=P; Node pg pool P), 2 s of
     warm-up, then `wrk -t1 -cC -dS` pinned to CPU 1 on
     GET /api/v1/events?limit=50 and then on POST /api/v1/events (a valid
     event per request, bench/events/post.lua); every response checked
     by wrk's status count (non-2xx fails the run);
  4. the median req/s per target and route, and keel's ratio, to stdout
     and build/bench/events.md / events.json.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "build" / "bench"
KEEL = ROOT / "build" / "keel"
SECRET = "bench-events-secret-0123456789abcdef0123456789"
PW = "bench pass phrase 42"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sh(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("bench-events: %s failed: %s%s" % (cmd[0], p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def keel_env(url, pool, port=None):
    e = dict(os.environ, DATABASE_URL=url, JWT_SECRET=SECRET, JWT_EXPIRES_IN="2h",
             WORKERS="1", DATABASE_POOL_MAX=str(pool), DATABASE_POOL_MIN=str(pool),
             ACCESS_LOG="false", RATE_LIMIT_ENABLED="false", LOG_LEVEL="warn",
             PASSWORD_HASH_MEMORY="8mb", PASSWORD_HASH_OPS="1", JOBS_ENABLED="false",
             OTEL_TRACES_SAMPLER="parentbased_always_on", KEEL_ADMIN_PASSWORD=PW)
    if port:
        e["PORT"] = str(port)
    return e


def wait_up(url, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("bench-events: the server exited: %s" % proc.returncode)
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    sys.exit("bench-events: the server did not answer at %s" % url)


def start(target, url, pool, port, workdir, schema_file):
    cpu = ["taskset", "-c", "0"]
    if target == "keel":
        proc = subprocess.Popen(cpu + [str(KEEL), "serve"], env=keel_env(url, pool, port),
                                cwd=workdir, stdout=subprocess.DEVNULL,
                                stderr=open(workdir / "keel.log", "ab"))
    else:
        env = dict(os.environ, DATABASE_URL=url, JWT_SECRET=SECRET, PORT=str(port),
                   POOL=str(pool), SCHEMA_FILE=str(schema_file), NODE_ENV="production")
        proc = subprocess.Popen(cpu + ["node", str(HERE / "server.js")], env=env, cwd=workdir,
                                stdout=subprocess.DEVNULL,
                                stderr=open(workdir / "express.log", "ab"))
    wait_up("http://127.0.0.1:%d/api/v1/events" % port, proc)
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(url, script, token, connections, seconds):
    env = dict(os.environ, TOKEN=token)
    p = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % connections,
                        "-d%ds" % seconds, "--latency", "-s", str(script), url],
                       capture_output=True, text=True, env=env, timeout=seconds + 60)
    out = p.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or not m:
        sys.exit("bench-events: wrk failed: %s%s" % (out, p.stderr))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit("bench-events: %s non-2xx answers from %s:\n%s" % (bad.group(1), url, out))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return float(m.group(1)), (float(p99.group(1)) * scale[p99.group(2)] if p99 else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--events", type=int, default=100000)
    a = ap.parse_args()
    url = os.environ.get("KEEL_TEST_PG_URL")
    if not url:
        sys.exit("bench-events: run under tests/support/with_pg.sh (bench/events/run.sh does)")
    for tool in ("wrk", "node", "taskset", "psql"):
        if not shutil.which(tool):
            sys.exit("bench-events: %s is missing (scripts/deps.sh bench)" % tool)
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "events-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    env = keel_env(url, a.pool)
    sh([str(KEEL), "migrate", "up"], env=env, cwd=work)
    sh([str(KEEL), "user", "create", "--email", "bench@example.com"], env=env, cwd=work)
    sh([str(KEEL), "user", "create", "--email", "other@example.com"], env=env, cwd=work)
    uid = lambda email: sh(["psql", "-X", "-A", "-t", url, "-c",
                            "SELECT id FROM users WHERE email = '%s'" % email]).strip()
    me, other = uid("bench@example.com"), uid("other@example.com")
    sh(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", """
        INSERT INTO events (id, title, description, type, state, starts_at, ends_at, location,
                            owner_id, depth, path, tags, custom, classification, version,
                            created_at, updated_at)
        SELECT md5(i::text)::uuid::text, 'event ' || i, 'seeded for the benchmark', 'general',
               'draft', 1900000000 + i * 60, 1900000000 + i * 60 + 3600, 'room ' || (i %% 50),
               CASE WHEN i %% 20 = 0 THEN '%s' ELSE '%s' END, 0,
               '/' || md5(i::text)::uuid::text || '/', ',bench,', '{}',
               CASE WHEN i %% 20 = 0 THEN 'restricted' ELSE 'internal' END, 1,
               1700000000 + i, 1700000000 + i
        FROM generate_series(1, %d) AS s(i)""" % (other, me, a.events)])
    sh(["psql", "-X", "-q", url, "-c", "VACUUM ANALYZE"])

    api = json.loads(sh([str(KEEL), "openapi"], env=env, cwd=work))
    schema = api["paths"]["/api/v1/events"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    schema_file = work / "event-create.schema.json"
    schema_file.write_text(json.dumps(schema))

    # a token from keel's own login
    port = free_port()
    k = start("keel", url, a.pool, port, work, schema_file)
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1/auth/login" % port,
                                 data=json.dumps({"email": "bench@example.com",
                                                  "password": PW}).encode(),
                                 headers={"Content-Type": "application/json"})
    token = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
    stop(k)

    results = {t: {"list": [], "create": []} for t in ("keel", "express")}
    p99s = {t: {"list": [], "create": []} for t in ("keel", "express")}
    for rnd in range(a.rounds):
        for target in ("keel", "express") if rnd % 2 == 0 else ("express", "keel"):
            port = free_port()
            p = start(target, url, a.pool, port, work, schema_file)
            base = "http://127.0.0.1:%d/api/v1/events" % port
            # both answer the same: a page of 50 and a created event
            page = json.loads(urllib.request.urlopen(urllib.request.Request(
                base + "?limit=50", headers={"Authorization": "Bearer " + token}),
                timeout=10).read())
            assert len(page["data"]) == 50 and page["next_cursor"], page
            assert all(e["classification"] != "restricted" for e in page["data"])
            wrk(base + "?limit=50", HERE / "list.lua", token, a.connections, 2)
            for route, script, path in (("list", "list.lua", "?limit=50"),
                                        ("create", "post.lua", "")):
                rps, p99 = wrk(base + path, HERE / script, token, a.connections, a.duration)
                results[target][route].append(rps)
                p99s[target][route].append(p99)
                print("round %d %-7s %-6s %9.1f req/s  p99 %s ms" % (rnd + 1, target, route, rps,
                                                                    p99), flush=True)
            stop(p)

    med = {t: {r: statistics.median(v) for r, v in rs.items()} for t, rs in results.items()}
    lines = ["| route | keel req/s | Express + Knex req/s | keel / Express |",
             "| --- | --- | --- | --- |"]
    for route, label in (("list", "GET /api/v1/events?limit=50"), ("create", "POST /api/v1/events")):
        lines.append("| %s | %.0f | %.0f | %.2fx |" % (label, med["keel"][route],
                                                      med["express"][route],
                                                      med["keel"][route] / med["express"][route]))
    report = "\n".join(lines)
    print(report)
    (OUT / "events.md").write_text(report + "\n")
    (OUT / "events.json").write_text(json.dumps({"runs": results, "p99_ms": p99s, "median": med,
                                                 "rounds": a.rounds, "duration": a.duration,
                                                 "connections": a.connections, "pool": a.pool,
                                                 "events": a.events}, indent=1))


if __name__ == "__main__":
    main()
