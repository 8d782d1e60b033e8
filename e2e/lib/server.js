// Spawns the kilat binary for a test: on a free port, waits for /health with a bounded retry
// loop, and can kill it and start it again on the same port (the restart test).
//
// The binary is $KILAT_BIN, or target/debug/kilat under the repository root.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS = join(REPO_ROOT, 'target', 'e2e');

export function kilatBin() {
  const bin = process.env.KILAT_BIN || 'target/debug/kilat';
  return resolve(REPO_ROOT, bin);
}

/** A port nobody listens on right now: bind port 0 on 127.0.0.1, read it, close. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/**
 * The child's environment. The server reads every KILAT_<SECTION>_<KEY> variable as
 * configuration and refuses to start on one it does not know, so variables meant for this
 * harness (KILAT_BIN) are left out.
 */
function serverEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' };
  delete env.KILAT_BIN;
  return env;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** GET /health until it answers 200, at most `timeoutMs`; each request has its own timeout. */
export async function waitHealthy(url, { timeoutMs = 15000, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`kilat exited with code ${child.exitCode} before becoming healthy`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err?.cause?.code ?? err?.message ?? String(err);
    }
    await sleep(100);
  }
  throw new Error(`kilat at ${url} not healthy after ${timeoutMs} ms (last: ${last})`);
}

/**
 * A kilat server process owned by one test file.
 *
 *   const server = await KilatServer.start('chat');   // free port, dev mode
 *   KilatServer.start('board-small', { args: ['--config', file] })  // extra `serve` arguments
 *   server.url                                        // http://127.0.0.1:PORT
 *   await server.restart();                           // SIGKILL, then start on the same port
 *   await server.stop();
 *
 * Output goes to target/e2e/<label>-server.log.
 */
export class KilatServer {
  constructor(label, port, args = [], env = {}) {
    /** extra environment for the server (e.g. KILAT_SERVER_ADMIN_PASSWORD) */
    this.env = env;
    this.label = label;
    this.port = port;
    /** extra arguments after `serve --dev --listen ...` */
    this.args = args;
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
    this.starts = 0;
    mkdirSync(ARTIFACTS, { recursive: true });
    this.log = createWriteStream(join(ARTIFACTS, `${label}-server.log`), { flags: 'w' });
  }

  /** `args`: extra `serve` arguments; `env`: extra environment for the server. */
  static async start(label, { port, args, env } = {}) {
    const server = new KilatServer(label, port ?? (await freePort()), args, env);
    await server.spawn();
    return server;
  }

  /** Starts the process and waits until it is healthy; retries a few times if the port is still held. */
  async spawn() {
    const bin = kilatBin();
    if (!existsSync(bin)) {
      throw new Error(`kilat binary not found at ${bin}: build it (cargo build -p kilat-cli) or set KILAT_BIN`);
    }
    let lastErr;
    for (let attempt = 0; attempt < 5; attempt++) {
      this.starts += 1;
      const child = spawn(bin, ['serve', '--dev', '--listen', `127.0.0.1:${this.port}`, ...this.args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...serverEnv(), ...this.env },
      });
      this.child = child;
      this.log.write(`\n===== start #${this.starts} (pid ${child.pid}) ${new Date().toISOString()} =====\n`);
      child.stdout.pipe(this.log, { end: false });
      child.stderr.pipe(this.log, { end: false });
      child.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
      try {
        await waitHealthy(this.url, { child, timeoutMs: 15000 });
        return;
      } catch (err) {
        lastErr = err;
        await this.kill();
        await sleep(200 * (attempt + 1));
      }
    }
    throw lastErr;
  }

  /** SIGKILL (an abrupt crash, nothing flushed) and wait for the exit, at most 5 s. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await Promise.race([child.exited, sleep(5000)]);
  }

  /** Kills the server and starts a new process on the same port. */
  async restart() {
    await this.kill();
    await this.spawn();
  }

  async stop() {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const done = await Promise.race([child.exited.then(() => true), sleep(3000).then(() => false)]);
      if (!done) await this.kill();
    }
    await new Promise((r) => this.log.end(r));
  }
}
