'use strict';
// express.js — the Express 5 peer of keel's POST /api/v1/analytics/events
// (bench/analytics/run.sh), written the way a Node service would do the
// same job well: express.json(), a hand-written check of each event (the
// same rules as keel: name pattern, ts window -7 d / +5 min, properties an
// object of at most 4 KiB), the batch refused whole on any bad event, an
// HS256 bearer token verified with node:crypto (signature and exp only:
// keel also checks the account's state, from its cache), and the same
// non-blocking ingestion: an in-memory buffer (503 when 20,000 events are
// waiting), flushed every second or at 500 events with multi-row INSERTs
// into keel's own analytics_events table through a pg.Pool.
//
//   DATABASE_URL=postgres://... JWT_SECRET=... node express.js PORT
process.env.NODE_ENV = process.env.NODE_ENV || 'production';
const crypto = require('node:crypto');
const express = require('express');
const pg = require('pg');

const port = Number(process.argv[2] || process.env.PORT);
const secret = process.env.JWT_SECRET || '';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on('error', (err) => console.error('pg pool error:', err.message));

const MAX_BATCH = 100, BUFFER_MAX = 20000, FLUSH_ROWS = 500, FLUSH_MS = 1000;
const NAME = /^[A-Za-z0-9_.:/-]{1,128}$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function b64url(buf) {
  return buf.toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// The bearer token's sub, or null.
function verify(header) {
  if (!header || !header.startsWith('Bearer ')) return null;
  const parts = header.slice(7).split('.');
  if (parts.length !== 3) return null;
  const mac = b64url(crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest());
  const a = Buffer.from(mac), b = Buffer.from(parts[2]);
  if (a.length !== b.length || !crypto.timingSafeEqual(a, b)) return null;
  try {
    const h = JSON.parse(Buffer.from(parts[0], 'base64url'));
    const c = JSON.parse(Buffer.from(parts[1], 'base64url'));
    if (h.alg !== 'HS256' || typeof c.sub !== 'string' || !(c.exp > Date.now() / 1000)) return null;
    return c.sub;
  } catch (e) {
    return null;
  }
}

let buffer = [], writing = false;

async function flush() {
  if (writing || buffer.length === 0) return;
  writing = true;
  try {
    while (buffer.length) {
      const rows = buffer.slice(0, FLUSH_ROWS);
      const values = [], params = [];
      rows.forEach((r, i) => {
        const b = i * 8;
        values.push(`($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8})`);
        params.push(r.id, r.name, r.ts, r.received, r.user, null, r.session, r.props);
      });
      await pool.query('INSERT INTO analytics_events (id, name, ts, received_at, user_id, ' +
        'api_key_id, session_id, properties) VALUES ' + values.join(', ') +
        ' ON CONFLICT (id) DO NOTHING', params);
      buffer = buffer.slice(rows.length);
    }
  } catch (err) {
    console.error('flush failed (kept):', err.message);
  } finally {
    writing = false;
  }
}
setInterval(flush, FLUSH_MS).unref();

const app = express();
app.use(express.json({ limit: '1mb' }));

app.post('/api/v1/analytics/events', (req, res) => {
  const user = verify(req.get('authorization'));
  if (!user) return res.status(401).json({ title: 'unauthorized' });
  const events = req.body && req.body.events;
  if (!Array.isArray(events) || events.length < 1 || events.length > MAX_BATCH) {
    return res.status(422).json({ errors: [{ pointer: '/events', message: '1..100 events' }] });
  }
  const now = Date.now(), errors = [], out = [];
  events.forEach((e, i) => {
    if (!e || typeof e !== 'object' || Array.isArray(e)) return errors.push({ pointer: `/events/${i}` });
    for (const k of Object.keys(e)) {
      if (!['name', 'ts', 'session_id', 'properties'].includes(k)) return errors.push({ pointer: `/events/${i}/${k}` });
    }
    if (typeof e.name !== 'string' || !NAME.test(e.name)) return errors.push({ pointer: `/events/${i}/name` });
    const ts = typeof e.ts === 'string' && RFC3339.test(e.ts) ? Date.parse(e.ts) : NaN;
    if (!(ts >= now - 7 * 86400000 && ts <= now + 300000)) return errors.push({ pointer: `/events/${i}/ts` });
    if (e.session_id !== undefined && (typeof e.session_id !== 'string' || e.session_id.length > 128)) {
      return errors.push({ pointer: `/events/${i}/session_id` });
    }
    const p = e.properties === undefined ? {} : e.properties;
    if (!p || typeof p !== 'object' || Array.isArray(p)) return errors.push({ pointer: `/events/${i}/properties` });
    const props = JSON.stringify(p);
    if (Buffer.byteLength(props) > 4096) return errors.push({ pointer: `/events/${i}/properties` });
    out.push({ id: crypto.randomUUID(), name: e.name, ts, received: now, user,
      session: e.session_id || null, props });
  });
  if (errors.length) return res.status(422).json({ errors });
  if (buffer.length + out.length > BUFFER_MAX) {
    res.set('Retry-After', '1');
    setImmediate(flush);
    return res.status(503).json({ title: 'buffer full' });
  }
  for (const e of out) buffer.push(e);
  if (buffer.length >= FLUSH_ROWS) setImmediate(flush);
  return res.status(202).json({ accepted: out.length });
});

const server = app.listen(port, '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.error(`express ${require('express/package.json').version} listening on 127.0.0.1:${port}`);
});
function stop() {
  server.close(async () => {
    while (buffer.length || writing) {
      await flush();
      await new Promise((r) => setTimeout(r, 10)); // let a flush in flight finish
    }
    await pool.end();
    process.exit(0);
  });
  server.closeAllConnections(); // idle keep-alive connections would hold close() open
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
