// The operations dashboard (GET /dashboard). An ES module with nothing
// inline and nothing from another origin (the page's CSP allows neither).
//
// After an admin logs in (POST /api/v1/auth/login; the access token is kept
// in sessionStorage, so it dies with the tab), the live figures arrive over
// Server-Sent Events from GET /api/v1/admin/stream, read with fetch() so the
// token travels in the Authorization header (EventSource cannot send one).
// Alerts, rules and traces are polled from their admin routes; when the
// alerts routes answer 404 the panel says the API is unavailable.

const TOKEN_KEY = "keel.dashboard.token";
const REFRESH_KEY = "keel.dashboard.refresh";
const HISTORY = 120; // points per chart (two minutes at the default interval)
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  stream: null, // AbortController of the live stream
  history: { t: [], rate: [], p50: [], p95: [], p99: [], errors: [] },
  alertsAvailable: null,
  alertsTimer: 0,
  tracesTimer: 0,
  selectedTrace: null,
  rules: [],
};

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = {
  int: (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US")),
  num: (v, d = 1) => (v == null ? "–" : Number(v).toFixed(d)),
  pct: (v) => (v == null ? "–" : (v * 100).toFixed(v < 0.1 ? 2 : 1) + " %"),
  time: (v) => {
    if (!v) return "–";
    const d = typeof v === "number" ? new Date(v > 1e12 ? v : v * 1000) : new Date(v);
    return isNaN(d) ? String(v) : d.toLocaleTimeString("en-GB");
  },
  bytes: (v) => (v == null ? "–" : (v / 1048576).toFixed(1) + " MiB"),
};

class HttpError extends Error {
  constructor(status, doc) {
    super((doc && (doc.detail || doc.title)) || "HTTP " + status);
    this.status = status;
    this.doc = doc;
  }
}

function keepTokens(doc) {
  state.token = doc.access_token;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  if (doc.refresh_token) sessionStorage.setItem(REFRESH_KEY, doc.refresh_token);
}

// An expired access token is renewed once with the refresh token (which
// rotates: one refresh at a time, shared by every caller that needs it).
let refreshing = null;
function refresh() {
  const rt = sessionStorage.getItem(REFRESH_KEY);
  if (!rt) return Promise.resolve(false);
  if (!refreshing) {
    refreshing = fetch("/api/v1/auth/refresh", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: rt }),
    }).then(async (r) => {
      if (!r.ok) return false;
      keepTokens(await r.json());
      return true;
    }).catch(() => false).finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function api(method, path, body, retried = false) {
  const headers = { Accept: "application/json" };
  const sent = state.token;
  if (sent) headers.Authorization = "Bearer " + sent;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let doc = null;
  const text = await r.text();
  if (text) {
    try { doc = JSON.parse(text); } catch { doc = { detail: text }; }
  }
  if (r.status === 401 && sent && path !== "/api/v1/auth/login") {
    if (!retried && (state.token !== sent || await refresh())) return api(method, path, body, true);
    logout("Your session has ended; log in again.");
  }
  if (!r.ok) throw new HttpError(r.status, doc);
  return doc;
}

function problemText(e) {
  if (!(e instanceof HttpError)) return String(e.message || e);
  const errs = e.doc && Array.isArray(e.doc.errors)
    ? e.doc.errors.map((x) => (x.pointer ? x.pointer + ": " : "") + x.message).join("; ") : "";
  return e.message + (errs ? " — " + errs : "");
}

// ------------------------------------------------------------------ login

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const doc = await api("POST", "/api/v1/auth/login", { email: $("email").value, password: $("password").value });
    keepTokens(doc);
    $("password").value = "";
    start();
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "Wrong e-mail or password." : problemText(e);
  }
}

function logout(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(REFRESH_KEY);
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearTimeout(state.alertsTimer);
  clearTimeout(state.tracesTimer);
  $("app").classList.add("hidden");
  $("logout").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("who").textContent = "";
  setLive("off", "offline");
  if (message) $("login-error").textContent = message;
}

function start() {
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("logout").classList.remove("hidden");
  api("GET", "/api/v1/auth/me").then((d) => {
    const u = d && (d.user || d);
    $("who").textContent = u && u.email ? u.email : "";
  }).catch(() => {});
  connect();
  pollAlerts();
  loadRules();
  pollTraces();
}

// ------------------------------------------------------------------ live stream

function setLive(cls, text) {
  const b = $("live");
  b.className = "badge " + cls;
  b.textContent = text;
}

