'use strict';
// Fastify 5 peer of bench/auth/run.py: GET /auth/me verifies the bench
// contract's HS256 token with fast-jwt (what @fastify/jwt uses) and echoes
// its claims. Logger off.
const Fastify = require('fastify');
const { createVerifier } = require('fast-jwt');

const verify = createVerifier({ key: process.env.BENCH_JWT_SECRET || 'keel-bench-secret', algorithms: ['HS256'] });
const app = Fastify({ logger: false });
app.get('/auth/me', async (req, reply) => {
  const h = req.headers.authorization || '';
  if (!h.startsWith('Bearer ')) return reply.code(401).send({ title: 'missing bearer token' });
  try {
    return verify(h.slice(7));
  } catch {
    return reply.code(401).send({ title: 'invalid token' });
  }
});
app.listen({ port: Number(process.env.PORT), host: process.env.BENCH_HOST || '127.0.0.1' })
  .catch((e) => { console.error(e); process.exit(1); });
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
