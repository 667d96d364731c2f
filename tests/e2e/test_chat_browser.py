"""The browser client (GET /realtime/client.js) and the /chat page in a real
browser: headless Chromium (Debian `chromium`) driven over the DevTools
protocol with python3-websockets (no selenium). The page signs in, joins a
room, sends a message a python client (another user in the room) receives
and shows the python client's messages, typing and presence; then the
browser goes offline (DevTools network emulation: the page's WebSocket
is closed through DevTools), the python client sends while it is away
(the page's reconnect attempts fail: no ticket offline), and the page reconnects
with a fresh ticket and resumes: every message shown once, in sequence
order. Then direct messages: one from the python client shows on the page,
and the page (its recipient picked from presence) answers one the python
client receives. Any console error, uncaught exception or CSP violation
fails the test. A screenshot is saved to build/test-output/chat.png.
(docs/realtime.md, "Browser client" and "The /chat page".)"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import base64

import pytest
import requests

from conftest import REPO, SLACK

websockets = pytest.importorskip("websockets")

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
PW = "correct horse battery staple"
ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1",
       "WS_MAX_PER_IP": "0", "WS_MESSAGE_RATE": "0", "WS_TYPING_INTERVAL": "0"}
T = 10 * SLACK
CHAT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def register(srv, name):
    r = requests.post(srv.url + "/api/v1/auth/register",
                      json={"email": "%s@example.com" % name, "password": PW}, timeout=20 * SLACK)
    assert r.status_code == 201, r.text
    b = r.json()
    return b["access_token"], b["user"]["id"], "%s@example.com" % name


# ---------------------------------------------------------------- HTTP side


def test_client_and_page_served_with_csp(keel):
    srv = keel(**ENV)
    for path, ctype in [("/realtime/client.js", "text/javascript"), ("/chat", "text/html"),
                        ("/chat/chat.js", "text/javascript"), ("/chat/chat.css", "text/css")]:
        r = requests.get(srv.url + path, timeout=10 * SLACK)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith(ctype), path
        assert r.headers["Content-Security-Policy"] == CHAT_CSP, path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    js = requests.get(srv.url + "/realtime/client.js", timeout=10 * SLACK).text
    assert "export class KeelRealtime" in js
    page = requests.get(srv.url + "/chat", timeout=10 * SLACK).text
    # no inline script or style: the CSP would block them
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    assert '<script type="module" src="/chat/chat.js">' in page
    assert requests.post(srv.url + "/chat", timeout=10 * SLACK).status_code == 405


def test_chat_page_switch(keel):
    srv = keel(**dict(ENV, CHAT_PAGE="false"))
    for path in ("/chat", "/chat/chat.js", "/chat/chat.css"):
        r = requests.get(srv.url + path, timeout=10 * SLACK)
        assert r.status_code == 404, path
        assert r.headers["Content-Type"].startswith("application/problem+json")
    assert requests.get(srv.url + "/realtime/client.js", timeout=10 * SLACK).status_code == 200
    srv2 = keel(**dict(ENV, CHAT_PAGE="false", REALTIME_CLIENT_JS="false"))
    assert requests.get(srv2.url + "/realtime/client.js", timeout=10 * SLACK).status_code == 404


# ---------------------------------------------------------------- Chromium over DevTools


class Browser:
    """One headless Chromium in its own process group, with one page."""

    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
        self.log = open(os.path.join(self.dir, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--user-data-dir=" + self.dir,
             "--remote-debugging-port=0", "--no-first-run", "--no-default-browser-check",
             "--disable-gpu", "--disable-extensions", "--disable-background-networking",
             "--disable-sync", "--disable-component-update", "--window-size=1100,700",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        self.port = None
        self.ws = None
        self.next_id = 0
        self.waiting = {}
        self.events = []
        self.reader = None

    def devtools_port(self):
        path = os.path.join(self.dir, "DevToolsActivePort")
        deadline = time.monotonic() + 30 * SLACK
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited: %r" % self.proc.returncode)
            try:
                with open(path) as f:
                    lines = f.read().split("\n")
                if lines[0].strip().isdigit() and len(lines) > 1:
                    return int(lines[0])
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise AssertionError("no DevToolsActivePort from chromium")

    async def start(self):
        self.port = self.devtools_port()
        pages = requests.get("http://127.0.0.1:%d/json/list" % self.port, timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        self.ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=64 << 20)
        self.reader = asyncio.ensure_future(self.read())

    async def read(self):
        async for raw in self.ws:
            m = json.loads(raw)
            if "id" in m:
                fut = self.waiting.pop(m["id"], None)
                if fut and not fut.done():
                    fut.set_result(m)
            else:
                self.events.append((time.monotonic(), m))

    async def call(self, method, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        m = await asyncio.wait_for(fut, T)
        if "error" in m:
            raise AssertionError("%s: %r" % (method, m["error"]))
        return m.get("result", {})

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %r" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    async def until(self, expr, what, timeout=None):
        deadline = time.monotonic() + (timeout or T)
        while time.monotonic() < deadline:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.05)
        snap = await self.js(
            "JSON.stringify({status: {...document.getElementById('status')?.dataset},"
            " title: document.getElementById('status')?.title,"
            " error: document.getElementById('chat-error')?.textContent,"
            " input: document.getElementById('body')?.value,"
            " shown: [...document.querySelectorAll('#messages li')].map(li => li.textContent)})")
        raise AssertionError("page: no %s (%s); page: %s" % (what, expr, snap))

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own group only
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def problems(events, offline, allow=lambda entry: False):
    """Console errors, exceptions and CSP reports; network errors while the
    browser was offline on purpose (and those `allow` expects) are not."""
    out = []
    for t, m in events:
        if m.get("method") == "Log.entryAdded" and allow(m["params"]["entry"]):
            continue
        method, p = m.get("method"), m.get("params", {})
        during_offline = offline[0] <= t <= offline[1]
        if method == "Runtime.exceptionThrown":
            out.append(("exception", p["exceptionDetails"].get("text"),
                        json.dumps(p["exceptionDetails"].get("exception", {}))[:300]))
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            out.append(("console", text))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            e = p["entry"]
            if during_offline and e.get("source") == "network":
                continue
            if during_offline and ("ERR_INTERNET_DISCONNECTED" in e.get("text", "") or
                                   "WebSocket connection" in e.get("text", "")):
                continue
            out.append(("log", e.get("source"), e.get("text"), e.get("url")))
    return out


class Peer:
    """The python side: another user on GET /ws with a Bearer token."""

    def __init__(self, ws):
        self.ws = ws
        self.n = 0
        self.seen = []

    async def call(self, type_, **fields):
        self.n += 1
        mid = "p%d" % self.n
        await self.ws.send(json.dumps(dict(fields, type=type_, id=mid)))
        m = await self.expect(lambda m: m.get("id") == mid and m["type"] in ("ack", "error"))
        assert m["type"] == "ack", m
        return m

    async def expect(self, pred, timeout=None):
        deadline = time.monotonic() + (timeout or T)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("python client: nothing matched; seen %r" % self.seen[-10:])
            try:
                m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except asyncio.TimeoutError:
                continue
            self.seen.append(m)
            if pred(m):
                return m


SHOWN = ("JSON.stringify([...document.querySelectorAll('#messages li')]"
         ".map(li => [Number(li.dataset.seq), li.querySelector('.body').textContent]))")
DMS = ("[...document.querySelectorAll('#dm-messages li')]"
       ".map(li => [li.dataset.conversation, li.dataset.peer, "
       "li.querySelector('.body').textContent])")


def test_chat_in_headless_chromium(keel, tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("Debian package chromium is not installed (scripts/deps.sh test)")
    srv = keel(**ENV)
    _, uid_a, email_a = register(srv, "browser")
    tok_b, uid_b, _ = register(srv, "python")
    r = requests.post(srv.url + "/api/v1/rooms", json={"name": "lobby"},
                      headers={"Authorization": "Bearer " + tok_b}, timeout=10 * SLACK)
    assert r.status_code == 201, r.text
    room = r.json()["id"]
    browser = Browser(str(tmp_path))
    offline = [float("inf"), float("-inf")]

    async def go():
        await browser.start()
        b = browser
        for domain in ("Runtime", "Log", "Page", "Network"):
            await b.call(domain + ".enable")
        # every CSP violation the page sees, kept where the test can read it
        await b.call("Page.addScriptToEvaluateOnNewDocument", source=(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', "
            "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"))
        await b.call("Emulation.setDeviceMetricsOverride", width=1100, height=700,
                     deviceScaleFactor=1, mobile=False)
        await b.call("Page.navigate", url=srv.url + "/chat")
        await b.until("document.readyState === 'complete' && !!document.getElementById('login')",
                      "login form")
        # sign in through the form
        await b.js("document.getElementById('email').value = %s;"
                   "document.getElementById('password').value = %s;"
                   "document.getElementById('login').click(); true"
                   % (json.dumps(email_a), json.dumps(PW)))
        await b.until("document.getElementById('status').dataset.state === 'online'",
                      "realtime connection")
        await b.until("!!document.querySelector('#rooms li[data-room=\"%s\"]')" % room,
                      "the room in the list")
        # the python user is in the room before the page joins, and says hello first
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % srv.port,
                                      extra_headers={"Authorization": "Bearer " + tok_b})
        peer = Peer(ws)
        await peer.expect(lambda m: m["type"] == "welcome")
        await peer.call("room:join", room=room)
        await peer.call("message:send", room=room, body="before you came")
        await b.js("document.querySelector('#rooms li[data-room=\"%s\"]').click(); true" % room)
        await b.until("!document.getElementById('send').disabled", "joined room")
        # history (GET /api/v1/rooms/:id/messages) shows the earlier message
        await b.until("%s.includes('before you came')" % SHOWN, "history")
        # presence: the page's user joined, the python client is told
        await peer.expect(lambda m: m["type"] == "presence" and m["user"] == uid_a
                          and m["event"] == "join")
        # typing in the page reaches the python client
        await b.js("const i = document.getElementById('body'); i.value = 'hel';"
                   "i.dispatchEvent(new Event('input')); true")
        await peer.expect(lambda m: m["type"] == "typing" and m["user"] == uid_a
                          and m["state"] == "start")
        # the page sends; the python client receives it
        await b.js("document.getElementById('body').value = 'hello from the browser';"
                   "document.getElementById('send').click(); true")
        got = await peer.expect(lambda m: m["type"] == "message:received")
        assert got["room"] == room and got["message"]["body"] == "hello from the browser"
        assert got["message"]["sender"] == uid_a
        # the python client types and sends; the page shows both
        await peer.call("typing:start", room=room)
        await b.until("document.getElementById('typing').textContent.includes(%s)"
                      % json.dumps(uid_b[:8]), "typing indicator")
        await peer.call("presence:set", status="away")
        await b.until("document.querySelector('#presence li[data-user=\"%s\"]')?.dataset.status"
                      " === 'away'" % uid_b, "presence of the python user")
        await peer.call("message:send", room=room, body="hello from python")
        await b.until("%s.includes('hello from python')" % SHOWN, "the python message")

        # offline: the page's WebSocket drops; what is sent meanwhile comes on resume
        offline[0] = time.monotonic()
        await b.call("Network.emulateNetworkConditions", offline=True, latency=0,
                     downloadThroughput=-1, uploadThroughput=-1)
        # network emulation blocks new connections and fetches, but leaves an
        # open WebSocket alone: end it from DevTools (every WebSocket object
        # of the page, found by its prototype; the page's code is not touched)
        proto = await b.call("Runtime.evaluate", expression="WebSocket.prototype")
        objs = await b.call("Runtime.queryObjects", prototypeObjectId=proto["result"]["objectId"])
        n = await b.call("Runtime.callFunctionOn", objectId=objs["objects"]["objectId"],
                         functionDeclaration="function () { this.forEach(w => w.close(4000, "
                                             "'dropped by the test')); return this.length; }",
                         returnByValue=True)
        assert n["result"]["value"] == 1, n
        await b.until("document.getElementById('status').dataset.state !== 'online'",
                      "the connection dropped")
        for i in range(3):
            await peer.call("message:send", room=room, body="while away %d" % i)
        await b.call("Network.emulateNetworkConditions", offline=False, latency=0,
                     downloadThroughput=-1, uploadThroughput=-1)
        await b.until("document.getElementById('status').dataset.connects === '2'"
                      " && %s.includes('while away 2')" % SHOWN, "reconnect and resume",
                      timeout=20 * SLACK)
        offline[1] = time.monotonic()
        # live again after the resume, both ways
        await peer.call("message:send", room=room, body="after the resume")
        await b.until("%s.includes('after the resume')" % SHOWN, "a live message after resume")
        await b.js("document.getElementById('body').value = 'back online';"
                   "document.getElementById('send').click(); true")
        await peer.expect(lambda m: m["type"] == "message:received"
                          and m["message"]["body"] == "back online")
        await b.until("%s.includes('back online')" % SHOWN, "own message shown")

        shown = json.loads(await b.js(SHOWN))
        seqs = [s for s, _ in shown]
        bodies = [t for _, t in shown]
        assert seqs == list(range(1, len(seqs) + 1)), shown  # in order, no hole, no duplicate
        assert bodies == ["before you came", "hello from the browser", "hello from python",
                          "while away 0", "while away 1", "while away 2", "after the resume",
                          "back online"], bodies
        assert await b.js("document.getElementById('chat-error').textContent") == ""

        # direct messages: one from the python client shows on the page ...
        await peer.call("dm:send", to=uid_a, body="a DM from python")
        await b.until("%s.some(([c, p, t]) => p === %s && t === 'a DM from python')"
                      % (DMS, json.dumps(uid_b)), "the DM from python")
        # ... the page picks the python user from presence and answers
        await b.js("document.querySelector('#presence li[data-user=\"%s\"]').click(); true"
                   % uid_b)
        assert await b.js("document.getElementById('dm-to').value") == uid_b
        await b.js("document.getElementById('dm-body').value = 'a DM from the browser';"
                   "document.getElementById('dm-send').click(); true")
        got = await peer.expect(lambda m: m["type"] == "dm:received")
        assert got["message"]["body"] == "a DM from the browser", got
        assert got["message"]["sender"] == uid_a
        await b.until("%s.length === 2" % DMS, "the page's own DM shown")
        dms = await b.js(DMS)
        assert [t for _, _, t in dms] == ["a DM from python", "a DM from the browser"], dms
        assert dms[0][0] == dms[1][0] == got["conversation"]  # one conversation per pair
        # a DM to a user that does not exist: an error on the page, the text kept
        await b.js("document.getElementById('dm-to').value = '00000000-0000-4000-8000-000000000000';"
                   "document.getElementById('dm-body').value = 'to nobody';"
                   "document.getElementById('dm-send').click(); true")
        await b.until("document.getElementById('dm-error').textContent.includes('no such user')",
                      "the error for an unknown user")
        assert await b.js("document.getElementById('dm-body').value") == "to nobody"
        assert await b.js("JSON.stringify(window.__csp)") == "[]"

        os.makedirs(REPO / "build" / "test-output", exist_ok=True)
        shot = await b.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with open(REPO / "build" / "test-output" / "chat.png", "wb") as f:
            f.write(png)

        found = problems(b.events, offline)
        assert not found, found

        # the checks above can fail: an inline script is refused by the CSP
        # and reported, and shows up as a problem
        await b.js("const s = document.createElement('script'); s.textContent = 'window.x = 1';"
                   "document.body.append(s); true")
        await b.until("window.__csp.length > 0", "a CSP report for an inline script")
        assert await b.js("window.x === undefined")
        deadline = time.monotonic() + T
        while not problems(b.events, offline) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert problems(b.events, offline), "a CSP violation was not reported on the console"
        await ws.close()
        await b.ws.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 60 * SLACK))
    finally:
        browser.stop()


def test_chat_token_expiry_reconnects(keel, tmp_path):
    """The page creates a room from its form; the server closes the page's
    WebSocket with 4001 whenever its access token expires (every 2 s); the
    page refreshes the token (before asking for a ticket, as the token has
    less than a minute left, or after a 401), gets a new ticket, reconnects
    and resumes — and a message it sends is shown once
    even when the connection drops before the ack."""
    if not shutil.which("chromium"):
        pytest.skip("Debian package chromium is not installed (scripts/deps.sh test)")
    srv = keel(**dict(ENV, JWT_EXPIRES_IN="2s", WS_AUTH_RECHECK="200ms"))
    _, _, email_a = register(srv, "expiring")
    _, _, email_b = register(srv, "sender")
    browser = Browser(str(tmp_path))
    room = None

    async def say(body):
        # a fresh token each time: the python side's tokens expire too
        t = requests.post(srv.url + "/api/v1/auth/login", json={"email": email_b, "password": PW},
                          timeout=10 * SLACK).json()["access_token"]
        async with websockets.connect("ws://127.0.0.1:%d/ws" % srv.port,
                                      extra_headers={"Authorization": "Bearer " + t}) as ws:
            peer = Peer(ws)
            await peer.expect(lambda m: m["type"] == "welcome")
            await peer.call("room:join", room=room)
            await peer.call("message:send", room=room, body=body)

    async def go():
        b = browser
        await b.start()
        for domain in ("Runtime", "Log", "Page"):
            await b.call(domain + ".enable")
        await b.call("Page.navigate", url=srv.url + "/chat")
        await b.until("document.readyState === 'complete' && !!document.getElementById('login')",
                      "login form")
        await b.js("document.getElementById('email').value = %s;"
                   "document.getElementById('password').value = %s;"
                   "document.getElementById('login').click(); true"
                   % (json.dumps(email_a), json.dumps(PW)))
        # the page creates the room (POST /api/v1/rooms from its form) and opens it
        await b.until("document.getElementById('status').dataset.state === 'online'", "online")
        await b.js("document.getElementById('room-name').value = 'short tokens';"
                   "document.getElementById('room-form').requestSubmit(); true")
        await b.until("!document.getElementById('send').disabled", "joined room")
        nonlocal room
        room = await b.js("document.querySelector('#rooms li[aria-current=\"true\"]')"
                          ".dataset.room")
        assert await b.js("document.getElementById('room-title').textContent") == "short tokens"
        await say("one")
        await b.until("%s.includes('one')" % SHOWN, "a message")
        # the token expires within 2 s: closed with 4001, back with a refreshed one
        await b.until("document.getElementById('status').dataset.lastClose === '4001'"
                      " && Number(document.getElementById('status').dataset.connects) >= 2"
                      " && document.getElementById('status').dataset.state === 'online'",
                      "a reconnect after 4001", timeout=15 * SLACK)
        await say("two")
        await b.until("%s.includes('two')" % SHOWN, "a message after the reconnect")
        # the page, on its refreshed token, still sends
        await b.js("document.getElementById('body').value = 'three';"
                   "document.getElementById('send').click(); true")
        await b.until("%s.includes('three')" % SHOWN, "own message")
        shown = json.loads(await b.js(SHOWN))
        assert [s for s, _ in shown] == [1, 2, 3], shown
        assert [t for _, t in shown] == ["one", "two", "three"], shown
        assert await b.js("document.getElementById('chat-error').textContent") == ""
        # a ticket asked for with an expired token: 401, then the refresh
        found = problems(b.events, [0, 0], allow=lambda e: e.get("source") == "network" and
                         "/api/v1/realtime/ticket" in (e.get("url") or "") and "401" in e["text"])
        assert not found, found
        await b.ws.close()

    try:
        asyncio.run(asyncio.wait_for(go(), 60 * SLACK))
    finally:
        browser.stop()
