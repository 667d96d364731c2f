// The /chat demo page (docs/realtime.md, "The /chat page"): signs in over
// the HTTP API, lists and creates rooms, shows a room's history and its
// live messages through the realtime client (/realtime/client.js), typing
// and presence, and direct messages (dm:send / dm:received) to a user
// picked from presence or typed by id. No framework, no inline script (the page's CSP forbids it).
import { KeelRealtime } from "/realtime/client.js";

const $ = (id) => document.getElementById(id);
const HISTORY = 50; // messages shown when a room opens

const state = {
  access: null,
  refresh: null,
  user: null, // {id, email}
  room: null, // the open room {id, name, kind, last_seq}
  rooms: [],
  shown: new Map(), // seq -> <li> of the open room
  typing: new Map(), // user id -> timer
  presence: new Map(), // user id -> status
  lastTyping: 0,
  dms: new Map(), // direct message id -> <li>
  peers: new Map(), // conversation id -> the other user's id
};

// ---------------------------------------------------------------- HTTP

async function api(method, path, body, retried) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.access) headers.Authorization = "Bearer " + state.access;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (res.status === 401 && state.refresh && !retried && !path.startsWith("/api/v1/auth/")) {
    if (await refreshTokens()) return api(method, path, body, true);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = new Error((data && (data.detail || data.title)) || res.status + " " + res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

// One refresh at a time: a refresh token is single use (each use rotates it).
let refreshing = null;
function refreshTokens() {
  if (!refreshing) refreshing = doRefresh().finally(() => (refreshing = null));
  return refreshing;
}

async function doRefresh() {
  try {
    const t = await api("POST", "/api/v1/auth/refresh", { refresh_token: state.refresh }, true);
    state.access = t.access_token;
    state.refresh = t.refresh_token || state.refresh;
    return true;
  } catch (e) {
    return false;
  }
}

// Seconds until the access token expires (its `exp`; 0 when unreadable).
function tokenLeft() {
  try {
    const part = state.access.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).exp - Date.now() / 1000;
  } catch (e) {
    return 0;
  }
}

// A fresh single-use ticket for every (re)connection. A connection lives
// no longer than the token its ticket was made with (close 4001), so a
// token with less than a minute left is refreshed first.
async function getTicket() {
  if (state.refresh && tokenLeft() < 60) await refreshTokens();
  const t = await api("POST", "/api/v1/realtime/ticket", {});
  return t.ticket;
}

// ---------------------------------------------------------------- realtime

const rt = new KeelRealtime({ getTicket });

function setStatus(s) {
  const el = $("status");
  el.dataset.state = s;
  el.textContent = s;
}

rt.on("open", () => {
  setStatus("online");
  const el = $("status");
  el.dataset.connects = String(Number(el.dataset.connects || 0) + 1);
});
rt.on("close", ({ code }) => {
  setStatus("offline");
  $("status").dataset.lastClose = String(code); // 4001: the token expired (refreshed on retry)
});
rt.on("reconnecting", ({ attempt, delay }) => {
  setStatus("reconnecting");
  $("status").title = "attempt " + attempt + " in " + delay + " ms";
});
rt.on("resumed", () => setStatus("online"));
rt.on("error", (err) => {
  if (err.code === "rate_limited") return;
  if (["ticket", "connect", "unavailable", "busy", "timeout"].includes(err.code)) {
    // offline, the server unreachable or busy: retried on its own
    $("status").title = "no connection: " + err.message;
    return;
  }
  showError("realtime: " + (err.code || "") + " " + err.message);
});

rt.on("message:received", (m) => {
  if (state.room && m.room === state.room.id) addMessage(m.message);
});

rt.on("dm:received", (m) => addDm(m.conversation, m.message));

rt.on("resync", async (m) => {
  if (!state.room || m.room !== state.room.id) return;
  try {
    await loadHistory(state.room.id, m.after_seq, m.last_seq);
  } catch (e) {
    showError("history: " + e.message);
  }
});

rt.on("typing", (m) => {
  if (!state.room || m.room !== state.room.id) return;
  clearTimeout(state.typing.get(m.user));
  state.typing.delete(m.user);
  if (m.state === "start")
    state.typing.set(
      m.user,
      setTimeout(() => {
        state.typing.delete(m.user);
        renderTyping();
      }, m.expires_in_ms || 5000)
    );
  renderTyping();
});

rt.on("presence", (m) => {
  if (!state.room || m.room !== state.room.id) return;
  if (m.event === "leave" || m.status === "offline") state.presence.delete(m.user);
  else state.presence.set(m.user, m.status || "online");
  renderPresence();
});

// ---------------------------------------------------------------- rendering

function who(id) {
  if (state.user && id === state.user.id) return "me";
  return id ? id.slice(0, 8) : "?";
}

function showError(text) {
  $("chat-error").textContent = text;
}

function addMessage(msg) {
  if (state.shown.has(msg.seq)) return; // shown already (history and live overlap)
  const li = document.createElement("li");
  li.dataset.seq = String(msg.seq);
  li.dataset.id = msg.id;
  if (state.user && msg.sender === state.user.id) li.className = "mine";
  const w = document.createElement("span");
  w.className = "who";
  w.textContent = who(msg.sender);
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = msg.body;
  const when = document.createElement("time");
  when.className = "when";
  when.dateTime = msg.created_at;
  when.textContent = (msg.created_at || "").slice(11, 16);
  li.append(w, body, when);
  // in sequence order, whatever order they arrived in
  let next = null;
  for (const [seq, el] of state.shown)
    if (seq > msg.seq && (!next || seq < Number(next.dataset.seq))) next = el;
  const list = $("messages");
  list.insertBefore(li, next);
  state.shown.set(msg.seq, li);
  if (!next) list.scrollTop = list.scrollHeight;
}

function renderTyping() {
  const names = [...state.typing.keys()].map(who);
  $("typing").textContent = names.length
    ? names.join(", ") + (names.length === 1 ? " is typing…" : " are typing…")
    : "";
}

function renderPresence() {
  const ul = $("presence");
  ul.replaceChildren();
  for (const [user, status] of state.presence) {
    const li = document.createElement("li");
    li.dataset.user = user;
    li.dataset.status = status;
    li.textContent = who(user) + (status === "away" ? " (away)" : "");
    if (!state.user || user !== state.user.id) {
      li.dataset.dm = "1";
      li.title = "direct message to " + user;
      li.addEventListener("click", () => pickDm(user));
    }
    ul.append(li);
  }
}

// Direct messages: every one this page has seen (sent, received live or
// replayed on resume), oldest first, once each (by message id).
function addDm(conversation, msg, peerHint) {
  if (!msg || state.dms.has(msg.id)) return;
  const mine = !!state.user && msg.sender === state.user.id;
  const peer = mine ? msg.to || peerHint || state.peers.get(conversation) : msg.sender;
  if (peer) state.peers.set(conversation, peer);
  const li = document.createElement("li");
  li.dataset.id = msg.id;
  li.dataset.conversation = conversation;
  li.dataset.seq = String(msg.seq);
  if (peer) li.dataset.peer = peer;
  if (mine) li.className = "mine";
  const w = document.createElement("span");
  w.className = "who";
  w.textContent = mine ? "me → " + (peer ? who(peer) : "?") : who(msg.sender);
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = msg.body;
  const when = document.createElement("time");
  when.className = "when";
  when.dateTime = msg.created_at;
  when.textContent = (msg.created_at || "").slice(11, 16);
  li.append(w, body, when);
  if (peer) li.addEventListener("click", () => pickDm(peer));
  const list = $("dm-messages");
  list.append(li);
  state.dms.set(msg.id, li);
  list.scrollTop = list.scrollHeight;
}

function pickDm(user) {
  $("dm-to").value = user;
  $("dm-body").focus();
}

function renderRooms() {
  const ul = $("rooms");
  ul.replaceChildren();
  for (const room of state.rooms) {
    const li = document.createElement("li");
    li.dataset.room = room.id;
    li.textContent = room.name;
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = room.kind === "private" ? "private" : "";
    li.append(kind);
    li.setAttribute("aria-current", state.room && state.room.id === room.id ? "true" : "false");
    li.addEventListener("click", () => openRoom(room));
    ul.append(li);
  }
}

// ---------------------------------------------------------------- actions

async function loadRooms() {
  const r = await api("GET", "/api/v1/rooms");
  state.rooms = r.data || [];
  renderRooms();
}

// Pages GET /api/v1/rooms/:id/messages from after_seq (up to `upto`).
async function loadHistory(roomId, after, upto) {
  let cursor = after;
  for (let pages = 0; pages < 100 && cursor !== null && cursor !== undefined; pages++) {
    const page = await api(
      "GET",
      "/api/v1/rooms/" + encodeURIComponent(roomId) + "/messages?after_seq=" + cursor + "&limit=100"
    );
    if (!state.room || state.room.id !== roomId) return;
    for (const m of page.data || []) addMessage(m);
    cursor = page.next_after_seq;
    if (upto !== undefined && cursor !== null && cursor >= upto) break;
  }
}

async function openRoom(room) {
  if (state.room && state.room.id === room.id) return;
  const previous = state.room;
  state.room = room;
  state.shown.clear();
  state.presence.clear();
  for (const t of state.typing.values()) clearTimeout(t);
  state.typing.clear();
  $("messages").replaceChildren();
  $("room-title").textContent = room.name;
  renderRooms();
  renderTyping();
  showError("");
  if (previous) rt.leave(previous.id).catch(() => {});
  try {
    // the newest HISTORY messages, then join from the last one shown: the
    // server replays what came in between, the client drops duplicates
    const from = Math.max(0, (room.last_seq || 0) - HISTORY);
    await loadHistory(room.id, from);
    if (state.room !== room) return;
    const lastShown = Math.max(from, ...state.shown.keys());
    const ack = await rt.join(room.id, { lastSeq: lastShown });
    state.presence.set(state.user.id, "online");
    renderPresence();
    room.last_seq = ack.room.last_seq;
    $("body").disabled = false;
    $("send").disabled = false;
    $("body").focus();
  } catch (e) {
    showError("join: " + (e.code || "") + " " + e.message);
  }
}

async function signedIn(tokens) {
  state.access = tokens.access_token;
  state.refresh = tokens.refresh_token;
  state.user = tokens.user || (await api("GET", "/api/v1/auth/me"));
  $("me").textContent = state.user.email || state.user.id;
  $("my-id").textContent = state.user.id;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  rt.connect();
  await loadRooms();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const t = await api("POST", "/api/v1/auth/login", {
      email: $("email").value,
      password: $("password").value,
    });
    await signedIn(t);
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("register").addEventListener("click", async () => {
  $("login-error").textContent = "";
  try {
    const t = await api("POST", "/api/v1/auth/register", {
      email: $("email").value,
      password: $("password").value,
    });
    await signedIn(t);
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("room-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const room = await api("POST", "/api/v1/rooms", {
      name: $("room-name").value,
      private: $("room-private").checked,
    });
    $("room-name").value = "";
    await loadRooms();
    await openRoom(state.rooms.find((r) => r.id === room.id) || room);
  } catch (e) {
    showError("room: " + e.message);
  }
});

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("body");
  const text = input.value;
  if (!text || !state.room) return;
  input.value = "";
  state.lastTyping = 0;
  rt.typing(state.room.id, false).catch(() => {});
  try {
    await sendOnce(state.room.id, text);
  } catch (e) {
    input.value = input.value || text; // not stored (or not known to be): keep it
    showError("send: " + (e.code || "") + " " + e.message);
  }
});

