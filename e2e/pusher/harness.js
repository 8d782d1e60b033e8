// Test helpers (not a test file): a spawned `kilat serve --dev` (its well-known Pusher app
// app-id / app-key / app-secret), an auth endpoint signed by the `pusher` server SDK, pusher-js
// clients, and waiting for events without sleeps.

import { createServer } from 'node:http';
import PusherServer from 'pusher';
import PusherClient from 'pusher-js';

import { KilatServer, freePort, skipReason } from '../../sdk/js/test/server.js';

export { KilatServer, skipReason };

export const APP = { appId: 'app-id', key: 'app-key', secret: 'app-secret' };

/** The `pusher` server SDK pointed at `kilat`. */
export function serverSdk(kilat, overrides = {}) {
  return new PusherServer({
    ...APP,
    host: '127.0.0.1',
    port: String(kilat.port),
    useTLS: false,
    ...overrides,
  });
}

/**
 * An HTTP server playing the application backend: `/auth` signs channel subscriptions with the
 * SDK's authorizeChannel (presence members from the `x-user` header), `/user-auth` signs
 * `pusher:signin` with authenticateUser. `secret` lets a test sign with a wrong secret.
 */
export async function authServer(kilat, { secret = APP.secret } = {}) {
  const sdk = serverSdk(kilat, { secret });
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      const socketId = form.get('socket_id');
      const user = req.headers['x-user'];
      let answer;
      if (req.url === '/auth') {
        const channel = form.get('channel_name');
        answer = channel.startsWith('presence-')
          ? sdk.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `user ${user}` } })
          : sdk.authorizeChannel(socketId, channel);
      } else if (req.url === '/user-auth') {
        answer = sdk.authenticateUser(socketId, { id: user, user_info: { name: `user ${user}` } });
      } else {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Options for pusher-js (and Echo) against `kilat`, authorised by `auth` as `user`. */
export function clientOptions(kilat, auth, user = '') {
  const headers = { 'x-user': String(user) };
  return {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: kilat.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: auth ? { endpoint: `${auth.url}/auth`, transport: 'ajax', headers } : undefined,
    userAuthentication: auth ? { endpoint: `${auth.url}/user-auth`, transport: 'ajax', headers } : undefined,
  };
}

/** A connected pusher-js client. */
export async function connect(kilat, auth, user = '', key = APP.key) {
  const client = new PusherClient(key, clientOptions(kilat, auth, user));
  await new Promise((resolve, reject) => {
    client.connection.bind('connected', resolve);
    client.connection.bind('error', (e) => reject(new Error(`connection error: ${JSON.stringify(e)}`)));
  });
  return client;
}

/** Resolves with the first emission of `event` on `target` (a channel or the connection). */
export function once(target, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    const handler = (data) => {
      clearTimeout(timer);
      target.unbind(event, handler);
      resolve(data);
    };
    target.bind(event, handler);
  });
}

/** Subscribes and waits for `pusher:subscription_succeeded`; rejects on a subscription error. */
export function subscribe(client, name, timeoutMs = 5000) {
  const channel = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out subscribing to ${name}`)), timeoutMs);
    channel.bind('pusher:subscription_succeeded', (result) => {
      clearTimeout(timer);
      resolve({ channel, result });
    });
    channel.bind('pusher:subscription_error', (e) => {
      clearTimeout(timer);
      reject(new Error(`subscription error: ${JSON.stringify(e)}`));
    });
  });
}
