#!/usr/bin/env node
'use strict';
// `npm run sample`: build the library and the sample, make sure NATS and Redis answer (starting
// local servers when nothing does), start a throwaway PostgreSQL for the monitor's outbox (unless
// DATABASE_URL names one), then run the three services as child processes until Ctrl-C or SIGTERM.
// Every line on stdout is JSON; the services' own lines carry their "service" name.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const OUT = path.join(ROOT, '.tmp', 'sample');

const env = (name, fallback) => (process.env[name] === undefined || process.env[name] === '' ? fallback : process.env[name]);
const NATS_URL = env('NATS_URL', 'nats://127.0.0.1:4222');
const OUTBOX_DIR = env('OUTBOX_DIR', path.join(OUT, 'outbox'));
const REDIS_URL = env('REDIS_URL', 'redis://127.0.0.1:6379');
// Where large bodies go: 'redis' (the default), or 'objectstore' (a JetStream bucket on NATS; no Redis).
const STORAGE = env('EVENTBUS_STORAGE', 'redis');
// The sites-monitor's outbox: a PostgreSQL of yours at DATABASE_URL, else one started here;
// SAMPLE_POSTGRES=0 (or no PostgreSQL binaries) runs the monitor without the outbox.
let DATABASE_URL = env('DATABASE_URL', '');
const START_POSTGRES = env('SAMPLE_POSTGRES', '1') !== '0';
const START_TIMEOUT_MS = Number(env('SAMPLE_START_TIMEOUT_MS', '30000'));
const RESTART_DELAY_MS = Number(env('SAMPLE_RESTART_DELAY_MS', '1000'));
// A service that dies is started again, as a supervisor would; one that keeps dying stops the run.
const MAX_RESTARTS_PER_MINUTE = 3;
const STOP_TIMEOUT_MS = Number(env('SAMPLE_STOP_TIMEOUT_MS', '15000'));

// Started in this order; each must answer /_health before the next group starts, so the monitor's
// first cycle finds the bridge and the notifier subscribed.
const SERVICES = [
  { name: 'velocloud-bridge', portVar: 'VELOCLOUD_BRIDGE_PORT', metricsPortVar: 'VELOCLOUD_BRIDGE_METRICS_PORT', port: 5001, group: 0 },
  { name: 'notifier', portVar: 'NOTIFIER_PORT', metricsPortVar: 'NOTIFIER_METRICS_PORT', port: 5002, group: 0 },
  { name: 'sites-monitor', portVar: 'SITES_MONITOR_PORT', metricsPortVar: 'SITES_MONITOR_METRICS_PORT', port: 5000, group: 1 },
];

function log(level, msg, fields = {}) {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), service: 'run', level, msg, ...fields }) + '\n');
}

const children = new Map(); // name -> ChildProcess
const servers = []; // servers this script started
let shuttingDown = null;
// JetStream streams the services create on a NATS this script did not start: removed at the stop,
// so the sample's NOTIFICATIONS stream (it captures notification.>) does not go on capturing a
// user's own publishes there. SAMPLE_KEEP_STREAMS=1 keeps them.
// KV_eventbus-inbox-600s: the notifier's idempotent durables remember handled ids there (600 s window).
const SAMPLE_STREAMS = ['NOTIFICATIONS', 'OBJ_eventbus-sample', 'KV_eventbus-inbox-600s'];
const KEEP_STREAMS = env('SAMPLE_KEEP_STREAMS', '') === '1';
let streamsToRemove = [];

/** Newest modification time (ms) of the files under `dir` whose names pass `filter`. */
function newest(dir, filter) {
  let latest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(full, filter));
    else if (filter(entry.name)) latest = Math.max(latest, fs.statSync(full).mtimeMs);
  }
  return latest;
}

/** dist/ is up to date when it is newer than every source of lib/ and the build's configuration. */
function libraryIsBuilt() {
  try {
    const built = Math.min(...['index.js', 'index.d.ts'].map((f) => fs.statSync(path.join(ROOT, 'dist', f)).mtimeMs));
    const sources = Math.max(
      newest(path.join(ROOT, 'lib'), (n) => n.endsWith('.ts')),
      ...['package.json', 'tsconfig.json', 'tsconfig.build.json'].map((f) => fs.statSync(path.join(ROOT, f)).mtimeMs),
    );
    return built > sources;
  } catch {
    return false;
  }
}

