'use strict';
// Starts real nats-server and redis-server processes on free loopback ports, for the tests,
// the benchmarks and `npm run sample`. Each can be stopped and restarted on the same port.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');

const INSTALL_HINT = {
  'nats-server': 'apt-get update && apt-get install -y nats-server',
  'redis-server': 'apt-get update && apt-get install -y redis-server',
  'redis-cli': 'apt-get update && apt-get install -y redis-tools',
  openssl: 'apt-get update && apt-get install -y openssl',
};

/** Absolute path of a server binary, or an Error that says how to install it. */
function requireBinary(name, dirs) {
  const candidates = dirs || (process.env.PATH || '').split(path.delimiter).concat(['/usr/sbin', '/usr/bin', '/usr/local/bin', '/sbin']);
  for (const dir of candidates) {
    const full = path.join(dir, name);
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return full;
    } catch {
      /* keep looking */
    }
  }
  const hint = INSTALL_HINT[name] || `apt-get update && apt-get install -y ${name}`;
  throw new Error(`${name} was not found on PATH or in /usr/sbin. Install the Debian package with: ${hint}`);
}

// Ports are picked below Linux's ephemeral range (32768+), so an outgoing connection (a NATS
// route, a client) can never take a port between the moment it is picked and the server's bind.
// Redis Cluster also listens on port + 10000, which stays below 32768 as well.
const PORT_RANGE = { from: 20000, to: 22700 };
const handedOut = new Set();

function canListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A loopback port no one listens on, never the same one twice in this process. */
async function freePort() {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PORT_RANGE.from + Math.floor(Math.random() * (PORT_RANGE.to - PORT_RANGE.from));
    if (handedOut.has(port)) continue;
    if ((await canListen(port)) && (await canListen(port + 10000))) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port found in ${PORT_RANGE.from}-${PORT_RANGE.to}`);
}

/**
 * Resolves once `probe` answers, or rejects after `timeoutMs`. `tlsOptions` (optional) makes the
 * probe speak TLS from the first byte (a TLS-only Redis port).
 */
async function waitFor(port, probe, expect, timeoutMs, child, name, tlsOptions) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`${name} exited with code ${child.exitCode} before it was ready`);
    try {
      const answer = await new Promise((resolve, reject) => {
        const sock = tlsOptions
          ? tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...tlsOptions })
          : net.connect(port, '127.0.0.1');
        let data = '';
        sock.setTimeout(1000, () => {
          sock.destroy();
          reject(new Error('probe timed out'));
        });
        sock.on(tlsOptions ? 'secureConnect' : 'connect', () => probe && sock.write(probe));
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
    // Set by the unit lane (jest.config.js): a spec that needs a server belongs in *.integration.spec.ts.
    if (process.env.EVENTBUS_TEST_LANE === 'unit') {
      throw new Error(
        `${this.name} started from the unit lane, which runs without servers: name the spec *.integration.spec.ts (see jest.config.js)`,
      );
    }
    // `detached`: a process group of its own, so a Ctrl-C to the terminal's group does not reach it
    // and whoever started it decides when it stops (the sample stops its services first).
    const child = spawn(this.binary, this.args(), { stdio: ['ignore', 'pipe', 'pipe'], detached: !!this.detached });
    this.child = child;
    const keep = (d) => {
      // Keep the tail only: enough to explain a failed start.
      this.output = (this.output + d.toString()).slice(-8192);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => keep(`spawn error: ${err.message}\n`));
    try {
      await waitFor(this.port, this.probe, this.expect, 15000, child, this.name, this.probeTls);
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
  /**
   * @param {{ port?: number, jetstream?: boolean, args?: string[], config?: string }} [opts]
   * `config` is the text of a nats-server configuration file (e.g. an `authorization` or `tls`
   * block); it is written to a temporary file and given with `-c`. Command-line flags (`-a`,
   * `-p`, `args`) take precedence over it.
   */
  static async start(opts = {}) {
    const server = new NatsServer(opts.port || (await freePort()), opts);
    return server.start();
  }

  constructor(port, opts = {}) {
    super('nats-server', port, requireBinary('nats-server'));
    this.jetstream = opts.jetstream !== false;
    this.extraArgs = opts.args || [];
    this.storeDir = this.jetstream ? fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-nats-')) : null;
    this.configFile = null;
    if (opts.config !== undefined) {
      this.configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-nats-conf-'));
      this.configFile = path.join(this.configDir, 'nats-server.conf');
      fs.writeFileSync(this.configFile, opts.config, { mode: 0o600 });
    }
    this.probe = null;
    this.expect = 'INFO ';
  }

  get url() {
    return `nats://127.0.0.1:${this.port}`;
  }

  args() {
    const a = this.configFile ? ['-c', this.configFile] : [];
    a.push('-a', '127.0.0.1', '-p', String(this.port));
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
    if (this.configDir) fs.rmSync(this.configDir, { recursive: true, force: true });
  }
}

