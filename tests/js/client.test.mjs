// Unit tests of the browser client's logic (web/chat/client.js) with a mock
// WebSocket and fake timers: acks, errors and timeouts, backoff with full
// jitter and its cap, a fresh ticket per connection, resume with the last
// sequences after a drop, duplicates dropped, requests queued while away.
// Run: node --test tests/js/client.test.mjs (make test-js). The real
// browser and server are tests/e2e/test_chat_browser.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

// client.js is an ES module served to browsers; next to no package.json,
// Node before 20 would read a .js file as CommonJS: load a .mjs copy.
const here = dirname(fileURLToPath(import.meta.url));
const copy = join(mkdtempSync(join(tmpdir(), "keel-client-")), "client.mjs");
copyFileSync(join(here, "..", "..", "web", "chat", "client.js"), copy);
const { KeelRealtime, RealtimeError } = await import(pathToFileURL(copy).href);

class FakeTimers {
  constructor() {
    this.now = 0;
    this.list = new Map();
    this.next = 1;
  }
  set = (fn, ms) => {
    const id = this.next++;
    this.list.set(id, { fn, at: this.now + ms });
    return id;
  };
  clear = (id) => {
    this.list.delete(id);
  };
  // runs every timer due within ms
  advance(ms) {
    this.now += ms;
    for (;;) {
      const due = [...this.list].filter(([, t]) => t.at <= this.now).sort((a, b) => a[1].at - b[1].at);
      if (!due.length) return;
      const [id, t] = due[0];
      this.list.delete(id);
      t.fn();
    }
  }
}

