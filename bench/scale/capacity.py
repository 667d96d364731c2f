#!/usr/bin/python3
"""Capacity of the scale-out recipe on one machine (issue: scale-out).

This machine has 2 cores, so throughput cannot grow with instances here.
What can be measured is the CPU each tier spends per request: keel, the
proxy (nginx), PostgreSQL and Redis, from /proc (utime + stime of every
process of the tier, before and after a wrk run). From the CPU per 1,000
requests follows the requests/s one core of each tier can carry, and so
where the bottleneck moves as keel instances are added.

Workloads: GET /db?id=42 (one PostgreSQL query, the bench's "single
query") and GET /api/v1/auth/me with a real access token (JWT check +
auth state). Each through nginx in front of three instances, and against
one instance directly (no proxy): the proxy's overhead as a ratio.

Usage: bench/scale/capacity.py [--seconds 10] [--json build/capacity.json]
(make bench-scale). Starts everything itself on loopback ports."""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "scale"))
os.environ.setdefault("KEEL_BIN", str(REPO / "build" / "keel"))
import conftest as scale  # noqa: E402  (the scale suite's process helpers)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids):
    """utime + stime of pids, in seconds (vanished processes count 0)."""
    total = 0
    for pid in pids:
        try:
            f = open("/proc/%d/stat" % pid).read()
        except OSError:
            continue
        fields = f[f.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def children_of(ppid):
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            f = open(stat).read()
        except OSError:
            continue
        if int(f[f.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(stat.split("/")[2]))
    return out


def tree(pid):
    return [pid] + children_of(pid)


def wrk(url, seconds, headers=()):
    argv = ["wrk", "-t2", "-c32", "-d%ds" % seconds, "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return n, (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)


def measure(url, seconds, tiers, headers=()):
    """{tier: cpu seconds per 1000 requests}, requests/s, failures."""
    before = {t: cpu_of(fn()) for t, fn in tiers.items()}
    t0 = time.monotonic()
    n, failed = wrk(url, seconds, headers)
    took = time.monotonic() - t0
    after = {t: cpu_of(fn()) for t, fn in tiers.items()}
    per_k = {t: round((after[t] - before[t]) * 1000.0 / max(n, 1), 4) for t in tiers}
    return {"requests": n, "rps": round(n / took), "failed": failed, "cpu_s_per_1000": per_k}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--json", default=str(REPO / "build" / "capacity.json"))
    args = ap.parse_args()
    work = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    pg, redis = scale.PgCluster(), scale.RedisServer()
    cluster = proxy = single = None
    try:
        pmpid = int(open(glob.glob(pg.dir + "/**/postmaster.pid", recursive=True)[0]).readline())
        bench_env = dict(RATE_LIMIT_ENABLED="false", ACCESS_LOG="false", SHUTDOWN_DELAY="0s")
        cluster = scale.Cluster(pg, redis, work / "three", **bench_env)
        proxy = scale.Proxy("nginx", cluster.ports, work / "nginx")
        # a user and a real access token
        import requests
        r = requests.post(cluster.nodes[0].url + "/api/v1/auth/register", timeout=30,
                          json={"email": "bench@example.com", "name": "Bench",
                                "password": "correct horse battery staple"})
        token = r.json()["access_token"]
        auth = ("Authorization: Bearer " + token,)
        tiers3 = {"keel": lambda: [n.proc.pid for n in cluster.nodes],
                  "nginx": lambda: tree(proxy.proc.pid),
                  "postgresql": lambda: tree(pmpid),
                  "redis": lambda: [redis.proc.pid]}
        results = {"machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
                   "seconds": args.seconds}
        for name, path, hdrs in (("db", "/db?id=42", ()), ("auth_me", "/api/v1/auth/me", auth)):
            results[name + "_via_nginx_3"] = measure(proxy.url + path, args.seconds, tiers3, hdrs)
        proxy.stop()
        for n in cluster.nodes[1:]:
            n.stop()
        single = cluster.nodes[0]
        tiers1 = {"keel": lambda: [single.proc.pid], "postgresql": lambda: tree(pmpid),
                  "redis": lambda: [redis.proc.pid]}
        for name, path, hdrs in (("db", "/db?id=42", ()), ("auth_me", "/api/v1/auth/me", auth)):
            results[name + "_direct_1"] = measure(single.url + path, args.seconds, tiers1, hdrs)
        for name in ("db", "auth_me"):
            via, direct = results[name + "_via_nginx_3"], results[name + "_direct_1"]
            per_core = {t: round(1000.0 / v) if v > 0 else None
                        for t, v in via["cpu_s_per_1000"].items()}
            results[name + "_projection"] = {
                "req_per_s_per_core": per_core,
                "proxy_cpu_over_keel": round(via["cpu_s_per_1000"]["nginx"] /
                                             max(via["cpu_s_per_1000"]["keel"], 1e-9), 2),
                "throughput_via_proxy_over_direct": round(via["rps"] / max(direct["rps"], 1), 2),
            }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
    finally:
        if proxy:
            proxy.stop()
        if cluster:
            cluster.stop()
        redis.stop()
        pg.destroy()


if __name__ == "__main__":
    main()
