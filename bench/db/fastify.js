'use strict';
// Fastify 5 peer for the single-query benchmark: GET /db?id=N -> one
// SELECT by primary key through a pg.Pool, the row as JSON; 404 when there
// is no such row, 400 for a bad id. Single process, logger off, no response
// schema (framework defaults, like ../../../shared/bench/peers/node).
const { port, host, fetchItem, parseId, onSignals, describe } = require('./common');
const Fastify = require('fastify');

const app = Fastify({ logger: false });

app.get('/db', async (req, reply) => {
  const id = parseId(req.query.id);
  if (id === null) {
    reply.code(400);
    return { error: 'id must be a positive integer' };
  }
  const row = await fetchItem(id); // a rejection becomes a 500
  if (!row) {
    reply.code(404);
    return { error: 'not found' };
  }
  return row;
});

app.listen({ port, host }).then(() => {
  console.error(`fastify ${require('fastify/package.json').version} listening on ${host}:${port}; ${describe()}`);
}, (err) => { console.error(err); process.exit(1); });
onSignals((done) => app.close().then(done, done));
