#!/usr/bin/env python3
"""bench/auth/run.py - authenticated requests (issue 17, "2. Authenticated
requests", first bullet; docs/performance.md, "Authenticated requests").

  make bench-auth                                   # 3 interleaved rounds
  make bench-auth BENCH_AUTH_ARGS="--rounds 5 --duration 10"

1. GET /auth/me with the bench contract's fixed HS256 token
   (shared/bench/README.md): keel's demo route (keel's own verifier,
   ENABLE_DEMO_ROUTES=true, WORKERS=1, ACCESS_LOG=false,
   RATE_LIMIT_ENABLED=false) against Express 5 + jsonwebtoken and
   Fastify 5 + fast-jwt (bench/auth/*.js), each echoing the claims. Per
   round and per target, in alternating order: start the server pinned to
   CPU 0, check the answer (claims with sub=bench-user; a broken signature
   not 200), 2 s warm-up, then `wrk -t1 -c64 -d10s --latency` pinned to
   CPU 1. Medians by req/s; ratios to the peers of the same run.
2. keel only: POST /api/v1/auth/login (argon2id on the work pool,
   WORK_POOL_SIZE default 4) with `wrk -t1 -c16` pinned to CPU 1, while a
   probe on CPU 1 sends GET /health on one keep-alive connection every
   10 ms and records each latency; the probe also runs 5 s on the idle
   server first. Reported: logins/s and the probe's p50/p99/max.
Writes build/bench/auth.json and build/bench/auth.md.
"""
import argparse, http.client, json, os, re, signal, socket, statistics, subprocess
import sys, tempfile, threading, time, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNo"
         "IFVzZXIiLCJpYXQiOjE3MDAwMDAwMDB9.Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As")
BAD = TOKEN[:-2] + ("AA" if not TOKEN.endswith("AA") else "BB")
EMAIL, PASSWORD = "bench@example.com", "correct horse battery"


