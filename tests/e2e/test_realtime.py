"""The realtime protocol on GET /ws (src/app/realtime*.c, docs/realtime.md
"Protocol"): tickets (single use) and Bearer tokens before the upgrade,
401/403 refusals, acks and errors (never a close), rooms with their
authorization, messages stored with a per-room sequence before delivery,
history by sequence, direct messages to every connection of a user,
resume without gaps or duplicates (and resync), typing that expires,
presence across connections, the admin list, and close 4001 when the
token expires or the session ends."""
import asyncio
import json
import time

import pytest
import requests

from conftest import SLACK, run_cli, wait_for

websockets = pytest.importorskip("websockets")

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
PW = "correct horse battery staple"
ORIGIN = "http://app.example"
ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1",
       "WS_AUTH_RECHECK": "200ms", "WS_TYPING_TTL": "600ms", "WS_TYPING_INTERVAL": "200ms",
       "WS_RESUME_MAX": "5", "CORS_ORIGIN": ORIGIN, "WS_MAX_PER_IP": "0",
       "WS_MESSAGE_RATE": "0", "WS_MAX_PER_USER": "3", "WS_MESSAGE_BODY_MAX": "100"}
T = 5 * SLACK


class Api:
    def __init__(self, srv):
        self.srv = srv
        self.s = requests.Session()
        self.n = 0

    def call(self, method, path, token=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = "Bearer " + token
        return self.s.request(method, self.srv.url + path, headers=h, timeout=20 * SLACK, **kw)

    def user(self, name):
        self.n += 1
        r = self.call("POST", "/api/v1/auth/register",
                      json={"email": "%s%d@example.com" % (name, self.n), "password": PW})
        assert r.status_code == 201, r.text
        b = r.json()
        return b["access_token"], b["user"]["id"]

    def ticket(self, token):
        r = self.call("POST", "/api/v1/realtime/ticket", token=token)
        assert r.status_code == 201, r.text
        assert r.headers["Cache-Control"] == "no-store"
        return r.json()["ticket"]

    def room(self, token, name, private=False):
        r = self.call("POST", "/api/v1/rooms", token=token, json={"name": name, "private": private})
        assert r.status_code == 201, r.text
        return r.json()["id"]


@pytest.fixture(scope="module")
def srv(keel_module):
    return keel_module(**ENV)


@pytest.fixture(scope="module")
def api(srv):
    return Api(srv)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30 * SLACK))


class Client:
    """One WebSocket connection: sends with ids, waits for a type."""

    def __init__(self, ws):
        self.ws = ws
        self.seen = []
        self.n = 0

    @classmethod
    async def open(cls, srv, token, **kw):
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % srv.port,
                                      extra_headers={"Authorization": "Bearer " + token}, **kw)
        c = cls(ws)
        w = await c.expect("welcome")
        c.welcome = w
        return c

    async def send(self, type_, **fields):
        self.n += 1
        mid = "m%d" % self.n
        await self.ws.send(json.dumps(dict(fields, type=type_, id=mid)))
        return mid

    async def next(self, timeout=None):
        m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout or T))
        self.seen.append(m)
        return m

    async def expect(self, type_, timeout=None, **match):
        deadline = time.monotonic() + (timeout or T)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s %r; seen %r" % (type_, match, self.seen[-10:]))
            try:
                m = await self.next(left)
            except asyncio.TimeoutError:
                raise AssertionError("no %s %r; seen %r" % (type_, match, self.seen[-10:]))
            if m.get("type") == type_ and all(m.get(k) == v for k, v in match.items()):
                return m

    async def call(self, type_, **fields):
        """Sends and returns the ack or error with the same id."""
        mid = await self.send(type_, **fields)
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            m = await self.next(deadline - time.monotonic())
            if m.get("id") == mid and m["type"] in ("ack", "error"):
                return m
        raise AssertionError("no answer to %s" % type_)

    async def quiet(self, secs=0.3):
        """What arrives in the next secs (nothing is expected)."""
        got = []
        try:
            while True:
                got.append(await self.next(secs))
        except asyncio.TimeoutError:
            return got