class RedisServer extends ServerProcess {
  /**
   * @param {{ port?: number, args?: string[], config?: string, password?: string,
   *   tls?: { cert: string, key: string, ca: string }, sentinel?: boolean }} [opts]
   * - `config`: text of a redis.conf (e.g. ACL `user` lines, `sentinel monitor ...`), written into
   *   the server's directory and given first; command-line options take precedence over it.
   * - `password`: the `default` user's password: sets `requirepass`, and the readiness probe and
   *   `cli()` authenticate with it.
   * - `tls`: PEM file paths; the server then listens on `port` with TLS only (`--port 0 --tls-port`).
   * - `sentinel`: run as Redis Sentinel (`redis-server <config> --sentinel`); needs `config`.
   */
  static async start(opts = {}) {
    const server = new RedisServer(opts.port || (await freePort()), opts);
    return server.start();
  }

  constructor(port, opts = {}) {
    super(opts.sentinel ? 'redis-sentinel' : 'redis-server', port, requireBinary('redis-server'));
    this.extraArgs = opts.args || [];
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-redis-'));
    this.password = opts.password;
    this.tls = opts.tls;
    this.sentinel = !!opts.sentinel;
    this.configFile = null;
    if (opts.config !== undefined) {
      this.configFile = path.join(this.dir, 'redis.conf');
      // Sentinel rewrites its configuration file, so it must be writable.
      fs.writeFileSync(this.configFile, opts.config, { mode: 0o600 });
    }
    if (this.sentinel && !this.configFile) throw new Error('RedisServer: sentinel needs a config (sentinel monitor ...)');
    this.probe = this.password !== undefined ? `AUTH ${this.password}\r\nPING\r\n` : 'PING\r\n';
    this.expect = this.password !== undefined ? '+OK' : '+PONG';
    this.probeTls = this.tls ? { ca: fs.readFileSync(this.tls.ca), rejectUnauthorized: true } : null;
  }

  get url() {
    return `${this.tls ? 'rediss' : 'redis'}://127.0.0.1:${this.port}`;
  }

