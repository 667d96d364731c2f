'use strict';
// Express 5 + Knex peer of keel's events routes, for bench/events/run.py:
//   GET  /api/v1/events?limit=N[&cursor=C]   newest first, keyset cursor, Link header
//   POST /api/v1/events                      create, audited in the same transaction
// on the same PostgreSQL schema (keel's migrations create it) with the same
// indexes, and the same checks as keel where the bench exercises them:
//   - Bearer JWT (HS256, iss/aud/exp) plus the user's state (active, role,
//     tokens_valid_after) from an in-process cache with a 60 s TTL, as keel
//     serves it (AUTH_STATE_CACHE_TTL) — one query per user per minute;
//   - the body validated by keel's own JSON Schema for the route (read from
//     `keel openapi`, compiled by ajv with allErrors), ends_at after
//     starts_at, the type known (one query; its custom-field schema applied
//     when it has one); a bad body -> 422 problem+json listing every error;
//   - visibility in SQL: a non-admin sees restricted events only when owner
//     or assignee;
//   - the audit record chained as keel's (src/app/audit.c): the head row
//     updated first (serialising appenders), SHA-256 over length-prefixed
//     fields, the record and the head's new hash written in the transaction.
// Not reproduced (the bench never sends them): templates, parents, cross-
// field rules of other types, recurrence, If-Match. Single process.
const crypto = require('crypto');
const fs = require('fs');
const express = require('express');
const jwt = require('jsonwebtoken');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const poolMax = Number(process.env.POOL || 8);
const secret = process.env.JWT_SECRET;
const knex = require('knex')({
  client: 'pg',
  connection: process.env.DATABASE_URL,
  pool: { min: poolMax, max: poolMax },
});

const ajv = new Ajv({ allErrors: true, strict: false });
addFormats(ajv);
const validateBody = ajv.compile(JSON.parse(fs.readFileSync(process.env.SCHEMA_FILE, 'utf8')));
const customValidators = new Map(); // type -> compiled custom_schema

function problem(res, status, detail, extra) {
  res.status(status).type('application/problem+json')
    .send(JSON.stringify(Object.assign({ type: 'about:blank', title: String(status), status, detail }, extra || {})));
}

// ---------------------------------------------------------------- auth
const states = new Map(); // user id -> {at, role, active, after}
async function userState(id) {
  const now = Date.now();
  const s = states.get(id);
  if (s && now - s.at < 60000) return s;
  const row = await knex('users').select('role', 'status', 'tokens_valid_after')
    .where({ id }).whereNull('deleted_at').first();
  const st = row ? { at: now, role: row.role, active: row.status === 'active', after: Number(row.tokens_valid_after) }
    : { at: now, active: false };
  states.set(id, st);
  return st;
}

async function auth(req, res, next) {
  const h = req.get('authorization') || '';
  if (!h.startsWith('Bearer ')) return problem(res, 401, 'authentication required');
  let claims;
  try {
    claims = jwt.verify(h.slice(7), secret, { algorithms: ['HS256'], issuer: 'keel', audience: 'keel-api' });
  } catch (e) {
    return problem(res, 401, e.message);
  }
  const st = await userState(claims.sub);
  if (!st.active || claims.iat < st.after) return problem(res, 401, 'the token has been revoked');
  req.user = { id: claims.sub, admin: st.role === 'admin' };
  return next();
}

// ---------------------------------------------------------------- JSON of a row
const iso = (s) => (s === null || s === undefined ? null : new Date(Number(s) * 1000).toISOString().replace('.000Z', 'Z'));
function eventJson(r) {
  return {
    id: r.id, title: r.title, description: r.description, type: r.type, state: r.state,
    location: r.location, owner_id: r.owner_id, parent_id: r.parent_id, classification: r.classification,
    starts_at: iso(r.starts_at), ends_at: iso(r.ends_at), depth: r.depth,
    tags: r.tags.split(',').filter(Boolean), custom: JSON.parse(r.custom || '{}'),
    risk: r.risk_level === null ? null : { level: r.risk_level, score: r.risk_score, notes: r.risk_notes },
    budget: r.budget_amount === null ? null : { amount: r.budget_amount, currency: r.budget_currency },
    version: Number(r.version),
    legal_hold: r.legal_hold ? { reason: r.legal_hold_reason, by: r.legal_hold_by, at: iso(r.legal_hold_at) } : null,
    created_at: iso(r.created_at), updated_at: iso(r.updated_at),
    recurrence: r.recurrence ? JSON.parse(r.recurrence) : null, template_id: r.template_id,
  };
}
const COLUMNS = ['id', 'title', 'description', 'type', 'state', 'starts_at', 'ends_at', 'location', 'owner_id',
  'parent_id', 'depth', 'path', 'tags', 'custom', 'classification', 'risk_level', 'risk_score', 'risk_notes',
  'budget_amount', 'budget_currency', 'version', 'legal_hold', 'legal_hold_reason', 'legal_hold_by',
  'legal_hold_at', 'created_at', 'updated_at', 'recurrence', 'template_id'].map((c) => 'e.' + c);

// ---------------------------------------------------------------- routes
const app = express();
app.use(express.json({ limit: '1mb' }));

