#!/usr/bin/env python3
"""bench/uploads/run.py - keel's streamed uploads and sendfile downloads
against Fastify 5 + @fastify/multipart + @fastify/static, in one run
(issue 15, "Benchmark"; docs/performance.md, "Uploads and downloads").

  make bench-uploads                      # 5 interleaved rounds
  make bench-uploads BENCH_UPLOADS_ARGS="--rounds 3 --upload-mib 100 --download-mib 1024"

Per target (keel, fastify), started once and pinned to CPU 0 (taskset; keel
WORKERS=1, its work pool threads inherit the pin; Fastify is one process):
  - keel: a user registered through POST /api/v1/auth/register, its access
    token on every request (the real auth chain); the 1 GiB file uploaded
    once through POST /api/v1/files (not measured);
  - fastify: bench/uploads/fastify.js verifies an HS256 bearer token
    (fast-jwt) on every request; the 1 GiB file is copied into its
    directory and registered (not measured).
Warm-up: --warmup (default 2) unmeasured uploads per target (Node's JIT;
the disk still writing the 1 GiB files). Then rounds, interleaved (keel
up, fastify up, keel down, fastify down, the
order of the targets alternating per round):
  - upload: curl (pinned to CPU 1) POSTs the same 100 MiB file as one
    multipart part (`-F file=@...`, no Expect: 100-continue); both servers
    stream it to a temporary file, SHA-256 it, fsync and rename it;
  - download: curl GETs the 1 GiB file's content to /dev/null;
  - throughput = bytes / curl's total time (MiB/s); during each transfer
    VmRSS of the server process is sampled from /proc/PID/status every
    20 ms; peak = the highest sample (VmHWM is also read at the end).
Medians over the rounds; ratios keel / fastify of the medians.
Writes build/bench/uploads.json and build/bench/uploads.md.
"""
import argparse, hashlib, json, os, shutil, signal, socket, statistics, subprocess
import sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MIB = 1 << 20
# The bench contract's fixed HS256 token (shared/bench/README.md), secret keel-bench-secret.
BENCH_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNo"
               "IFVzZXIiLCJpYXQiOjE3MDAwMDAwMDB9.Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As")