def log(*a):
    print("[bench-auth]", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Server:
    def __init__(self, name, a, tmp):
        self.name, self.port = name, free_port()
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, PORT=str(self.port), BENCH_HOST="127.0.0.1",
                   BENCH_JWT_SECRET="keel-bench-secret")
        if name == "keel":
            env.update(HOST="127.0.0.1", WORKERS="1", KEEL_ENV="test", ACCESS_LOG="false",
                       RATE_LIMIT_ENABLED="false", ENABLE_DEMO_ROUTES="true", LOG_LEVEL="warn")
            cmd = [a.keel_bin, "serve"]
        else:
            env["NODE_ENV"] = "production"
            cmd = ["node", os.path.join(HERE, name + ".js")]
        self.logf = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(["taskset", "-c", str(a.server_cpu)] + cmd, cwd=self.dir,
                                     env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        end = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("%s did not start:\n%s" % (name, open(self.logf.name).read()[-2000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def wrk(a, port, path, secs, conns, extra, env=None):
    cmd = ["taskset", "-c", str(a.wrk_cpu), "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs,
           "--timeout", "5s", "--latency"] + extra + ["http://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {}))).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_us(re.search(r"\s99%\s+(\S+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(m.group(1)) if m else 0) + (sum(map(int, e.groups())) if e else 0)
    return {"rps": rps, "p50_us": p50, "p99_us": p99, "errors": errors, "raw": out}


def probe(port, stop, out, cpu):
    os.sched_setaffinity(0, {cpu})  # the calling thread only (Linux: per-thread affinity)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        t0 = time.perf_counter()
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        out.append((time.perf_counter() - t0) * 1e6)
        if r.status != 200:
            out.append(float("inf"))
        time.sleep(0.01)
    c.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def probed(port, secs, a, load=None):
    lat, stop = [], threading.Event()
    th = threading.Thread(target=probe, args=(port, stop, lat, a.wrk_cpu))
    th.start()
    res = load() if load else (time.sleep(secs) or None)
    stop.set()
    th.join()
    return res, {"n": len(lat), "p50_us": pct(lat, 50), "p99_us": pct(lat, 99), "max_us": max(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--login-connections", type=int, default=16)
    ap.add_argument("--targets", default="keel,fastify,express")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--wrk-cpu", type=int, default=1)
    ap.add_argument("--keel-bin", default=os.path.join(ROOT, "build", "keel"))
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "auth.json"))
    ap.add_argument("--md", default=os.path.join(ROOT, "build", "bench", "auth.md"))
    a = ap.parse_args()
    names = a.targets.split(",")
    if any(n != "keel" for n in names) and not os.path.isdir(os.path.join(HERE, "node_modules", "fast-jwt")):
        log("installing the Node peers' packages (npm ci --omit=dev in bench/auth)")
        subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=HERE,
                       check=True, stdout=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="keel-bench-auth.")
    load0 = open("/proc/loadavg").read().split()[:3]
    runs = {n: [] for n in names}
    login = {}
    try:
        for rnd in range(a.rounds):
            for n in (names if rnd % 2 == 0 else list(reversed(names))):
                s = Server(n, a, tmp)
                try:
                    st, b = request(s.port, "GET", "/auth/me", headers={"Authorization": "Bearer " + TOKEN})
                    if st != 200 or json.loads(b).get("sub") != "bench-user":
                        raise SystemExit("%s: /auth/me answered %d %r" % (n, st, b[:200]))
                    st2, _ = request(s.port, "GET", "/auth/me", headers={"Authorization": "Bearer " + BAD})
                    if st2 == 200:
                        raise SystemExit("%s accepted a broken signature" % n)
                    hdr = ["-H", "Authorization: Bearer " + TOKEN]
                    if a.warmup:
                        wrk(a, s.port, "/auth/me", a.warmup, a.connections, hdr)
                    r = wrk(a, s.port, "/auth/me", a.duration, a.connections, hdr)
                finally:
                    s.stop()
                r.pop("raw")
                runs[n].append(r)
                log("round %d %-8s /auth/me %9.0f req/s p99 %7.0f us errors %d" % (rnd + 1, n, r["rps"], r["p99_us"], r["errors"]))
        if "keel" in names:
            s = Server("keel", a, tmp)
            try:
                st, b = request(s.port, "POST", "/api/v1/auth/register",
                                json.dumps({"email": EMAIL, "password": PASSWORD}),
                                {"Content-Type": "application/json"})
                if st != 201:
                    raise SystemExit("register: %d %r" % (st, b[:300]))
                body = json.dumps({"email": EMAIL, "password": PASSWORD})
                st, b = request(s.port, "POST", "/api/v1/auth/login", body, {"Content-Type": "application/json"})
                if st != 200:
                    raise SystemExit("login: %d %r" % (st, b[:300]))
                _, idle = probed(s.port, 5, a)
                lua = ["-s", os.path.join(HERE, "login.lua")]
                if a.warmup:
                    wrk(a, s.port, "/api/v1/auth/login", a.warmup, a.login_connections, lua, {"BENCH_LOGIN_BODY": body})
                lr, busy = probed(s.port, 0, a, lambda: wrk(a, s.port, "/api/v1/auth/login", a.duration,
                                                            a.login_connections, lua, {"BENCH_LOGIN_BODY": body}))
                lr.pop("raw")
                login = {"wrk": lr, "health_idle": idle, "health_under_login": busy}
                log("login %.1f/s p99 %.0f ms errors %d; /health idle p99 %.0f us, under logins p50 %.0f us p99 %.0f us max %.0f us (%d probes)" % (
                    lr["rps"], lr["p99_us"] / 1000, lr["errors"], idle["p99_us"], busy["p50_us"], busy["p99_us"], busy["max_us"], busy["n"]))
            finally:
                s.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = open("/proc/loadavg").read().split()[:3]
    med = {}
    for n, rs in runs.items():
        rs_sorted = sorted(rs, key=lambda r: r["rps"])
        m = rs_sorted[len(rs_sorted) // 2]
        med[n] = dict(m, rps_min=rs_sorted[0]["rps"], rps_max=rs_sorted[-1]["rps"])
    lines = ["| target | /auth/me req/s, median (min-max) | p50 µs | p99 µs | errors | keel ÷ target |", "|---|---|---|---|---|---|"]
    for n, m in med.items():
        ratio = med["keel"]["rps"] / m["rps"] if "keel" in med else float("nan")
        lines.append("| %s | %.0f (%.0f-%.0f) | %.0f | %.0f | %d | %.2fx |" % (n, m["rps"], m["rps_min"], m["rps_max"], m["p50_us"], m["p99_us"], m["errors"], ratio))
    if login:
        lr, idle, busy = login["wrk"], login["health_idle"], login["health_under_login"]
        lines += ["", "| keel, argon2id login (WORK_POOL_SIZE 4) | figure |", "|---|---|",
                  "| POST /api/v1/auth/login, wrk -c%d -d%ds | %.1f logins/s (p50 %.0f ms, p99 %.0f ms, errors %d) |" % (
                      a.login_connections, a.duration, lr["rps"], lr["p50_us"] / 1000, lr["p99_us"] / 1000, lr["errors"]),
                  "| GET /health every 10 ms, idle server (5 s) | p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d probes) |" % (idle["p50_us"], idle["p99_us"], idle["max_us"], idle["n"]),
                  "| GET /health every 10 ms during the logins | p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d probes; target p99 < 5 ms) |" % (busy["p50_us"], busy["p99_us"], busy["max_us"], busy["n"])]
    lines += ["", "%d interleaved rounds, wrk -t1 -c%d -d%ds --latency (+%d s warm-up), server on CPU %d, wrk and the probe on CPU %d; %s; load average before %s, after %s; %s" % (
        a.rounds, a.connections, a.duration, a.warmup, a.server_cpu, a.wrk_cpu, os.uname()[2],
        " ".join(load0), " ".join(load1), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))]
    md = "\n".join(lines) + "\n"
    print(md)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    open(a.md, "w").write(md)
    json.dump({"meta": {"loadavg_before": load0, "loadavg_after": load1, "rounds": a.rounds},
               "runs": runs, "median": med, "login": login}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
