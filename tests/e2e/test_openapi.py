"""GET /openapi.json (src/svc/openapi.c) and the /docs viewer (web/docs).

The document is checked for the OpenAPI 3.1 structure it must have (no
OpenAPI validator is packaged for Debian 12, so the required members, path
templating, parameters and $refs are checked here) and against the route
table (`keel routes`): every route is an operation. /docs is loaded in
headless Chromium under its own Content-Security-Policy, with no network
but the server: every operation's path must be rendered."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import KEEL_BIN, SLACK, run_cli
from rawhttp import assert_problem, get

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def doc(server):
    r = get(server.port, "/openapi.json")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("application/json"), r
    return r.json()


def route_table():
    out = run_cli(["routes"]).stdout.splitlines()
    rows = []
    for line in out[1:]:
        parts = line.split()
        if len(parts) >= 3:
            rows.append((parts[0], parts[1], parts[2]))
    assert rows
    return rows


def openapi_path(pattern):
    return re.sub(r"/[:*]([^/]+)", r"/{\1}", pattern)


def resolve(doc, obj):
    seen = 0
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), ref
        cur = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert part in cur, "unresolved $ref %s" % ref
            cur = cur[part]
        obj = cur
        seen += 1
        assert seen < 10
    return obj


def all_refs(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "$ref":
                yield v
            else:
                yield from all_refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_refs(v)


# ---------------------------------------------------------------- structure

def test_required_members(doc):
    assert doc["openapi"] == "3.1.0"
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    assert set(doc) <= {"openapi", "info", "jsonSchemaDialect", "servers", "paths",
                        "webhooks", "components", "security", "tags", "externalDocs"}


def test_info_from_the_app(doc):
    version = run_cli(["version"]).stdout.split()
    assert doc["info"]["title"] == version[0]
    assert doc["info"]["version"] == version[1]


def test_every_route_is_an_operation(doc):
    ids = set()
    for method, pattern, name in route_table():
        item = doc["paths"].get(openapi_path(pattern))
        assert item is not None, (pattern, sorted(doc["paths"]))
        op = item.get(method.lower())
        assert op is not None, (method, pattern)
        assert op["operationId"] == name
        ids.add(op["operationId"])
    ops = [op for item in doc["paths"].values() for m, op in item.items() if m in METHODS]
    assert len(ops) == len(route_table()) == len(ids)


def test_operations_well_formed(doc):
    ids = []
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        templated = re.findall(r"{([^}]+)}", path)
        for method, op in item.items():
            assert method in METHODS, (path, method)
            ids.append(op["operationId"])
            assert op["responses"], (path, method)
            for code, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]|[1-5]XX|default", code), code
                assert "description" in resolve(doc, resp), (path, code)
            params = [resolve(doc, p) for p in op.get("parameters", [])]
            keys = [(p["name"], p["in"]) for p in params]
            assert len(keys) == len(set(keys)), keys
            for p in params:
                assert p["in"] in ("path", "query", "header", "cookie"), p
                assert "schema" in p or "content" in p, p
                if p["in"] == "path":
                    assert p["required"] is True and p["name"] in templated, (path, p)
            assert sorted(templated) == sorted(p["name"] for p in params if p["in"] == "path")
            for code in ("500", "503"):
                assert code in op["responses"], (path, method)
            for req in op.get("security", []):
                for scheme in req:
                    assert scheme in doc["components"]["securitySchemes"], scheme
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_refs_resolve(doc):
    refs = list(all_refs(doc))
    assert refs
    for ref in refs:
        resolve(doc, {"$ref": ref})


def test_components(doc):
    comp = doc["components"]
    problem = comp["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    assert comp["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": comp["securitySchemes"]["bearerAuth"]["description"]}
    key = comp["securitySchemes"]["apiKey"]
    assert (key["type"], key["in"], key["name"]) == ("apiKey", "header", "X-API-Key")
    for name, resp in comp["responses"].items():
        assert "application/problem+json" in resp["content"], name


def test_validated_route(doc):
    op = doc["paths"]["/validate"]["post"]
    body = op["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["name", "email"]
    assert schema["properties"]["email"]["format"] == "email"
    for code in ("400", "413", "415", "422", "500", "503"):
        assert code in op["responses"], code
    assert resolve(doc, op["responses"]["422"])["content"]["application/problem+json"]
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["required"] == ["valid", "received"]
    assert op["security"] == []
    assert op["tags"] == ["demo"]
    assert op["summary"]


def test_parameters_from_schemas(doc):
    op = doc["paths"]["/params/{id}"]["get"]
    params = {(p["name"], p["in"]): p for p in op["parameters"]}
    pid = params[("id", "path")]
    assert pid["required"] is True and pid["schema"]["type"] == "integer"
    assert pid["schema"]["minimum"] == 1
    assert set(params) == {("id", "path"), ("limit", "query"), ("ratio", "query"),
                           ("verbose", "query"), ("q", "query"), ("tag", "query")}
    assert params[("limit", "query")]["required"] is False
    assert params[("limit", "query")]["description"] == "page size"
    assert params[("tag", "query")]["schema"]["type"] == "array"
    assert "422" in op["responses"] and "415" not in op["responses"]


def test_unvalidated_route(doc):
    op = doc["paths"]["/hello"]["get"]
    assert set(op["responses"]) == {"200", "500", "503"}
    assert "parameters" not in op and "requestBody" not in op


def test_cli_prints_the_same_document(doc):
    r = run_cli(["openapi"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == doc


def test_built_in_routes_flagged_internal_and_listed(doc):
    for path in ("/openapi.json", "/docs", "/docs/docs.js", "/docs/docs.css", "/metrics"):
        assert path in doc["paths"], path


def test_docs_off(keel):
    srv = keel(API_DOCS="false")
    for path in ("/openapi.json", "/docs", "/docs/docs.js"):
        assert_problem(get(srv.port, path), 404)
    assert get(srv.port, "/hello").status == 200


# ---------------------------------------------------------------- /docs

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def test_docs_assets_self_contained(serving):
    page = get(serving.port, "/docs")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html"), page
    assert page.header("Content-Security-Policy") == DOCS_CSP
    for path, ctype in (("/docs/docs.js", "text/javascript"), ("/docs/docs.css", "text/css")):
        r = get(serving.port, path)
        assert r.status == 200 and r.header("Content-Type").startswith(ctype), r
        # no other host: no URLs with a scheme or protocol-relative ones
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.body, re.I), path
        assert b"@import" not in r.body and b"url(" not in r.body, path
    assert not re.search(rb"(src|href)=\"(https?:)?//", page.body), page.body
    assert b"<script>" not in page.body and b"style=" not in page.body  # nothing inline


def chromium_bin():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.fail("chromium not installed (scripts/deps.sh test installs it)", pytrace=False)


def test_docs_render_in_chromium(serving, doc):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium_bin(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-sync",
               "--user-data-dir=" + profile, "--virtual-time-budget=15000",
               "--dump-dom", "http://127.0.0.1:%d/docs" % serving.port]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120 * SLACK,
                             env=dict(os.environ, HOME=profile))
    dom = out.stdout
    assert "<main" in dom, (out.returncode, out.stderr[-2000:])
    m = re.search(r'<main[^>]*data-operations="(\d+)"', dom)
    assert m, dom[:3000]
    ops = sum(1 for item in doc["paths"].values() for k in item if k in METHODS)
    assert int(m.group(1)) == ops
    assert re.search(r'<main[^>]*data-css="loaded"', dom), "the style sheet did not apply"
    assert re.search(r'<html[^>]*data-csp-violations="0"', dom), \
        re.search(r"<html[^>]*>", dom).group(0)
    for path, item in doc["paths"].items():
        esc = path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert '<span class="path">%s</span>' % esc in dom, path
        for method, op in item.items():
            if op.get("summary"):
                s = op["summary"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                assert s in dom, (path, method)
    # parameters and schemas are rendered too
    assert "page size" in dom and "minLength: 1" in dom
    assert "Loading /openapi.json" not in dom
