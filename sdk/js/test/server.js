// Test helper (not a test file): spawns a real `kilat serve --dev` on a free loopback port.
//
// The binary comes from KILAT_BIN, default ../../target/debug/kilat relative to sdk/js.
// Build it with `cargo build -p kilat-cli`. Without a binary the integration tests skip with a
// loud notice, or fail when CI=true.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Path of the kilat binary the tests use. */
export const KILAT_BIN = process.env.KILAT_BIN
  ? resolve(process.env.KILAT_BIN)
  : resolve(sdkDir, '../../target/debug/kilat');

/**
 * Why integration tests cannot run, or null when they can. Under CI=true a missing binary is
 * an error instead of a skip.
 */
export function skipReason() {
  if (existsSync(KILAT_BIN)) return null;
  const msg = `kilat binary not found at ${KILAT_BIN}: build it with \`cargo build -p kilat-cli\` or set KILAT_BIN`;
  if (process.env.CI === 'true') throw new Error(msg);
  console.warn(`\n!!! SKIPPING kilat integration tests: ${msg}\n`);
  return msg;
}

/** A free TCP port on 127.0.0.1 (listen on 0, read the port, close). */
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
 * The environment for the server: ours without KILAT_* variables (the server reads
 * KILAT_<SECTION>_<KEY> as configuration and rejects unknown ones such as KILAT_BIN), except
 * the log level.
 */
function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KILAT_')) env[k] = v;
  env.KILAT_LOG = process.env.KILAT_LOG ?? 'info';
  return env;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A running server. */
export class KilatServer {
  /**
   * @param {{args?: string[], env?: Record<string, string>, port?: number}} [opts]
   */
  constructor(opts = {}) {
    this.args = opts.args ?? [];
    this.env = opts.env ?? {};
    this.port = opts.port ?? 0;
    this.proc = null;
    this.logs = '';
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  /** Spawns the server and waits until `GET /health` answers 200 (at most ~15 s). */
  async start() {
    if (!this.port) this.port = await freePort();
    const args = ['serve', '--dev', '--listen', `127.0.0.1:${this.port}`, ...this.args];
    const proc = spawn(KILAT_BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...childEnv(), ...this.env },
    });
    this.proc = proc;
    let exited = null;
    proc.on('exit', (code, signal) => (exited = { code, signal }));
    const keep = (d) => {
      this.logs += d.toString();
      if (this.logs.length > 200_000) this.logs = this.logs.slice(-100_000);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    const deadline = Date.now() + 15_000;
    for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
      if (exited) throw new Error(`kilat exited during start-up (${JSON.stringify(exited)}):\n${this.logs}`);
      try {
        const res = await fetch(`${this.httpUrl}/health`);
        await res.arrayBuffer();
        if (res.status === 200) return this;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`kilat did not become healthy on port ${this.port} within 15 s:\n${this.logs}`);
      }
      await sleep(delay);
    }
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves when the process is gone. */
  async stop() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(timer);
  }

  /** Kills the process hard (no drain) and starts a new one on the same port. */
  async restart({ hard = true } = {}) {
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill(hard ? 'SIGKILL' : 'SIGTERM');
      await gone;
    }
    return this.start();
  }

  /** HTTP status of a request to this server (for feature probes). */
  async status(path, init) {
    try {
      const res = await fetch(`${this.httpUrl}${path}`, { ...init, signal: AbortSignal.timeout(3000) });
      try {
        await res.body?.cancel();
      } catch {
        /* ignore */
      }
      return res.status;
    } catch {
      return 0;
    }
  }
}

/** Starts a server (see KilatServer). */
export async function startServer(opts) {
  return new KilatServer(opts).start();
}