def log(*a):
    print("[bench-uploads]", *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_http(port, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http_json(method, url, body=None, token=None, ctype="application/json"):
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, json.loads(r.read() or b"null")


def make_file(path, mib):
    """Deterministic, incompressible-looking bytes (a SHA-256 stream)."""
    h = hashlib.sha256()
    block = b"".join(hashlib.sha256(b"keel-bench-%d" % i).digest() for i in range(32768))
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
            h.update(block)
    return h.hexdigest()


class Target:
    def __init__(self, name, args, tmp):
        self.name, self.args, self.tmp = name, args, tmp
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None
        self.token = None
        self.big_id = None

    def start(self):
        if self.name == "keel":
            env = dict(os.environ, HOST="127.0.0.1", PORT=str(self.port), WORKERS="1",
                       KEEL_ENV="test", ACCESS_LOG="false", RATE_LIMIT_ENABLED="false",
                       LOG_LEVEL="warn", UPLOAD_DIR=os.path.join(self.dir, "uploads"),
                       UPLOAD_MAX_BODY="2gb", UPLOAD_MAX_FILE_SIZE="2gb",
                       UPLOAD_QUOTA_BYTES="1000gb")
            cmd = [self.args.keel_bin, "serve"]
        else:
            env = dict(os.environ, NODE_ENV="production", PORT=str(self.port),
                       BENCH_HOST="127.0.0.1", UPLOAD_DIR=os.path.join(self.dir, "uploads"),
                       BENCH_JWT_SECRET="keel-bench-secret")
            cmd = ["node", os.path.join(HERE, "fastify.js")]
        self.logf = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(["taskset", "-c", str(self.args.server_cpu)] + cmd,
                                     cwd=self.dir, env=env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_http(self.port, self.proc):
            raise SystemExit("%s did not start:\n%s" % (self.name, open(self.logf.name).read()[-2000:]))
        self.base = "http://127.0.0.1:%d" % self.port
        if self.name == "keel":
            st, b = http_json("POST", self.base + "/api/v1/auth/register",
                              json.dumps({"email": "bench@example.com",
                                          "password": "correct horse battery"}).encode())
            self.token = b["access_token"]
        else:
            self.token = BENCH_TOKEN

    def tmp_dir(self):
        return os.path.join(self.dir, "uploads", "tmp")

    def prepare_big(self, path, sha):
        if self.name == "keel":
            r = curl(self, "upload", path, cpu=self.args.client_cpu)
            self.big_id = r["body"]["data"][0]["id"]
        else:
            dst = os.path.join(self.dir, "uploads", "files", sha)
            shutil.copyfile(path, dst)
            st, b = http_json("POST", self.base + "/bench/adopt/" + sha, b"{}", self.token)
            self.big_id = b["data"][0]["id"]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def server_pid(t):
    """taskset execs the server: the Popen PID is the server itself."""
    return t.proc.pid


def disk_writes():
    """Sectors written and requests in flight, over every block device."""
    sec = inflight = 0
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            if len(p) >= 12 and not p[2].startswith(("loop", "ram")):
                sec += int(p[9])
                inflight += int(p[11])
    return sec, inflight


def settle(targets, timeout=15.0):
    """Before a measurement: no server still removing a temporary file
    (keel removes a duplicate's after answering), nothing dirty
    (os.sync), and the disk idle for 300 ms: the previous transfer's
    writes, or the ext4 journal's, are nobody's next measurement."""
    end = time.time() + timeout
    for t in targets:
        tmpd = t.tmp_dir()
        while time.time() < end and os.path.isdir(tmpd) and os.listdir(tmpd):
            time.sleep(0.01)
    os.sync()
    last, quiet_since = None, time.time()
    while time.time() < end:
        cur = disk_writes()
        if cur != last or cur[1]:
            last, quiet_since = cur, time.time()
        elif time.time() - quiet_since >= 0.3:
            return
        time.sleep(0.05)


def curl(t, kind, path_or_id, cpu, sample=False):
    out = os.path.join(t.tmp, "curl.out")
    if kind == "upload":
        cmd = ["curl", "-sS", "--max-time", "600", "-o", out, "-w", "%{http_code} %{time_total} %{size_upload}",
               "-H", "Authorization: Bearer " + t.token, "-H", "Expect:",
               "-F", "file=@%s;type=application/octet-stream" % path_or_id,
               t.base + "/api/v1/files"]
    else:
        cmd = ["curl", "-sS", "--max-time", "600", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
               "-H", "Authorization: Bearer " + t.token,
               t.base + "/api/v1/files/%s/content" % path_or_id]
    pid = server_pid(t)
    before = status_kib(pid, "VmRSS")
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
            time.sleep(0.02)

    th = threading.Thread(target=watch)
    th.start()
    try:
        r = subprocess.run(["taskset", "-c", str(cpu)] + cmd, capture_output=True, text=True)
    finally:
        done.set()
        th.join()
    code, secs, size = r.stdout.split()
    if code not in ("200", "201"):
        raise SystemExit("%s %s: HTTP %s %s %s" % (t.name, kind, code, r.stderr,
                                                    open(out).read() if kind == "upload" else ""))
    res = {"secs": float(secs), "bytes": int(float(size)), "rss_before_kib": before,
           "rss_peak_kib": peak[0], "hwm_kib": status_kib(pid, "VmHWM")}
    res["mib_s"] = res["bytes"] / MIB / res["secs"]
    if kind == "upload":
        res["body"] = json.load(open(out))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--upload-mib", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured uploads per target first (default 2)")
    ap.add_argument("--download-mib", type=int, default=1024)
    ap.add_argument("--targets", default="keel,fastify")
    ap.add_argument("--server-cpu", default="0", help="taskset -c list for the servers (default 0)")
    ap.add_argument("--client-cpu", default="1", help="taskset -c list for curl (default 1)")
    ap.add_argument("--keel-bin", default=os.path.join(ROOT, "build", "keel"))
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "uploads.json"))
    ap.add_argument("--md", default=os.path.join(ROOT, "build", "bench", "uploads.md"))
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp"),
                    help="where the servers' upload directories and the test files go")
    a = ap.parse_args()
    names = a.targets.split(",")
    if "fastify" in names and not os.path.isdir(os.path.join(HERE, "node_modules", "@fastify", "multipart")):
        log("installing the Fastify peer's packages (npm ci --omit=dev in bench/uploads)")
        subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=HERE,
                       check=True, stdout=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="keel-bench-uploads.", dir=a.tmp)
    load0 = open("/proc/loadavg").read().split()[:3]
    targets = []
    try:
        up = os.path.join(tmp, "up.bin")
        down = os.path.join(tmp, "down.bin")
        up_sha = make_file(up, a.upload_mib)
        down_sha = make_file(down, a.download_mib)
        log("files: %d MiB upload (sha256 %s...), %d MiB download" % (a.upload_mib, up_sha[:12], a.download_mib))
        targets = [Target(n, a, tmp) for n in names]
        for t in targets:
            t.start()
            t.prepare_big(down, down_sha)
            log("%s up on port %d (pid %d), the download file id %s" % (t.name, t.port, t.proc.pid, t.big_id))
        runs = {t.name: {"upload": [], "download": []} for t in targets}
        # Warm-up, not measured: Node compiles its hot paths as they run
        # (Fastify's first uploads are half as fast as its later ones), and
        # the disk is still writing the 1 GiB file each target just stored.
        for w in range(a.warmup):
            for t in targets:
                settle(targets)
                r = curl(t, "upload", up, a.client_cpu)
                log("warm-up %d %-7s upload %8.1f MiB/s (not counted)" % (w + 1, t.name, r["mib_s"]))
        for rnd in range(a.rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for kind in ("upload", "download"):
                for t in order:
                    # every measurement starts with no dirty pages left by the
                    # previous one (the 1 GiB file each target stored, a
                    # 100 MiB upload) and an idle disk: their writeback is
                    # not the next transfer's
                    settle(targets)
                    r = curl(t, kind, up if kind == "upload" else t.big_id, a.client_cpu)
                    if kind == "upload":
                        got = r.pop("body")["data"][0]
                        if got.get("sha256") not in (None, up_sha) or got.get("size") not in (None, a.upload_mib * MIB):
                            raise SystemExit("%s stored something else: %r" % (t.name, got))
                    elif r["bytes"] != a.download_mib * MIB:
                        raise SystemExit("%s download: %d bytes" % (t.name, r["bytes"]))
                    runs[t.name][kind].append(r)
                    log("round %d %-7s %-8s %8.1f MiB/s  RSS before %6d KiB peak %6d KiB" %
                        (rnd + 1, t.name, kind, r["mib_s"], r["rss_before_kib"], r["rss_peak_kib"]))
        load1 = open("/proc/loadavg").read().split()[:3]
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {}
    for n, kinds in runs.items():
        med[n] = {}
        for kind, rs in kinds.items():
            med[n][kind] = {k: statistics.median(r[k] for r in rs) for k in ("mib_s", "rss_peak_kib", "rss_before_kib")}
            med[n][kind]["mib_s_min"] = min(r["mib_s"] for r in rs)
            med[n][kind]["mib_s_max"] = max(r["mib_s"] for r in rs)
            med[n][kind]["rss_peak_max_kib"] = max(r["rss_peak_kib"] for r in rs)
    lines = ["| target | upload %d MiB MiB/s (min-max) | peak RSS during upload, KiB (max) | RSS before upload, KiB | download %d MiB MiB/s (min-max) | peak RSS during download, KiB |" % (a.upload_mib, a.download_mib),
             "|---|---|---|---|---|---|"]
    for n in med:
        u, d = med[n]["upload"], med[n]["download"]
        lines.append("| %s | %.1f (%.1f-%.1f) | %d (%d) | %d | %.1f (%.1f-%.1f) | %d |" % (
            n, u["mib_s"], u["mib_s_min"], u["mib_s_max"], u["rss_peak_kib"], u["rss_peak_max_kib"],
            u["rss_before_kib"], d["mib_s"], d["mib_s_min"], d["mib_s_max"], d["rss_peak_kib"]))
    ratios = {}
    if "keel" in med and "fastify" in med:
        k, f = med["keel"], med["fastify"]
        ratios = {"upload_throughput": k["upload"]["mib_s"] / f["upload"]["mib_s"],
                  "download_throughput": k["download"]["mib_s"] / f["download"]["mib_s"],
                  "upload_peak_rss": k["upload"]["rss_peak_kib"] / f["upload"]["rss_peak_kib"]}
        lines.append("")
        lines.append("keel / fastify (medians): upload throughput %.2fx, download throughput %.2fx "
                     "(target >= 2x); upload peak RSS %.3f (target < 0.25)" % (
                         ratios["upload_throughput"], ratios["download_throughput"], ratios["upload_peak_rss"]))
    lines.append("")
    lines.append("%d interleaved rounds; servers on CPU %s, curl on CPU %s; %d CPUs, %s; load average before %s, after %s; %s" % (
        a.rounds, a.server_cpu, a.client_cpu, os.cpu_count(), " ".join(os.uname()[2:3]),
        " ".join(load0), " ".join(load1), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    md = "\n".join(lines) + "\n"
    print(md)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.md, "w") as f:
        f.write(md)
    with open(a.json, "w") as f:
        json.dump({"meta": {"rounds": a.rounds, "upload_mib": a.upload_mib, "download_mib": a.download_mib,
                            "loadavg_before": load0, "loadavg_after": load1,
                            "server_cpu": a.server_cpu, "client_cpu": a.client_cpu},
                   "runs": runs, "median": med, "ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
