// ws_server.js — the npm `ws` echo server, the peer of keel's GET /ws/echo
// in bench/ws/run.sh: every text and binary message straight back, no
// permessage-deflate (keel negotiates none either).
'use strict';
const { WebSocketServer } = require('ws');
const port = Number(process.env.PORT || 18490);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log('ws echo listening on', port));
