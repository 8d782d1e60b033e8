// JavaScript SDK clients for the deployment tests (crates/kilat-cli/tests/deploy.rs): the
// repository's own SDK (sdk/js/src), with `ws` from sdk/js/node_modules.
//
//   node sdk_clients.mjs WS_URL CLIENTS TOTAL
//
// Connects CLIENTS clients with the SDK's default transports (WebSocket first, then SSE and
// HTTP streaming), subscribes each to `feed` with recovery, and prints one JSON line per event
// that matters on stdout: {"i", "event": "connected", "transport"}, {"i", "event": "connecting",
// "code"} (a lost connection), {"i", "event": "error", "type", "message"}, {"i", "event":
// "subscribed", "recovered", "wasRecovering"}, and {"i", "event": "done", "offsets": [...]}
// once the client has seen TOTAL publications. Exits when every client is done.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const sdk = join(here, '..', '..', '..', '..', 'sdk', 'js');
const WebSocket = createRequire(join(sdk, 'package.json'))('ws');
const { Kilat } = await import(join(sdk, 'src', 'kilat.js'));

const [url, clients, total] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
let remaining = clients;

for (let i = 0; i < clients; i++) {
  const client = new Kilat(url, {
    websocket: WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 500,
  });
  const offsets = [];
  client.on('connected', (ctx) => print({ i, event: 'connected', transport: ctx.transport }));
  client.on('connecting', (ctx) => {
    if (ctx.code !== 0) print({ i, event: 'connecting', code: ctx.code });
  });
  client.on('error', (ctx) => print({ i, event: 'error', type: ctx.type, message: String(ctx.error?.message ?? ctx.error) }));
  const sub = client.newSubscription('feed', { recoverable: true });
  sub.on('subscribed', (ctx) => print({ i, event: 'subscribed', recovered: ctx.recovered, wasRecovering: ctx.wasRecovering }));
  sub.on('error', (ctx) => print({ i, event: 'error', type: 'subscription', message: String(ctx.error?.message ?? ctx.error) }));
  sub.on('publication', (ctx) => {
    offsets.push(ctx.offset);
    if (offsets.length === total) {
      print({ i, event: 'done', offsets });
      client.disconnect();
      if (--remaining === 0) process.exit(0);
    }
  });
  sub.subscribe();
  client.connect();
}
