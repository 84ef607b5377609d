'use strict';
// Starts real nats-server and redis-server processes on free loopback ports, for the tests,
// the benchmarks and `npm run sample`. Each can be stopped and restarted on the same port.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const INSTALL_HINT = {
  'nats-server': 'apt-get update && apt-get install -y nats-server',
  'redis-server': 'apt-get update && apt-get install -y redis-server',
};

/** Absolute path of a server binary, or an Error that says how to install it. */
function requireBinary(name) {
  const candidates = (process.env.PATH || '').split(path.delimiter).concat(['/usr/sbin', '/usr/bin', '/usr/local/bin', '/sbin']);
  for (const dir of candidates) {
    const full = path.join(dir, name);
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return full;
    } catch {
      /* keep looking */
    }
  }
  throw new Error(`${name} was not found on PATH or in /usr/sbin. Install the Debian package with: ${INSTALL_HINT[name]}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once `probe` answers, or rejects after `timeoutMs`. */
async function waitFor(port, probe, expect, timeoutMs, child, name) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`${name} exited with code ${child.exitCode} before it was ready`);
    try {
      const answer = await new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        let data = '';
        sock.setTimeout(1000, () => {
          sock.destroy();
          reject(new Error('probe timed out'));
        });
        sock.on('connect', () => probe && sock.write(probe));
        sock.on('data', (d) => {
          data += d.toString();
          if (data.includes('\n')) {
            sock.destroy();
            resolve(data);
          }
        });
        sock.on('error', reject);
      });
      if (answer.startsWith(expect)) return;
      lastError = new Error(`unexpected answer: ${answer.slice(0, 80)}`);
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name} on port ${port} not ready after ${timeoutMs} ms: ${lastError && lastError.message}`);
}

class ServerProcess {
  constructor(name, port, binary) {
    this.name = name;
    this.port = port;
    this.binary = binary;
    this.child = null;
    this.output = '';
  }

  get running() {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start() {
    if (this.running) return this;
    const child = spawn(this.binary, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const keep = (d) => {
      // Keep the tail only: enough to explain a failed start.
      this.output = (this.output + d.toString()).slice(-8192);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => keep(`spawn error: ${err.message}\n`));
    try {
      await waitFor(this.port, this.probe, this.expect, 15000, child, this.name);
    } catch (err) {
      await this.stop();
      err.message += `\n${this.name} output:\n${this.output}`;
      throw err;
    }
    return this;
  }

  /** Stop the server; `signal` SIGKILL simulates a crash. */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  }

  async restart() {
    await this.stop();
    await this.start();
    return this;
  }
}

class NatsServer extends ServerProcess {
  /** @param {{ port?: number, jetstream?: boolean, args?: string[] }} [opts] */
  static async start(opts = {}) {
    const server = new NatsServer(opts.port || (await freePort()), opts);
    return server.start();
  }

  constructor(port, opts = {}) {
    super('nats-server', port, requireBinary('nats-server'));
    this.jetstream = opts.jetstream !== false;
    this.extraArgs = opts.args || [];
    this.storeDir = this.jetstream ? fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-nats-')) : null;
    this.probe = null;
    this.expect = 'INFO ';
  }

  get url() {
    return `nats://127.0.0.1:${this.port}`;
  }

  args() {
    const a = ['-a', '127.0.0.1', '-p', String(this.port)];
    if (this.jetstream) a.push('-js', '-sd', this.storeDir);
    return a.concat(this.extraArgs);
  }

  async stop(signal) {
    await super.stop(signal);
  }

  /** Stop for good and remove the JetStream store. */
  async dispose() {
    await this.stop();
    if (this.storeDir) fs.rmSync(this.storeDir, { recursive: true, force: true });
  }
}

class RedisServer extends ServerProcess {
  /** @param {{ port?: number, args?: string[] }} [opts] */
  static async start(opts = {}) {
    const server = new RedisServer(opts.port || (await freePort()), opts);
    return server.start();
  }

  constructor(port, opts = {}) {
    super('redis-server', port, requireBinary('redis-server'));
    this.extraArgs = opts.args || [];
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-redis-'));
    this.probe = 'PING\r\n';
    this.expect = '+PONG';
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  args() {
    // No persistence: nothing survives a restart, like the machine's own Redis.
    return ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir, ...this.extraArgs];
  }

  /** Run one redis-cli command against this server; returns trimmed stdout. */
  cli(...args) {
    const res = spawnSync(requireBinary('redis-cli'), ['-p', String(this.port), ...args], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${res.stderr}`);
    return res.stdout.trim();
  }

  async dispose() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { NatsServer, RedisServer, requireBinary, freePort, INSTALL_HINT };