  args() {
    // No persistence: nothing survives a restart, like the machine's own Redis.
    const a = this.configFile ? [this.configFile] : [];
    if (this.sentinel) a.push('--sentinel');
    if (this.tls) {
      a.push('--port', '0', '--tls-port', String(this.port), '--tls-cert-file', this.tls.cert, '--tls-key-file', this.tls.key);
      a.push('--tls-ca-cert-file', this.tls.ca, '--tls-auth-clients', 'no');
    } else {
      a.push('--port', String(this.port));
    }
    a.push('--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir);
    if (this.password !== undefined) a.push('--requirepass', this.password);
    return a.concat(this.extraArgs);
  }

  /** Run one redis-cli command against this server; returns trimmed stdout. */
  cli(...args) {
    const conn = ['-p', String(this.port)];
    if (this.password !== undefined) conn.push('-a', this.password, '--no-auth-warning');
    if (this.tls) conn.push('--tls', '--cacert', this.tls.ca, '--sni', 'localhost');
    const res = spawnSync(requireBinary('redis-cli'), [...conn, ...args], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${res.stderr}`);
    return res.stdout.trim();
  }

  async dispose() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** GET a JSON document from a loopback HTTP port (nats-server monitoring). */
function getJson(port, urlPath) {
  return new Promise((resolve, reject) => {
    const req = require('node:http').get({ host: '127.0.0.1', port, path: urlPath, timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

async function pollUntil(check, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/**
 * `size` nats-server processes routed to each other on loopback. Each node has a monitoring port;
 * `waitForRoutes()` polls `/routez` until every running node sees the others. With `jetstream: true`
 * each node is named `n0`, `n1`, … (`--server_name`, which JetStream clustering requires), keeps its
 * own store directory (`-js -sd`, kept across `stop()`/`start()`), and `start` resolves only once
 * the JetStream meta group has a leader.
 */
class NatsCluster {
  /** @param {{ size?: number, name?: string, args?: string[], jetstream?: boolean }} [opts] */
  static async start(opts = {}) {
    const size = opts.size || 3;
    const jetstream = !!opts.jetstream;
    const ports = [];
    for (let i = 0; i < size * 3; i++) ports.push(await freePort());
    const nodes = [];
    for (let i = 0; i < size; i++) {
      const [client, route, monitor] = [ports[i * 3], ports[i * 3 + 1], ports[i * 3 + 2]];
      const routes = [];
      for (let j = 0; j < size; j++) if (j !== i) routes.push(`nats://127.0.0.1:${ports[j * 3 + 1]}`);
      const serverName = jetstream ? `n${i}` : `node-${i}`;
      const node = new NatsServer(client, {
        jetstream,
        args: [
          '--server_name',
          serverName,
          '-m',
          String(monitor),
          '--cluster_name',
          opts.name || 'eventbus-test',
          '--cluster',
          `nats://127.0.0.1:${route}`,
          '--routes',
          routes.join(','),
          ...(opts.args || []),
        ],
      });
      node.monitorPort = monitor;
      node.serverName = serverName;
      nodes.push(node);
    }
    const cluster = new NatsCluster(nodes, jetstream);
    try {
      await Promise.all(nodes.map((n) => n.start()));
      await cluster.waitForRoutes();
      if (jetstream) await cluster.waitForJetStream();
    } catch (err) {
      await cluster.dispose();
      throw err;
    }
    return cluster;
  }

  constructor(nodes, jetstream = false) {
    this.nodes = nodes;
    this.jetstream = jetstream;
  }

  get urls() {
    return this.nodes.map((n) => n.url);
  }

  /** The node listening on `port`, e.g. the one a client says it is connected to. */
  byPort(port) {
    return this.nodes.find((n) => n.port === Number(port));
  }

  /** The node whose `--server_name` is `name` (`n0`… with JetStream, `node-0`… without). */
  byName(name) {
    return this.nodes.find((n) => n.serverName === name);
  }

  /** SIGKILL the node named `name` (a crash: no clean shutdown); resolves to that node, for a later `start()`. */
  async kill(name) {
    const node = this.byName(name);
    if (!node) throw new Error(`NatsCluster: no node named ${name} (nodes: ${this.nodes.map((n) => n.serverName).join(', ')})`);
    await node.stop('SIGKILL');
    return node;
  }

  /** Resolves once every running node has a route to every other running node. */
  async waitForRoutes(timeoutMs = 15000) {
    await pollUntil(
      async () => {
        const running = this.nodes.filter((n) => n.running);
        const counts = await Promise.all(running.map((n) => getJson(n.monitorPort, '/routez').then((r) => r.num_routes)));
        return counts.every((c) => c >= running.length - 1);
      },
      'NATS cluster routes',
      timeoutMs,
    );
  }

  /** Name of the JetStream meta leader as the running nodes agree on it, or undefined. */
  async metaLeader() {
    const running = this.nodes.filter((n) => n.running);
    const leaders = await Promise.all(
      running.map((n) => getJson(n.monitorPort, '/jsz').then((j) => j.meta_cluster && j.meta_cluster.leader)),
    );
    return leaders.length > 0 && leaders.every((l) => l && l === leaders[0]) ? leaders[0] : undefined;
  }

  /**
   * Resolves once every running node sees the same JetStream meta leader and says, on `/healthz`,
   * that it is current with it: before that, a replicated stream's create can outlast an API timeout.
   */
  async waitForJetStream(timeoutMs = 30000) {
    await pollUntil(async () => !!(await this.metaLeader()), 'a JetStream meta leader', timeoutMs);
    await pollUntil(
      async () => {
        const running = this.nodes.filter((n) => n.running);
        const health = await Promise.all(running.map((n) => getJson(n.monitorPort, '/healthz').catch(() => ({}))));
        return health.every((h) => h.status === 'ok');
      },
      'every JetStream node current with the meta leader (/healthz)',
      timeoutMs,
    );
  }

  /**
   * Name of the node leading stream `stream` (an object store bucket `b` is stream `OBJ_b`), read
   * from `/jsz?streams=true` of the running nodes; undefined while there is none.
   */
  async streamLeader(stream, account = '$G') {
    for (const node of this.nodes.filter((n) => n.running)) {
      const jsz = await getJson(node.monitorPort, `/jsz?accounts=true&streams=true&acc=${encodeURIComponent(account)}`).catch(() => null);
      for (const acc of (jsz && jsz.account_details) || []) {
        const found = (acc.stream_detail || []).find((s) => s.name === stream);
        if (found && found.cluster && found.cluster.leader) return found.cluster.leader;
      }
    }
    return undefined;
  }

  async dispose() {
    await Promise.all(this.nodes.map((n) => n.dispose()));
  }
}

/**
 * A Redis Cluster of `size` masters on loopback, made with
 * `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`.
 */
class RedisCluster {
  /** @param {{ size?: number, args?: string[] }} [opts] */
  static async start(opts = {}) {
    const size = opts.size || 3;
    const cli = requireBinary('redis-cli');
    const nodes = [];
    for (let i = 0; i < size; i++) {
      nodes.push(
        new RedisServer(await freePort(), {
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '3000', ...(opts.args || [])],
        }),
      );
    }
    const cluster = new RedisCluster(nodes);
    try {
      await Promise.all(nodes.map((n) => n.start()));
      const res = spawnSync(
        cli,
        ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
        {
          encoding: 'utf8',
          timeout: 30000,
        },
      );
      if (res.status !== 0) throw new Error(`redis-cli --cluster create failed: ${res.stdout}\n${res.stderr}`);
      await pollUntil(() => nodes.every((n) => /cluster_state:ok/.test(n.cli('cluster', 'info'))), 'Redis cluster_state:ok', 15000);
    } catch (err) {
      await cluster.dispose();
      throw err;
    }
    return cluster;
  }

