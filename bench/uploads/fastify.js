'use strict';
// The Fastify peer of keel's upload/download benchmark (bench/uploads/run.py):
// what keel's POST /api/v1/files and GET /api/v1/files/:id/content do, the
// Fastify way. Authenticated (HS256 bearer token, fast-jwt, verified on every
// request like keel's access tokens), the multipart upload streamed by
// @fastify/multipart into a temporary file in the peer's own directory,
// SHA-256 computed as the bytes pass, fsynced and renamed to its hash (keel
// stores by content hash and fsyncs before the rename), the file served by
// @fastify/static (reply.sendFile: ETag, Last-Modified, Range).
//   PORT, BENCH_HOST, UPLOAD_DIR, BENCH_JWT_SECRET from the environment.
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { pipeline } = require('node:stream/promises');
const { Transform } = require('node:stream');
const Fastify = require('fastify');
const { createVerifier } = require('fast-jwt');

const dir = path.resolve(process.env.UPLOAD_DIR || './uploads');
fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
fs.mkdirSync(path.join(dir, 'files'), { recursive: true });
const verify = createVerifier({ key: process.env.BENCH_JWT_SECRET || 'keel-bench-secret', algorithms: ['HS256'] });

const app = Fastify({ logger: false, bodyLimit: 1 << 20 });
app.register(require('@fastify/multipart'), {
  limits: { fileSize: 2 * 1024 * 1024 * 1024, files: 10, fields: 20, parts: 30 },
});
app.register(require('@fastify/static'), { root: path.join(dir, 'files'), serve: false });

app.addHook('onRequest', async (req, reply) => {
  const h = req.headers.authorization || '';
  try {
    req.user = verify(h.startsWith('Bearer ') ? h.slice(7) : '');
  } catch {
    reply.code(401).send({ title: 'unauthorized' });
    return reply;
  }
});

const files = new Map();

app.post('/api/v1/files', async (req, reply) => {
  const out = [];
  for await (const part of req.files()) {
    const hash = crypto.createHash('sha256');
    let size = 0;
    const tmp = path.join(dir, 'tmp', crypto.randomUUID() + '.part');
    try {
      await pipeline(part.file,
        new Transform({ transform(c, _e, cb) { hash.update(c); size += c.length; cb(null, c); } }),
        fs.createWriteStream(tmp));
      if (part.file.truncated) throw Object.assign(new Error('file too large'), { statusCode: 413 });
      const fh = await fs.promises.open(tmp, 'r+');
      await fh.sync();
      await fh.close();
    } catch (e) {
      await fs.promises.rm(tmp, { force: true });
      throw e;
    }
    const sha = hash.digest('hex');
    await fs.promises.rename(tmp, path.join(dir, 'files', sha));
    const id = crypto.randomUUID();
    files.set(id, { id, sha256: sha, size, name: part.filename });
    out.push(files.get(id));
  }
  reply.code(201);
  return { data: out };
});

app.get('/api/v1/files/:id/content', (req, reply) => {
  const f = files.get(req.params.id);
  if (!f) return reply.code(404).send({ title: 'not found' });
  return reply.sendFile(f.sha256);
});

// Registers a file placed in the directory by the harness (the 1 GiB
// download's file, so the benchmark needs not upload it first).
app.post('/bench/adopt/:sha', async (req) => {
  const st = await fs.promises.stat(path.join(dir, 'files', req.params.sha));
  const id = crypto.randomUUID();
  files.set(id, { id, sha256: req.params.sha, size: st.size, name: 'big.bin' });
  return { data: [files.get(id)] };
});

app.listen({ port: Number(process.env.PORT), host: process.env.BENCH_HOST || '127.0.0.1' })
  .catch((e) => { console.error(e); process.exit(1); });
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
