"""GET /auth/me, the benchmark's auth endpoint (../shared/bench/README.md):
the harness's exact HS256 token, made here with hmac/hashlib/base64,
answers 200 with its claims; a broken signature, alg none and other
refused headers answer 401 problem+json. keel's own verifier runs it
(keel_jwt_verify_ex with no claim required)."""
import base64
import hashlib
import hmac
import json

import pytest
import requests

from conftest import SLACK

TIMEOUT = 5 * SLACK

HEADER = {"alg": "HS256", "typ": "JWT"}
CLAIMS = {"sub": "bench-user", "name": "Bench User", "iat": 1700000000}
# what ../shared/bench/run.sh sends (its README prints it)
HARNESS_TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                 "eyJzdWIiOiJiZW5jaC11c2VyIiwibmFtZSI6IkJlbmNoIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDB9."
                 "Uiwm0NmqLgn9OxyDdaNsVMXblgeEK2bkpXiyz83c9As")


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(obj):
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def token(header=HEADER, claims=CLAIMS, secret="keel-bench-secret", sig=None):
    signing = segment(header) + "." + segment(claims)
    if sig is None:
        sig = b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())
    return signing + "." + sig


def broken(tok):
    """The same token with its signature's first character changed."""
    head, _, sig = tok.rpartition(".")
    return head + "." + ("B" if sig[0] != "B" else "C") + sig[1:]


def get_me(srv, tok=None, scheme="Bearer"):
    headers = {} if tok is None else {"Authorization": "%s %s" % (scheme, tok)}
    return requests.get(srv.url + "/auth/me", headers=headers, timeout=TIMEOUT)


def test_token_is_the_harness_token():
    assert token() == HARNESS_TOKEN


def test_bench_token_answers_its_claims(serving):
    r = get_me(serving, token())
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == CLAIMS
    # the harness's probe looks for this substring, whitespace removed
    assert '"sub":"bench-user"' in "".join(r.text.split())


def test_bench_token_is_not_an_access_token(serving):
    """The accounts' route takes keel's access tokens only."""
    r = requests.get(serving.url + "/api/v1/auth/me",
                     headers={"Authorization": "Bearer " + token()}, timeout=TIMEOUT)
    assert r.status_code == 401, r.text


REFUSED = [
    pytest.param(lambda: broken(token()), id="broken-signature"),
    pytest.param(lambda: token()[:-1], id="signature-cut-short"),
    pytest.param(lambda: token(secret="another-secret"), id="other-key"),
    pytest.param(lambda: token(header={"alg": "none", "typ": "JWT"}, sig=""), id="alg-none"),
    pytest.param(lambda: token(header={"alg": "none", "typ": "JWT"}), id="alg-none-signed"),
    pytest.param(lambda: token(header={"alg": "HS512", "typ": "JWT"}), id="alg-hs512"),
    pytest.param(lambda: token(header={"alg": "hs256"}), id="alg-lower-case"),
    pytest.param(lambda: token(header={"alg": "HS256", "crit": ["exp"]}), id="crit"),
    pytest.param(lambda: token(header={"alg": "HS256", "jku": "http://x/k"}), id="jku"),
    pytest.param(lambda: token(claims=dict(CLAIMS, iat=4000000000)), id="iat-in-the-future"),
    pytest.param(lambda: token(claims=dict(CLAIMS, exp=1700000001)), id="expired"),
    pytest.param(lambda: token(claims=dict(CLAIMS, iss="keel")), id="unexpected-issuer"),
    pytest.param(lambda: "not-a-token", id="garbage"),
    pytest.param(lambda: "", id="empty"),
]


@pytest.mark.parametrize("make", REFUSED)
def test_refused_tokens_get_401(serving, make):
    r = get_me(serving, make())
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_duplicate_header_key_refused(serving):
    raw = b'{"alg":"none","alg":"HS256"}'
    signing = b64(raw) + "." + segment(CLAIMS)
    sig = b64(hmac.new(b"keel-bench-secret", signing.encode(), hashlib.sha256).digest())
    assert get_me(serving, signing + "." + sig).status_code == 401


@pytest.mark.parametrize("scheme, tok", [("Basic", "YTpi"), ("Bearer", None)])
def test_missing_bearer_gets_401(serving, scheme, tok):
    r = get_me(serving, tok, scheme) if tok else get_me(serving)
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")


def test_secret_from_bench_jwt_secret(keel):
    srv = keel(BENCH_JWT_SECRET="another-bench-secret")
    assert get_me(srv, token(secret="another-bench-secret")).status_code == 200
    assert get_me(srv, token()).status_code == 401


def test_demo_routes_off_no_route(keel):
    srv = keel(ENABLE_DEMO_ROUTES="false")
    assert get_me(srv, token()).status_code == 404