function build() {
  const steps = [
    // `npm run build` is the library's own build (dist/); skipped when dist/ is newer than lib/.
    ['library', 'npm', ['run', 'build', '--silent']],
    ['sample', process.execPath, [require.resolve('typescript/bin/tsc', { paths: [ROOT] }), '-p', path.join('sample', 'tsconfig.json')]],
  ];
  for (const [what, cmd, args] of steps) {
    if (what === 'library' && libraryIsBuilt()) {
      log('log', 'the library is up to date (dist/ is newer than lib/)');
      continue;
    }
    const started = Date.now();
    // Compiler output goes to stderr, so stdout stays JSON lines.
    const res = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 2, 2], shell: process.platform === 'win32' });
    if (res.status !== 0) {
      log('error', `building the ${what} failed (${[cmd, ...args].join(' ')})`, {
        exit_code: res.status,
        error: res.error && res.error.message,
      });
      process.exit(1);
    }
    log('log', `built the ${what}`, { ms: Date.now() - started });
  }
}

/** True when something accepts a TCP connection at the URL's host and port. */
function answers(url, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const sock = net.connect(Number(url.port), url.hostname);
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.on('connect', () => done(true));
    sock.on('error', () => done(false));
  });
}

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/**
 * Use the server at `rawUrl`, or start a local one on its port when nothing answers there.
 * Resolves true when it started one.
 */
async function ensureServer(kind, rawUrl, defaultPort) {
  const url = new URL(rawUrl);
  if (!url.port) url.port = String(defaultPort);
  if (await answers(url)) {
    log('log', `${kind} answers at ${rawUrl}; using it`);
    return false;
  }
  if (!LOCAL_HOSTS.has(url.hostname))
    throw new Error(
      `nothing answers at ${kind === 'nats' ? 'NATS_URL' : 'REDIS_URL'}=${rawUrl}, and it is not a local address to start a server on`,
    );
  // The launcher the tests use; requireBinary's error says how to install a missing server.
  const { NatsServer, RedisServer } = require(path.join(ROOT, 'scripts', 'local-servers.js'));
  // JetStream on (-js, its store in a temporary directory removed at the stop): notifications are durable.
  const server = kind === 'nats' ? new NatsServer(Number(url.port)) : new RedisServer(Number(url.port));
  // Its own process group: a Ctrl-C reaches run.js only, which stops the services before the servers.
  server.detached = true;
  servers.push(server);
  await server.start();
  log('log', `started a local ${server.name} for ${rawUrl}`, { pid: server.child && server.child.pid, port: server.port });
  return true;
}

/**
 * DATABASE_URL for the monitor's outbox: the one given, or a throwaway PostgreSQL started with the
 * tests' launcher (initdb and pg_ctl into a temporary directory, a free loopback port, removed at
 * the stop). Without PostgreSQL's binaries the run goes on without the outbox, saying so once.
 */
async function ensurePostgres() {
  if (DATABASE_URL) {
    log('log', 'DATABASE_URL is set; the sites-monitor writes its alert decisions through the outbox there');
    return;
  }
  if (!START_POSTGRES) {
    log('log', 'SAMPLE_POSTGRES=0: no PostgreSQL; the sites-monitor publishes its alerts directly, without the outbox');
    return;
  }
  const { PostgresServer, postgresBinDir } = require(path.join(ROOT, 'test', 'harness', 'postgres-server.js'));
  try {
    postgresBinDir();
  } catch (err) {
    log('warn', `no PostgreSQL to start (${err.message}); the sites-monitor publishes its alerts directly, without the outbox`);
    return;
  }
  const started = Date.now();
  const { freePort } = require(path.join(ROOT, 'scripts', 'local-servers.js'));
  const server = new PostgresServer(await freePort());
  server.name = 'postgres';
  servers.push(server);
  await server.start();
  DATABASE_URL = server.url;
  log('log', `started a local postgres for the sites-monitor's outbox`, { port: server.port, url: server.url, ms: Date.now() - started });
}

/** With a JetStream manager on NATS_URL, `fn(jsm)`; the connection is closed afterwards. */
async function withJetStream(fn) {
  const { connect } = require('@nats-io/transport-node');
  const { jetstreamManager } = require('@nats-io/jetstream');
  const nc = await connect({ servers: NATS_URL, timeout: 3000 });
  try {
    return await fn(await jetstreamManager(nc, { timeout: 3000 }));
  } finally {
    await nc.close();
  }
}