app.get('/api/v1/events', auth, async (req, res) => {
  const limit = req.query.limit === undefined ? 20 : Number(req.query.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) return problem(res, 422, 'limit must be 1..100');
  let cursor = null;
  if (req.query.cursor) {
    try {
      cursor = JSON.parse(Buffer.from(String(req.query.cursor), 'base64url').toString());
    } catch (e) { cursor = null; }
    if (!Array.isArray(cursor) || cursor[0] !== '-created_at') return problem(res, 400, 'a bad cursor');
  }
  const now = Math.floor(Date.now() / 1000);
  const q = knex('events as e').select(COLUMNS).whereNull('e.deleted_at');
  if (!req.user.admin) {
    q.where((w) => w.whereNot('e.classification', 'restricted').orWhere('e.owner_id', req.user.id)
      .orWhereExists(knex('event_assignments as a').select(knex.raw('1')).whereRaw('a.event_id = e.id')
        .where('a.user_id', req.user.id).whereNull('a.revoked_at')
        .where((x) => x.whereNull('a.expires_at').orWhere('a.expires_at', '>', now))));
  }
  if (cursor) q.whereRaw('(e.created_at, e.id) < (?, ?)', [cursor[1], cursor[2]]);
  const rows = await q.orderBy([{ column: 'e.created_at', order: 'desc' }, { column: 'e.id', order: 'desc' }])
    .limit(limit + 1);
  let next = null;
  if (rows.length > limit) {
    const last = rows[limit - 1];
    next = Buffer.from(JSON.stringify(['-created_at', Number(last.created_at), last.id])).toString('base64url');
    rows.length = limit;
    res.set('Link', `</api/v1/events?limit=${limit}&cursor=${next}>; rel="next"`);
  }
  res.json({ data: rows.map(eventJson), next_cursor: next, limit });
});

function hashField(h, s) {
  const b = Buffer.from(String(s));
  h.update(`${b.length}:`);
  h.update(b);
  h.update('\n');
}

function sortedJson(v) {
  if (Array.isArray(v)) return '[' + v.map(sortedJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + sortedJson(v[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

async function auditAppend(trx, who, action, entityType, entityId, diff) {
  const text = sortedJson(diff);
  const head = (await trx.raw('UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash')).rows[0];
  const at = Date.now();
  const h = crypto.createHash('sha256');
  h.update('keel-audit-v1\n');
  for (const f of [head.seq, at, 'user', who.id, who.requestId, action, entityType, entityId, text, head.hash]) hashField(h, f);
  const hash = h.digest('hex');
  await trx('audit_log').insert({
    seq: head.seq, at, actor_kind: 'user', actor_id: who.id, request_id: who.requestId, action,
    entity_type: entityType, entity_id: entityId, diff: text, prev_hash: head.hash, hash,
  });
  await trx('audit_head').update({ hash }).where({ id: 1 });
}

const parseTime = (s) => Math.floor(Date.parse(s) / 1000);

app.post('/api/v1/events', auth, async (req, res) => {
  const b = req.body;
  if (!validateBody(b)) {
    return problem(res, 422, 'the request body is not valid', {
      errors: validateBody.errors.map((e) => ({ pointer: e.instancePath || '/', message: e.message })),
    });
  }
  const ev = Object.assign({ description: '', type: 'general', location: '', classification: 'internal', tags: [], custom: {} }, b);
  const errors = [];
  const starts = parseTime(ev.starts_at);
  const ends = ev.ends_at ? parseTime(ev.ends_at) : null;
  if (ends !== null && ends <= starts) errors.push({ pointer: '/ends_at', message: 'must be after starts_at' });
  const id = crypto.randomUUID();
  const requestId = req.get('x-request-id') || crypto.randomUUID();
  try {
    const out = await knex.transaction(async (trx) => {
      const type = await trx('event_types').select('custom_schema', 'rules').where({ name: ev.type }).first();
      if (!type) errors.push({ pointer: '/type', message: 'is not an event type' });
      else if (type.custom_schema) {
        let v = customValidators.get(ev.type);
        if (!v) { v = ajv.compile(JSON.parse(type.custom_schema)); customValidators.set(ev.type, v); }
        if (!v(ev.custom)) for (const e of v.errors) errors.push({ pointer: '/custom' + e.instancePath, message: e.message });
      }
      if (errors.length) return null;
      const now = Math.floor(Date.now() / 1000);
      const row = {
        id, title: ev.title, description: ev.description, type: ev.type, state: 'draft', starts_at: starts,
        ends_at: ends, location: ev.location, owner_id: req.user.id, parent_id: null, depth: 0, path: `/${id}/`,
        tags: ',' + ev.tags.map((t) => t + ',').join(''), custom: JSON.stringify(ev.custom),
        classification: ev.classification, risk_level: ev.risk ? ev.risk.level : null,
        risk_score: ev.risk && ev.risk.score !== undefined ? ev.risk.score : null,
        risk_notes: ev.risk && ev.risk.notes !== undefined ? ev.risk.notes : null,
        budget_amount: ev.budget ? ev.budget.amount : null, budget_currency: ev.budget ? ev.budget.currency : null,
        version: 1, created_at: now, updated_at: now,
      };
      await trx('events').insert(row);
      const stored = await trx('events as e').select(COLUMNS).where('e.id', id).first();
      const json = eventJson(stored);
      const diff = {};
      for (const k of Object.keys(json)) diff[k] = { to: json[k] };
      await auditAppend(trx, { id: req.user.id, requestId }, 'event.create', 'event', id, diff);
      return json;
    });
    if (!out) return problem(res, 422, 'the event is not valid', { errors });
    res.status(201).set('ETag', `"${out.version}"`).set('Location', `/api/v1/events/${id}`).json(out);
  } catch (e) {
    console.error(e);
    problem(res, 500, 'internal error');
  }
});

const server = app.listen(port, host, (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.error(`express ${require('express/package.json').version} + knex ${require('knex/package.json').version} listening on ${host}:${port}, pool ${poolMax}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => knex.destroy().then(() => process.exit(0))));
}
