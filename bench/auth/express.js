'use strict';
// Express 5 peer of bench/auth/run.py: GET /auth/me verifies the bench
// contract's HS256 token with jsonwebtoken and echoes its claims.
const express = require('express');
const jwt = require('jsonwebtoken');

const secret = process.env.BENCH_JWT_SECRET || 'keel-bench-secret';
const app = express();
app.get('/auth/me', (req, res) => {
  const h = req.get('authorization') || '';
  if (!h.startsWith('Bearer ')) return res.status(401).json({ title: 'missing bearer token' });
  try {
    return res.json(jwt.verify(h.slice(7), secret, { algorithms: ['HS256'] }));
  } catch {
    return res.status(401).json({ title: 'invalid token' });
  }
});
const server = app.listen(Number(process.env.PORT), process.env.BENCH_HOST || '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
