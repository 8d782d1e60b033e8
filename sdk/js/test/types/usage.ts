// Typed use of the SDK's public API, checked by `tsc -p test/types` (see tsconfig.json) against
// the hand-written src/kilat.d.ts, imported by the package name so the package.json `types`
// and `exports` wiring is checked too. Never run: it only has to type-check. The
// `@ts-expect-error` lines are misuses the declarations must reject; tsc fails if one of them
// type-checks.
import Default, {
  createClient,
  DisconnectCode,
  ErrorCode,
  Kilat,
  KilatError,
  shouldReconnect,
  backoff,
  encodeFrames,
  decodeFrames,
  TRANSPORTS,
  VERSION,
  Subscription,
  EventEmitter,
  type ClientOptions,
  type HistoryResult,
  type PublicationContext,
  type SubscribedContext,
  type TransportName,
} from '@kilat/client';

const options: ClientOptions = {
  getToken: async ({ channel }) => (channel === undefined ? 'connection-jwt' : 'sub-jwt'),
  name: 'usage',
  data: { room: 1 },
  transports: ['websocket', { transport: 'sse', endpoint: 'https://other.example/' }, 'http_stream'],
  minReconnectDelay: 500,
  maxReconnectDelay: 20_000,
  backoffResetAfter: 10_000,
  timeout: 5000,
  maxServerPingDelay: 10_000,
  debug: false,
};

const client: Kilat = new Kilat('https://chat.example.com', options);
const same: Kilat = createClient('ws://127.0.0.1:8000/connection/websocket');
const alsoDefault: Kilat = new Default('http://127.0.0.1:8000', { token: 'jwt' });

client.on('state', ({ newState, oldState }) => {
  const states: ('disconnected' | 'connecting' | 'connected')[] = [newState, oldState];
  void states;
});
client.on('connecting', ({ code, reason }) => void `${code} ${reason}`);
client.on('connected', ({ client: id, transport }) => {
  const t: TransportName = transport;
  void `${id} over ${t}`;
});
client.on('disconnected', ({ code }) => void shouldReconnect(code));
client.on('error', ({ type, error }) => {
  if (error instanceof KilatError && error.code === ErrorCode.TRANSPORT_CLOSED && error.temporary) void type;
});
client.on('publication', (ctx: PublicationContext) => void ctx.channel);
client.once('message', ({ data }) => void data);

async function chat(): Promise<void> {
  client.connect();
  await client.ready(5000);
  const room: Subscription = client.newSubscription('chat:lobby', { joinLeave: true, recoverable: true });
  room.on('subscribed', (ctx: SubscribedContext) => {
    if (ctx.wasRecovering && !ctx.recovered) void ctx.epoch;
  });
  room.on('publication', ({ data, offset, info }) => void [data, offset, info?.user]);
  room.on('join', ({ info }) => void info.client);
  room.on('unsubscribed', ({ code, reason }) => void (code === DisconnectCode.DISCONNECT_CALLED && reason));
  room.subscribe();
  await room.ready(5000);
  const { offset } = await room.publish({ text: 'hi' });
  const history: HistoryResult<{ text: string }> = await room.history<{ text: string }>({ limit: 50, since: { offset: offset ?? 0, epoch: 'e' } });
  const texts: string[] = history.publications.map((p) => p.data.text);
  const { clients } = await client.presence('chat:lobby');
  const stats = await room.presenceStats();
  const reply = await client.rpc<{ name: string }>('getProfile', { id: 42 });
  await client.send({ typing: true });
  void [texts, Object.keys(clients), stats.num_users, reply.data.name];
  const found: Subscription | null = client.getSubscription('chat:lobby');
  const all: Record<string, Subscription> = client.subscriptions();
  void all;
  if (found) client.removeSubscription(found);
  client.disconnect();
}
void chat;

const delay: number = backoff(3, 500, 20_000, Math.random);
const wire: string = encodeFrames([{ id: 1, publish: { channel: 'c', data: 1 } }]);
const frames: unknown[] = decodeFrames(wire);
const names: readonly TransportName[] = TRANSPORTS;
const version: string = VERSION;
const emitter = new EventEmitter<{ tick: { n: number } }>();
emitter.on('tick', ({ n }) => void n.toFixed());
void [same, alsoDefault, delay, frames, names, version];

// Misuses the declarations must reject.
// @ts-expect-error an unknown transport name
new Kilat('http://h', { transports: ['long_polling'] });
// @ts-expect-error timeout is a number of milliseconds
new Kilat('http://h', { timeout: '5s' });
// @ts-expect-error there is no such client event
client.on('reconnected', () => {});
// @ts-expect-error `state` is read-only
client.state = 'connected';
// @ts-expect-error publication contexts have no `payload`
client.on('publication', (ctx) => void ctx.payload);
// @ts-expect-error history's `since` needs an epoch
void client.history('c', { since: { offset: 1 } });
// @ts-expect-error a subscription's offset is read-only
client.newSubscription('c').offset = 3;
// @ts-expect-error codes are fixed numbers
const wrong: 2 = ErrorCode.TIMEOUT;
void wrong;
