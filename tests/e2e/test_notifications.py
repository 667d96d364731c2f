"""Notifications end to end against the real binary, on SQLite and on a real
PostgreSQL (a throw-away cluster): the inbox in cursor pages (newest first,
no row twice, unread and archive filters), marks scoped to their owner (404
for another user's id), the unread count exact under 50 concurrent marks,
preferences turning a channel off (no e-mail job, no in-app row in the
inbox), idempotency (one key twice: one row, one job per channel), push
tokens (validation 422, per-user cap 409, 404 for another user's token),
and push delivery to an HTTP gateway on loopback started here: a 503 is
retried without resending to the tokens already delivered, a 410 removes
the token."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import scrape_metric, wait_for
from test_auth import PW, Api, env, problem
from test_migrate import Pg

TOK_OK = "okdevice0123456789:APA91b-ok_token"
TOK_FLAKY = "flakydevice0123456789:APA91b-flaky"
TOK_DEAD = "ExponentPushToken[deaddevice0123456789]"
TOK_SLOW = "slowdevice0123456789abcdef:slow"
GATEWAY_TIMEOUT = 0.4  # PUSH_GATEWAY_TIMEOUT


class Gateway:
    """A push gateway on 127.0.0.1: answers by token — "flaky" tokens get
    503 on their first request, "slow" ones no answer within keel's timeout
    on their first, "dead" ones 410, the rest 200 — and records every
    request (token, headers, body)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        gw = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                tok = body["token"]
                with gw.lock:
                    seen = sum(1 for r in gw.requests if r["body"]["token"] == tok)
                    gw.requests.append({"body": body, "headers": dict(self.headers)})
                if "slow" in tok and seen == 0:
                    time.sleep(GATEWAY_TIMEOUT * 3)
                if "flaky" in tok and seen == 0:
                    code, out = 503, {"error": "try later"}
                elif "dead" in tok:
                    code, out = 410, {"error": "Unregistered"}
                else:
                    code, out = 200, {"id": "msg-%d" % len(gw.requests)}
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # keel gave up waiting (the slow token)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/push" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def for_token(self, tok):
        with self.lock:
            return [r for r in self.requests if r["body"]["token"] == tok]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Nt(Api):
    def user(self, email):
        doc = self.register(email)
        return doc["access_token"], doc["user"]["id"]

    def send(self, user_id, type_="comment.created", expect=201, **extra):
        body = {"user_id": user_id, "type": type_}
        body.update(extra)
        r = self.call("POST", "/admin/notifications", token=self.admin, json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def unread(self, token):
        r = self.call("GET", "/notifications/unread-count", token=token)
        assert r.status_code == 200, r.text
        return r.json()["unread"]

    def jobs(self, kind):
        r = self.call("GET", "/admin/jobs", token=self.admin,
                      params={"kind": kind, "limit": 500})
        assert r.status_code == 200, r.text
        return r.json()["jobs"]


@pytest.fixture(scope="module")
def gateway():
    g = Gateway()
    yield g
    g.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request, keel_module, tmp_path_factory, gateway):
    if request.param == "postgres":
        pg = Pg(request.getfixturevalue("pg_cluster"))
        request.addfinalizer(pg.drop)
        url = pg.url
    else:
        url = "sqlite:%s" % (tmp_path_factory.mktemp("notify") / "n.db")
    e = env(url, PUSH_GATEWAY_URL=gateway.url, PUSH_GATEWAY_TOKEN="gw-secret",
            NOTIFY_PUSH_TOKENS_MAX="4", JOBS_BACKOFF_BASE="50ms", JOBS_BACKOFF_MAX="200ms",
            JOBS_POLL_INTERVAL="200ms", DATABASE_POOL_MAX="8",
            PUSH_GATEWAY_TIMEOUT="%dms" % (GATEWAY_TIMEOUT * 1000))
    a = Nt(keel_module(**e))
    a.srv_env = e
    a.kind = request.param
    p = a.cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
              KEEL_ADMIN_PASSWORD=PW)
    assert p.returncode == 0, p.stderr
    a.admin = a.login("root@example.com")["access_token"]
    return a


