"""Deploy files (deploy/, Dockerfile, docker-compose.yml) checked for the
properties docs/deploy.md promises. The tools' own checks (nginx -t,
haproxy -c, caddy validate, promtool, systemd-analyze, the Kubernetes
schema) run in scripts/lint_deploy.sh; this file checks what no tool
knows: that the pieces agree with keel and with each other."""
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KEEL_BIN = Path(os.environ.get("KEEL_BIN") or REPO / "build" / "keel")


def dockerfile_stages():
    """[(stage name, [(instruction, args)])] with continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    lines, cur = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") and not cur:
            continue
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    stages = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            stages.append((m.group(2) or m.group(1), [("FROM", m.group(1))]))
        elif stages:
            stages[-1][1].append((instr, args.strip()))
    return stages


def apt_packages(args):
    pkgs = []
    for part in args.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["apt-get", "install"]:
            pkgs += [w for w in words[2:] if not w.startswith("-")]
    return pkgs


def test_dockerfile_is_multi_stage_non_root_with_healthcheck():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "build and runtime stages"
    name, final = stages[-1]
    instrs = [i for i, _ in final]
    user = [a for i, a in final if i == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), "runtime runs as non-root"
    hc = [a for i, a in final if i == "HEALTHCHECK"]
    assert hc and "keel" in hc[0] and "healthcheck" in hc[0] and "/health/live" in hc[0]
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert "VOLUME" in instrs, "the data directory is a volume (read-only root fs)"
    assert any(i == "COPY" and a.startswith("--from=") for i, a in final)
    assert "ADD" not in instrs
    for _, body in stages:
        for i, a in body:
            if i == "RUN" and "apt-get install" in a:
                assert "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a


def runtime_sonames():
    """Paths of the libraries keel itself names (DT_NEEDED), not what they
    pull in: their packages depend on those already."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(KEEL_BIN)], capture_output=True,
                                       text=True, check=True).stdout)
    out = subprocess.run(["ldd", str(KEEL_BIN)], capture_output=True, text=True, check=True).stdout
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", out, re.M))
    return [where[n] for n in needed
            if not n.startswith(("libc.so", "libm.so", "ld-linux")) and n in where]


def package_of(path):
    real = os.path.realpath(path)
    for p in (path, real):
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0]
    pytest.fail("no Debian package owns %s" % path)


def test_dockerfile_runtime_has_exactly_what_keel_loads():
    if not KEEL_BIN.exists():
        pytest.skip("build/keel not built")
    stages = dockerfile_stages()
    runtime = []
    for i, a in stages[-1][1]:
        if i == "RUN":
            runtime += apt_packages(a)
    assert not [p for p in runtime if p.endswith("-dev")], "no -dev packages at run time"
    needed = {package_of(lib) for lib in runtime_sonames()}
    # opened at run time with dlopen (src/store/db_pg.c, src/auth/jwt.c)
    needed |= {"libpq5", "libjwt0"}
    missing = needed - set(runtime)
    assert not missing, "runtime stage lacks %s" % sorted(missing)
    # everything else must be a library libkeel can link (keel.pc) or CA roots
    allowed = needed | {"ca-certificates", "libcurl4", "libuv1", "libjansson4", "libsqlite3-0",
                        "zlib1g", "libsodium23", "libhiredis0.14"}
    extra = set(runtime) - allowed
    assert not extra, "runtime stage carries packages keel does not need: %s" % sorted(extra)
    build_pkgs = []
    for i, a in stages[0][1]:
        if i == "RUN":
            build_pkgs += apt_packages(a)
    deps = (REPO / "scripts" / "deps.sh").read_text()
    m = re.search(r"BUILD_PKGS=\(([^)]*)\)", deps)
    assert set(m.group(1).split()) <= set(build_pkgs), "the build stage installs BUILD_PKGS"