function setup(opts = {}) {
  const sockets = [];
  class MockWS {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(raw) {
      this.sent.push(JSON.parse(raw));
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // the server side
    push(m) {
      this.onmessage({ data: JSON.stringify(m) });
    }
    drop(code = 1006) {
      this.onclose({ code, reason: "" });
    }
  }
  const timers = new FakeTimers();
  let tickets = 0;
  const rt = new KeelRealtime(
    Object.assign(
      {
        url: "ws://example.test/ws",
        getTicket: async () => "t" + ++tickets,
        WebSocket: MockWS,
        setTimeout: timers.set,
        clearTimeout: timers.clear,
        random: () => 0.5,
      },
      opts
    )
  );
  return { rt, sockets, timers, tickets: () => tickets };
}

const tick = () => new Promise((r) => setImmediate(r));

async function connected(env) {
  env.rt.connect();
  await tick();
  const ws = env.sockets.at(-1);
  ws.push({ type: "welcome", user: "u1", connection: "i:1" });
  return ws;
}

test("a request resolves with its ack, rejects with its error or a timeout", async () => {
  const env = setup();
  const ws = await connected(env);
  assert.equal(ws.url, "ws://example.test/ws?ticket=t1");
  const p = env.rt.ping();
  const id = ws.sent.at(-1).id;
  assert.deepEqual(ws.sent.at(-1), { type: "ping", id });
  ws.push({ type: "ack", id });
  assert.equal((await p).id, id);

  const q = env.rt.send("r1", "hi");
  ws.push({ type: "error", id: ws.sent.at(-1).id, code: "not_joined", message: "join first" });
  await assert.rejects(q, (e) => e instanceof RealtimeError && e.code === "not_joined");

  const t = env.rt.request("ping", {}, { timeout: 1000 });
  const late = ws.sent.at(-1).id;
  env.timers.advance(1000);
  await assert.rejects(t, (e) => e.code === "timeout");
  ws.push({ type: "ack", id: late }); // a late ack is ignored
});

test("backoff: full jitter below min(max, base * 2^attempt)", () => {
  const hi = setup({ random: () => 0.999999, backoffBase: 100, backoffMax: 5000 }).rt;
  assert.equal(hi.backoff(0), 99);
  assert.equal(hi.backoff(3), 799);
  assert.equal(hi.backoff(10), 4999); // capped
  assert.equal(hi.backoff(1000), 4999);
  const lo = setup({ random: () => 0 }).rt;
  assert.equal(lo.backoff(5), 0);
});

test("drop, reconnect with a fresh ticket, resume, duplicates dropped", async () => {
  const env = setup({ backoffBase: 1000, backoffMax: 8000 });
  const ws = await connected(env);
  const got = [];
  env.rt.on("message:received", (m) => got.push(m.message.seq));
  const events = [];
  for (const e of ["open", "close", "reconnecting"]) env.rt.on(e, (d) => events.push([e, d]));

  const j = env.rt.join("r1");
  ws.push({ type: "ack", id: ws.sent.at(-1).id, room: { id: "r1", name: "x", kind: "public", last_seq: 5 } });
  await j;
  assert.equal(env.rt.lastSeq("r1"), 5);
  for (const seq of [6, 7, 7, 5])
    ws.push({ type: "message:received", room: "r1", message: { seq, body: "m" + seq } });
  assert.deepEqual(got, [6, 7]);

  const pending = env.rt.ping();
  ws.drop(1006);
  await assert.rejects(pending, (e) => e.code === "disconnected");
  assert.deepEqual(events.at(-2), ["close", { code: 1006, reason: "", wasOpen: true }]);
  assert.deepEqual(events.at(-1), ["reconnecting", { attempt: 1, delay: 500 }]);

  // a request made while away waits for the connection
  const queued = env.rt.send("r1", "later");
  env.timers.advance(500);
  await tick();
  assert.equal(env.sockets.length, 2);
  const ws2 = env.sockets[1];
  assert.equal(ws2.url, "ws://example.test/ws?ticket=t2"); // a fresh ticket
  ws2.push({ type: "welcome", user: "u1" });
  const [resume, send] = ws2.sent;
  assert.equal(resume.type, "resume");
  assert.deepEqual(resume.rooms, { r1: 7 });
  assert.equal(send.type, "message:send");
  // the replay overlaps what was seen: 7 is dropped
  for (const seq of [7, 8, 9])
    ws2.push({ type: "message:received", room: "r1", message: { seq }, replay: true });
  ws2.push({ type: "ack", id: resume.id, rooms: { r1: "ok" }, conversations: {} });
  ws2.push({ type: "ack", id: send.id, message: { seq: 10 } });
  await queued;
  ws2.push({ type: "message:received", room: "r1", message: { seq: 10 } });
  ws2.push({ type: "message:received", room: "r1", message: { seq: 10 } });
  assert.deepEqual(got, [6, 7, 8, 9, 10]);
  assert.equal(env.rt.attempt, 0); // reset once resumed
  assert.deepEqual(events.at(-1), ["open", { welcome: { type: "welcome", user: "u1" }, reconnect: true }]);
});

test("the backoff grows while getTicket fails, up to the cap", async () => {
  let fail = true;
  const env = setup({
    backoffBase: 100,
    backoffMax: 1000,
    random: () => 0.999999,
    getTicket: async () => {
      if (fail) throw new Error("offline");
      return "ok";
    },
  });
  const delays = [];
  env.rt.on("reconnecting", (d) => delays.push(d.delay));
  const errors = [];
  env.rt.on("error", (e) => errors.push(e.code));
  env.rt.connect();
  for (let i = 0; i < 6; i++) {
    await tick();
    env.timers.advance(delays.at(-1) ?? 0);
  }
  await tick();
  assert.deepEqual(delays.slice(0, 6), [99, 199, 399, 799, 999, 999]);
  assert.ok(errors.every((c) => c === "ticket"));
  fail = false;
  env.timers.advance(delays.at(-1));
  await tick();
  assert.equal(env.sockets.at(-1).url, "ws://example.test/ws?ticket=ok");
});

test("direct messages: the ack and dm:received share one sequence per conversation", async () => {
  const env = setup();
  const ws = await connected(env);
  const got = [];
  env.rt.on("dm:received", (m) => got.push(m.message.seq));
  const p = env.rt.dm("u2", "hi");
  ws.push({ type: "ack", id: ws.sent.at(-1).id, conversation: "c1", message: { seq: 3 } });
  await p;
  ws.push({ type: "dm:received", conversation: "c1", message: { seq: 3 } }); // own, seen
  ws.push({ type: "dm:received", conversation: "c1", message: { seq: 4 } });
  assert.deepEqual(got, [4]);
  ws.drop();
  env.timers.advance(10000);
  await tick();
  env.sockets.at(-1).push({ type: "welcome", user: "u1" });
  assert.deepEqual(env.sockets.at(-1).sent[0].conversations, { c1: 4 });
});

test("close() stops reconnecting and rejects what waits", async () => {
  const env = setup();
  const ws = await connected(env);
  const p = env.rt.ping();
  env.rt.close();
  assert.deepEqual(ws.closed, { code: 1000, reason: "bye" });
  await assert.rejects(p, (e) => e.code === "disconnected");
  await assert.rejects(env.rt.ping(), (e) => e.code === "disconnected");
  env.timers.advance(100000);
  assert.equal(env.sockets.length, 1);
});

test("what the resume could not do now is resumed again after a backoff", async () => {
  const env = setup({ backoffBase: 100 });
  const ws = await connected(env);
  for (const [room, last] of [["r1", 3], ["r2", 4], ["r3", 1]]) {
    const j = env.rt.join(room);
    ws.push({ type: "ack", id: ws.sent.at(-1).id, room: { id: room, last_seq: last } });
    await j;
  }
  ws.drop();
  env.timers.advance(10000);
  await tick();
  const ws2 = env.sockets.at(-1);
  ws2.push({ type: "welcome", user: "u1" });
  const resume = ws2.sent[0];
  assert.deepEqual(resume.rooms, { r1: 3, r2: 4, r3: 1 });
  ws2.push({ type: "message:received", room: "r2", message: { seq: 5 } });
  ws2.push({ type: "ack", id: resume.id, rooms: { r1: "ok", r2: "unavailable", r3: "forbidden" }, conversations: {} });
  await tick();
  assert.equal(env.rt.lastSeq("r3"), undefined); // forgotten
  env.timers.advance(200);
  const again = ws2.sent.at(-1);
  assert.equal(again.type, "resume");
  assert.deepEqual(again.rooms, { r2: 5 }); // only what failed, from what was seen since
  // a refused resume is tried again too
  ws2.push({ type: "error", id: again.id, code: "busy", message: "later" });
  await tick();
  env.timers.advance(400);
  assert.equal(ws2.sent.at(-1).type, "resume");
  assert.notEqual(ws2.sent.at(-1).id, again.id);
});