def status_of(exc):
    r = getattr(exc, "response", None)
    return r.status_code if r is not None else exc.status_code


# ---------------------------------------------------------------- handshake, auth


def test_ticket_single_use_and_refusals(srv, api):
    tok, uid = api.user("tk")
    url = "ws://127.0.0.1:%d/ws" % srv.port

    async def go():
        t = api.ticket(tok)
        async with websockets.connect(url + "?ticket=" + t, origin=ORIGIN) as ws:
            w = json.loads(await ws.recv())
            assert w["type"] == "welcome" and w["user"] == uid
        # the same ticket again: refused before the upgrade
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(url + "?ticket=" + t)
        assert e.value.status_code == 401
        for bad in ["?ticket=nope", "", "?ticket=" + "x" * 40]:
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await websockets.connect(url + bad)
            assert e.value.status_code == 401, bad
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(url, extra_headers={"Authorization": "Bearer x.y.z"})
        assert e.value.status_code == 401
        # an Origin CORS_ORIGIN does not allow: 403 (cross-site WebSocket hijacking)
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(url + "?ticket=" + api.ticket(tok), origin="http://evil.example")
        assert e.value.status_code == 403
        # Bearer for non-browser clients
        c = await Client.open(srv, tok)
        assert c.welcome["user"] == uid
        await c.ws.close()

    run(go())
    # the refusals are problem documents, before any upgrade
    r = api.call("GET", "/ws?ticket=nope", headers={"Upgrade": "websocket", "Connection": "upgrade",
                                                     "Sec-WebSocket-Version": "13",
                                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert api.call("POST", "/api/v1/realtime/ticket").status_code == 401


def test_errors_never_close(srv, api):
    tok, _ = api.user("er")

    async def go():
        c = await Client.open(srv, tok)
        assert (await c.call("ping"))["type"] == "ack"
        e = await c.call("no:such")
        assert e["type"] == "error" and e["code"] == "unknown_type"
        e = await c.call("message:send", room="r")  # no body
        assert e["code"] == "invalid_message" and "body" in e["message"]
        e = await c.call("room:join", room="r", extra=1)
        assert e["code"] == "invalid_message"
        e = await c.call("message:send", room="nowhere", body="hi")
        assert e["code"] == "not_joined"
        e = await c.call("message:send", room="nowhere", body="x" * 101)  # WS_MESSAGE_BODY_MAX
        assert e["code"] == "invalid_message" and "/body" in e["message"]
        e = await c.call("room:join", room="nowhere")
        assert e["code"] == "not_found"
        await c.ws.send("{not json")
        m = await c.next()
        assert m["type"] == "error" and m["code"] == "invalid_json" and m["id"] is None
        await c.ws.send(json.dumps([1, 2]))
        assert (await c.next())["code"] == "invalid_message"
        await c.ws.send(json.dumps({"type": "ping", "id": {"x": 1}}))
        assert (await c.next())["code"] == "invalid_message"
        await c.ws.send(b"\x01\x02")
        assert (await c.next())["code"] == "invalid_message"
        # still open and answering
        assert (await c.call("ping", n=1))["type"] == "error"
        assert (await c.call("ping"))["type"] == "ack"
        # WS_MAX_PER_USER (3) connections of one user: the next is refused
        more = [await Client.open(srv, tok) for _ in range(2)]
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await Client.open(srv, tok)
        assert e.value.status_code == 429
        for x in more + [c]:
            await x.ws.close()

    run(go())


# ---------------------------------------------------------------- rooms


def test_rooms_authorization_storage_and_history(srv, api):
    ta, ua = api.user("ra")
    tb, ub = api.user("rb")
    pub = api.room(ta, "lobby")
    priv = api.room(ta, "secret", private=True)
    lst = api.call("GET", "/api/v1/rooms", token=tb).json()["data"]
    ids = [r["id"] for r in lst]
    assert pub in ids and priv not in ids
    assert api.call("POST", "/api/v1/rooms", token=ta, json={"name": ""}).status_code == 422

    async def go():
        a = await Client.open(srv, ta)
        b = await Client.open(srv, tb)
        j = await a.call("room:join", room=pub)
        assert j["type"] == "ack" and j["room"]["kind"] == "public" and j["room"]["last_seq"] == 0
        assert (await b.call("room:join", room=pub))["type"] == "ack"
        # private: refused without an invitation
        e = await b.call("room:join", room=priv)
        assert e["type"] == "error" and e["code"] == "forbidden"
        assert api.call("GET", "/api/v1/rooms/%s/messages" % priv, token=tb).status_code == 403
        # B may not invite itself; A (the owner) invites B
        r = api.call("POST", "/api/v1/rooms/%s/invitations" % priv, token=tb, json={"user_id": ub})
        assert r.status_code == 403
        r = api.call("POST", "/api/v1/rooms/%s/invitations" % priv, token=ta, json={"user_id": ub})
        assert r.status_code == 201 and r.json()["membership"] == "invited"
        assert priv in [x["id"] for x in api.call("GET", "/api/v1/rooms", token=tb).json()["data"]]
        assert (await a.call("room:join", room=priv))["type"] == "ack"
        assert (await b.call("room:join", room=priv))["type"] == "ack"

        # stored before delivery: the ack and the delivery carry the stored row
        ack = await a.call("message:send", room=pub, body="hello 1")
        assert ack["type"] == "ack" and ack["message"]["seq"] == 1
        got = await b.expect("message:received", room=pub)
        assert got["message"]["body"] == "hello 1" and got["message"]["sender"] == ua
        assert got["message"]["id"] == ack["message"]["id"]
        # the sender's own connection follows the room too
        assert (await a.expect("message:received", room=pub))["message"]["seq"] == 1
        hist = api.call("GET", "/api/v1/rooms/%s/messages" % pub, token=tb).json()
        assert [m["seq"] for m in hist["data"]] == [1]
        # concurrent senders: distinct, gap-free sequences
        for i in range(2, 8):
            await a.send("message:send", room=pub, body="hello %d" % i)
            await b.send("message:send", room=pub, body="from b %d" % i)
        seqs = []
        while len(seqs) < 12:
            m = await a.expect("message:received", room=pub)
            seqs.append(m["message"]["seq"])
        assert seqs == list(range(2, 14))
        # history pages by sequence
        p1 = api.call("GET", "/api/v1/rooms/%s/messages?after_seq=2&limit=5" % pub, token=tb)
        assert p1.status_code == 200
        assert [m["seq"] for m in p1.json()["data"]] == [3, 4, 5, 6, 7]
        assert p1.json()["next_after_seq"] == 7 and "after_seq=7" in p1.headers["Link"]
        p2 = api.call("GET", "/api/v1/rooms/%s/messages?after_seq=7&limit=500" % pub, token=tb)
        assert [m["seq"] for m in p2.json()["data"]] == list(range(8, 14))
        assert p2.json()["next_after_seq"] is None
        assert api.call("GET", "/api/v1/rooms/%s/messages?limit=0" % pub,
                        token=tb).status_code == 422
        # a private room's messages reach its members only
        await a.call("message:send", room=priv, body="psst")
        assert (await b.expect("message:received", room=priv))["message"]["body"] == "psst"
        # leaving: no more deliveries
        assert (await b.call("room:leave", room=pub))["type"] == "ack"
        await a.call("message:send", room=pub, body="after leave")
        assert not [m for m in await b.quiet() if m.get("type") == "message:received"]
        await a.ws.close()
        await b.ws.close()

    run(go())


def test_dm_to_user_with_two_connections(srv, api):
    ta, ua = api.user("da")
    tb, ub = api.user("db")

    async def go():
        a1 = await Client.open(srv, ta)
        a2 = await Client.open(srv, ta)
        b1 = await Client.open(srv, tb)
        b2 = await Client.open(srv, tb)
        ack = await a1.call("dm:send", to=ub, body="hi b")
        assert ack["type"] == "ack" and ack["message"]["seq"] == 1
        conv = ack["conversation"]
        for c in (b1, b2, a2):  # the recipient's connections and the sender's others
            m = await c.expect("dm:received", conversation=conv)
            assert m["message"]["body"] == "hi b" and m["message"]["sender"] == ua
            assert m["message"]["to"] == ub
        assert not [m for m in await a1.quiet(0.2) if m.get("type") == "dm:received"]
        ack = await b2.call("dm:send", to=ua, body="hi a")
        assert ack["conversation"] == conv and ack["message"]["seq"] == 2
        for c in (a1, a2, b1):
            assert (await c.expect("dm:received", conversation=conv))["message"]["seq"] == 2
        assert (await a1.call("dm:send", to=ua, body="me"))["code"] == "invalid_message"
        assert (await a1.call("dm:send", to="nobody", body="x"))["code"] == "not_found"
        # the conversation's history: its two members only
        h = api.call("GET", "/api/v1/rooms/%s/messages" % conv, token=tb).json()
        assert [m["body"] for m in h["data"]] == ["hi b", "hi a"]
        tc, _ = api.user("dc")
        assert api.call("GET", "/api/v1/rooms/%s/messages" % conv, token=tc).status_code == 403
        for c in (a1, a2, b1, b2):
            await c.ws.close()

    run(go())


def test_resume_exactly_once_and_resync(srv, api):
    ta, _ = api.user("sa")
    tb, _ = api.user("sb")
    room = api.room(ta, "resume")

    async def go():
        a = await Client.open(srv, ta)
        await a.call("room:join", room=room)
        for i in range(1, 4):
            await a.call("message:send", room=room, body="m%d" % i)
        # B saw up to 1: gets 2 and 3 in order, then live ones, each once
        b = await Client.open(srv, tb)
        mid = await b.send("resume", rooms={room: 1})
        await a.send("message:send", room=room, body="m4")  # races the replay
        seqs = []
        ack = None
        while ack is None or len(seqs) < 3:
            m = await b.next()
            if m["type"] == "message:received":
                seqs.append(m["message"]["seq"])
            elif m.get("id") == mid:
                ack = m
        assert ack["type"] == "ack" and ack["rooms"] == {room: "ok"}
        await a.call("message:send", room=room, body="m5")
        seqs.append((await b.expect("message:received", room=room))["message"]["seq"])
        seqs += [m["message"]["seq"] for m in await b.quiet(0.3)
                 if m.get("type") == "message:received"]
        assert seqs == [2, 3, 4, 5]
        # a gap over WS_RESUME_MAX (5): resync, then live from there
        for i in range(6, 13):
            await a.call("message:send", room=room, body="m%d" % i)
        c = await Client.open(srv, tb)
        mid = await c.send("room:join", room=room, last_seq=1)
        r = await c.expect("resync", room=room)
        assert r["after_seq"] == 1 and r["last_seq"] == 12
        await a.call("message:send", room=room, body="m13")
        assert (await c.expect("message:received", room=room))["message"]["seq"] == 13
        for x in (a, b, c):
            await x.ws.close()

    run(go())


# ---------------------------------------------------------------- typing, presence


def test_typing_expires(srv, api):
    ta, ua = api.user("ya")
    tb, _ = api.user("yb")
    room = api.room(ta, "typing")

    async def go():
        a = await Client.open(srv, ta)
        b = await Client.open(srv, tb)
        await a.call("room:join", room=room)
        await b.call("room:join", room=room)
        assert (await a.call("typing:start", room=room))["type"] == "ack"
        t0 = time.monotonic()
        s = await b.expect("typing", room=room, state="start")
        assert s["user"] == ua and s["expires_in_ms"] == 600
        # again at once: rate-limited (WS_TYPING_INTERVAL)
        assert (await a.call("typing:start", room=room))["code"] == "rate_limited"
        stop = await b.expect("typing", room=room, state="stop")
        assert stop.get("expired") is True
        assert 0.4 < time.monotonic() - t0 < 3 * SLACK
        # the typist does not hear itself; nothing typed is stored
        assert not [m for m in a.seen if m.get("type") == "typing"]
        h = api.call("GET", "/api/v1/rooms/%s/messages" % room, token=ta).json()
        assert h["data"] == []
        await a.ws.close()
        await b.ws.close()

    run(go())


def test_presence_across_connections(srv, api):
    tp, up = api.user("pa")
    tw, _ = api.user("pw")
    room = api.room(tw, "presence")

    def presence():
        r = api.call("GET", "/api/v1/presence/" + up, token=tw)
        assert r.status_code == 200
        return r.json()

    async def go():
        assert presence()["status"] == "offline"
        w = await Client.open(srv, tw)
        await w.call("room:join", room=room)
        c1 = await Client.open(srv, tp)
        c2 = await Client.open(srv, tp)
        p = presence()
        assert p["status"] == "online" and p["connections"] == 2
        await c1.call("room:join", room=room)
        j = await w.expect("presence", room=room, user=up, event="join")
        assert j["status"] == "online"
        assert (await c1.call("presence:set", status="away"))["type"] == "ack"
        assert presence()["status"] == "online"  # c2 is not away
        await c2.call("presence:set", status="away")
        assert presence()["status"] == "away"
        await w.expect("presence", room=room, user=up, event="status", status="away")
        await c2.ws.close()
        wait_for(lambda: presence()["connections"] == 1, T, "one connection left")
        await c1.ws.close()
        await w.expect("presence", room=room, user=up, event="leave", status="offline")
        wait_for(lambda: presence()["status"] == "offline", T, "offline")
        await w.ws.close()

    run(go())


def test_admin_connections(srv, api):
    p = run_cli(["user", "create", "--email", "rtadmin@example.com", "--role", "admin"],
                env=dict(srv.env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    r = api.call("POST", "/api/v1/auth/login", json={"email": "rtadmin@example.com", "password": PW})
    admin = r.json()["access_token"]
    tu, uu = api.user("ad")
    assert api.call("GET", "/api/v1/admin/realtime/connections", token=tu).status_code == 403

    async def go():
        c1 = await Client.open(srv, tu)
        c2 = await Client.open(srv, tu)
        d = api.call("GET", "/api/v1/admin/realtime/connections", token=admin).json()
        mine = [u for u in d["data"] if u["user"] == uu]
        assert mine and mine[0]["connections"] == 2 and mine[0]["status"] == "online"
        h = api.call("GET", "/health/detailed").json()
        rt = h["checks"]["realtime"]
        assert rt["data"]["connections"] >= 2
        # the push API (app_push_*), through its admin route
        def push(**body):
            return api.call("POST", "/api/v1/admin/realtime/push", token=admin, json=body)
        assert api.call("POST", "/api/v1/admin/realtime/push", token=tu,
                        json={"to": "all", "type": "x"}).status_code == 403
        assert push(to="user", type="notice").status_code == 422  # no target
        assert push(to="role", target="root", type="notice").status_code == 422
        assert push(to="user", target=uu, type="notice", data={"text": "hi"}).status_code == 202
        for c in (c1, c2):
            assert (await c.expect("notice"))["text"] == "hi"
        assert push(to="role", target="user", type="to:users").status_code == 202
        assert push(to="role", target="admin", type="to:admins").status_code == 202
        assert push(to="all", type="to:all", data={"n": 1}).status_code == 202
        for c in (c1, c2):
            assert (await c.expect("to:users"))["type"] == "to:users"
            assert (await c.expect("to:all"))["n"] == 1
            assert not [m for m in c.seen if m.get("type") == "to:admins"]
        room = api.room(tu, "pushed")
        await c1.call("room:join", room=room)
        assert push(to="room", target=room, type="room:note").status_code == 202
        assert (await c1.expect("room:note", timeout=2))["type"] == "room:note"
        assert not [m for m in await c2.quiet(0.2) if m.get("type") == "room:note"]
        await c1.ws.close()
        await c2.ws.close()

    run(go())


# ---------------------------------------------------------------- 4001


def test_notifications_arrive_live(srv, api):
    """An in-app notification (app_notify: here through the admin route)
    reaches every open connection of its user once committed, as
    {"type": "notification", "notification": <as the inbox shows it>}."""
    p = run_cli(["user", "create", "--email", "rtnotify@example.com", "--role", "admin"],
                env=dict(srv.env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    admin = api.call("POST", "/api/v1/auth/login",
                     json={"email": "rtnotify@example.com", "password": PW}).json()["access_token"]
    tu, uu = api.user("live")

    async def go():
        c1 = await Client.open(srv, tu)
        c2 = await Client.open(srv, tu)
        r = api.call("POST", "/api/v1/admin/notifications", token=admin,
                     json={"user_id": uu, "type": "test.live", "data": {"title": "hello"}})
        assert r.status_code == 201, r.text
        for c in (c1, c2):
            m = await c.expect("notification")
            assert m["notification"]["type"] == "test.live", m
            assert m["notification"]["data"]["title"] == "hello", m
        inbox = api.call("GET", "/api/v1/notifications", token=tu).json()["data"]
        assert inbox[0]["id"] == m["notification"]["id"]
        for c in (c1, c2):
            assert not [x for x in await c.quiet(0.3) if x["type"] == "notification"]  # once
            await c.ws.close()
    run(go())


def test_session_end_closes_4001(keel):
    s = keel(**dict(ENV, JWT_EXPIRES_IN="2s"))
    api = Api(s)
    tok, _ = api.user("ex")
    tok2, _ = api.user("lo")

    async def go():
        c = await Client.open(s, tok)
        c2 = await Client.open(s, tok2)
        c3 = await Client.open(s, tok2)  # the same token twice: one check, both closed
        # a logout-all while connected
        assert api.call("POST", "/api/v1/auth/logout-all", token=tok2).status_code in (200, 204)
        for x in (c2, c3):
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                while True:
                    await x.next(5 * SLACK)
            assert e.value.code == 4001 and e.value.reason == "session ended"
        # the token expires while connected
        t0 = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
            while True:
                await c.next(6 * SLACK)
        assert e.value.code == 4001 and e.value.reason == "token expired"
        assert time.monotonic() - t0 < 4 * SLACK

    run(go())


# ---------------------------------------------------------------- two instances


def test_two_instances_postgres_redis(keel, redis_server, pg_cluster):
    """A and B on one PostgreSQL and one Redis: a room message sent on A
    reaches B's clients, a DM reaches the user's connections on both,
    presence is the union, WS_MAX_PER_USER counts both; A is killed, its client reconnects to B and
    resumes with nothing missed and nothing twice."""
    from test_migrate import Pg

    pg = Pg(pg_cluster)
    try:
        env = dict(ENV, DATABASE_URL=pg.url, REDIS_URL=redis_server.url,
                   WS_PRESENCE_HEARTBEAT="300ms")
        a = keel(**dict(env, INSTANCE_ID="rt-a"))
        b = keel(**dict(env, INSTANCE_ID="rt-b"))
        api_a, api_b = Api(a), Api(b)
        ts, us = api_a.user("xs")
        tr, ur = api_b.user("xr")
        room = api_a.room(ts, "across")

        async def go():
            sa = await Client.open(a, ts)
            rb = await Client.open(b, tr)
            ra = await Client.open(a, tr)
            assert sa.welcome["connection"].startswith("rt-a:")
            assert rb.welcome["connection"].startswith("rt-b:")
            await sa.call("room:join", room=room)
            await rb.call("room:join", room=room)
            ack = await sa.call("message:send", room=room, body="from A")
            assert ack["message"]["seq"] == 1
            got = await rb.expect("message:received", room=room)
            assert got["message"]["body"] == "from A"
            # a DM reaches the recipient's connections on both instances
            ack = await sa.call("dm:send", to=ur, body="dm across")
            for c in (ra, rb):
                assert (await c.expect("dm:received"))["message"]["body"] == "dm across"
            # presence is the union of both instances
            wait_for(lambda: api_a.call("GET", "/api/v1/presence/" + ur,
                                        token=ts).json()["connections"] == 2, T, "union")
            # WS_MAX_PER_USER (3) counts across instances: a third on B, then
            # A (one of its own) refuses a fourth; one gone on B, A accepts
            x3 = await Client.open(b, tr)
            wait_for(lambda: api_a.call("GET", "/api/v1/presence/" + ur,
                                        token=ts).json()["connections"] == 3, T, "3 on A")
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await Client.open(a, tr)
            assert e.value.status_code == 429
            await x3.ws.close()
            wait_for(lambda: api_a.call("GET", "/api/v1/presence/" + ur,
                                        token=ts).json()["connections"] == 2, T, "2 again")
            x4 = await Client.open(a, tr)
            await x4.ws.close()
            wait_for(lambda: api_a.call("GET", "/api/v1/presence/" + ur,
                                        token=ts).json()["connections"] == 2, T, "x4 gone")
            # A dies with its clients connected; messages go on on B
            a.check_exit_code = False  # killed on purpose
            a.kill()
            await rb.call("message:send", room=room, body="while A is down 1")
            await rb.call("message:send", room=room, body="while A is down 2")
            # the sender saw seq 1: it reconnects to B and resumes
            s2 = await Client.open(b, ts)
            mid = await s2.send("resume", rooms={room: 1})
            seqs, ack = [], None
            while ack is None:
                m = await s2.next()
                if m.get("type") == "message:received":
                    seqs.append(m["message"]["seq"])
                elif m.get("id") == mid:
                    ack = m
            await rb.call("message:send", room=room, body="live")
            seqs.append((await s2.expect("message:received", room=room))["message"]["seq"])
            seqs += [m["message"]["seq"] for m in await s2.quiet(0.3)
                     if m.get("type") == "message:received"]
            assert seqs == [2, 3, 4]
            # A gone: after three missed heartbeats its connections no longer count
            wait_for(lambda: api_b.call("GET", "/api/v1/presence/" + ur,
                                        token=tr).json()["connections"] == 1, 5 * T, "A expired")
            await s2.ws.close()
            await rb.ws.close()

        run(go())
        b.stop()
    finally:
        pg.drop()


def test_redis_loss_gap_filled_from_storage(keel, redis_server):
    """Messages stored while Redis was down never went through pub/sub:
    the first live message after it comes back shows the hole, and the
    connection fills it from the database — in order, each once."""
    from test_redis import metric

    s = keel(**dict(ENV, REDIS_URL=redis_server.url, REDIS_RECONNECT_MAX="200ms",
                    WS_RESUME_MAX="1000"))
    api = Api(s)
    ta, _ = api.user("ga")
    tb, _ = api.user("gb")
    room = api.room(ta, "gap")

    async def go():
        a = await Client.open(s, ta)
        b = await Client.open(s, tb)
        await a.call("room:join", room=room)
        await b.call("room:join", room=room)
        await a.call("message:send", room=room, body="before")
        assert (await b.expect("message:received", room=room))["message"]["seq"] == 1
        redis_server.kill()
        # stored and acked while pub/sub is gone
        for i in (2, 3):
            ack = await a.call("message:send", room=room, body="during %d" % i)
            assert ack["type"] == "ack" and ack["message"]["seq"] == i
        redis_server.restart()
        wait_for(lambda: metric(s, "events_subscriber_connected") == 1, 10 * SLACK, "subscriber")
        seqs = [m["message"]["seq"] for m in b.seen if m.get("type") == "message:received"]
        assert seqs == [1]  # 2 and 3 were not delivered live
        # the publishing worker's own Redis connection comes back a little
        # later: a message stored meanwhile is acked but not published, so
        # send until one gets through live
        deadline = time.monotonic() + 10 * SLACK
        last = 0
        while len(seqs) == 1:
            ack = await a.call("message:send", room=room, body="after")
            if ack["type"] == "ack":
                last = ack["message"]["seq"]
            try:
                seqs.append((await b.expect("message:received", room=room,
                                            timeout=0.5))["message"]["seq"])
            except AssertionError:
                assert time.monotonic() < deadline, "nothing got through"
        while seqs[-1] < last:
            seqs.append((await b.expect("message:received", room=room))["message"]["seq"])
        seqs += [m["message"]["seq"] for m in await b.quiet(0.3)
                 if m.get("type") == "message:received"]
        assert seqs == list(range(1, last + 1))
        await a.ws.close()
        await b.ws.close()

    run(go())