def test_inbox_pages_filters_and_owner_scope(api):
    tok, uid = api.user("inbox-%s@example.com" % api.kind)
    other, _ = api.user("inbox-other-%s@example.com" % api.kind)
    ids = [api.send(uid, "comment.created", data={"n": i})["notification"]["id"]
           for i in range(25)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = api.call("GET", "/notifications", token=tok, params=params)
        assert r.status_code == 200, r.text
        doc = r.json()
        seen += [n["id"] for n in doc["data"]]
        pages += 1
        cursor = doc["next_cursor"]
        if not cursor:
            break
        assert 'rel="next"' in r.headers["Link"] and "cursor=" + cursor in r.headers["Link"]
    assert pages == 3 and seen == ids[::-1], "newest first, each once"
    first = api.call("GET", "/notifications", token=tok, params={"limit": 1}).json()["data"][0]
    assert first["data"] == {"n": 24} and first["read"] is False
    assert first["type"] == "comment.created" and first["read_at"] is None
    assert api.unread(tok) == 25

    # marks: owner only; another user's id is 404, as an unknown one
    problem(api.call("POST", "/notifications/%s/read" % ids[0], token=other), 404)
    problem(api.call("POST", "/notifications/%s/archive" % ids[0], token=other), 404)
    problem(api.call("POST", "/notifications/nope/read", token=tok), 404)
    assert api.call("GET", "/notifications", token=other).json()["data"] == []
    r = api.call("POST", "/notifications/%s/read" % ids[0], token=tok)
    assert r.status_code == 200 and r.json()["read"] is True, r.text
    assert api.call("POST", "/notifications/%s/read" % ids[0], token=tok).status_code == 200
    assert api.unread(tok) == 24
    unread = api.call("GET", "/notifications", token=tok,
                      params={"unread": "true", "limit": 100}).json()["data"]
    assert len(unread) == 24 and ids[0] not in [n["id"] for n in unread]
    r = api.call("POST", "/notifications/%s/archive" % ids[1], token=tok)
    assert r.status_code == 200 and r.json()["archived_at"] and r.json()["read"], r.text
    assert api.unread(tok) == 23
    arch = api.call("GET", "/notifications", token=tok, params={"archived": "true"}).json()
    assert [n["id"] for n in arch["data"]] == [ids[1]]
    inbox = api.call("GET", "/notifications", token=tok, params={"limit": 100}).json()["data"]
    assert ids[1] not in [n["id"] for n in inbox] and len(inbox) == 24
    r = api.call("POST", "/notifications/%s/unread" % ids[0], token=tok)
    assert r.status_code == 200 and r.json()["read"] is False
    assert api.unread(tok) == 24
    r = api.call("POST", "/notifications/read-all", token=tok)
    assert r.status_code == 200 and r.json()["updated"] == 24, r.text
    assert api.unread(tok) == 0
    # bad queries: problem+json
    problem(api.call("GET", "/notifications", token=tok, params={"limit": 101}), 422)
    problem(api.call("GET", "/notifications", token=tok, params={"cursor": "x"}), 422)
    problem(api.call("GET", "/notifications", token=tok, params={"unread": "maybe"}), 422)
    problem(api.call("GET", "/notifications"), 401)


def test_unread_count_exact_under_50_concurrent_marks(api):
    tok, uid = api.user("race-%s@example.com" % api.kind)
    ids = [api.send(uid, "race")["notification"]["id"] for i in range(60)]
    assert api.unread(tok) == 60
    # 50 marks at once: 40 distinct ids, 10 of them marked twice, plus
    # archives of 5 more racing with them
    targets = [("read", i) for i in ids[:40]] + [("read", i) for i in ids[:10]] + \
              [("archive", i) for i in ids[40:45]]
    sessions = [Nt(api.srv) for _ in range(8)]

    def mark(k):
        what, nid = targets[k]
        s = sessions[k % len(sessions)]
        return s.call("POST", "/notifications/%s/%s" % (nid, what), token=tok).status_code

    with ThreadPoolExecutor(max_workers=25) as ex:
        codes = list(ex.map(mark, range(len(targets))))
    assert codes == [200] * len(targets), codes
    assert api.unread(tok) == 15
    rows = api.call("GET", "/notifications", token=tok,
                    params={"unread": "true", "limit": 100}).json()["data"]
    assert sorted(n["id"] for n in rows) == sorted(ids[45:])


def test_preferences_turn_a_channel_off(api):
    tok, uid = api.user("prefs-%s@example.com" % api.kind)
    doc = api.call("GET", "/notifications/preferences", token=tok).json()
    assert doc["defaults"] == {"in_app": True, "email": True, "push": True}
    assert doc["types"] == {} and doc["available"]["push"] is True
    r = api.call("PUT", "/notifications/preferences", token=tok,
                 json={"types": {"order.shipped": {"email": False},
                                 "marketing": {"in_app": False, "email": False}}})
    assert r.status_code == 200, r.text
    assert r.json()["types"]["order.shipped"] == {"in_app": True, "email": False, "push": True}
    assert r.json()["types"]["marketing"]["in_app"] is False

    shipped = api.send(uid, "order.shipped", data={"title": "Shipped"})["notification"]
    assert shipped["channels"] == ["in_app"], "no e-mail, and push only with a device"
    other = api.send(uid, "order.paid", data={"title": "Paid", "body": "<b>42</b>"})
    assert other["notification"]["channels"] == ["in_app", "email"]
    mails = {j["unique_key"]: j for j in api.jobs("mail.send")}
    assert "notification:%s:email" % shipped["id"] not in mails
    job = mails["notification:%s:email" % other["notification"]["id"]]
    assert job["queue"] == "email"
    args = job["args"]
    assert args["to"] == "prefs-%s@example.com" % api.kind and args["template"] == "notification"
    assert args["class"] == "notification" and args["vars"]["title"] == "Paid"
    assert args["vars"]["body"] == "<b>42</b>" and args["message_key"].startswith("notification:")

    # in-app off: the row is not in the inbox and not counted
    before = api.unread(tok)
    m = api.send(uid, "marketing")["notification"]
    assert m["channels"] == []
    assert api.unread(tok) == before
    problem(api.call("POST", "/notifications/%s/read" % m["id"], token=tok), 404)

    # the user's default for every type, then null back to the default
    r = api.call("PUT", "/notifications/preferences", token=tok,
                 json={"defaults": {"email": False}, "types": {"order.shipped": None}})
    assert r.status_code == 200 and r.json()["defaults"]["email"] is False
    assert "order.shipped" not in r.json()["types"]
    assert api.send(uid, "order.paid")["notification"]["channels"] == ["in_app"]
    for body, pointer in [({"types": {"Bad Type": {"email": False}}}, "/types/Bad Type"),
                          ({"types": {"x": {"sms": True}}}, "/types/x/sms"),
                          ({"types": {"x": {"email": "no"}}}, "/types/x/email"),
                          ({"types": {"x": 1}}, "/types/x")]:
        doc = problem(api.call("PUT", "/notifications/preferences", token=tok, json=body), 422)
        assert doc["errors"][0]["pointer"] == pointer, doc
    problem(api.call("PUT", "/notifications/preferences", token=tok,
                     json={"defaults": {"sms": True}}), 422)
    # NOTIFY_PREFERENCE_TYPES_MAX (100): the whole PUT is refused, nothing kept
    many = {"t%03d" % i: {"push": False} for i in range(101)}
    doc = problem(api.call("PUT", "/notifications/preferences", token=tok,
                           json={"types": many}), 422)
    assert doc["errors"][0]["pointer"] == "/types"
    assert api.call("GET", "/notifications/preferences", token=tok).json()["types"] == \
        {"marketing": {"in_app": False, "email": False, "push": True}}


def test_idempotency_one_row_one_job(api):
    tok, uid = api.user("idem-%s@example.com" % api.kind)
    first = api.send(uid, "invoice.ready", idempotency_key="invoice-77", data={"title": "Inv"})
    again = api.send(uid, "invoice.ready", expect=200, idempotency_key="invoice-77",
                     data={"title": "Inv"})
    assert again["duplicate"] is True and first["duplicate"] is False
    assert again["notification"]["id"] == first["notification"]["id"]
    rows = api.call("GET", "/notifications", token=tok).json()["data"]
    assert len(rows) == 1
    nid = first["notification"]["id"]
    keys = [j["unique_key"] for j in api.jobs("mail.send")]
    assert keys.count("notification:%s:email" % nid) == 1
    # concurrent repeats of one key: still one row
    with ThreadPoolExecutor(max_workers=10) as ex:
        codes = list(ex.map(lambda _: Nt(api.srv).call(
            "POST", "/admin/notifications", token=api.admin,
            json={"user_id": uid, "type": "x", "idempotency_key": "burst"}).status_code,
            range(10)))
    assert sorted(codes) == [200] * 9 + [201], codes
    assert len(api.call("GET", "/notifications", token=tok).json()["data"]) == 2
    # unknown users and bad input
    problem(api.call("POST", "/admin/notifications", token=api.admin,
                     json={"user_id": "nobody", "type": "x"}), 404)
    problem(api.call("POST", "/admin/notifications", token=api.admin,
                     json={"user_id": uid, "type": "Not A Type"}), 422)
    problem(api.call("POST", "/admin/notifications", token=api.admin,
                     json={"user_id": uid, "type": "x", "data": {"b": "x" * 20000}}), 422)
    problem(api.call("POST", "/admin/notifications", token=tok,
                     json={"user_id": uid, "type": "x"}), 403)


def test_push_tokens_validation_and_cap(api):
    tok, uid = api.user("tokens-%s@example.com" % api.kind)
    other, _ = api.user("tokens-other-%s@example.com" % api.kind)
    toks = ["capdevice%02d-0123456789abcdef" % i for i in range(5)]
    for t in toks[:4]:
        r = api.call("POST", "/notifications/push-tokens", token=tok,
                     json={"token": t, "platform": "android"})
        assert r.status_code == 201, r.text
    r = api.call("POST", "/notifications/push-tokens", token=tok,
                 json={"token": toks[0], "platform": "android"})
    assert r.status_code == 200, "registering again is not a new token"
    doc = problem(api.call("POST", "/notifications/push-tokens", token=tok,
                           json={"token": toks[4], "platform": "ios"}), 409)
    assert doc["max"] == 4
    listed = api.call("GET", "/notifications/push-tokens", token=tok).json()
    assert sorted(t["token"] for t in listed["data"]) == sorted(toks[:4])
    for body in [{"token": "short", "platform": "ios"},
                 {"token": "has space 0123456789abcdef", "platform": "ios"},
                 {"token": "x" * 513, "platform": "ios"},
                 {"token": "ok0123456789abcdefgh", "platform": "symbian"},
                 {"platform": "ios"}]:
        problem(api.call("POST", "/notifications/push-tokens", token=tok, json=body), 422)
    problem(api.call("DELETE", "/notifications/push-tokens/" + toks[0], token=other), 404)
    assert api.call("DELETE", "/notifications/push-tokens/" + toks[0],
                    token=tok).status_code == 204
    problem(api.call("DELETE", "/notifications/push-tokens/" + toks[0], token=tok), 404)
    r = api.call("POST", "/notifications/push-tokens", token=tok,
                 json={"token": toks[4], "platform": "ios"})
    assert r.status_code == 201, r.text
    # the cap holds under concurrent registrations (PostgreSQL: the user's row lock)
    racer, _ = api.user("tokens-race-%s@example.com" % api.kind)

    def register(i):
        return Nt(api.srv).call("POST", "/notifications/push-tokens", token=racer,
                                json={"token": "racedevice%02d-0123456789abcdef" % i,
                                      "platform": "android"}).status_code
    with ThreadPoolExecutor(max_workers=12) as ex:
        codes = list(ex.map(register, range(12)))
    assert sorted(codes) == [201] * 4 + [409] * 8, codes
    assert len(api.call("GET", "/notifications/push-tokens", token=racer).json()["data"]) == 4
    # the longest token accepted (NOTIFY_PUSH_TOKEN_MAX_BYTES) is deleted by its path too
    long_tok = "L" * 512
    assert api.call("DELETE", "/notifications/push-tokens/" + toks[4],
                    token=tok).status_code == 204
    r = api.call("POST", "/notifications/push-tokens", token=tok,
                 json={"token": long_tok, "platform": "web"})
    assert r.status_code == 201, r.text
    assert api.call("DELETE", "/notifications/push-tokens/" + long_tok,
                    token=tok).status_code == 204


def test_push_delivery_retry_and_invalid_token(api, gateway):
    tok, uid = api.user("push-%s@example.com" % api.kind)
    suffix = "-" + api.kind
    ok, flaky, dead = TOK_OK + suffix, TOK_FLAKY + suffix, TOK_DEAD[:-1] + suffix + "]"
    slow = TOK_SLOW + suffix
    for t, pl in [(ok, "android"), (flaky, "ios"), (dead, "ios"), (slow, "web")]:
        r = api.call("POST", "/notifications/push-tokens", token=tok,
                     json={"token": t, "platform": pl})
        assert r.status_code == 201, r.text
    n = api.send(uid, "chat.message", data={"title": "Hi", "body": "there", "room": 7})
    nid = n["notification"]["id"]
    assert n["notification"]["channels"] == ["in_app", "email", "push"]

    def done():
        jobs = [j for j in api.jobs("notify.push")
                if j["unique_key"] == "notification:%s:push" % nid]
        return jobs and jobs[0]["state"] == "completed" and jobs[0]
    job = wait_for(done, timeout=15, what="the push job to complete")
    assert job["attempt"] == 2, "one retry after the 503 and the timeout"
    err = job["errors"][0]["error"]
    assert err.startswith("2 token(s) to retry") and "timed out" in err, job["errors"]
    assert len(gateway.for_token(ok)) == 1, "a retry does not resend to a delivered token"
    assert len(gateway.for_token(flaky)) == 2
    assert len(gateway.for_token(slow)) == 2, "no answer in time is retried"
    assert len(gateway.for_token(dead)) == 1
    req = gateway.for_token(ok)[0]
    assert req["headers"]["Authorization"] == "Bearer gw-secret"
    assert req["headers"]["Idempotency-Key"].startswith(nid + ":")
    assert req["body"]["platform"] == "android"
    note = req["body"]["notification"]
    assert (note["id"], note["type"], note["title"], note["body"]) == \
        (nid, "chat.message", "Hi", "there")
    assert note["data"]["room"] == 7
    flaky_keys = {r["headers"]["Idempotency-Key"] for r in gateway.for_token(flaky)}
    assert len(flaky_keys) == 1, "the retry carries the same idempotency key"
    left = [t["token"] for t in api.call("GET", "/notifications/push-tokens",
                                         token=tok).json()["data"]]
    assert sorted(left) == sorted([ok, flaky, slow]), "the 410 removed the dead token"
    port = api.srv.port
    assert scrape_metric(port, "notifications_push_total", result="invalid_token") >= 1
    assert scrape_metric(port, "notifications_push_total", result="retry") >= 2
    assert scrape_metric(port, "notifications_push_total", result="delivered") >= 3
    assert scrape_metric(port, "http_client_requests_total", target="push", status="503") >= 1
    assert scrape_metric(port, "notifications_created_total", channel="push") >= 1
    # the realtime module's live hook: notify.live jobs, none of them dead
    # (tests/e2e/test_realtime.py checks what a connection gets)
    assert not [j for j in api.jobs("notify.live") if j["state"] == "dead"]
    # push turned off for a type: no push job for it, the others still get one
    r = api.call("PUT", "/notifications/preferences", token=tok,
                 json={"types": {"chat.quiet": {"push": False}}})
    assert r.status_code == 200, r.text
    quiet = api.send(uid, "chat.quiet")["notification"]
    loud = api.send(uid, "chat.loud")["notification"]
    assert quiet["channels"] == ["in_app", "email"] and "push" in loud["channels"]
    keys = [j["unique_key"] for j in api.jobs("notify.push")]
    assert "notification:%s:push" % quiet["id"] not in keys
    assert "notification:%s:push" % loud["id"] in keys
