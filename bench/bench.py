#!/usr/bin/env python3
"""bench/bench.py — keel's benchmark system (docs/performance.md, "The
benchmark system"): results as JSON, a committed baseline, a regression
gate on instructions per request, and a report with SVG charts.
Python standard library only.

    bench/bench.py instr [--n N] [--targets LIST] [--json OUT]
        user-space instructions per request under callgrind (bench/instr.sh)
        for the gate's endpoints, as one result file (default
        build/bench/instr.json)
    bench/bench.py check RESULT [--baseline FILE] [--threshold 3]
        exit 1 when a figure of RESULT is worse than the baseline's by more
        than threshold %, or the baseline has a figure RESULT lacks
    bench/bench.py baseline RESULT
        RESULT's instruction figures become bench/baseline.json
    bench/bench.py authme [--dbs sqlite,postgres] [--rounds 5] [--duration 5]
        wall clock: GET /api/v1/auth/me (real token) against the demo
        GET /auth/me, interleaved wrk runs on one keel (printed; `run`
        records it)
    bench/bench.py run [--rounds 3] [--duration 5] [--skip wall,authme]
        everything: instr, the side-by-side run against nginx & co.
        (bench/run.sh), authme; one result into bench/results/, then report
    bench/bench.py report [RESULT]
        build/bench/report.md + build/bench/*.svg: RESULT (default: the
        newest in bench/results/) against the baseline and previous runs

A result:
    {"schema": 1, "kind": "instr" | "bench", "date", "commit", "dirty",
     "machine": {"cpu_model", "cores", "kernel", "loadavg"},
     "settings": {...},
     "figures": {NAME: {"unit", "better": "lower" | "higher",
                        "min", "median", "max", "values": [...]}}}
Figure names: "instr <endpoint>" (instructions/request), "syscalls
<endpoint>", "rps <target> <endpoint>", "p99_ms <target> <endpoint>",
"x_nginx <target> <endpoint>", "authme <db> rps api|demo",
"authme <db> ratio".
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.environ.get("KEEL_BENCH_BASELINE", os.path.join(HERE, "baseline.json"))
RESULTS = os.environ.get("KEEL_BENCH_RESULTS", os.path.join(HERE, "results"))
OUT = os.environ.get("KEEL_BENCH_OUT", os.path.join(ROOT, "build", "bench"))
SHARED = os.environ.get("KEEL_SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench"))
# N per target: about 100 M instructions measured each, so that the
# start-up/shut-down noise between runs (glibc's malloc_consolidate, the
# Date line once per second: up to ~0.13 M instructions, see
# docs/performance.md) stays near 0.1 % of the figure.
GATE_TARGETS = ("keel-hello:8000,keel-json:8000,keel-echo:1200,keel-authme:8000,"
                "keel-db:1200,keel-apime:4000")
ENDPOINT = {"keel-hello": "GET /hello", "keel-json": "GET /json", "keel-echo": "POST /echo",
            "keel-authme": "GET /auth/me", "keel-apime": "GET /api/v1/auth/me",
            "keel-db": "GET /db", "nginx-hello": "nginx GET /hello",
            "nginx-json": "nginx GET /json"}
BENCH_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
               "eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNoIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDB9."
               "Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As")


# ---------------------------------------------------------------- results

def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "loadavg": list(os.getloadavg())}


def commit():
    c = sh(["git", "-C", ROOT, "rev-parse", "HEAD"]).stdout.strip()
    dirty = bool(sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
                 .stdout.strip())
    return c, dirty


def figure(values, unit, better):
    vals = [v for v in values if v is not None]
    return {"unit": unit, "better": better, "min": min(vals), "median": statistics.median(vals),
            "max": max(vals), "values": vals}


def new_result(kind, settings):
    c, dirty = commit()
    return {"schema": 1, "kind": kind,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": c, "dirty": dirty, "machine": machine(), "settings": settings,
            "figures": {}}


def save(res, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def load(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- instr

def run_instr(n, targets, rounds=1, conns=1):
    """{target: ([instr/req per round], [syscalls/req per round])}. One
    connection: each request then wakes the loop for itself alone — with
    several, how many requests one loop iteration picks up depends on the
    machine's load, and so do the loop's instructions per request."""
    out = {}
    for _ in range(rounds):
        with tempfile.NamedTemporaryFile("r", suffix=".tsv") as tsv:
            p = subprocess.run([os.path.join(HERE, "instr.sh"), "-n", str(n), "-t", targets,
                                "-c", str(conns), "-o", tsv.name], cwd=ROOT, stdout=sys.stderr)
            if p.returncode != 0:
                sys.exit("bench: bench/instr.sh failed (%d)" % p.returncode)
            for line in tsv.read().splitlines():
                t, ipr, spr, _irn, _ir0 = line.split("\t")
                i, s = out.setdefault(t, ([], []))
                i.append(int(ipr))
                s.append(float(spr))
    return out


def instr_figures(res, data):
    for t, (ipr, spr) in data.items():
        ep = ENDPOINT.get(t, t)
        res["figures"]["instr " + ep] = figure(ipr, "instructions/request", "lower")
        res["figures"]["syscalls " + ep] = figure(spr, "syscalls/request", "info")


def build_flags():
    """The flags build/keel was compiled with (build/.cflags); refuses a
    build that is not the normal optimised one."""
    try:
        with open(os.path.join(ROOT, "build", ".cflags")) as f:
            flags = f.read().strip()
    except OSError:
        sys.exit("bench: build/.cflags missing: run make first")
    if "-O2" not in flags.split() or "sanitize" in flags:
        sys.exit("bench: build/keel is not the normal -O2 build (%s): make clean && make" % flags)
    return flags


def cmd_instr(a):
    res = new_result("instr", {"n": a.n, "targets": a.targets, "rounds": a.rounds,
                               "connections": 1, "build": build_flags()})
    instr_figures(res, run_instr(a.n, a.targets, a.rounds))
    save(res, a.json)
    print("bench: %s" % os.path.relpath(a.json, ROOT))


# ---------------------------------------------------------------- check / baseline

def compare(res, base, threshold):
    """[(name, base, now, change %, verdict)] for the figures both have
    that have a direction; verdict "worse" beyond threshold."""
    rows = []
    for name, b in sorted(base["figures"].items()):
        if b.get("better") not in ("lower", "higher"):
            continue
        f = res["figures"].get(name)
        if f is None:
            rows.append((name, b["median"], None, None, "missing"))
            continue
        ch = (f["median"] - b["median"]) / b["median"] * 100 if b["median"] else 0.0
        worse = ch > threshold if b["better"] == "lower" else ch < -threshold
        better = ch < -threshold if b["better"] == "lower" else ch > threshold
        rows.append((name, b["median"], f["median"], ch,
                     "WORSE" if worse else "better" if better else "ok"))
    return rows


def cmd_check(a):
    res, base = load(a.result), load(a.baseline)
    rows = [r for r in compare(res, base, a.threshold) if r[0].startswith(a.prefix)]
    print("| figure | baseline | now | change | |\n|---|---:|---:|---:|---|")
    for name, b, now, ch, v in rows:
        print("| %s | %s | %s | %s | %s |" % (name, fmt(b), fmt(now),
                                               "—" if ch is None else "%+.2f %%" % ch, v))
    bad = [r for r in rows if r[4] in ("WORSE", "missing")]
    if bad:
        print("bench: %d figure(s) worse than bench/baseline.json by more than %g %% (or "
              "missing): %s. A deliberate change: make bench-baseline, and commit "
              "bench/baseline.json." % (len(bad), a.threshold, ", ".join(r[0] for r in bad)))
        return 1
    print("bench: every figure within %g %% of bench/baseline.json (baseline %s)"
          % (a.threshold, base.get("commit", "?")[:10]))
    return 0


def cmd_baseline(a):
    res = load(a.result)
    base = dict(res)
    base["figures"] = {k: v for k, v in res["figures"].items() if k.startswith("instr ")
                       or k.startswith("syscalls ")}
    base["note"] = ("the regression gate's reference (make bench-instr); rewritten by "
                    "make bench-baseline, committed deliberately")
    save(base, BASELINE)
    print("bench: bench/baseline.json rewritten from %s (%d figures); commit it"
          % (os.path.relpath(a.result, ROOT), len(base["figures"])))


# ---------------------------------------------------------------- wall clock: authme

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(port, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("keel exited at start")
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("keel did not answer on %d" % port)


def wrk(port, path, duration, auth, cpu="1", connections=64):
    env = dict(os.environ, BENCH_AUTH="Bearer " + auth)
    p = sh(["taskset", "-c", cpu, "wrk", "-t1", "-c%d" % connections, "-d%ds" % duration,
            "--latency", "-s", os.path.join(SHARED, "lib", "wrk.lua"),
            "http://127.0.0.1:%d%s" % (port, path)], env=env, timeout=duration + 60)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = json.loads(line.split(" ", 1)[1])
            errs = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                                      "err_timeout"))
            if errs:
                raise RuntimeError("wrk: %d errors on %s" % (errs, path))
            return r
    raise RuntimeError("wrk gave no result: %s" % p.stderr)


def authme_run(db, rounds, duration, warmup):
    """Interleaved wrk runs of the demo route and /api/v1/auth/me on one
    keel (WORKERS=1, pinned to CPU 0) over db: {"demo": [rps], "api": [rps]}."""
    tmp = tempfile.mkdtemp(prefix="keel-authme.")
    pg_dir = None
    proc = None
    try:
        env = dict(os.environ, WORKERS="1", HOST="127.0.0.1", ACCESS_LOG="false",
                   RATE_LIMIT_ENABLED="false", ENABLE_DEMO_ROUTES="true", LOG_LEVEL="warn",
                   JWT_SECRET="authme-secret-0123456789abcdef0123456789abcdef",
                   JWT_EXPIRES_IN="24h", PASSWORD_HASH_MEMORY="8mb", PASSWORD_HASH_OPS="1")
        if db == "postgres":
            p = sh([os.path.join(ROOT, "tests", "support", "pg_tmp.sh"), "start"], timeout=120)
            if p.returncode:
                raise RuntimeError("pg_tmp.sh: " + p.stderr)
            kv = dict(l.replace("export ", "", 1).split("=", 1) for l in p.stdout.splitlines()
                      if l.startswith("export "))
            pg_dir = kv["KEEL_TEST_PG_DIR"]
            env["DATABASE_URL"] = kv["KEEL_TEST_PG_URL"]
        else:
            env["DATABASE_URL"] = "sqlite:%s/keel.db" % tmp
        port = free_port()
        env["PORT"] = str(port)
        proc = subprocess.Popen(["taskset", "-c", "0", os.path.join(ROOT, "build", "keel"),
                                 "serve"], env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "log"), "w"))
        wait_http(port, proc)
        req = urllib.request.Request(
            "http://127.0.0.1:%d/api/v1/auth/register" % port,
            data=json.dumps({"email": "bench@example.com",
                             "password": "correct horse battery staple"}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        token = json.load(urllib.request.urlopen(req, timeout=60))["access_token"]
        paths = {"demo": ("/auth/me", BENCH_TOKEN), "api": ("/api/v1/auth/me", token)}
        out = {"demo": [], "api": []}
        for name, (path, tok) in paths.items():
            if warmup:
                wrk(port, path, warmup, tok)
        for i in range(rounds):
            order = ["demo", "api"] if i % 2 == 0 else ["api", "demo"]
            for name in order:
                path, tok = paths[name]
                out[name].append(wrk(port, path, duration, tok)["rps"])
        return out
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg_dir:
            sh([os.path.join(ROOT, "tests", "support", "pg_tmp.sh"), "destroy", pg_dir],
               timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def authme_figures(res, dbs, rounds, duration, warmup):
    for db in dbs:
        r = authme_run(db, rounds, duration, warmup)
        res["figures"]["authme %s rps demo" % db] = figure(r["demo"], "req/s", "higher")
        res["figures"]["authme %s rps api" % db] = figure(r["api"], "req/s", "higher")
        # the ratio of each interleaved pair: same minute, same conditions
        res["figures"]["authme %s ratio" % db] = figure(
            [x / y for x, y in zip(r["api"], r["demo"])], "x demo route", "higher")


def cmd_authme(a):
    res = new_result("authme", {"rounds": a.rounds, "duration_s": a.duration})
    authme_figures(res, a.dbs.split(","), a.rounds, a.duration, a.warmup)
    print(render_table(res))
    if a.json:
        save(res, a.json)


# ---------------------------------------------------------------- wall clock: peers

def wall_figures(res, rounds, duration, warmup, peers, endpoints):
    """rounds passes of bench/run.sh (../shared/bench) with --rounds 1: each
    pass runs every target once, so the rounds are interleaved across
    targets, and x_nginx compares a target with nginx of the same pass."""
    js = os.path.join(OUT, "bench.json")
    passes = []
    for _ in range(rounds):
        p = subprocess.run([os.path.join(HERE, "run.sh"), "--peers", peers, "--endpoints",
                            endpoints, "--rounds", "1", "--duration", str(duration),
                            "--warmup", str(warmup)], cwd=ROOT, stdout=sys.stderr)
        if p.returncode not in (0, 1):
            sys.exit("bench: bench/run.sh failed")
        doc = load(js)
        passes.append({(r["target"], r["endpoint"]): r for r in doc["results"]
                       if r.get("status") == "ok" and not r.get("errors")})
    res["settings"]["wall"] = {k: doc["meta"].get(k) for k in
                               ("duration_s", "warmup_s", "connections", "threads", "pinned",
                                "wrk")}
    keys = sorted(set().union(*passes))
    for t, ep in keys:
        runs = [p[(t, ep)] for p in passes if (t, ep) in p]
        name = "%s /%s" % (t, ep)
        res["figures"]["rps " + name] = figure([x["rps"] for x in runs], "req/s", "higher")
        res["figures"]["p99_ms " + name] = figure([x["p99_us"] / 1000.0 for x in runs], "ms",
                                                  "lower")
        ratios = [p[(t, ep)]["rps"] / p[("nginx", ep)]["rps"] for p in passes
                  if t != "nginx" and (t, ep) in p and ("nginx", ep) in p]
        if ratios:
            res["figures"]["x_nginx " + name] = figure(ratios, "x nginx", "higher")


def cmd_run(a):
    skip = set(filter(None, a.skip.split(",")))
    res = new_result("bench", {"instr_n": a.n, "rounds": a.rounds, "duration_s": a.duration,
                               "build": build_flags()})
    if "instr" not in skip:
        instr_figures(res, run_instr(a.n, GATE_TARGETS + ",nginx-hello:20000,nginx-json:20000"))
    if "wall" not in skip:
        wall_figures(res, a.rounds, a.duration, a.warmup, a.peers, a.endpoints)
    if "authme" not in skip:
        authme_figures(res, a.dbs.split(","), max(a.rounds, 3), a.duration, a.warmup)
    stamp = res["date"].replace(":", "").replace("-", "")
    path = os.path.join(RESULTS, "%s-%s.json" % (stamp, res["commit"][:10]))
    save(res, path)
    print("bench: %s" % os.path.relpath(path, ROOT))
    a.result = path
    return cmd_report(a)


# ---------------------------------------------------------------- report

def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.3g" % v


def render_table(res):
    lines = ["| figure | unit | median | min | max | n |", "|---|---|---:|---:|---:|---:|"]
    for name, f in sorted(res["figures"].items()):
        lines.append("| %s | %s | %s | %s | %s | %d |" % (name, f["unit"], fmt(f["median"]),
                                                          fmt(f["min"]), fmt(f["max"]),
                                                          len(f["values"])))
    return "\n".join(lines)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_bars(title, unit, series):
    """A horizontal bar chart: series = [(label, median, min, max)] — one
    bar per run (baseline, previous runs, this run), the min–max range as
    a whisker."""
    w, left, right, bar, gap, top = 720, 260, 90, 16, 6, 34
    h = top + len(series) * (bar + gap) + 24
    vmax = max([s[3] if s[3] is not None else s[1] for s in series] + [1e-9]) * 1.05
    scale = (w - left - right) / vmax
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="8" y="20" font-size="14" font-weight="bold">%s</text>' % esc(title),
           '<text x="%d" y="20" text-anchor="end" fill="#555">%s</text>' % (w - 8, esc(unit))]
    for i, (label, med, lo, hi) in enumerate(series):
        y = top + i * (bar + gap)
        colour = "#d9822b" if i == len(series) - 1 else "#4a7ab5" if label.startswith(
            "baseline") else "#9bb3cf"
        out.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                   % (left - 6, y + bar - 4, esc(label)))
        out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                   % (left, y, med * scale, bar, colour))
        if lo is not None and hi is not None and hi > lo:
            yy = y + bar / 2
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>'
                       % (left + lo * scale, yy, left + hi * scale, yy))
            for x in (lo, hi):
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>'
                           % (left + x * scale, y + 3, left + x * scale, y + bar - 3))
        out.append('<text x="%.1f" y="%d">%s</text>'
                   % (left + max(med, hi or 0) * scale + 4, y + bar - 4, esc(fmt(med))))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def slug(s):
    return "".join(c if c.isalnum() else "_" for c in s).strip("_")


def cmd_report(a):
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
    path = a.result or (files[-1] if files else None)
    if not path:
        sys.exit("bench: no result in bench/results/ (make bench first)")
    res = load(path)
    base = load(BASELINE) if os.path.exists(BASELINE) else None
    prev = [load(f) for f in files if os.path.abspath(f) != os.path.abspath(path)][-5:]
    os.makedirs(OUT, exist_ok=True)
    md = ["# keel benchmark report", "",
          "Run %s, commit %s%s, on %s (%s cores, Linux %s, load %s before)."
          % (res["date"], res["commit"][:10], " (uncommitted changes)" if res["dirty"] else "",
             res["machine"]["cpu_model"], res["machine"]["cores"], res["machine"]["kernel"],
             " ".join("%.2f" % x for x in res["machine"]["loadavg"])), "",
          "Result file: `%s`. Baseline: `bench/baseline.json` (commit %s). Previous runs: %d."
          % (os.path.relpath(path, ROOT), base["commit"][:10] if base else "none", len(prev)),
          ""]
    if base:
        rows = compare(res, base, a.threshold)
        md += ["## Against the baseline (median; gate threshold %g %%)" % a.threshold, "",
               "| figure | baseline | this run | change | |", "|---|---:|---:|---:|---|"]
        for name, b, now, ch, v in rows:
            md.append("| %s | %s | %s | %s | %s |" % (name, fmt(b), fmt(now),
                                                      "—" if ch is None else "%+.2f %%" % ch, v))
        md.append("")
    md += ["## This run (min / median / max over rounds)", "", render_table(res), ""]
    md += ["## Charts", "", "Each chart: the baseline (dark blue), previous runs (light "
           "blue), this run (orange); the whisker is min–max over the rounds.", ""]
    for name, f in sorted(res["figures"].items()):
        if f.get("better") == "info":
            continue
        series = []
        if base and name in base["figures"]:
            b = base["figures"][name]
            series.append(("baseline %s" % base["commit"][:7], b["median"], b["min"], b["max"]))
        for p in prev:
            if name in p["figures"]:
                g = p["figures"][name]
                series.append(("%s %s" % (p["date"][:16].replace("T", " "), p["commit"][:7]),
                               g["median"], g["min"], g["max"]))
        series.append(("this run %s" % res["commit"][:7], f["median"], f["min"], f["max"]))
        svg = "chart-%s.svg" % slug(name)
        with open(os.path.join(OUT, svg), "w") as fh:
            fh.write(svg_bars(name, "%s (%s is better)" % (f["unit"], f["better"]), series))
        md.append("![%s](%s)" % (name, svg))
    report = os.path.join(OUT, "report.md")
    with open(report, "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("bench: %s" % os.path.relpath(report, ROOT))
    return 0


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("instr")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--targets", default=GATE_TARGETS)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", default=os.path.join(OUT, "instr.json"))
    p = sub.add_parser("check")
    p.add_argument("result")
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--threshold", type=float, default=3.0)
    p.add_argument("--prefix", default="instr ")
    p = sub.add_parser("baseline")
    p.add_argument("result")
    p = sub.add_parser("authme")
    p.add_argument("--dbs", default="sqlite,postgres")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json")
    p = sub.add_parser("run")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peers", default="nginx,express,fastify")
    p.add_argument("--endpoints", default="hello,json,auth,echo")
    p.add_argument("--dbs", default="sqlite,postgres")
    p.add_argument("--skip", default="")
    p.add_argument("--threshold", type=float, default=3.0)
    p = sub.add_parser("report")
    p.add_argument("result", nargs="?")
    p.add_argument("--threshold", type=float, default=3.0)
    a = ap.parse_args()
    if a.cmd == "run":
        a.result = None
    return {"instr": cmd_instr, "check": cmd_check, "baseline": cmd_baseline,
            "authme": cmd_authme, "run": cmd_run, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
