"""Edge protection: security headers on every response (errors and
connection-layer refusals included), CORS (preflight matrix, simple
requests, the start-up refusal of `*` with credentials) and gzip
negotiation. Each configuration is one server shared by the module."""
import gzip

import pytest

from conftest import SLACK, run_cli
from rawhttp import assert_problem, connect, get, raw, read_exchange, request

SECURITY = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

A = "https://a.example"
B = "https://b.example"
EVIL = "https://evil.example"


def assert_security(resp):
    for name, value in SECURITY.items():
        assert resp.headers_all(name) == [value], (name, resp)
    assert not resp.has("Strict-Transport-Security"), resp


def cors_headers(resp):
    return [k for k, _ in resp.header_list if k.lower().startswith("access-control-")]


@pytest.fixture(scope="module")
def edge(keel_module):
    return keel_module(BODY_LIMIT="1kb", HEADER_TIMEOUT="300ms", CORS_ORIGIN="%s, %s" % (A, B))


# ---------------------------------------------------------------- security headers

def _one(port, data, method="GET", timeout=3.0):
    ex = raw(port, data, timeout=timeout * SLACK, expect=1, methods=[method])
    assert ex.responses, ex
    return ex.responses[0]


REFUSALS = [
    # (name, request bytes, status)
    ("405", request("DELETE", "/hello"), 405),
    ("413 content-length over BODY_LIMIT",
     request("POST", "/echo", [("Content-Type", "application/json"),
                               ("Content-Length", "4096")]), 413),
    ("400 bad content-length", request("POST", "/echo", [("Content-Length", "12x")]), 400),
    ("400 content-length and chunked",
     request("POST", "/echo", [("Content-Length", "3"), ("Transfer-Encoding", "chunked")]), 400),
    ("400 bad request line", b"GET /hello HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
]


def test_security_headers_on_200(edge):
    r = get(edge.port, "/hello")
    assert r.status == 200
    assert_security(r)


def test_security_headers_on_404(edge):
    r = get(edge.port, "/nope")
    assert_problem(r, 404)
    assert_security(r)


@pytest.mark.parametrize("name,data,status", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_security_headers_on_refusals(edge, name, data, status):
    r = _one(edge.port, data, method="DELETE" if status == 405 else "POST")
    assert_problem(r, status)
    assert_security(r)


def test_security_headers_on_408(edge):
    with connect(edge.port) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        ex = read_exchange(s, timeout=5.0 * SLACK, expect=1, methods=["GET"])
    assert ex.responses, ex
    assert_problem(ex.responses[0], 408)
    assert_security(ex.responses[0])


def test_security_headers_on_head_and_preflight(edge):
    r = get(edge.port, "/hello", method="HEAD")
    assert r.status == 200
    assert_security(r)
    r = get(edge.port, "/hello", method="OPTIONS",
            headers=[("Origin", A), ("Access-Control-Request-Method", "GET")])
    assert r.status == 204
    assert_security(r)


def test_hsts_only_from_trusted_proxy_over_https(keel):
    srv = keel(TRUST_PROXY="10.0.0.0/8, 127.0.0.1")
    https = [("X-Forwarded-Proto", "https")]
    r = get(srv.port, "/hello", headers=https)
    assert r.header("Strict-Transport-Security") == "max-age=15552000; includeSubDomains"
    assert not get(srv.port, "/hello").has("Strict-Transport-Security")
    r = get(srv.port, "/hello", headers=[("X-Forwarded-Proto", "http")])
    assert not r.has("Strict-Transport-Security")
    r = get(srv.port, "/nope", headers=https)  # errors too
    assert r.status == 404 and r.has("Strict-Transport-Security")


def test_hsts_untrusted_peer_and_custom_values(keel):
    srv = keel(TRUST_PROXY="10.0.0.0/8", CSP="default-src 'self'", FRAME_OPTIONS="",
               HSTS_MAX_AGE="60")
    r = get(srv.port, "/hello", headers=[("X-Forwarded-Proto", "https")])
    assert not r.has("Strict-Transport-Security")  # 127.0.0.1 is not a trusted proxy
    assert r.headers_all("Content-Security-Policy") == ["default-src 'self'"]
    assert not r.has("X-Frame-Options")
    assert r.header("X-Content-Type-Options") == "nosniff"


def test_security_headers_off(keel):
    srv = keel(SECURITY_HEADERS="false")
    for target in ("/hello", "/nope"):
        r = get(srv.port, target)
        for name in SECURITY:
            assert not r.has(name), (name, r)


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.0/8,,bogus"])
def test_bad_trust_proxy_refused(tmp_path, value):
    p = run_cli(["serve"], env={"PORT": "0", "TRUST_PROXY": value}, cwd=tmp_path)
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: TRUST_PROXY:"), p.stderr


# ---------------------------------------------------------------- CORS

def preflight(port, origin, method="PUT", req_headers=None, target="/echo"):
    h = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if req_headers is not None:
        h.append(("Access-Control-Request-Headers", req_headers))
    return get(port, target, method="OPTIONS", headers=h)


@pytest.mark.parametrize("origin", [A, B])
def test_preflight_allowed(edge, origin):
    r = preflight(edge.port, origin, req_headers="content-type, x-request-id")
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == origin
    assert r.header("Access-Control-Allow-Methods") == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert r.header("Access-Control-Allow-Headers") == "content-type, x-request-id"
    assert r.header("Access-Control-Max-Age") == "600"
    assert "Origin" in r.headers_all("Vary")
    assert not r.has("Access-Control-Allow-Credentials")
    assert r.body == b""


def test_preflight_unlisted_header_gets_the_configured_list(edge):
    r = preflight(edge.port, A, req_headers="x-secret-thing")
    assert r.status == 204
    assert r.header("Access-Control-Allow-Headers") == "Content-Type, Authorization, X-Request-Id"


@pytest.mark.parametrize("origin", [EVIL, "https://a.example.evil", "http://a.example", "null"])
def test_preflight_disallowed_is_403_without_cors_headers(edge, origin):
    r = preflight(edge.port, origin)
    assert_problem(r, 403)
    assert cors_headers(r) == [], r
    assert_security(r)


@pytest.mark.parametrize("target,status", [("/hello", 200), ("/nope", 404)])
def test_simple_request_allowed(edge, target, status):
    r = get(edge.port, target, headers=[("Origin", B)])
    assert r.status == status
    assert r.header("Access-Control-Allow-Origin") == B
    assert "Origin" in r.headers_all("Vary")


def test_simple_request_disallowed_and_no_origin(edge):
    r = get(edge.port, "/hello", headers=[("Origin", EVIL)])
    assert r.status == 200 and cors_headers(r) == []
    r = get(edge.port, "/hello")
    assert r.status == 200 and cors_headers(r) == [] and not r.has("Vary")


def test_plain_options_is_not_a_preflight(edge):
    r = get(edge.port, "/hello", method="OPTIONS", headers=[("Origin", EVIL)])
    assert r.status == 204 and "GET" in r.header("Allow")


def test_cors_credentials(keel):
    srv = keel(CORS_ORIGIN=A, CORS_CREDENTIALS="true", CORS_MAX_AGE="120")
    r = preflight(srv.port, A)
    assert r.status == 204
    assert r.header("Access-Control-Allow-Origin") == A
    assert r.header("Access-Control-Allow-Credentials") == "true"
    assert r.header("Access-Control-Max-Age") == "120"
    r = get(srv.port, "/hello", headers=[("Origin", A)])
    assert r.header("Access-Control-Allow-Origin") == A
    assert r.header("Access-Control-Allow-Credentials") == "true"
    r = get(srv.port, "/hello", headers=[("Origin", B)])
    assert cors_headers(r) == []


def test_cors_wildcard(keel):
    srv = keel(CORS_ORIGIN="*")
    r = preflight(srv.port, EVIL)
    assert r.status == 204
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert not r.has("Access-Control-Allow-Credentials")
    r = get(srv.port, "/hello", headers=[("Origin", EVIL)])
    assert r.header("Access-Control-Allow-Origin") == "*"
    assert "Origin" not in (r.header("Vary") or "")


def test_cors_off_by_default(keel):
    srv = keel()
    r = preflight(srv.port, A)
    assert r.status == 204 and cors_headers(r) == []  # keel's own OPTIONS answer


@pytest.mark.parametrize("origins", ["*", "https://a.example,*"])
def test_wildcard_with_credentials_refused_at_startup(tmp_path, origins):
    p = run_cli(["serve"], env={"PORT": "0", "CORS_ORIGIN": origins, "CORS_CREDENTIALS": "true"},
                cwd=tmp_path)
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: CORS_CREDENTIALS:"), p.stderr


# ---------------------------------------------------------------- compression

BODY = b"b" * 4096


def test_gzip_when_accepted(edge):
    r = get(edge.port, "/bytes?kb=4", headers=[("Accept-Encoding", "br, gzip;q=0.8")])
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in r.headers_all("Vary")
    assert int(r.header("Content-Length")) == len(r.body) < len(BODY)
    assert gzip.decompress(r.body) == BODY
    assert_security(r)


@pytest.mark.parametrize("ae", [None, "gzip;q=0", "identity;q=0", "br", "gzip;q=0, *",
                                "identity"])
def test_no_gzip_unless_acceptable(edge, ae):
    r = get(edge.port, "/bytes?kb=4", headers=[("Accept-Encoding", ae)] if ae else [])
    assert r.status == 200
    assert not r.has("Content-Encoding"), r
    assert r.body == BODY
    assert "Accept-Encoding" in r.headers_all("Vary")


def test_star_covers_gzip(edge):
    r = get(edge.port, "/bytes?kb=4", headers=[("Accept-Encoding", "*")])
    assert r.header("Content-Encoding") == "gzip"


def test_small_bodies_not_compressed(edge):
    r = get(edge.port, "/json", headers=[("Accept-Encoding", "gzip")])
    assert r.status == 200 and not r.has("Content-Encoding") and not r.has("Vary")
    assert r.json() == {"message": "Hello, World!"}


def test_head_keeps_the_headers_of_get(edge):
    h = [("Accept-Encoding", "gzip")]
    g = get(edge.port, "/bytes?kb=4", headers=h)
    r = get(edge.port, "/bytes?kb=4", headers=h, method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") == g.header("Content-Length")


def test_streams_not_compressed(edge):
    r = get(edge.port, "/stream?kb=8", headers=[("Accept-Encoding", "gzip")])
    assert r.status == 200 and not r.has("Content-Encoding")
    assert len(r.body) == 8192
    assert_security(r)


def test_compression_off_and_threshold(keel):
    srv = keel(COMPRESSION="false")
    r = get(srv.port, "/bytes?kb=4", headers=[("Accept-Encoding", "gzip")])
    assert not r.has("Content-Encoding") and r.body == BODY
    srv = keel(COMPRESSION_MIN_BYTES="8kb")
    r = get(srv.port, "/bytes?kb=4", headers=[("Accept-Encoding", "gzip")])
    assert not r.has("Content-Encoding")
    r = get(srv.port, "/bytes?kb=8", headers=[("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == b"b" * 8192