// Reads the SSE stream with fetch(): events are separated by a blank line;
// "event:" names it, "data:" lines carry it, ":" lines are comments.
async function connect() {
  if (!state.token) return;
  const ctl = new AbortController();
  state.stream = ctl;
  let retry = 2000;
  try {
    const r = await fetch("/api/v1/admin/stream", {
      headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" },
      signal: ctl.signal, cache: "no-store",
    });
    if (r.status === 401) {
      if (await refresh()) return connect();
      return logout("Your session has ended; log in again.");
    }
    if (r.status === 403) return logout("This account is not an administrator.");
    if (!r.ok) throw new Error("stream: HTTP " + r.status);
    setLive("on", "live");
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) { state.lastBeat = Date.now(); continue; }
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
          else if (field === "retry" && /^\d+$/.test(val)) retry = Number(val);
        }
        if (event === "snapshot" && data.length) onSnapshot(JSON.parse(data.join("\n")));
        else if (event === "bus" && data.length) onBus(JSON.parse(data.join("\n")));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (state.stream !== ctl || !state.token) return;
  setLive("err", "reconnecting");
  setTimeout(connect, retry);
}

// A message of the event bus (ADMIN_STREAM_BUS_PATTERN, "alerts*"): the
// alert engine announced a change; the alerts are fetched again at once
// (a burst of messages makes one fetch).
let busTimer = 0;
function onBus(env) {
  if (!String(env.channel || "").startsWith("alerts") || busTimer) return;
  busTimer = setTimeout(() => { busTimer = 0; pollAlerts(); }, 100);
}

function onSnapshot(s) {
  $("m-requests-total").textContent = fmt.int(s.requests_total);
  $("m-rate").textContent = fmt.num(s.request_rate);
  $("m-p50").textContent = fmt.num(s.latency_ms.p50, 2);
  // no request finished in the interval: no latency to show
  $("m-p95").textContent = s.latency_ms.p95 == null && s.request_rate === 0 ? "idle" : fmt.num(s.latency_ms.p95, 2);
  $("m-p99").textContent = fmt.num(s.latency_ms.p99, 2);
  $("m-error-rate").textContent = fmt.pct(s.error_rate);
  $("m-errors-total").textContent = fmt.int(s.errors_total);
  $("m-connections").textContent = fmt.int(s.connections);
  $("m-inflight").textContent = fmt.int(s.in_flight);
  if (s.db_pool) {
    $("m-db").textContent = fmt.int(s.db_pool.in_use) + " / " + fmt.int(s.db_pool.open);
    $("m-db-detail").textContent = "in use / open · " + fmt.int(s.db_pool.waiting) + " waiting";
  } else {
    $("m-db").textContent = "–";
    $("m-db-detail").textContent = "no pool";
  }
  $("m-cache").textContent = fmt.pct(s.cache.hit_ratio);
  $("m-cache-detail").textContent = fmt.int(s.cache.hits) + " hits · " + fmt.int(s.cache.misses) + " misses";
  $("m-ws").textContent = fmt.int(s.websockets);
  const rd = s.redis || {};
  const rs = $("m-redis");
  rs.textContent = rd.state === "not_configured" ? "off" : rd.state || "–";
  rs.className = "big state-" + (rd.state || "");
  $("m-redis-detail").textContent = rd.state === "not_configured"
    ? "not configured (in-process)" : "breaker " + rd.breaker + " · " + fmt.int(rd.connections_ready) + " ready";
  setLive("on", "live · " + fmt.time(s.ts));

  const h = state.history;
  if (s.request_rate != null) {
    h.t.push(s.ts);
    h.rate.push(s.request_rate);
    h.p50.push(s.latency_ms.p50);
    h.p95.push(s.latency_ms.p95);
    h.p99.push(s.latency_ms.p99);
    h.errors.push(s.error_rate == null ? null : s.error_rate * 100);
    for (const k of Object.keys(h)) if (h[k].length > HISTORY) h[k].shift();
  }
  drawCharts();
}

// ------------------------------------------------------------------ charts

function drawChart(canvas, series, colors) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 420, hgt = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(hgt * dpr)) canvas.height = Math.round(hgt * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, hgt);
  const padL = 44, padB = 16, padT = 6, padR = 6;
  let max = 0;
  for (const s of series) for (const v of s) if (v != null && v > max) max = v;
  max = niceMax(max);
  const pw = w - padL - padR, ph = hgt - padT - padB;
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#59636e";
  g.strokeStyle = "#e5e9ee";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = padT + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(padL, y + 0.5); g.lineTo(w - padR, y + 0.5); g.stroke();
    g.fillText(fmtAxis((max * i) / 4), 2, y + 3);
  }
  g.fillText("−" + HISTORY + " s", padL, hgt - 3);
  g.fillText("now", w - padR - 20, hgt - 3);
  series.forEach((s, k) => {
    g.strokeStyle = colors[k];
    g.lineWidth = 1.6;
    g.beginPath();
    let pen = false;
    const off = HISTORY - s.length;
    s.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      const x = padL + (pw * (off + i)) / (HISTORY - 1);
      const y = padT + ph - (max ? (ph * v) / max : 0);
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  });
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtAxis(v) {
  return v >= 1000 ? (v / 1000).toFixed(1) + "k" : v >= 10 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2);
}

