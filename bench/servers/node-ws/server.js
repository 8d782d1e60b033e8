// Broadcast server on Node `ws`: every message a client sends goes to every client.
// PORT=9101 node server.js
const { WebSocketServer, WebSocket } = require('ws');
const port = Number(process.env.PORT || 9101);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});
wss.on('listening', () => console.error(`node-ws broadcast on ws://127.0.0.1:${port}/`));
