"""bench/bench.py, the benchmark system's gate and report, on made-up
results (docs/performance.md, "The benchmark system"): `check` fails when
a figure is worse than the baseline by more than 3 % (either direction
of "better") or missing, passes within it; `baseline` keeps only the
instruction figures; `report` writes markdown and one well-formed SVG per
figure, with the baseline and the previous runs in each chart."""
import json
import os
import subprocess
import xml.dom.minidom
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench.py"


def result(date, figures, commit="c0ffee0000"):
    return {"schema": 1, "kind": "instr", "date": date, "commit": commit, "dirty": False,
            "machine": {"cpu_model": "test", "cores": 2, "kernel": "6", "loadavg": [0, 0, 0]},
            "settings": {},
            "figures": {k: {"unit": u, "better": b, "min": v, "median": v, "max": v,
                            "values": [v]} for k, (v, u, b) in figures.items()}}


def bench(tmp, *args):
    env = dict(os.environ, KEEL_BENCH_BASELINE=str(tmp / "baseline.json"),
               KEEL_BENCH_RESULTS=str(tmp / "results"), KEEL_BENCH_OUT=str(tmp / "out"))
    return subprocess.run(["/usr/bin/python3", str(BENCH), *args], capture_output=True,
                          text=True, env=env, timeout=60)


def write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


BASE = {"instr GET /hello": (1000, "instructions/request", "lower"),
        "instr GET /json": (2000, "instructions/request", "lower"),
        "syscalls GET /hello": (4.4, "syscalls/request", "info")}


def test_check_gate(tmp_path):
    write(tmp_path / "baseline.json", result("2026-01-01T00:00:00Z", BASE))
    ok = write(tmp_path / "ok.json", result("2026-01-02T00:00:00Z", {
        "instr GET /hello": (1029, "instructions/request", "lower"),
        "instr GET /json": (1500, "instructions/request", "lower"),
        "syscalls GET /hello": (9.0, "syscalls/request", "info")}))
    p = bench(tmp_path, "check", str(ok))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "+2.90 %" in p.stdout and "better" in p.stdout
    worse = write(tmp_path / "worse.json", result("2026-01-02T00:00:00Z", {
        "instr GET /hello": (1031, "instructions/request", "lower"),
        "instr GET /json": (2000, "instructions/request", "lower")}))
    p = bench(tmp_path, "check", str(worse))
    assert p.returncode == 1 and "instr GET /hello" in p.stdout.splitlines()[-1], p.stdout
    missing = write(tmp_path / "missing.json", result("2026-01-02T00:00:00Z", {
        "instr GET /hello": (1000, "instructions/request", "lower")}))
    p = bench(tmp_path, "check", str(missing))
    assert p.returncode == 1 and "missing" in p.stdout, p.stdout
    p = bench(tmp_path, "check", str(worse), "--threshold", "5")
    assert p.returncode == 0, p.stdout


def test_baseline_and_report(tmp_path):
    run = write(tmp_path / "r.json", result("2026-01-03T00:00:00Z", dict(BASE, **{
        "rps keel /hello": (80000, "req/s", "higher")}), commit="abcdef1234"))
    p = bench(tmp_path, "baseline", str(run))
    assert p.returncode == 0, p.stderr
    base = json.loads((tmp_path / "baseline.json").read_text())
    assert set(base["figures"]) == set(BASE), base["figures"].keys()
    write(tmp_path / "results" / "20260101T000000Z-old.json",
          result("2026-01-01T00:00:00Z", {"rps keel /hello": (70000, "req/s", "higher")}))
    newest = write(tmp_path / "results" / "20260102T000000Z-new.json",
                   result("2026-01-02T00:00:00Z", dict(BASE, **{
                       "instr GET /hello": (1100, "instructions/request", "lower"),
                       "rps keel /hello": (90000, "req/s", "higher")})))
    p = bench(tmp_path, "report")
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert str(newest.relative_to(tmp_path)) in md or "20260102T000000Z-new.json" in md
    assert "| instr GET /hello | 1,000 | 1,100 | +10.00 % | WORSE |" in md, md
    svgs = sorted((tmp_path / "out").glob("chart-*.svg"))
    assert [s.name for s in svgs] == ["chart-instr_GET__hello.svg", "chart-instr_GET__json.svg",
                                      "chart-rps_keel__hello.svg"], svgs
    for s in svgs:
        xml.dom.minidom.parse(str(s))
    rps = (tmp_path / "out" / "chart-rps_keel__hello.svg").read_text()
    assert rps.count("<rect x=") == 2 and "70,000" in rps and "90,000" in rps, rps
    hello = (tmp_path / "out" / "chart-instr_GET__hello.svg").read_text()
    assert "baseline" in hello and "1,000" in hello and "1,100" in hello
