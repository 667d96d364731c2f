// keel realtime client (served as GET /realtime/client.js; docs/realtime.md,
// "Browser client"). An ES module with no dependencies and no build step.
//
//   import { KeelRealtime } from "/realtime/client.js";
//   const rt = new KeelRealtime({ getTicket: async () => (await fetch(...)).json() });
//   rt.on("message:received", (m) => show(m.message));
//   rt.connect();
//   await rt.join(roomId);
//   await rt.send(roomId, "hi");
//
// - connect() fetches a fresh single-use ticket (getTicket) for every
//   connection and reconnection;
// - request(type, payload, {timeout}) resolves with the `ack` of its id and
//   rejects with the `error` (err.code) or on timeout (code "timeout") or
//   when the connection drops first (code "disconnected");
// - reconnects with exponential backoff and full jitter, capped; after a
//   reconnect it sends one `resume` with the last sequence it saw per room
//   and conversation, which rejoins the rooms and replays what was missed;
// - drops any message whose sequence it has already seen (no duplicates).

/**
 * Server messages by type (docs/realtime.md, "Messages"), for editors and
 * type checkers reading this file's JSDoc.
 * @typedef {{id: string, room?: string, conversation?: string, seq: number, sender: string,
 *            body: string, created_at: string, to?: string}} KeelMessage
 * @typedef {{type: "message:received", room: string, message: KeelMessage, replay?: true}} MessageReceived
 * @typedef {{type: "dm:received", conversation: string, message: KeelMessage, replay?: true}} DmReceived
 * @typedef {{type: "presence", room: string, user: string, event: "join"|"leave"|"status",
 *            status: "online"|"away"|"offline"}} Presence
 * @typedef {{type: "typing", room: string, user: string, state: "start"|"stop",
 *            expires_in_ms?: number, expired?: true}} Typing
 * @typedef {{type: "resync", room?: string, conversation?: string, after_seq: number,
 *            last_seq: number}} Resync
 * @typedef {{type: "welcome", user: string, connection: string, resume_max: number,
 *            body_max: number}} Welcome
 * @typedef {{type: "ack", id: string|number, [k: string]: any}} Ack
 * @typedef {{
 *   "message:received": MessageReceived, "dm:received": DmReceived, presence: Presence,
 *   typing: Typing, resync: Resync, welcome: Welcome,
 *   open: {welcome: Welcome, reconnect: boolean},
 *   close: {code: number, reason: string, wasOpen: boolean},
 *   reconnecting: {attempt: number, delay: number},
 *   resumed: Ack, error: RealtimeError, "*": {type: string}
 * }} KeelRealtimeEvents
 */

export class RealtimeError extends Error {
  constructor(code, message, frame) {
    super(message || code);
    this.name = "RealtimeError";
    this.code = code;
    this.frame = frame || null;
  }
}

const SEQ_EVENTS = { "message:received": "room", "dm:received": "conversation" };

export class KeelRealtime {
  // options: url (default: ws(s)://<this host>/ws), getTicket() -> string or
  // {ticket}, requestTimeout (ms, 10000), backoffBase (ms, 500), backoffMax
  // (ms, 30000), and for tests: WebSocket, random, setTimeout, clearTimeout.
  constructor(options = {}) {
    this.opts = Object.assign(
      { requestTimeout: 10000, backoffBase: 500, backoffMax: 30000, url: null },
      options
    );
    if (typeof this.opts.getTicket !== "function")
      throw new TypeError("KeelRealtime: getTicket is required");
    this.WS = this.opts.WebSocket || globalThis.WebSocket;
    this.random = this.opts.random || Math.random;
    this.setTimer = this.opts.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimer = this.opts.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.handlers = new Map();
    this.pending = new Map(); // id -> {resolve, reject, timer, frame}
    this.queue = []; // frames waiting for the connection
    this.rooms = new Map(); // room id -> last seq seen (rooms this client follows)
    this.conversations = new Map(); // conversation id -> last seq seen
    this.ws = null;
    this.nextId = 1;
    this.attempt = 0;
    this.state = "idle"; // idle, connecting, open, waiting, closed
    this.reconnectTimer = null;
    this.user = null;
    this.welcome = null;
    // back online (a browser's "online" event): retry now, not after the backoff
    if (typeof globalThis.addEventListener === "function" && this.opts.retryOnOnline !== false)
      globalThis.addEventListener("online", () => this.retryNow());
  }