$("dm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const to = $("dm-to").value.trim();
  const input = $("dm-body");
  const text = input.value;
  if (!to || !text) return;
  input.value = "";
  $("dm-error").textContent = "";
  try {
    const ack = await rt.dm(to, text);
    addDm(ack.conversation, ack.message, to); // the sender gets no dm:received for it
  } catch (e) {
    input.value = input.value || text; // not sent (or not known to be): keep it
    $("dm-error").textContent =
      e.code === "not_found" ? "no such user: " + to : "send: " + (e.code || "") + " " + e.message;
  }
});

// The next `resumed` event (or a timeout).
function resumed(ms) {
  return new Promise((resolve) => {
    const off = rt.on("resumed", () => {
      off();
      clearTimeout(timer);
      resolve(true);
    });
    const timer = setTimeout(() => {
      off();
      resolve(false);
    }, ms);
  });
}

// Sends a message once: when the connection drops before the ack, whether
// it was stored is unknown; after the resume (which replays what was
// stored) it is sent again only if it did not come back.
async function sendOnce(roomId, text) {
  const before = rt.lastSeq(roomId) ?? 0;
  for (let tries = 0; ; tries++) {
    try {
      const ack = await rt.send(roomId, text);
      addMessage(ack.message); // also comes back as message:received: shown once
      return;
    } catch (e) {
      if (e.code !== "disconnected" || tries >= 2) throw e;
      await resumed(30000);
      if (!state.room || state.room.id !== roomId) throw e;
      for (const [seq, li] of state.shown)
        if (seq > before && li.classList.contains("mine") &&
            li.querySelector(".body").textContent === text)
          return; // it was stored: the resume brought it back
    }
  }
}

$("body").addEventListener("input", () => {
  const now = Date.now();
  if (!state.room || !$("body").value || now - state.lastTyping < 2000) return;
  state.lastTyping = now;
  rt.typing(state.room.id, true).catch(() => {});
});
