'use strict';
// Express 5 peer for the single-query benchmark: GET /db?id=N -> one
// SELECT by primary key through a pg.Pool, the row as JSON; 404 when there
// is no such row, 400 for a bad id. Single process.
const { port, host, fetchItem, parseId, onSignals, describe } = require('./common');
const express = require('express');

const app = express();

app.get('/db', async (req, res) => {
  const id = parseId(req.query.id);
  if (id === null) return res.status(400).json({ error: 'id must be a positive integer' });
  const row = await fetchItem(id); // Express 5 passes a rejection to the error handler (500)
  if (!row) return res.status(404).json({ error: 'not found' });
  return res.json(row);
});

const server = app.listen(port, host, (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.error(`express ${require('express/package.json').version} listening on ${host}:${port}; ${describe()}`);
});
onSignals((done) => server.close(done));