function drawCharts() {
  const h = state.history;
  drawChart($("c-rate"), [h.rate], ["#1f6feb"]);
  drawChart($("c-latency"), [h.p50, h.p95, h.p99], ["#1f6feb", "#9a6700", "#cf222e"]);
  drawChart($("c-errors"), [h.errors], ["#cf222e"]);
}

// ------------------------------------------------------------------ alerts

function sevBadge(s) {
  return el("span", { class: "sev sev-" + (s || "info") }, s || "–");
}

async function pollAlerts() {
  clearTimeout(state.alertsTimer);
  if (!state.token) return;
  let next = 3000;
  try {
    const doc = await api("GET", "/api/v1/admin/alerts");
    state.alertsAvailable = true;
    renderAlerts(doc);
  } catch (e) {
    if (e.status === 404) {
      state.alertsAvailable = false;
      $("alerts-status").textContent = "Alerts unavailable: this server has no alerts API (GET /api/v1/admin/alerts answered 404).";
      $("alerts-active").replaceChildren();
      $("alerts-recent").replaceChildren();
      next = 30000;
    } else if (state.token) {
      $("alerts-status").textContent = "Alerts: " + problemText(e);
    }
  }
  if (state.token) state.alertsTimer = setTimeout(pollAlerts, next);
}

function historyRow(a) {
  return el("tr", { "data-alert-id": a.id },
    el("td", {}, sevBadge(a.severity)),
    el("td", {}, a.rule_name || a.rule_id),
    el("td", {}, a.state),
    el("td", {}, fmt.time(a.fired_at)),
    el("td", {}, fmt.time(a.resolved_at)),
    el("td", {}, a.acknowledged_at ? "acknowledged " + fmt.time(a.acknowledged_at) + " by " + (a.acknowledged_by || "?") : "–"));
}

// The history's later pages (next_cursor), appended below the first one;
// the polls leave the list alone for a minute after, then redraw page one.
async function olderAlerts() {
  if (!state.alertsCursor) return;
  try {
    const doc = await api("GET", "/api/v1/admin/alerts?cursor=" + encodeURIComponent(state.alertsCursor));
    $("alerts-recent").append(...((doc && doc.recent) || []).map(historyRow));
    state.alertsCursor = doc && doc.next_cursor;
    state.alertsPagedUntil = Date.now() + 60000;
  } catch (e) {
    $("alerts-status").textContent = "Older alerts: " + problemText(e);
  }
  $("alerts-older").classList.toggle("hidden", !state.alertsCursor);
}

function renderAlerts(doc) {
  const active = (doc && doc.active) || [];
  const recent = (doc && doc.recent) || [];
  $("alerts-status").textContent = active.length ? active.length + " active" : "No active alerts.";
  $("alerts-active").replaceChildren(...active.map((a) => el("tr", { "data-alert-id": a.id, "data-state": a.state },
    el("td", {}, sevBadge(a.severity)),
    el("td", {}, a.rule_name || a.rule_id),
    el("td", {}, a.state + (a.acknowledged_at ? " (acknowledged by " + (a.acknowledged_by || "?") + ")" : "")),
    el("td", {}, a.value == null ? "–" : fmt.num(a.value, 4)),
    el("td", {}, fmt.time(a.fired_at || a.started_at)),
    el("td", {},
      a.acknowledged_at ? "" : el("button", { class: "act ack", type: "button", onclick: () => alertAction(a.id, "ack") }, "Acknowledge"),
      el("button", { class: "act resolve", type: "button", onclick: () => alertAction(a.id, "resolve") }, "Resolve")))));
  if (!(state.alertsPagedUntil > Date.now())) {
    $("alerts-recent").replaceChildren(...recent.map(historyRow));
    state.alertsCursor = doc && doc.next_cursor;
  }
  $("alerts-older").classList.toggle("hidden", !state.alertsCursor);
}

