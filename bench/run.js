'use strict';
// `npm run bench [-- --quick] [-- --only=events,rpc,large,mem,durable] [-- --rounds=N] [-- --cpu-prof=ROLE:SIDE]`
// Runs every scenario against a fresh nats-server and redis-server on loopback. The sides of a
// comparison run interleaved (A B A B ...), each in its own processes (publisher and subscriber
// apart, as deployed). Prints a table of medians with per-round ratios, writes
// bench/results.json, and ends with one `RATIOS ...` line.
const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { NatsServer, RedisServer } = require('../scripts/local-servers');
const { fmt, median, report, ratiosLine } = require('./report');

const args = process.argv.slice(2);
const flag = (name) => {
  const a = args.find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  if (!a) return undefined;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : true;
};
const QUICK = !!flag('quick');
// Rounds of the ratio scenarios (events, rpc, large): 5 in a full run, 3 with --quick; the
// memory scenario, which reports no ratio, runs 3. Never fewer than 3.
const ROUNDS = Math.max(3, Number(flag('rounds') || (QUICK ? 3 : 5)));
const MEM_ROUNDS = 3;
const ONLY = flag('only')
  ? String(flag('only')).split(',')
  : ['events', 'rpc', 'large', 'mem', 'durable', 'latency', 'scale', 'outbox', 'codec'];
// Scenarios that are scripts of their own (they start their own servers, PostgreSQL included):
// their RATIOS keys are appended to this run's line, so a full run reports every key.
const SCRIPTS = { outbox: 'outbox.js', codec: 'body-codec.js' };
const CPU_PROF = flag('cpu-prof') ? String(flag('cpu-prof')) : null; // e.g. events-recv:bus,rpc-req:bus (profiles land in .tmp/prof)
const ROOT = path.resolve(__dirname, '..');
const WORKER = path.join(__dirname, 'worker.js');
const MiB = 1024 * 1024;

const P = QUICK
  ? {
      events: 30_000,
      rpc1: 300,
      rpc64: 4_000,
      rpcWarmup: 50,
      large: { [2 * MiB]: 3, [8 * MiB]: 2 },
      largeWarmup: 1,
      mem: 5,
      memHandlerMs: 100,
      durable: 5_000,
      durableWindow: 256,
      open: { eventsRate: 20_000, eventsSec: 1, rpcRate: 2_000, rpcSec: 2, largeRate: 20, largeSec: 2 },
      scale: { queueN: 300, handlerMs: 2, subs: [1, 100, 1000], durables: [1, 100], fanout: 10, fanoutMessages: 1 },
    }
  : {
      events: 200_000,
      rpc1: 20_000,
      rpc64: 20_000,
      rpcWarmup: 1_000,
      large: { [2 * MiB]: 15, [8 * MiB]: 8 },
      largeWarmup: 2,
      mem: 100,
      memHandlerMs: 100,
      durable: 30_000,
      durableWindow: 256,
      // Open-loop latency: offered load and seconds per round (events 100,000, rpc 10,000, large 120 messages).
      open: { eventsRate: 20_000, eventsSec: 5, rpcRate: 2_000, rpcSec: 5, largeRate: 20, largeSec: 6 },
      // Scaling: messages per queue-group round, the handler's simulated I/O, app sizes booted.
      scale: { queueN: 1_500, handlerMs: 2, subs: [1, 100, 1000], durables: [1, 100], fanout: 10, fanoutMessages: 3 },
    };

const log = (...a) => console.error(...a); // progress on stderr; the table and RATIOS on stdout

// ---------------------------------------------------------------------------------------------
// Workers

