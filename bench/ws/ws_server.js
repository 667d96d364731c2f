// ws_server.js — the npm `ws` peer of bench/ws/run.sh, same behaviour as
// keel's side: no permessage-deflate (keel negotiates none either).
//   /echo     every text and binary message straight back (keel: GET /ws/echo)
//   /fanout   upgrade only with a valid `Authorization: Bearer` HS256 JWT
//             (401 otherwise); every message to every connection of the
//             route, the sender included, with the loop ws's README gives
//             for broadcasting (keel: bench/ws/fanout_service.c)
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const { verifyBearer } = require('./jwt');
const port = Number(process.env.PORT || 18490);

const server = http.createServer((req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain' });
  res.end('WebSocket only\n');
});
const echo = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });
const fanout = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {}); // a client gone before the answer
  const path = req.url.split('?')[0];
  if (path === '/echo') {
    echo.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  } else if (path === '/fanout') {
    const sub = verifyBearer(req.headers.authorization);
    if (!sub) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    fanout.handleUpgrade(req, socket, head, (ws) => {
      ws.user = sub;
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => {
        for (const c of fanout.clients) {
          if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
        }
      });
    });
  } else {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  }
});
server.listen(port, '127.0.0.1', () => console.log('ws peer listening on', port));
process.on('SIGTERM', () => process.exit(0));