async function alertAction(id, what) {
  try {
    await api("POST", "/api/v1/admin/alerts/" + encodeURIComponent(id) + "/" + what);
  } catch (e) {
    $("alerts-status").textContent = (what === "ack" ? "Acknowledge" : "Resolve") + " failed: " + problemText(e);
    return;
  }
  pollAlerts();
}

// ------------------------------------------------------------------ rules

async function loadRules() {
  try {
    const doc = await api("GET", "/api/v1/admin/alerts/rules");
    state.rules = Array.isArray(doc) ? doc : (doc && (doc.rules || doc.items)) || [];
    renderRules();
  } catch (e) {
    $("rules").replaceChildren(el("tr", {}, el("td", { colspan: "7", class: "muted" },
      e.status === 404 ? "Alert rules unavailable (no alerts API on this server)." : problemText(e))));
    $("r-save").disabled = e.status === 404;
  }
}

function renderRules() {
  $("r-save").disabled = false;
  $("rules").replaceChildren(...state.rules.map((r) => el("tr", { "data-rule-id": r.id },
    el("td", {}, r.name), el("td", {}, r.kind), el("td", {}, sevBadge(r.severity)),
    el("td", {}, (r.comparison || ">") + " " + r.trigger + " / " + r.clear),
    el("td", {}, (r.for_s || 0) + " s"), el("td", {}, r.enabled ? "yes" : "no"),
    el("td", {},
      el("button", { class: "act", type: "button", onclick: () => editRule(r) }, "Edit"),
      r.builtin ? "" : el("button", { class: "act", type: "button", onclick: () => deleteRule(r) }, "Delete")))));
}

const RULE_FIELDS = [
  ["r-name", "name", "str"], ["r-kind", "kind", "str"], ["r-severity", "severity", "str"],
  ["r-comparison", "comparison", "str"], ["r-trigger", "trigger", "num"], ["r-clear", "clear", "num"],
  ["r-window", "window_s", "int"], ["r-min", "min_requests", "int"], ["r-for", "for_s", "int"],
  ["r-keep", "keep_firing_for_s", "int"], ["r-cooldown", "cooldown_s", "int"], ["r-repeat", "repeat_s", "int"],
  ["r-metric", "metric", "str"], ["r-aggregation", "aggregation", "str"],
];

function editRule(r) {
  $("r-id").value = r.id;
  for (const [id, key] of RULE_FIELDS) $(id).value = r[key] == null ? "" : r[key];
  $("r-labels").value = r.labels ? JSON.stringify(r.labels) : "";
  $("r-enabled").checked = !!r.enabled;
  $("rule-form-title").textContent = "Edit rule " + r.name + (r.builtin ? " (built-in)" : "");
  $("r-save").textContent = "Save rule";
  $("rule-error").textContent = "";
}

function clearRuleForm() {
  $("rule-form").reset();
  $("r-id").value = "";
  $("rule-form-title").textContent = "New rule";
  $("r-save").textContent = "Create rule";
  $("rule-error").textContent = "";
}

async function saveRule(ev) {
  ev.preventDefault();
  const body = {};
  for (const [id, key, type] of RULE_FIELDS) {
    const v = $(id).value.trim();
    if (v === "") continue;
    body[key] = type === "str" ? v : type === "int" ? parseInt(v, 10) : Number(v);
  }
  const labels = $("r-labels").value.trim();
  if (labels) {
    try { body.labels = JSON.parse(labels); } catch { $("rule-error").textContent = "Labels: not JSON"; return; }
  }
  body.enabled = $("r-enabled").checked;
  const id = $("r-id").value;
  try {
    if (id) await api("PUT", "/api/v1/admin/alerts/rules/" + encodeURIComponent(id), body);
    else await api("POST", "/api/v1/admin/alerts/rules", body);
    clearRuleForm();
    loadRules();
  } catch (e) {
    $("rule-error").textContent = problemText(e);
  }
}

async function deleteRule(r) {
  if (!window.confirm("Delete the rule " + r.name + "?")) return;
  try {
    await api("DELETE", "/api/v1/admin/alerts/rules/" + encodeURIComponent(r.id));
  } catch (e) {
    $("rule-error").textContent = problemText(e);
  }
  loadRules();
}

// ------------------------------------------------------------------ traces