/** The sample's streams that the server does not have yet: the services will create them, and the stop removes them. */
async function noteNewStreams() {
  if (KEEP_STREAMS) return;
  try {
    streamsToRemove = await withJetStream(async (jsm) => {
      const missing = [];
      for (const name of SAMPLE_STREAMS) {
        const exists = await jsm.streams.info(name).then(
          () => true,
          (err) => (/stream not found/i.test(err.message) ? false : Promise.reject(err)),
        );
        if (!exists) missing.push(name);
      }
      return missing;
    });
  } catch (err) {
    // A NATS without JetStream: the durable services will say so at their bootstrap.
    log('warn', `could not list JetStream streams at NATS_URL (${err.message}); none will be removed at the stop`);
  }
}

async function removeNewStreams() {
  if (streamsToRemove.length === 0) return;
  try {
    const removed = await withJetStream(async (jsm) => {
      const gone = [];
      for (const name of streamsToRemove) {
        if (await jsm.streams.delete(name).catch(() => false)) gone.push(name);
      }
      return gone;
    });
    if (removed.length > 0) {
      log('log', `removed the streams this run created on a NATS it did not start (SAMPLE_KEEP_STREAMS=1 keeps them)`, {
        streams: removed,
      });
    }
  } catch (err) {
    log('warn', `could not remove the sample's streams (${err.message}); remove them with: nats stream rm ${streamsToRemove.join(' ')}`);
  }
}

function pipeLines(stream, onLine) {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => buf && onLine(buf));
}

