'use strict';
// Shared by express.js and fastify.js (bench/db/run.sh starts them):
// port from argv[2] (or $PORT), the database from $DATABASE_URL, the pool
// size from $PG_POOL_MAX (run.sh passes the same P as keel's
// DATABASE_POOL_MAX). Required first, so that NODE_ENV is set before the
// framework loads (production, as a deployment would run).
process.env.NODE_ENV = process.env.NODE_ENV || 'production';
const pg = require('pg');

const port = Number(process.argv[2] || process.env.PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node ' + require('path').basename(process.argv[1]) + ' PORT');
  process.exit(2);
}
const host = process.env.BENCH_HOST || '127.0.0.1';
if (!process.env.DATABASE_URL) {
  console.error('DATABASE_URL is not set');
  process.exit(2);
}
const poolMax = Number(process.env.PG_POOL_MAX || 8);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: poolMax });
pool.on('error', (err) => console.error('pg pool error:', err.message));

// The same statement as keel's GET /db (src/app/demo.c). By default an
// unnamed statement, as `pool.query(text, values)` is normally written
// (pg sends Parse/Bind/Describe/Execute/Sync each time); with
// PG_PREPARED=1 a named one, prepared once per connection like keel's
// statement cache (Bind/Execute/Sync after the first time).
const SQL = 'SELECT id, name, price_cents FROM items WHERE id = $1';
const prepared = process.env.PG_PREPARED === '1';

// Resolves to the row, or null when there is none.
async function fetchItem(id) {
  const q = prepared ? { name: 'item_by_id', text: SQL, values: [id] } : { text: SQL, values: [id] };
  const { rows } = await pool.query(q);
  return rows.length ? rows[0] : null;
}

// ?id= as a positive integer, or null.
function parseId(v) {
  if (typeof v !== 'string' || !/^[0-9]{1,18}$/.test(v)) return null;
  const id = Number(v);
  return id >= 1 && Number.isSafeInteger(id) ? id : null;
}

function onSignals(close) {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      const exit = () => pool.end().then(() => process.exit(0), () => process.exit(0));
      close(exit);
      setTimeout(() => process.exit(0), 2000).unref();
    });
  }
}

const describe = () =>
  `pg ${require('pg/package.json').version} pool max=${poolMax}${prepared ? ', named statement' : ''}`;

module.exports = { port, host, pool, poolMax, fetchItem, parseId, onSignals, describe };