async function pollTraces() {
  clearTimeout(state.tracesTimer);
  if (!state.token) return;
  try {
    const doc = await api("GET", "/api/v1/admin/traces?limit=25");
    $("traces-status").textContent = doc.enabled ? "" : "Tracing is disabled (OTEL_SDK_DISABLED).";
    $("traces").replaceChildren(...(doc.traces || []).map((t) => {
      const tr = el("tr", { class: "clickable" + (t.trace_id === state.selectedTrace ? " selected" : ""), "data-trace-id": t.trace_id },
        el("td", {}, fmt.time(t.start)), el("td", {}, t.name),
        el("td", { class: t.status === "error" || t.http_status >= 500 ? "st-error" : t.http_status >= 400 ? "st-warn" : "st-ok" },
          t.http_status || t.status),
        el("td", {}, fmt.num(t.duration_ms, 2) + " ms"), el("td", {}, t.span_count));
      tr.addEventListener("click", () => showTrace(t.trace_id));
      return tr;
    }));
  } catch (e) {
    if (state.token) $("traces-status").textContent = "Traces: " + problemText(e);
  }
  if (state.token) state.tracesTimer = setTimeout(pollTraces, 5000);
}

const nano = (v) => (v == null ? 0 : Number(v) / 1e6); // OTLP nanoseconds (strings) -> ms

function attr(span, key) {
  for (const a of span.attributes || []) {
    if (a.key === key) {
      const v = a.value || {};
      return v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue;
    }
  }
  return undefined;
}

async function showTrace(id) {
  state.selectedTrace = id;
  for (const tr of $("traces").children) tr.classList.toggle("selected", tr.dataset.traceId === id);
  let doc;
  try {
    doc = await api("GET", "/api/v1/admin/traces/" + id);
  } catch (e) {
    $("waterfall").replaceChildren(el("p", { class: "error" }, problemText(e)));
    return;
  }
  const spans = (doc.spans || []).slice();
  if (!spans.length) return;
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const depth = (s) => {
    let d = 0;
    for (let p = byId.get(s.parentSpanId); p && d < 32; p = byId.get(p.parentSpanId)) d++;
    return d;
  };
  // parents before children, siblings by start time
  const kids = new Map();
  for (const s of spans) {
    const p = byId.has(s.parentSpanId) ? s.parentSpanId : "";
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(s);
  }
  for (const list of kids.values()) list.sort((a, b) => nano(a.startTimeUnixNano) - nano(b.startTimeUnixNano));
  const order = [];
  const walk = (p) => { for (const s of kids.get(p) || []) { order.push(s); if (order.length < 500) walk(s.spanId); } };
  walk("");
  const t0 = Math.min(...spans.map((s) => nano(s.startTimeUnixNano)));
  const t1 = Math.max(...spans.map((s) => nano(s.endTimeUnixNano)));
  const total = Math.max(t1 - t0, 0.001);
  const W = Math.max($("waterfall").clientWidth - 10, 600), label = 260, row = 20;
  const bw = W - label - 80;
  const g = svg("svg", { width: W, height: order.length * row + 24, role: "img", "aria-label": "span waterfall" });
  g.append(svg("text", { x: 0, y: 12 }, "trace " + id + " · " + total.toFixed(2) + " ms"));
  order.forEach((s, i) => {
    const y = 20 + i * row;
    const start = nano(s.startTimeUnixNano) - t0, dur = Math.max(nano(s.endTimeUnixNano) - nano(s.startTimeUnixNano), 0);
    const x = label + (bw * start) / total, w = Math.max((bw * dur) / total, 1);
    const kind = attr(s, "db.system") ? "db" : s.kind === 3 || s.kind === "SPAN_KIND_CLIENT" ? "client" : "";
    const err = s.status && (s.status.code === 2 || s.status.code === "STATUS_CODE_ERROR");
    g.append(svg("rect", { class: "lane", x: 0, y, width: W, height: row - 2 }));
    g.append(svg("text", { x: 4 + depth(s) * 12, y: y + 13 }, s.name));
    g.append(svg("rect", { class: "bar" + (err ? " error" : kind ? " " + kind : ""), x, y: y + 3, width: w, height: row - 8 }));
    g.append(svg("text", { class: "dur", x: Math.min(x + w + 4, W - 70), y: y + 13 }, dur.toFixed(2) + " ms"));
  });
  $("waterfall").replaceChildren(g);
}

// ------------------------------------------------------------------ start

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", () => {
  if (state.token) {
    // revokes the access token and, given it, the refresh token
    const rt = sessionStorage.getItem(REFRESH_KEY);
    fetch("/api/v1/auth/logout", {
      method: "POST",
      headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
      body: JSON.stringify(rt ? { refresh_token: rt } : {}),
    }).catch(() => {});
  }
  logout();
});
$("rule-form").addEventListener("submit", saveRule);
$("r-cancel").addEventListener("click", clearRuleForm);
$("traces-refresh").addEventListener("click", pollTraces);
$("alerts-older").addEventListener("click", olderAlerts);
window.addEventListener("resize", drawCharts);
if (state.token) start();
