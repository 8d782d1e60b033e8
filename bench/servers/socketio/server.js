// Socket.IO 4 server: every `msg` event is re-emitted to every connected client.
// PORT=9102 node server.js   (clients: ws://127.0.0.1:9102/socket.io/?EIO=4&transport=websocket)
const { createServer } = require('http');
const { Server } = require('socket.io');
const port = Number(process.env.PORT || 9102);
const http = createServer();
const io = new Server(http, { transports: ['websocket'], perMessageDeflate: false });
io.on('connection', (socket) => {
  socket.on('msg', (data) => io.emit('msg', data));
});
http.listen(port, '127.0.0.1', () => console.error(`socket.io on http://127.0.0.1:${port}/`));
