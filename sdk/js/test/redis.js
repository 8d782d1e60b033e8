// Test helper (not a test file): a real redis-server on a free loopback port, for the tests that
// run several kilat nodes on the Redis engine. Without redis-server on PATH those tests skip
// with a loud notice, or fail when CI=true (scripts/test.sh installs it).

import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './server.js';

const BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';

/** Why Redis tests cannot run, or null. Under CI=true a missing redis-server is an error. */
export function redisSkipReason() {
  const probe = spawnSync(BIN, ['--version'], { encoding: 'utf8' });
  if (probe.status === 0) return null;
  const msg = `${BIN} not found (apt-get install redis-server, or set REDIS_SERVER_BIN)`;
  if (process.env.CI === 'true') throw new Error(`${msg}; under CI=true the Redis tests must run`);
  console.warn(`\n!!! SKIPPING the Redis tests of the Yjs provider: ${msg}\n`);
  return msg;
}

/** PING until +PONG, at most ~10 s. */
async function waitPong(port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const sock = connect(port, '127.0.0.1');
      let buf = '';
      const done = (v) => {
        sock.destroy();
        resolve(v);
      };
      sock.setTimeout(1000, () => done(false));
      sock.on('error', () => done(false));
      sock.on('connect', () => sock.write('PING\r\n'));
      sock.on('data', (d) => {
        buf += d;
        if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts redis-server (no persistence) on a free port; `stop()` ends it. */
export async function startRedis() {
  const port = await freePort();
  const proc = spawn(BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    await waitPong(port);
  } catch (e) {
    proc.kill('SIGKILL');
    throw new Error(`${e.message}\n${err}`);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}
