'use strict';
// RSS of a subscriber whose handler never returns, for the README's `maxHeldBytes` figures.
//
//   npm run build
//   node bench/held-bytes.js dist                       # one built library
//   # against an older commit, built in a worktree of its own (never into this checkout's dist):
//   git worktree add /tmp/rss-old 28e24b2 && ln -s "$PWD/node_modules" /tmp/rss-old/node_modules
//   (cd /tmp/rss-old && npx tsc -p tsconfig.build.json)
//   node bench/held-bytes.js old=/tmp/rss-old/dist new=dist [--runs=3] [--only=A,B] [--handler=keep|ignore]
//                            [--max-held-bytes=N] [--verbose]
//
// Each argument is the dist directory of a built library, optionally prefixed with `label=`
// (default label: the short commit of the checkout the directory is in). Starts its own
// nats-server and redis-server on free loopback ports. Every run is a fresh child process (this
// file with --child), so the RSS it reports is the subscriber's alone: the publisher, the
// 1 MB body it sends and the servers live elsewhere. Runs of the libraries are interleaved
// (old new old new ...) so that drift in the machine's load falls on all of them alike.
//
// Scenarios:
//   A  600 inline messages of ~1 MB (JSON {"text":"iii…"}, 1,000,000 chars), published raw. Reported once all
//      600 are running, waiting, shed or dropped (at most 10 s after the last flush), plus 1 s.
//   B  one 4 MiB body stored in Redis through the storage manager, then 64 forged envelopes
//      naming it, published raw (each recovery fetches the whole body again). Reported after 5 s.
//
// The child samples process.memoryUsage().rss every 50 ms. "before" is taken after a forced GC
// (children run with --expose-gc) with the bus connected and subscribed; "peak" is the largest
// sample from then until the report, without forcing GC (garbage counts, as it would in
// production); "after GC" is one more sample after a forced GC at the end: what is really held.
const { fork, execFileSync } = require('node:child_process');
const path = require('node:path');