  retryNow() {
    if (this.state !== "waiting") return;
    if (this.reconnectTimer) this.clearTimer(this.reconnectTimer);
    this.reconnectTimer = null;
    this.state = "connecting";
    this.open();
  }

  // ---------------------------------------------------------------- events

  // on(type, fn): fn(frame) for a server message type ("message:received",
  // "dm:received", "presence", "typing", "resync", "welcome", any pushed
  // type) or a lifecycle event ("open", "close", "reconnecting", "error",
  // "*" for every server message). Returns a function that unsubscribes.
  /**
   * @template {keyof KeelRealtimeEvents} K
   * @param {K | string} type
   * @param {(data: K extends keyof KeelRealtimeEvents ? KeelRealtimeEvents[K] : any) => void} fn
   * @returns {() => void} unsubscribes
   */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this.handlers.get(type);
    if (set) set.delete(fn);
  }

  emit(type, data) {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(data);
      } catch (e) {
        // a listener's bug must not break the connection
        setTimeoutSafe(() => { throw e; });
      }
    }
  }

  // ---------------------------------------------------------------- connection

  get connected() {
    return this.state === "open";
  }

  connect() {
    if (this.state === "connecting" || this.state === "open") return;
    this.state = "connecting";
    this.open();
  }

  // Closes for good: no reconnect; pending requests are rejected.
  close() {
    this.state = "closed";
    if (this.reconnectTimer) this.clearTimer(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000, "bye");
      } catch (e) {
        /* already closing */
      }
    }
    this.failPending("disconnected", "the client was closed");
  }

  async open() {
    let ticket;
    try {
      ticket = await this.opts.getTicket();
      if (ticket && typeof ticket === "object") ticket = ticket.ticket;
      if (typeof ticket !== "string" || !ticket) throw new Error("getTicket gave no ticket");
    } catch (e) {
      if (this.state === "closed") return;
      this.emit("error", new RealtimeError("ticket", String(e && e.message ? e.message : e)));
      this.scheduleReconnect();
      return;
    }
    if (this.state === "closed") return;
    const base = this.opts.url || defaultUrl();
    const url = base + (base.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(ticket);
    let ws;
    try {
      ws = new this.WS(url);
    } catch (e) {
      this.emit("error", new RealtimeError("connect", String(e && e.message ? e.message : e)));
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.dropped(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  dropped(code, reason) {
    const wasOpen = this.state === "open";
    this.failPending("disconnected", "the connection closed (" + code + ")");
    if (this.state === "closed") return;
    this.emit("close", { code, reason, wasOpen });
    this.scheduleReconnect();
  }

  // Full jitter: a random delay in [0, min(max, base * 2^attempt)).
  backoff(attempt) {
    const cap = Math.min(this.opts.backoffMax, this.opts.backoffBase * 2 ** Math.min(attempt, 30));
    return Math.floor(this.random() * cap);
  }

  scheduleReconnect() {
    if (this.state === "closed") return;
    this.state = "waiting";
    const delay = this.backoff(this.attempt);
    this.attempt++;
    this.emit("reconnecting", { attempt: this.attempt, delay });
    this.reconnectTimer = this.setTimer(() => {
      this.reconnectTimer = null;
      if (this.state !== "waiting") return;
      this.state = "connecting";
      this.open();
    }, delay);
  }

  // Called on `welcome`: resumes what was followed, then sends what waited.
  opened(frame) {
    const reconnect = this.welcome !== null;
    this.state = "open";
    this.welcome = frame;
    this.user = frame.user;
    const rooms = {};
    const conversations = {};
    for (const [id, seq] of this.rooms) if (seq >= 0) rooms[id] = seq;
    for (const [id, seq] of this.conversations) if (seq >= 0) conversations[id] = seq;
    const resuming = this.resume(rooms, conversations, 0);
    for (const raw of this.queue.splice(0)) this.ws.send(raw);
    this.emit("open", { welcome: frame, reconnect });
    if (!resuming) this.attempt = 0;
  }

  // Sends `resume` for these rooms and conversations (false when there is
  // none). What the server could not resume for now (`unavailable`: its
  // database busy or down, or the whole request refused) is tried again
  // after a backoff; `forbidden` and `not_found` are forgotten.
  resume(rooms, conversations, tries) {
    if (!Object.keys(rooms).length && !Object.keys(conversations).length) return false;
    const ws = this.ws;
    const retry = (r, c) => {
      const delay = this.backoff(tries + 1);
      this.setTimer(() => {
        if (this.ws !== ws || this.state !== "open") return; // a new connection resumes anyway
        const cur = (ids, map) =>
          Object.fromEntries(Object.keys(ids).filter((id) => map.has(id)).map((id) => [id, map.get(id)]));
        this.resume(cur(r, this.rooms), cur(c, this.conversations), tries + 1);
      }, delay);
    };
    this.request("resume", { rooms, conversations }, { timeout: this.opts.requestTimeout * 3 }).then(
      (ack) => {
        this.attempt = 0;
        const again = [{}, {}];
        [ack.rooms || {}, ack.conversations || {}].forEach((part, dm) => {
          const map = dm ? this.conversations : this.rooms;
          for (const [id, st] of Object.entries(part)) {
            if (st === "forbidden" || st === "not_found") map.delete(id);
            else if (st === "unavailable" && map.has(id)) again[dm][id] = map.get(id);
          }
        });
        if (Object.keys(again[0]).length || Object.keys(again[1]).length) retry(again[0], again[1]);
        this.emit("resumed", ack);
      },
      (err) => {
        this.emit("error", err);
        if (err.code !== "disconnected") retry(rooms, conversations);
      }
    );
    return true;
  }

  // ---------------------------------------------------------------- receiving

  receive(data) {
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      this.emit("error", new RealtimeError("invalid_json", "the server sent invalid JSON"));
      return;
    }
    if (!m || typeof m.type !== "string") return;
    if (m.type === "welcome") {
      this.opened(m);
      this.emit("welcome", m);
      return;
    }
    if (m.type === "ack" || m.type === "error") {
      const p = m.id === null || m.id === undefined ? null : this.pending.get(String(m.id));
      if (!p) {
        if (m.type === "error") this.emit("error", new RealtimeError(m.code, m.message, m));
        return;
      }
      this.pending.delete(String(m.id));
      this.clearTimer(p.timer);
      if (m.type === "ack") {
        this.acked(p.frame, m);
        p.resolve(m);
      } else {
        p.reject(new RealtimeError(m.code, m.message, m));
      }
      return;
    }
    const key = SEQ_EVENTS[m.type];
    if (key) {
      const map = key === "room" ? this.rooms : this.conversations;
      const id = m[key];
      const seq = m.message && m.message.seq;
      if (typeof id === "string" && Number.isInteger(seq)) {
        const last = map.get(id);
        if (last !== undefined && seq <= last) return; // seen: a duplicate
        if (key === "conversation" || map.has(id)) map.set(id, seq);
      }
    } else if (m.type === "resync") {
      // live delivery goes on after last_seq; the listener fetches the gap
      // over HTTP (GET /api/v1/rooms/<id>/messages?after_seq=<after_seq>)
      const id = m.room || m.conversation;
      const map = m.room ? this.rooms : this.conversations;
      if (typeof id === "string" && Number.isInteger(m.last_seq)) {
        const last = map.get(id);
        if (last === undefined || last < m.last_seq) map.set(id, m.last_seq);
      }
    }
    this.emit(m.type, m);
    this.emit("*", m);
  }

  // What an ack teaches about sequences.
  acked(frame, ack) {
    if (frame.type === "room:join" && ack.room && typeof ack.room.id === "string") {
      // joined without last_seq: live delivery starts after the room's last_seq
      const last = this.rooms.get(ack.room.id);
      if (last === undefined || last < ack.room.last_seq && !("last_seq" in frame))
        this.rooms.set(ack.room.id, ack.room.last_seq);
    } else if (frame.type === "room:leave") {
      this.rooms.delete(frame.room);
    } else if (frame.type === "dm:send" && ack.conversation && ack.message) {
      // the sender's own connection gets no dm:received for it
      const last = this.conversations.get(ack.conversation);
      if (last === undefined || last < ack.message.seq)
        this.conversations.set(ack.conversation, ack.message.seq);
    }
  }

  // ---------------------------------------------------------------- requests

  // Sends {type, id, ...payload}; resolves with the ack, rejects with a
  // RealtimeError (the server's code, "timeout" or "disconnected"). A
  // request made while disconnected waits for the connection (its timeout
  // runs meanwhile).
  /**
   * @param {string} type
   * @param {object} [payload]
   * @param {{timeout?: number}} [options]
   * @returns {Promise<Ack>}
   */
  request(type, payload = {}, { timeout } = {}) {
    if (this.state === "closed") return Promise.reject(new RealtimeError("disconnected", "closed"));
    const id = "c" + this.nextId++;
    const frame = Object.assign({}, payload, { type, id });
    const raw = JSON.stringify(frame);
    const ms = timeout === undefined ? this.opts.requestTimeout : timeout;
    return new Promise((resolve, reject) => {
      const timer = this.setTimer(() => {
        if (!this.pending.delete(id)) return;
        const at = this.queue.indexOf(raw);
        if (at >= 0) this.queue.splice(at, 1);
        reject(new RealtimeError("timeout", type + ": no answer within " + ms + " ms"));
      }, ms);
      this.pending.set(id, { resolve, reject, timer, frame, raw });
      if (this.state === "open" && this.ws) this.ws.send(raw);
      else this.queue.push(raw);
    });
  }

  failPending(code, message) {
    const waiting = new Set(this.queue);
    for (const [id, p] of [...this.pending]) {
      if (waiting.has(p.raw) && this.state !== "closed") continue; // not sent yet: keeps waiting
      this.pending.delete(id);
      this.clearTimer(p.timer);
      p.reject(new RealtimeError(code, message));
    }
    if (this.state === "closed") this.queue = [];
  }

  // ---------------------------------------------------------------- helpers

  // Joins a room. With a last sequence (the one this client saw, or
  // opts.lastSeq: the last message of the history the page shows) the
  // stored messages after it come first (replay: true), then live ones.
  join(room, opts = {}) {
    const payload = { room };
    const known = this.rooms.has(room) && this.rooms.get(room) >= 0;
    if (known) payload.last_seq = this.rooms.get(room);
    else if (Number.isInteger(opts.lastSeq) && opts.lastSeq >= 0) payload.last_seq = opts.lastSeq;
    // tracked from now on: replayed and live messages may come before the ack
    if (!this.rooms.has(room)) this.rooms.set(room, "last_seq" in payload ? payload.last_seq : -1);
    return this.request("room:join", payload, opts).catch((err) => {
      if (this.rooms.get(room) === -1 || !known) this.rooms.delete(room);
      throw err;
    });
  }

  leave(room, opts) {
    return this.request("room:leave", { room }, opts);
  }

  send(room, body, opts) {
    return this.request("message:send", { room, body }, opts);
  }

  dm(to, body, opts) {
    return this.request("dm:send", { to, body }, opts);
  }

  typing(room, on = true, opts) {
    return this.request(on ? "typing:start" : "typing:stop", { room }, opts);
  }

  setPresence(status, opts) {
    return this.request("presence:set", { status }, opts);
  }

  ping(opts) {
    return this.request("ping", {}, opts);
  }

  // The last sequence seen in a room or conversation (undefined if none).
  lastSeq(id) {
    return this.rooms.has(id) ? this.rooms.get(id) : this.conversations.get(id);
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error("KeelRealtime: url is required outside a browser");
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/ws";
}

function setTimeoutSafe(fn) {
  globalThis.setTimeout(fn, 0);
}