  constructor(nodes) {
    this.nodes = nodes;
  }

  /** `[{ host, port }]`, as ioredis's `Cluster` takes them. */
  get startupNodes() {
    return this.nodes.map((n) => ({ host: '127.0.0.1', port: n.port }));
  }

  async dispose() {
    await Promise.all(this.nodes.map((n) => n.dispose()));
  }
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI in a
 * temporary directory. Returns PEM file paths and `dispose()`.
 */
function makeTestCertificates() {
  const openssl = requireBinary('openssl');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-tls-'));
  const f = (name) => path.join(dir, name);
  const run = (...args) => {
    const res = spawnSync(openssl, args, { encoding: 'utf8', cwd: dir });
    if (res.status !== 0) throw new Error(`openssl ${args[0]} failed: ${res.stderr}`);
  };
  fs.writeFileSync(
    f('san.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  run(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    f('ca-key.pem'),
    '-out',
    f('ca.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=eventbus test CA',
  );
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server-key.pem'), '-out', f('server.csr'), '-subj', '/CN=localhost');
  run(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca-key.pem'),
    '-CAcreateserial',
    '-out',
    f('server.pem'),
    '-days',
    '1',
    '-extfile',
    f('san.ext'),
  );
  return {
    dir,
    ca: f('ca.pem'),
    cert: f('server.pem'),
    key: f('server-key.pem'),
    dispose: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

module.exports = {
  NatsServer,
  RedisServer,
  NatsCluster,
  RedisCluster,
  makeTestCertificates,
  requireBinary,
  freePort,
  INSTALL_HINT,
};