const MiB = 1024 * 1024;
const SCENARIOS = {
  A: { name: 'A: 600 x 1 MB inline', messages: 600 },
  B: { name: 'B: 64 envelopes -> one 4 MiB body', messages: 64 },
};
const INLINE_TEXT_CHARS = 1_000_000;
const STORED_BODY_BYTES = 4 * MiB;
const KEY_PREFIX = 'heldbytes:';
const SAMPLE_MS = 50;
const A_ACCOUNT_TIMEOUT_MS = 10_000;
const A_TAIL_MS = 1000;
const B_WAIT_MS = 5000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (process.argv[2] === '--child') {
  child(JSON.parse(process.argv[3])).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------
// The subscriber, in its own process. Talks to the parent over IPC.

async function child(cfg) {
  require('reflect-metadata');
  const lib = require(cfg.dist);
  // Failed recoveries (Redis GET past its 5 s timeout under a burst of them) are logged as errors,
  // at most 20 a second: they are counted from the dispatcher instead (see `failed` in the report),
  // and their lines shown only with --verbose, like the once-a-second shed lines. Other errors are
  // always shown. `@nestjs/common` resolves to the same module as the library's (one node_modules, by realpath).
  const print = (level) => (message) => cfg.verbose && console.log(`[${level}] ${message}`);
  require('@nestjs/common').Logger.overrideLogger({
    log: print('log'),
    warn: print('warn'),
    debug: print('debug'),
    verbose: print('verbose'),
    error: (message) => {
      if (cfg.verbose || !/could not recover message/.test(String(message))) console.error(`[error] ${message}`);
    },
  });
  const Redis = require('ioredis');
  const storage = new lib.RedisStorageManager(new Redis(cfg.redisUrl, { ...lib.REDIS_CLIENT_DEFAULTS }), { keyPrefix: KEY_PREFIX });
  await storage.connect();
  // `maxHeldBytes` is passed to every version: before the budget, validateCoreOptions checked only
  // the options it knew and EventBus ignored the rest, so the same options run on both.
  const bus = new lib.EventBus({ nats: { servers: cfg.natsUrl }, maxHeldBytes: cfg.maxHeldBytes }, storage);
  await bus.connect();
  let calls = 0;
  const kept = [];
  // A handler that never returns. With --handler=keep (the default) it keeps its payload, as a
  // stuck handler awaiting I/O with the payload in scope does; with --handler=ignore it drops it,
  // and only what the library itself keeps referenced stays in memory.
  await bus.subscribe(cfg.subject, (payload) => {
    calls++;
    if (cfg.handler === 'keep') kept.push(payload);
    return new Promise(() => {});
  });

  const hasStats = typeof bus.subscriptionStats === 'function';
  // running/waiting/dropped (and heldBytes/shed) of our subscription. Before the budget there was no
  // subscriptionStats(); the dispatcher's counters are read through the bus's internals instead, only
  // to know when every message has arrived.
  const counts = () => {
    if (hasStats) return bus.subscriptionStats().find((s) => s.subject === cfg.subject);
    const d = bus.subscriptions.dispatchers()[0];
    return { running: d.inFlight, waiting: d.pending, dropped: d.droppedCount };
  };
  const accounted = () => {
    const c = counts();
    return c.running + c.waiting + (c.shed || 0) + c.dropped;
  };

  const gc = () => {
    if (global.gc) global.gc();
  };
  gc();
  await sleep(200);
  gc();
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  let peakAt = 0;
  let peakHeld = 0;
  const t0 = Date.now();
  const sampler = setInterval(() => {
    const rss = process.memoryUsage().rss;
    if (rss > peak) {
      peak = rss;
      peakAt = Date.now() - t0;
    }
    if (hasStats) peakHeld = Math.max(peakHeld, counts().heldBytes);
  }, SAMPLE_MS);

  process.on('message', async (m) => {
    if (m.cmd !== 'report') return;
    // Wait for every message to be accounted for (A), or a fixed time (B).
    const deadline = Date.now() + m.accountTimeoutMs;
    while (m.accountTimeoutMs && accounted() < cfg.messages && Date.now() < deadline) await sleep(SAMPLE_MS);
    await sleep(m.tailMs);
    clearInterval(sampler);
    const stats = counts();
    gc();
    await sleep(200);
    gc();
    const rssAfterGc = process.memoryUsage().rss;
    // The handler never returns, so a delivery that ended did so without reaching it: a recovery
    // that failed (or a message that never arrived). A body never delivered is memory never held,
    // so without this count a lower RSS could pass for a better one.
    const failed = cfg.messages - accounted();
    const report = { rssBefore, peak, peakAt, rssAfterGc, calls, failed, stats: hasStats ? { ...stats, peakHeld } : null };
    // Exit without bus.close(): it would wait shutdownTimeoutMs for handlers that never return.
    process.send({ type: 'report', report }, () => process.exit(0));
  });
  process.send({ type: 'ready' });
}

// ---------------------------------------------------------------------------------------------
// The parent: servers, publisher, and the table.

function flag(name) {
  const a = process.argv.slice(2).find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  if (!a) return undefined;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : true;
}

/** `label=path` or `path`; the default label is the short commit of the checkout holding the dist. */
function parseVersion(arg) {
  const eq = arg.indexOf('=');
  const dir = path.resolve(eq > 0 ? arg.slice(eq + 1) : arg);
  let label = eq > 0 ? arg.slice(0, eq) : '';
  if (!label) {
    try {
      label = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      label = dir;
    }
  }
  return { label, dist: dir };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mib = (bytes) => bytes / MiB;
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
/** "median (min..max)" of numbers. */
const spread = (xs, fmt = f0) => `${fmt(median(xs))} (${fmt(Math.min(...xs))}..${fmt(Math.max(...xs))})`;

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  return [line(headers), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** Fork a subscriber; resolves with its IPC handle once it is subscribed. */
function startChild(cfg) {
  const proc = fork(__filename, ['--child', JSON.stringify(cfg)], {
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const next = (type) =>
    new Promise((resolve, reject) => {
      const onMsg = (m) => {
        if (m.type !== type) return;
        proc.off('exit', onExit);
        proc.off('message', onMsg);
        resolve(m);
      };
      const onExit = (code) => reject(new Error(`subscriber exited with code ${code} before '${type}'`));
      proc.on('message', onMsg);
      proc.once('exit', onExit);
    });
  return next('ready').then(() => ({
    report: async (cmd) => {
      const got = next('report');
      proc.send({ cmd: 'report', ...cmd });
      const { report } = await got;
      await exited;
      return report;
    },
  }));
}

async function runOnce(env, version, scenario, subject) {
  const messages = SCENARIOS[scenario].messages;
  const { raw: _raw, ...childEnv } = env;
  const sub = await startChild({ ...childEnv, dist: version.dist, subject, messages });
  if (scenario === 'A') {
    const body = Buffer.from(JSON.stringify({ text: 'i'.repeat(INLINE_TEXT_CHARS) }));
    for (let i = 0; i < messages; i++) {
      env.raw.publish(subject, body);
      // Flushing every 50 keeps the publisher's own buffer small; the subscriber still gets them in a burst.
      if (i % 50 === 49) await env.raw.flush();
    }
    await env.raw.flush();
    return sub.report({ accountTimeoutMs: A_ACCOUNT_TIMEOUT_MS, tailMs: A_TAIL_MS });
  }
  // B: the body is stored by this process (through the library's own storage manager, so the key
  // and value are as the bus writes them); the subscriber only recovers it.
  const lib = require(version.dist);
  const Redis = require('ioredis');
  const storage = new lib.RedisStorageManager(new Redis(env.redisUrl, { ...lib.REDIS_CLIENT_DEFAULTS }), { keyPrefix: KEY_PREFIX });
  await storage.connect();
  try {
    const envelope = await storage.storeMessage(Buffer.from(JSON.stringify({ text: 'f'.repeat(STORED_BODY_BYTES - 12) })));
    const forged = JSON.stringify({ token: envelope.token, is_stored: true });
    for (let i = 0; i < messages; i++) env.raw.publish(subject, forged);
    await env.raw.flush();
    return await sub.report({ accountTimeoutMs: 0, tailMs: B_WAIT_MS });
  } finally {
    await storage.disconnect();
  }
}

async function main() {
  const versions = process.argv
    .slice(2)
    .filter((a) => !a.startsWith('--'))
    .map(parseVersion);
  if (!versions.length) {
    console.error(
      'usage: node bench/held-bytes.js [label=]<dist dir> [...] [--runs=3] [--only=A,B] [--max-held-bytes=N] [--handler=keep|ignore] [--verbose]',
    );
    process.exit(2);
  }
  const runs = Math.max(1, Number(flag('runs') || 3));
  const only = flag('only') ? String(flag('only')).toUpperCase().split(',') : ['A', 'B'];
  const maxHeldBytes = Number(flag('max-held-bytes') || 64 * MiB);
  const handler = String(flag('handler') || 'keep');
  if (handler !== 'keep' && handler !== 'ignore') throw new Error('--handler must be keep or ignore');

  const { NatsServer, RedisServer } = require('../scripts/local-servers');
  const { connect } = require('@nats-io/transport-node');
  const [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
  const raw = await connect({ servers: nats.url });
  const env = { natsUrl: nats.url, redisUrl: redis.url, raw, maxHeldBytes, handler, verbose: !!flag('verbose') };
  const results = {};
  try {
    for (let run = 1; run <= runs; run++) {
      for (const scenario of only) {
        for (const [vi, version] of versions.entries()) {
          const r = await runOnce(env, version, scenario, `heldbytes.${scenario}.${run}.${vi}`);
          (results[`${scenario}|${version.label}`] ??= []).push(r);
          const s = r.stats;
          console.log(
            `${scenario} ${version.label} run ${run}: RSS ${f0(mib(r.rssBefore))} -> peak ${f0(mib(r.peak))} MiB at ${r.peakAt} ms, ` +
              `${f0(mib(r.rssAfterGc))} after GC; handler calls ${r.calls}, ended without reaching it ${r.failed}` +
              (s ? `; running ${s.running}, waiting ${s.waiting}, heldBytes ${s.heldBytes} (peak ${s.peakHeld}), shed ${s.shed}` : ''),
          );
        }
      }
    }
  } finally {
    await raw.close();
    await Promise.all([nats.dispose(), redis.dispose()]);
  }

  console.log(
    `\nSubscriber RSS in MiB, median (min..max) of ${runs} runs; handler never returns and ` +
      `${handler === 'keep' ? 'keeps' : 'ignores'} its payload; maxHeldBytes ${maxHeldBytes} passed to every version.`,
  );
  const rows = [];
  for (const scenario of only) {
    for (const version of versions) {
      const rs = results[`${scenario}|${version.label}`];
      const col = (fn) => spread(rs.map(fn));
      const withStats = rs.every((r) => r.stats);
      rows.push([
        SCENARIOS[scenario].name,
        version.label,
        col((r) => mib(r.rssBefore)),
        col((r) => mib(r.peak)),
        col((r) => mib(r.peak - r.rssBefore)),
        col((r) => mib(r.rssAfterGc - r.rssBefore)),
        col((r) => r.calls),
        col((r) => r.failed),
        withStats ? col((r) => r.stats.running + r.stats.waiting) : 'n/a',
        withStats ? col((r) => mib(r.stats.peakHeld)) : 'n/a',
        withStats ? col((r) => r.stats.shed) : 'n/a',
      ]);
    }
  }
  console.log(
    table(
      [
        'scenario',
        'version',
        'RSS before',
        'RSS peak',
        'growth',
        'growth after GC',
        'handler calls',
        'ended unhandled',
        'running+waiting',
        'peak heldBytes (MiB)',
        'shed',
      ],
      rows,
    ),
  );
}
