// sio_server.js — the Socket.IO peer of bench/ws/run.sh (Socket.IO 4,
// WebSocket transport only, no permessage-deflate), same behaviour as the
// others on its own protocol:
//   every connection needs a valid `Authorization: Bearer` HS256 JWT on the
//   upgrade (a middleware refusing the namespace connect otherwise);
//   event "e"  echoed back to the sender;
//   event "b"  sent to every connection (io.emit: encoded once, written to each).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { verifyBearer } = require('./jwt');
const port = Number(process.env.PORT || 18491);

const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});
io.use((socket, next) => {
  const sub = verifyBearer(socket.handshake.headers.authorization);
  if (!sub) return next(new Error('unauthorized'));
  socket.data.user = sub;
  next();
});
io.on('connection', (socket) => {
  socket.on('e', (m) => socket.emit('e', m));
  socket.on('b', (m) => io.emit('b', m));
});
server.listen(port, '127.0.0.1', () => console.log('socket.io peer listening on', port));
process.on('SIGTERM', () => process.exit(0));