function startService(svc) {
  const port = env(svc.portVar, String(svc.port));
  // OTEL=1: one Prometheus port per service; a single OTEL_METRICS_PORT would make them collide.
  const metricsPort = env(svc.metricsPortVar, '');
  const main = path.join(OUT, svc.name, 'main.js');
  const child = spawn(process.execPath, [main], {
    cwd: ROOT,
    env: {
      ...process.env,
      NATS_URL,
      REDIS_URL,
      DATABASE_URL,
      PORT: port,
      OUTBOX_DIR,
      ...(metricsPort ? { OTEL_METRICS_PORT: metricsPort } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: Ctrl-C sends SIGINT to the whole foreground group, and the servers
    // would then die with the services still draining. Only run.js gets it, and orders the stop.
    detached: true,
  });
  children.set(svc.name, child);
  log('log', `started ${svc.name}`, { app: svc.name, pid: child.pid, port: Number(port) });
  pipeLines(child.stdout, (line) =>
    process.stdout.write(line.startsWith('{') ? line + '\n' : JSON.stringify({ service: svc.name, level: 'stdout', msg: line }) + '\n'),
  );
  pipeLines(child.stderr, (line) => process.stdout.write(JSON.stringify({ service: svc.name, level: 'stderr', msg: line }) + '\n'));
  child.on('exit', (code, signal) => {
    children.delete(svc.name);
    if (shuttingDown) {
      log('log', `${svc.name} stopped`, { app: svc.name, pid: child.pid, code, signal });
    } else if (started.healthy && restartAllowed(svc.name)) {
      log('warn', `${svc.name} exited unexpectedly; restarting it`, {
        app: svc.name,
        pid: child.pid,
        code,
        signal,
        in_ms: RESTART_DELAY_MS,
      });
      setTimeout(() => {
        if (shuttingDown) return;
        const again = startService(svc);
        waitHealthy(again).catch((err) => {
          if (shuttingDown) return;
          log('error', err.message);
          void shutdown(1);
        });
      }, RESTART_DELAY_MS);
    } else {
      log('error', `${svc.name} exited unexpectedly`, { app: svc.name, pid: child.pid, code, signal });
      void shutdown(1);
    }
  });
  const started = { svc, child, port: Number(port), healthy: false };
  return started;
}

const restarts = new Map(); // name -> times of its recent restarts

function restartAllowed(name) {
  const now = Date.now();
  const recent = (restarts.get(name) || []).filter((t) => now - t < 60_000);
  if (recent.length >= MAX_RESTARTS_PER_MINUTE) return false;
  restarts.set(name, [...recent, now]);
  return true;
}

function healthy(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/_health', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

async function waitHealthy(started) {
  const { svc, child, port } = started;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (shuttingDown || child.exitCode !== null || child.signalCode !== null) throw new Error(`${svc.name} is not running`);
    if (await healthy(port)) {
      started.healthy = true;
      log('log', `${svc.name} is healthy`, { app: svc.name, pid: child.pid, url: `http://127.0.0.1:${port}/_health` });
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${svc.name} did not answer /_health on port ${port} within ${START_TIMEOUT_MS} ms`);
}

function stopChild(name, child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      log('warn', `${name} did not stop within ${STOP_TIMEOUT_MS} ms; killing it`, { app: name, pid: child.pid });
      child.kill('SIGKILL');
    }, STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function shutdown(code) {
  if (shuttingDown) return shuttingDown;
  shuttingDown = (async () => {
    log('log', 'stopping', { services: [...children.keys()] });
    // The monitor first, so nothing new is asked of the others while they drain.
    const monitor = children.get('sites-monitor');
    if (monitor) await stopChild('sites-monitor', monitor);
    await Promise.all([...children.entries()].map(([name, child]) => stopChild(name, child)));
    await removeNewStreams();
    for (const server of servers.reverse()) {
      await server.dispose().catch((err) => log('error', `could not stop ${server.name}: ${err.message}`));
      log('log', `${server.name} stopped`, { port: server.port });
    }
    log('log', 'stopped', { code });
    process.exit(code);
  })();
  return shuttingDown;
}

let firstSignalAt = 0;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    // A second signal, a moment after the first (a Ctrl-C can arrive twice, to the process and
    // to its group), kills everything at once instead of waiting for a clean stop.
    if (shuttingDown && firstSignalAt && Date.now() - firstSignalAt > 1000) {
      log('warn', `${sig} again: killing everything now`);
      for (const child of children.values()) child.kill('SIGKILL');
      for (const server of servers)
        void Promise.resolve(server.stop(server.name === 'postgres' ? 'immediate' : 'SIGKILL')).catch(() => undefined);
      process.exit(130);
    }
    if (!firstSignalAt) firstSignalAt = Date.now();
    void shutdown(0);
  });
}
// Last resort: never leave a child behind, even when this process dies of an error.
process.on('exit', () => {
  for (const child of children.values()) if (child.exitCode === null) child.kill('SIGKILL');
  for (const server of servers) {
    if (server.child && server.child.exitCode === null) server.child.kill('SIGKILL');
    // PostgreSQL runs under pg_ctl, not as our child: its stop is a synchronous pg_ctl call.
    else if (server.name === 'postgres' && server.running) void server.stop('immediate').catch(() => undefined);
  }
});

/** Each run starts a fresh outbox; the previous run's is kept once, beside it. */
function freshOutbox() {
  const file = path.join(OUTBOX_DIR, 'outbox.jsonl');
  if (!fs.existsSync(file)) return;
  const previous = path.join(OUTBOX_DIR, 'outbox.previous.jsonl');
  fs.renameSync(file, previous);
  log('log', "moved the previous run's outbox aside", { file: previous });
}

async function main() {
  if (env('SAMPLE_SKIP_BUILD', '') !== '1') build();
  // `node sample/asyncapi.js` needs the build only.
  if (env('SAMPLE_BUILD_ONLY', '') === '1') return process.exit(0);
  freshOutbox();
  if (STORAGE !== 'redis' && STORAGE !== 'objectstore') {
    log('error', `EVENTBUS_STORAGE must be redis or objectstore, got "${STORAGE}"`);
    return shutdown(1);
  }
  try {
    if (!(await ensureServer('nats', NATS_URL, 4222))) await noteNewStreams();
    // With the object store, large bodies stay on NATS (JetStream): no Redis at all.
    if (STORAGE === 'redis') await ensureServer('redis', REDIS_URL, 6379);
    else log('log', 'EVENTBUS_STORAGE=objectstore: large bodies go to the JetStream object store; Redis is not used');
    await ensurePostgres();
  } catch (err) {
    log('error', err.message);
    return shutdown(1);
  }
  for (const group of [0, 1]) {
    if (shuttingDown) return;
    const started = SERVICES.filter((s) => s.group === group).map(startService);
    try {
      await Promise.all(started.map(waitHealthy));
    } catch (err) {
      if (shuttingDown) return;
      log('error', err.message);
      return shutdown(1);
    }
  }
  log('log', 'all services are up; Ctrl-C stops them', {
    services: SERVICES.map((s) => ({
      name: s.name,
      pid: children.get(s.name) && children.get(s.name).pid,
      health: `http://127.0.0.1:${env(s.portVar, String(s.port))}/_health`,
    })),
  });
}

main().catch((err) => {
  log('error', err.stack || String(err));
  void shutdown(1);
});