def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_and_health():
    c = compose()
    svcs = c["services"]
    keels = [n for n in svcs if re.fullmatch(r"keel\d+", n)]
    assert len(keels) == 3
    for name in ("postgres", "redis", "nginx", "prometheus", "grafana", "loki", "promtail"):
        assert name in svcs, name
    assert "jaeger" in svcs or "otel-collector" in svcs
    for name, s in svcs.items():
        assert "image" in s or "build" in s, name
        assert "healthcheck" in s and s["healthcheck"]["test"], "%s has a healthcheck" % name
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in svcs, "%s depends on unknown %s" % (name, dep)
            assert cond["condition"] == "service_healthy", "%s waits for %s to be healthy" % (name, dep)
            assert "healthcheck" in svcs[dep]
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), "%s mounts missing %s" % (name, src)
            elif not src.startswith("/"):
                assert src in (c.get("volumes") or {}), "%s uses undeclared volume %s" % (name, src)
    for k in keels:
        s = svcs[k]
        env = s["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
        assert env["INSTANCE_ID"] == k
        assert "keel" in " ".join(s["healthcheck"]["test"])
        assert s.get("read_only") is True
        grace = int(str(s["stop_grace_period"]).rstrip("s"))
        assert grace > 30, "stop_grace_period above SHUTDOWN_GRACE"
    assert "8080:8080" in svcs["nginx"]["ports"]


def test_compose_scrapes_every_instance_and_nginx_targets_them():
    c = compose()
    keels = sorted(n for n in c["services"] if re.fullmatch(r"keel\d+", n))
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for sc in prom["scrape_configs"] for g in sc["static_configs"] for t in g["targets"]]
    assert sorted(t.split(":")[0] for t in targets) == keels
    ngx = (REPO / "deploy/compose/nginx.conf").read_text()
    assert sorted(re.findall(r"server (keel\d+):8080", ngx)) == keels


def dashboard_exprs():
    d = json.loads((REPO / "deploy/grafana/keel.json").read_text())
    exprs = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            if p["datasource"]["type"] == "prometheus":
                exprs.append(t["expr"])
    return d, exprs


PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "clamp_min", "max", "min", "avg",
                "increase", "le", "instance", "status", "kind", "op", "name", "max_over_time",
                "and", "on", "or", "unless", "label_values", "without", "count", "job", "up",
                "humanizePercentage", "humanizeDuration", "value", "labels", "e"}


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)          # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # ranges
    expr = re.sub(r"\{[^}]*\}", "", expr)           # matchers
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
    return {n for n in names if not re.fullmatch(r"e\d+|\d+", n)}


def test_dashboard_and_rules_use_keels_metrics(keel_metrics_text):
    families = set(re.findall(r"^# TYPE (\S+)", keel_metrics_text, re.M))
    series = set(families)
    for f in families:
        series |= {f + "_bucket", f + "_sum", f + "_count"}
    d, exprs = dashboard_exprs()
    assert d["uid"] and d["panels"] and exprs
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for e in exprs:
        unknown = {n for n in metric_names(e) if not n.startswith("keel:")} - series
        assert not unknown, "dashboard uses metrics keel does not export: %s in %s" % (unknown, e)
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for g in rules["groups"]:
        for r in g["rules"]:
            unknown = metric_names(r["expr"]) - series - recorded - {"up"}
            assert not unknown, "rule %s uses unknown metrics %s" % (r.get("alert") or r.get("record"), unknown)


def k8s_docs():
    docs = {}
    for f in sorted((REPO / "deploy/k8s/base").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") != "Kustomization":
                docs[d["kind"]] = d
    return docs


def test_k8s_deployment_probes_and_hardening():
    docs = k8s_docs()
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "NetworkPolicy"):
        assert kind in docs, kind
    dep = docs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/health/live"
    grace = int(docs["ConfigMap"]["data"]["SHUTDOWN_GRACE"].rstrip("s"))
    pre = c["lifecycle"]["preStop"]
    pre_s = int(pre["exec"]["command"][-1]) if "exec" in pre else pre["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > grace + pre_s
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/var/lib/keel/data" in mounts
    sel = dep["spec"]["selector"]["matchLabels"]
    for kind in ("Service", "PodDisruptionBudget"):
        s = docs[kind]["spec"]["selector"]
        assert (s.get("matchLabels") or s) == sel, kind
    assert docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == sel
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < dep["spec"]["replicas"]


def test_systemd_unit_is_notify_and_hardened():
    unit = (REPO / "deploy/systemd/keel.service").read_text()
    kv = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            kv.setdefault(k.strip(), []).append(v.strip())
    assert kv["Type"] == ["notify"]
    for k in ("NoNewPrivileges", "PrivateTmp"):
        assert kv[k] == ["yes"], k
    assert kv["ProtectSystem"] == ["strict"]
    assert "DynamicUser" in kv or "User" in kv
    assert kv["CapabilityBoundingSet"] == [""]
    assert int(kv["TimeoutStopSec"][0].rstrip("s")) > 30