function startWorker(role, side, cfg) {
  const execArgv = [];
  if (CPU_PROF && CPU_PROF.split(',').includes(`${role}:${side}`)) {
    const dir = path.join(ROOT, '.tmp', 'prof');
    fs.mkdirSync(dir, { recursive: true });
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`);
  }
  if (role.startsWith('large') || role.startsWith('mem')) execArgv.push('--max-old-space-size=8192');
  // A bootstrap's RSS is read after a full collection, so garbage from start-up does not count.
  if (role === 'boot') execArgv.push('--expose-gc');
  const child = fork(WORKER, [JSON.stringify({ role, side, ...cfg })], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const inbox = [];
  const waiters = [];
  let exited = null;
  child.on('message', (m) => {
    const w = waiters.findIndex((x) => x.type === m.type || m.type === 'error');
    if (w >= 0) {
      const [x] = waiters.splice(w, 1);
      clearTimeout(x.timer);
      if (m.type === 'error') x.reject(new Error(`${role}/${side}: ${m.message}`));
      else x.resolve(m);
    } else inbox.push(m);
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    for (const x of waiters.splice(0)) {
      clearTimeout(x.timer);
      x.reject(new Error(`${role}/${side} exited (${code ?? signal})`));
    }
  });
  const next = (type, timeoutMs = 120_000) => {
    const i = inbox.findIndex((m) => m.type === type || m.type === 'error');
    if (i >= 0) {
      const [m] = inbox.splice(i, 1);
      return m.type === 'error' ? Promise.reject(new Error(`${role}/${side}: ${m.message}`)) : Promise.resolve(m);
    }
    if (exited) return Promise.reject(new Error(`${role}/${side} exited (${exited.code ?? exited.signal})`));
    return new Promise((resolve, reject) => {
      const x = { type, resolve, reject };
      x.timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(x), 1);
        reject(Object.assign(new Error(`${role}/${side}: no "${type}" within ${timeoutMs} ms`), { timeout: true }));
      }, timeoutMs);
      waiters.push(x);
    });
  };
  return {
    child,
    next,
    cmd: (m) => child.send(m),
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      try {
        child.send({ cmd: 'stop' });
      } catch {
        /* already gone */
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** Starts a receiving and a sending worker side by side; resolves once both are ready. */
async function startPair(recvRole, sendRole, side, cfg) {
  const recv = startWorker(recvRole, side, cfg);
  const sender = startWorker(sendRole, side, cfg);
  try {
    const [, ready] = await Promise.all([recv.next('ready'), sender.next('ready')]);
    return { recv, sender, ready };
  } catch (err) {
    await Promise.all([recv.stop(), sender.stop()]);
    throw err;
  }
}

async function withServers(fn, { jetstream = false } = {}) {
  // JetStream only where a scenario uses it (its store in a temporary directory, removed after).
  const nats = await NatsServer.start({ jetstream });
  const redis = await RedisServer.start();
  try {
    return await fn({ natsUrl: nats.url, redisUrl: redis.url, redis });
  } finally {
    await nats.dispose();
    await redis.dispose();
  }
}

/**
 * Runs `runSide(side, round)` for each round and side, interleaved and rotated: A B C, B C A, C A B ... With
 * `warmup`, one round first that is not counted: JIT and connection warm-up land there, so the
 * counted rounds measure the steady state a long-running service is in.
 */
async function interleave(sides, runSide, rounds = ROUNDS, { warmup = false } = {}) {
  const perSide = Object.fromEntries(sides.map((s) => [s, []]));
  for (let r = warmup ? -1 : 0; r < rounds; r++) {
    // Each round starts one side later: no side always runs first, or always right after the slowest.
    const start = Math.max(r, 0) % sides.length;
    for (const side of [...sides.slice(start), ...sides.slice(0, start)]) {
      const v = await runSide(side, r);
      log(`  ${r < 0 ? 'warm-up' : `round ${r + 1}`} ${side}: ${JSON.stringify(v)}`);
      if (r >= 0) perSide[side].push(v);
    }
  }
  return perSide;
}

/**
 * Starts every side's receiver/sender pair at once, before any round, and keeps each pair for all
 * the rounds, as a long-running service would be. Process start-up (Nest bootstrap, connects) is
 * then paid once per side, not once per round, and no round is measured while another side boots.
 * `pairs.renew(side)` replaces a pair whose round went wrong, so it cannot pollute the next one.
 */
async function startSides(sides, recvRole, sendRole, cfgFor) {
  const generation = Object.fromEntries(sides.map((s) => [s, 0]));
  const start = (side) => startPair(recvRole, sendRole, side, cfgFor(side, generation[side]));
  const started = await Promise.allSettled(sides.map(start));
  const pairs = new Map();
  started.forEach((r, i) => r.status === 'fulfilled' && pairs.set(sides[i], r.value));
  const stopAll = () => Promise.all([...pairs.values()].flatMap((p) => [p.sender.stop(), p.recv.stop()]));
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await stopAll();
    throw failed.reason;
  }
  return {
    get: (side) => pairs.get(side),
    async renew(side) {
      const old = pairs.get(side);
      await Promise.all([old.sender.stop(), old.recv.stop()]);
      generation[side]++;
      pairs.set(side, await start(side));
    },
    stopAll,
  };
}

/** Each worker's CPU time so far (user + system, µs), asked over IPC while it is idle. */
async function cpuOf(workers) {
  return Promise.all(
    workers.map(async (w) => {
      w.cmd({ cmd: 'cpu' });
      const c = await w.next('cpu');
      return c.user + c.system;
    }),
  );
}

/** The receiver's `done`; past `timeoutMs`, what it has counted so far (marked incomplete). */
async function doneOrReport(recv, timeoutMs) {
  try {
    return await recv.next('done', timeoutMs);
  } catch (err) {
    if (!err.timeout) throw err;
    recv.cmd({ cmd: 'report' });
    return recv.next('done');
  }
}

/**
 * One round of a scenario counted at the receiver (events, durable): arm the receiver (it counts
 * afresh each round; the pair is reused), let the sender send `n`, wait for the count, and renew a
 * pair whose round ran out of time.
 */
async function countedRound(pairs, side, n, sendTimeoutMs) {
  const { recv, sender } = pairs.get(side);
  recv.cmd({ cmd: 'go' });
  await recv.next('armed');
  sender.cmd({ cmd: 'go' });
  const sent = await sender.next('sent', sendTimeoutMs);
  const done = await doneOrReport(recv, 60_000);
  if (done.incomplete) await pairs.renew(side);
  const ms = done.last - sent.t0;
  return {
    rate: done.incomplete ? NaN : (done.count / ms) * 1000,
    received: done.count,
    ms,
    sendMs: sent.ms,
    // CPU per message on each end: unlike msg/s, it does not swing with what else the 2 cores run.
    sendCpuUs: sent.cpuUs / n,
    recvCpuUs: done.cpuUs / n,
  };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async function events() {
  log(`events: ${P.events} x 128 B`);
  // bus-icpt: the bus with one global interceptor bound, so its handler runs through Nest's enhancers.
  // bus-off / bus-otel: telemetry off, and with an SDK (`bus` has the API but no SDK).
  const sides = ['bus', 'raw', 'nestms', 'nestms-cc', 'bus-icpt', 'bus-off', 'bus-otel'];
  return withServers(async (env) => {
    const cfgFor = (side, gen) => ({ ...env, redis: undefined, subject: `bench.events.${side}.${gen}`, n: P.events, bytes: 128 });
    const pairs = await startSides(sides, 'events-recv', 'events-send', cfgFor);
    try {
      const perSide = await interleave(sides, (side) => countedRound(pairs, side, P.events), ROUNDS, { warmup: true });
      return { n: P.events, bytes: 128, perSide };
    } finally {
      await pairs.stopAll();
    }
  });
}

async function rpc() {
  log(`rpc: 64 B, ${P.rpc1} at 1 in flight, ${P.rpc64} at 64 in flight`);
  const sides = ['bus', 'raw', 'nestms', 'nestms-cc', 'bus-off', 'bus-otel'];
  return withServers(async (env) => {
    const cfgFor = (side, gen) => ({ ...env, redis: undefined, subject: `bench.rpc.${side}.${gen}`, bytes: 64 });
    const pairs = await startSides(sides, 'rpc-resp', 'rpc-req', cfgFor);
    try {
      // Each side's round measures 1 in flight, then 64.
      const perSide = await interleave(
        sides,
        async (side) => {
          const { recv: resp, sender: req } = pairs.get(side);
          const out = {};
          // CPU per request on each end: unlike req/s, it does not swing with what else the 2 cores run.
          const respCpu = async () => {
            resp.cmd({ cmd: 'go' });
            const c = await resp.next('cpu');
            return c.user + c.system;
          };
          for (const inflight of [1, 64]) {
            const n = inflight === 1 ? P.rpc1 : P.rpc64;
            const before = await respCpu();
            req.cmd({ cmd: 'go', n, inflight, warmup: P.rpcWarmup });
            const res = await req.next('result', 300_000);
            const respUsPerReq = ((await respCpu()) - before) / (n + P.rpcWarmup);
            out[inflight] = { rate: res.rate, p50: res.p50, p99: res.p99, reqCpuUs: res.cpuUsPerReq, respCpuUs: respUsPerReq };
          }
          return out;
        },
        ROUNDS,
        { warmup: true },
      );
      const perInflight = {};
      for (const inflight of [1, 64]) {
        perInflight[inflight] = Object.fromEntries(Object.entries(perSide).map(([side, xs]) => [side, xs.map((x) => x[inflight])]));
      }
      return { n: { 1: P.rpc1, 64: P.rpc64 }, bytes: 64, perInflight };
    } finally {
      await pairs.stopAll();
    }
  });
}

async function large() {
  const sizes = Object.keys(P.large).map(Number);
  const label = (bytes) => `${bytes / MiB}MiB`;
  log(`large: ${sizes.map((b) => `${label(b)} x ${P.large[b]}`).join(', ')} per run, one at a time`);
  // bus-os: the same bus with storage: { objectStore } (JetStream on the same server) instead of Redis.
  const sides = ['bus', 'bus-os', 'floor'];
  return withServers(
    async (env) => {
      const cfgFor = (side, gen) => ({ ...env, redis: undefined, subject: `bench.large.${side}.${gen}`, sizes });
      // Each side sends every size, one message at a time; the first of each size is a warm-up.
      const pairs = await startSides(sides, 'large-recv', 'large-send', cfgFor);
      let perSide;
      try {
        perSide = await interleave(sides, async (side) => {
          const { recv, sender, ready } = pairs.get(side);
          const out = {};
          for (const bytes of sizes) {
            const lat = [];
            const pub = [];
            const encodes = [];
            let cpu0;
            for (let i = 0; i < P.largeWarmup + P.large[bytes]; i++) {
              if (i === P.largeWarmup) cpu0 = await cpuOf([sender, recv]);
              sender.cmd({ cmd: 'go', bytes });
              const sent = await sender.next('sent');
              const got = await recv.next('got');
              if (got.edges <= 0 || !got.recovered) throw new Error(`large ${side}: bad delivery ${JSON.stringify(got)}`);
              if (i < P.largeWarmup) continue;
              lat.push(got.t - sent.t0);
              pub.push(sent.publishMs);
              encodes.push(sent.encodes);
            }
            const cpu1 = await cpuOf([sender, recv]);
            out[label(bytes)] = {
              latencyMs: median(lat),
              publishMs: median(pub),
              encodesPerPayload: side === 'floor' ? 1 : Math.max(...encodes),
              bytes: ready.sizes[bytes],
              sendCpuUs: (cpu1[0] - cpu0[0]) / P.large[bytes],
              recvCpuUs: (cpu1[1] - cpu0[1]) / P.large[bytes],
            };
          }
          env.redis.cli('FLUSHALL');
          return out;
        });
      } finally {
        await pairs.stopAll();
      }
      // How @nestjs/microservices handles the same payloads (once; it is a failure, not a rate).
      const cfg = { ...env, redis: undefined, subject: 'bench.large.nestms', sizes, failWaitMs: 5000 };
      const { recv, sender } = await startPair('large-recv', 'large-send', 'nestms', cfg);
      const nestms = {};
      for (const bytes of sizes) {
        sender.cmd({ cmd: 'go', bytes });
        const failure = await sender.next('failure', 60_000);
        let received = 0;
        try {
          await recv.next('got', 1000);
          received = 1;
        } catch {
          /* nothing arrived, as expected */
        }
        log(`  nestms ${label(bytes)}: ${JSON.stringify(failure.attempts)} received=${received}`);
        nestms[label(bytes)] = { ...failure, received };
      }
      await Promise.all([sender.stop(), recv.stop()]);
      const out = {};
      for (const bytes of sizes) {
        const l = label(bytes);
        out[l] = {
          bytes,
          count: P.large[bytes],
          perSide: Object.fromEntries(Object.entries(perSide).map(([side, xs]) => [side, xs.map((x) => x[l])])),
          nestms: nestms[l],
        };
      }
      return out;
    },
    { jetstream: true },
  );
}

async function mem() {
  const bytes = 8 * MiB;
  log(`memory: ${P.mem} x 8 MiB to a ${P.memHandlerMs} ms handler`);
  return withServers(async (env) => {
    const sides = ['bus', 'bus-c1', 'floor'];
    const cfg = { ...env, redis: undefined, bytes, n: P.mem, handlerMs: P.memHandlerMs };
    // Peak RSS only grows, so every round needs a fresh receiver. All of them start up front,
    // together with one sender per side, and wait idle for their turn: start-up is paid once.
    const senders = Object.fromEntries(sides.map((side) => [side, startWorker('mem-send', side, { ...cfg, subject: 'unused' })]));
    const receivers = Array.from({ length: MEM_ROUNDS }, (_, r) =>
      Object.fromEntries(sides.map((side) => [side, startWorker('mem-recv', side, { ...cfg, subject: `bench.mem.${side}.${r}` })])),
    );
    const all = [...Object.values(senders), ...receivers.flatMap((x) => Object.values(x))];
    let perSide;
    try {
      await Promise.all(all.map((w) => w.next('ready')));
      perSide = await interleave(
        sides,
        async (side, r) => {
          const recv = receivers[r][side];
          const sender = senders[side];
          sender.cmd({ cmd: 'go', n: P.mem, subject: `bench.mem.${side}.${r}` });
          const t0 = Date.now();
          await sender.next('sent', 600_000);
          const done = await doneOrReport(recv, 600_000);
          const ms = Date.now() - t0;
          await recv.stop();
          env.redis.cli('FLUSHALL');
          return { peakRssMiB: done.peakRssKiB / 1024, baseRssMiB: done.baseRssKiB / 1024, received: done.count, ms };
        },
        MEM_ROUNDS,
      );
    } finally {
      await Promise.all(all.map((w) => w.stop()));
    }
    return { n: P.mem, bytes, handlerMs: P.memHandlerMs, perSide };
  });
}

// Durable sides: the bus's @Subscribe({ durable }) fed by publish(…, { persist: true }); raw
// @nats-io/jetstream (publish with ack, a durable pull consumer with explicit ack); and the peer,
// @nestjs-plugins/nestjs-nats-jetstream-transport (emit with ack into an @EventPattern handler);
// and bus-idem, the bus's durable with `idempotent: true` (idem_vs_durable, issue 30).
const DURABLE_SIDES = ['bus', 'rawjs', 'peer', 'bus-idem'];

async function durable() {
  log(`durable: ${P.durable} x 128 B, ${P.durableWindow} publishes awaiting their acks at a time`);
  const sides = DURABLE_SIDES;
  return withServers(
    async (env) => {
      const cfgFor = (side, gen) => ({
        ...env,
        redis: undefined,
        subject: `bench.durable.${side}.${gen}`,
        stream: `BENCH_DURABLE_${side}_${gen}`,
        n: P.durable,
        bytes: 128,
        window: P.durableWindow,
      });
      // The receiver creates its stream and consumer; it is ready before the sender publishes.
      const pairs = await startSides(sides, 'durable-recv', 'durable-send', cfgFor);
      try {
        const perSide = await interleave(
          sides,
          async (side) => {
            const round = await countedRound(pairs, side, P.durable, 300_000);
            return { ...round, sendRate: (P.durable / round.sendMs) * 1000 };
          },
          ROUNDS,
          { warmup: true },
        );
        return { n: P.durable, bytes: 128, window: P.durableWindow, perSide };
      } finally {
        await pairs.stopAll();
      }
    },
    { jetstream: true },
  );
}

/**
 * Latency at a fixed offered load (open loop): events at 20 k msg/s and rpc at 2 k req/s, bus
 * against raw; one 2 MiB claim-checked message at 20/s, bus against floor. Each round reports
 * p50 / p99 / p99.9 (ms from the time a message was due to its handler, or to its reply).
 */
async function latency() {
  const O = P.open;
  log(
    `latency (open loop): events ${O.eventsRate}/s for ${O.eventsSec} s, rpc ${O.rpcRate}/s for ${O.rpcSec} s, 2 MiB ${O.largeRate}/s for ${O.largeSec} s`,
  );
  const keep = (x) => ({ p50: x.p50, p99: x.p99, p999: x.p999, max: x.max, count: x.count });
  const out = {};
  await withServers(async (env) => {
    const n = O.eventsRate * O.eventsSec;
    const cfgFor = (side, gen) => ({
      ...env,
      redis: undefined,
      subject: `bench.open.events.${side}.${gen}`,
      n,
      rate: O.eventsRate,
      bytes: 128,
    });
    const pairs = await startSides(['bus', 'raw'], 'open-events-recv', 'open-events-send', cfgFor);
    try {
      const perSide = await interleave(
        ['bus', 'raw'],
        async (side) => {
          const { recv, sender } = pairs.get(side);
          recv.cmd({ cmd: 'go' });
          await recv.next('armed');
          sender.cmd({ cmd: 'go' });
          const sent = await sender.next('sent', 120_000);
          const done = await doneOrReport(recv, 30_000);
          if (done.incomplete) await pairs.renew(side);
          return { ...keep(done), received: done.count, sendCpuUs: sent.cpuUs / n, recvCpuUs: done.cpuUs / n };
        },
        ROUNDS,
        { warmup: true },
      );
      out.events = { rate: O.eventsRate, n, bytes: 128, perSide };
    } finally {
      await pairs.stopAll();
    }
  });
  await withServers(async (env) => {
    const n = O.rpcRate * O.rpcSec;
    const cfgFor = (side, gen) => ({ ...env, redis: undefined, subject: `bench.open.rpc.${side}.${gen}`, bytes: 64 });
    const pairs = await startSides(['bus', 'raw'], 'rpc-resp', 'open-rpc-req', cfgFor);
    try {
      const perSide = await interleave(
        ['bus', 'raw'],
        async (side) => {
          const { recv: resp, sender: req } = pairs.get(side);
          const [before] = await cpuOf([resp]);
          req.cmd({ cmd: 'go', n, rate: O.rpcRate });
          const res = await req.next('result', 120_000);
          const [after] = await cpuOf([resp]);
          return { ...keep(res), reqCpuUs: res.cpuUs / n, respCpuUs: (after - before) / n };
        },
        ROUNDS,
        { warmup: true },
      );
      out.rpc = { rate: O.rpcRate, n, bytes: 64, perSide };
    } finally {
      await pairs.stopAll();
    }
  });
  await withServers(async (env) => {
    const n = O.largeRate * O.largeSec;
    const bytes = 2 * MiB;
    const cfgFor = (side, gen) => ({ ...env, redis: undefined, subject: `bench.open.large.${side}.${gen}`, n, rate: O.largeRate, bytes });
    const pairs = await startSides(['bus', 'floor'], 'open-large-recv', 'open-large-send', cfgFor);
    try {
      const perSide = await interleave(
        ['bus', 'floor'],
        async (side) => {
          const { recv, sender } = pairs.get(side);
          recv.cmd({ cmd: 'go' });
          await recv.next('armed');
          sender.cmd({ cmd: 'go' });
          const sent = await sender.next('sent', 120_000);
          const done = await doneOrReport(recv, 60_000);
          if (done.incomplete) await pairs.renew(side);
          env.redis.cli('FLUSHALL');
          return { ...keep(done), received: done.count, sendCpuUs: sent.cpuUs / n, recvCpuUs: done.cpuUs / n };
        },
        ROUNDS,
        { warmup: true },
      );
      out.large2m = { rate: O.largeRate, n, bytes, perSide };
    } finally {
      await pairs.stopAll();
    }
  });
  return out;
}

// Scaling runs 3 rounds (queue groups and bootstraps have no interleaved twin to divide by).
const SCALE_ROUNDS = 3;

/**
 * Scaling: a queue group of 1, 2 and 4 subscriber processes, each handling one message at a time
 * with a handler that awaits 2 ms (msg/s for each); bootstrap time and RSS of an app with 1, 100 and
 * 1,000 @Subscribe topics; bootstrap time with 1 and 100 durables.
 */
async function scale() {
  const S = P.scale;
  const groups = [1, 2, 4];
  log(
    `scale: queue groups of ${groups.join(', ')} (${S.queueN} x 128 B, ${S.handlerMs} ms handler, one at a time each); boot ${S.subs.join(', ')} subscriptions, ${S.durables.join(', ')} durables`,
  );
  const out = {};
  await withServers(async (env) => {
    const base = { ...env, redis: undefined, n: S.queueN, bytes: 128, handlerMs: S.handlerMs };
    const members = {};
    const senders = {};
    for (const k of groups) {
      members[k] = Array.from({ length: k }, () => startWorker('queue-recv', 'bus', { ...base, subject: `bench.queue.${k}` }));
      senders[k] = startWorker('events-send', 'bus', { ...base, subject: `bench.queue.${k}` });
    }
    const all = groups.flatMap((k) => [...members[k], senders[k]]);
    try {
      await Promise.all(all.map((w) => w.next('ready')));
      const perSide = await interleave(
        groups.map(String),
        async (side) => {
          const k = Number(side);
          await Promise.all(members[k].map(async (m) => (m.cmd({ cmd: 'go' }), m.next('armed'))));
          senders[k].cmd({ cmd: 'go' });
          const sent = await senders[k].next('sent', 60_000);
          const deadline = Date.now() + 60_000;
          for (;;) {
            const progress = await Promise.all(members[k].map(async (m) => (m.cmd({ cmd: 'report' }), m.next('progress'))));
            const count = progress.reduce((a, p) => a + p.count, 0);
            if (count >= S.queueN || Date.now() > deadline) {
              const last = Math.max(...progress.map((p) => p.last));
              const shares = progress.map((p) => p.count);
              return { rate: count >= S.queueN ? (count / (last - sent.t0)) * 1000 : NaN, received: count, shares };
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        },
        SCALE_ROUNDS,
        { warmup: true },
      );
      out.queue = { n: S.queueN, handlerMs: S.handlerMs, perSide };
    } finally {
      await Promise.all(all.map((w) => w.stop()));
    }
  });
  // Fan-out: one 8 MiB message to `fanout` subscriber processes (no queue group), each recovering it from Redis.
  await withServers(async (env) => {
    const bytes = 8 * MiB;
    const cfg = { ...env, redis: undefined, subject: 'bench.fanout', sizes: [bytes] };
    const recvs = Array.from({ length: S.fanout }, () => startWorker('large-recv', 'bus', cfg));
    const sender = startWorker('large-send', 'bus', cfg);
    // Every GET-like command (GET, GETEX, GETDEL …) and the bytes Redis has sent, as INFO counts them.
    const redisReads = () => {
      const calls = [...env.redis.cli('INFO', 'commandstats').matchAll(/^cmdstat_get\w*:calls=(\d+)/gm)].reduce(
        (a, m) => a + Number(m[1]),
        0,
      );
      const out = Number(/total_net_output_bytes:(\d+)/.exec(env.redis.cli('INFO', 'stats'))[1]);
      return { calls, out };
    };
    try {
      await Promise.all([...recvs, sender].map((w) => w.next('ready', 180_000)));
      const perSide = await interleave(
        [String(S.fanout)],
        async () => {
          const before = redisReads();
          sender.cmd({ cmd: 'go', bytes });
          const sent = await sender.next('sent', 60_000);
          const got = await Promise.all(recvs.map((r) => r.next('got', 120_000)));
          const after = redisReads();
          env.redis.cli('FLUSHALL');
          const lat = got.map((g) => g.t - sent.t0).sort((a, b) => a - b);
          return {
            firstMs: lat[0],
            lastMs: lat[lat.length - 1],
            readsPerSubscriber: (after.calls - before.calls) / S.fanout,
            mibPerSubscriber: (after.out - before.out) / S.fanout / MiB,
            recovered: got.filter((g) => g.recovered && g.edges > 0).length,
          };
        },
        S.fanoutMessages,
        { warmup: true },
      );
      out.fanout = { subscribers: S.fanout, bytes, perSide };
    } finally {
      await Promise.all([...recvs, sender].map((w) => w.stop()));
    }
  });
  // Bootstraps one at a time: each its own process, started, weighed and stopped before the next.
  const boot = async (env, counts, durable) => {
    const perSide = await interleave(
      counts.map(String),
      async (side, r) => {
        const count = Number(side);
        const tag = `${durable ? 'd' : 's'}${count}r${r + 1}`;
        const w = startWorker('boot', 'bus', {
          ...env,
          redis: undefined,
          subject: `bench.boot.${tag}`,
          stream: `BENCH_BOOT_${tag}`,
          count,
          durable,
        });
        try {
          const ready = await w.next('ready', 180_000);
          return ready.boot;
        } finally {
          await w.stop();
        }
      },
      SCALE_ROUNDS,
    );
    return { counts, perSide };
  };
  await withServers(
    async (env) => {
      out.subs = await boot(env, S.subs, false);
      out.durables = await boot(env, S.durables, true);
    },
    { jetstream: true },
  );
  return out;
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  const started = Date.now();
  const results = {};
  const scenarios = { events, rpc, large, mem, durable, latency, scale };
  for (const [name, run] of Object.entries(scenarios)) {
    if (!ONLY.includes(name)) continue;
    const t0 = Date.now();
    results[name] = await run();
    log(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const extraRatios = {};
  for (const [name, script] of Object.entries(SCRIPTS)) {
    if (!ONLY.includes(name)) continue;
    const t0 = Date.now();
    const args = QUICK ? ['--rounds=3'] : [];
    const output = require('node:child_process').execFileSync(process.execPath, [path.join(__dirname, script), ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    process.stderr.write(output);
    const line = output.split('\n').find((l) => l.startsWith('RATIOS '));
    if (!line) throw new Error(`bench/${script} printed no RATIOS line`);
    for (const [, key, value] of line.matchAll(/(\w+)=([\d.]+|nan)/g)) extraRatios[key] = value;
    log(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const { text, ratio } = report(results, ROUNDS);
  const meta = {
    date: new Date().toISOString(),
    quick: QUICK,
    rounds: ROUNDS,
    memRounds: MEM_ROUNDS,
    nproc: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    cpu: os.cpus()[0] && os.cpus()[0].model,
    node: process.version,
    seconds: (Date.now() - started) / 1000,
    params: P,
  };
  fs.writeFileSync(path.join(__dirname, 'results.json'), JSON.stringify({ meta, ratio, extraRatios, results }, null, 2) + '\n');
  console.log(
    `\nnestjs-nats-eventbus bench — ${meta.date}, nproc ${meta.nproc}, node ${meta.node}${QUICK ? ', --quick' : ''}, ${fmt(meta.seconds)} s\n`,
  );
  console.log(text);
  const extras = Object.entries(extraRatios).map(([k, v]) => ` ${k}=${v}`);
  console.log(ratiosLine(ratio) + extras.join(''));
  // The charts in BENCHMARKS.md come from a full run of every scenario, never from a partial or quick one.
  if (!QUICK && !flag('only')) {
    const files = await require('./charts').writeCharts(results, path.join(ROOT, 'docs', 'bench'));
    log(`charts: ${files.map((f) => path.relative(ROOT, f)).join(', ')}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
