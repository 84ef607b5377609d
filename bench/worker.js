'use strict';
// One side of one benchmark scenario, in its own process (forked by bench/run.js).
// argv[2] is a JSON config: { role, side, natsUrl, redisUrl, subject, ... }.
// Talks to the parent over IPC: sends {type:'ready'} once set up, then answers commands.
// Times are epoch milliseconds with sub-ms resolution, comparable across processes.

const cfg = JSON.parse(process.argv[2]);

// Counts JSON.stringify calls of over 64 KiB made while publishing, to check "encode once" (large messages).
// Only the large-message senders carry the wrapper, so the small-message hot paths stay untouched.
let stringifyCalls = 0;
if (cfg.role === 'large-send' || cfg.role === 'mem-send') {
  const realStringify = JSON.stringify;
  JSON.stringify = function countedStringify(value, replacer, space) {
    const out = realStringify(value, replacer, space);
    // Only encodes of a body count: a store's own small JSON (the object store's metadata) is not one.
    if (typeof out === 'string' && out.length > 64 * 1024) stringifyCalls++;
    return out;
  };
}

require('reflect-metadata');
const { performance } = require('node:perf_hooks');
const { randomUUID } = require('node:crypto');
const { fixedJson, largeJson } = require('./payloads');

const now = () => performance.timeOrigin + performance.now();
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const send = (m) => process.send(m);
const NEST_LOG = ['error', 'warn'];
const KEY_PREFIX = 'eventbus:';

// ---------------------------------------------------------------------------------------------
// Building blocks: a Nest app with EventBusModule, a @nestjs/microservices server/client, raw nats.

function lib() {
  return require('../dist');
}

// Telemetry sides: `bus` has @opentelemetry/api installed (a devDependency) and no SDK, as most
// apps that merely depend on it; `bus-off` sets `telemetry: false`; `bus-otel` registers an SDK
// first (a batch span processor whose exporter drops the spans, and a meter provider that
// aggregates), so what is measured is the instrumentation and the SDK, not an exporter's I/O.
const TELEMETRY_SIDES = ['bus-off', 'bus-otel'];
const isBus = (side) => side === 'bus' || side === 'bus-icpt' || TELEMETRY_SIDES.includes(side);

function registerOtelSdk() {
  const { context, metrics, propagation, trace } = require('@opentelemetry/api');
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
  const { W3CTraceContextPropagator } = require('@opentelemetry/core');
  const { BatchSpanProcessor, TracerProvider } = require('@opentelemetry/sdk-trace');
  const {
    MeterProvider,
    PeriodicExportingMetricReader,
    InMemoryMetricExporter,
    AggregationTemporality,
  } = require('@opentelemetry/sdk-metrics');
  const dropping = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => undefined };
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: dropping })] }));
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 60_000,
  });
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
}

// A global interceptor that does nothing: what binding one (logging, timing) costs per message.
function passThroughInterceptor() {
  const { APP_INTERCEPTOR } = require('@nestjs/core');
  return { provide: APP_INTERCEPTOR, useValue: { intercept: (_ctx, next) => next.handle() } };
}

/** Module options of a large-message side: `bus-os` keeps bodies in the NATS object store, the others in Redis. */
function storageFor(side) {
  return side === 'bus-os' ? { storage: { objectStore: { bucket: 'bench', ttlSeconds: 300 } } } : {};
}

async function busApp(handlers, moduleExtra = {}, extraProviders = []) {
  const { Injectable, Module } = require('@nestjs/common');
  const { NestFactory } = require('@nestjs/core');
  const { EventBusModule, Subscribe, EventBus } = lib();
  // Before the app is created, as the README asks.
  if (cfg.side === 'bus-otel') registerOtelSdk();
  // What a user writes with decorators, applied by hand (this file is plain JS).
  class BenchHandlers {}
  handlers.forEach((h, i) => {
    const name = `handler${i}`;
    BenchHandlers.prototype[name] = h.fn;
    Subscribe(h.topic, h.options || {})(BenchHandlers.prototype, name, Object.getOwnPropertyDescriptor(BenchHandlers.prototype, name));
  });
  Injectable()(BenchHandlers);
  class BenchModule {}
  Module({
    imports: [
      EventBusModule.forRoot({
        nats: { servers: [cfg.natsUrl], name: `bench-${cfg.role}` },
        storage: { redis: { url: cfg.redisUrl }, ttlSeconds: 300, keyPrefix: KEY_PREFIX },
        health: { enabled: false },
        ...(cfg.side === 'bus-off' ? { telemetry: false } : {}),
        ...moduleExtra,
      }),
    ],
    providers: [BenchHandlers, ...extraProviders],
  })(BenchModule);
  const app = await NestFactory.createApplicationContext(BenchModule, { logger: NEST_LOG });
  const bus = app.get(EventBus);
  return { bus, close: () => app.close() };
}

// Claim-check storage for the nestms-cc side: what a user of 'nestjs-nats-eventbus/microservices' passes.
async function ccStorage() {
  const Redis = require('ioredis');
  const { RedisStorageManager, REDIS_CLIENT_DEFAULTS } = lib();
  const storage = new RedisStorageManager(new Redis(cfg.redisUrl, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: KEY_PREFIX });
  await storage.connect();
  return storage;
}

async function nestmsServer(patterns, claimCheck = false) {
  const { Controller, Module } = require('@nestjs/common');
  const { NestFactory } = require('@nestjs/core');
  const { EventPattern, MessagePattern, Transport } = require('@nestjs/microservices');
  class BenchController {}
  patterns.forEach((p, i) => {
    const name = `handler${i}`;
    BenchController.prototype[name] = p.fn;
    const deco = p.kind === 'event' ? EventPattern(p.pattern) : MessagePattern(p.pattern);
    deco(BenchController.prototype, name, Object.getOwnPropertyDescriptor(BenchController.prototype, name));
  });
  Controller()(BenchController);
  class BenchModule {}
  Module({ controllers: [BenchController] })(BenchModule);
  let storage;
  let transport = { transport: Transport.NATS, options: { servers: [cfg.natsUrl] } };
  if (claimCheck) {
    const { EventBusTransport } = require('../dist/microservices');
    storage = await ccStorage();
    transport = { strategy: new EventBusTransport({ nats: { servers: [cfg.natsUrl] }, storage }) };
  }
  const app = await NestFactory.createMicroservice(BenchModule, { ...transport, logger: NEST_LOG });
  await app.listen();
  return {
    close: async () => {
      await app.close();
      if (storage) await storage.disconnect();
    },
  };
}

async function nestmsClient(claimCheck = false) {
  const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
  if (claimCheck) {
    const { EventBusClientProxy } = require('../dist/microservices');
    const storage = await ccStorage();
    const client = new EventBusClientProxy({ nats: { servers: [cfg.natsUrl] }, storage });
    await client.connect();
    const close = client.close.bind(client);
    client.close = async () => {
      await close();
      await storage.disconnect();
    };
    return client;
  }
  const client = ClientProxyFactory.create({ transport: Transport.NATS, options: { servers: [cfg.natsUrl] } });
  await client.connect();
  return client;
}

// The best a hand-wired service can do: nats.js v3 with the same noAsyncTraces the bus sets.
async function rawNats() {
  const { connect } = require('@nats-io/transport-node');
  return connect({ servers: [cfg.natsUrl], name: `bench-raw-${cfg.role}`, noAsyncTraces: true });
}

async function rawRedis() {
  const Redis = require('ioredis');
  const r = new Redis(cfg.redisUrl, { lazyConnect: true });
  await r.connect();
  return r;
}

// Raw sides do the JSON work a hand-written service does: stringify + UTF-8 on send, parse on receive.
const encode = (v) => Buffer.from(JSON.stringify(v), 'utf8');
const decode = (data) => JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));

function toPromise(x) {
  if (x && typeof x.subscribe === 'function') {
    const { lastValueFrom } = require('rxjs');
    return lastValueFrom(x, { defaultValue: undefined });
  }
  return x;
}

/**
 * A receiver's count of one round, shared by the scenarios that count at the handler: `onMessage`
 * per message (sends `done` at the n-th), `go` arms it for a new round (the pair of processes is
 * reused across rounds), `report` says where it got to when a round ran out of time.
 */
function roundCounter(n) {
  let count = 0;
  let first = 0;
  let cpu0 = process.cpuUsage();
  const cpuUs = () => {
    const c = process.cpuUsage(cpu0);
    return c.user + c.system;
  };
  return {
    onMessage: () => {
      if (count === 0) first = now();
      if (++count === n) send({ type: 'done', count, first, last: now(), cpuUs: cpuUs() });
    },
    go: () => {
      count = 0;
      first = 0;
      cpu0 = process.cpuUsage();
      return { type: 'armed' };
    },
    report: () => ({ type: 'done', count, first, last: now(), cpuUs: cpuUs(), incomplete: true }),
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: events. Receiver counts at the handler; sender publishes as fast as it can.

async function eventsRecv() {
  const { onMessage, go, report } = roundCounter(cfg.n);
  let close;
  if (isBus(cfg.side)) {
    const providers = cfg.side === 'bus-icpt' ? [passThroughInterceptor()] : [];
    ({ close } = await busApp([{ topic: cfg.subject, fn: (payload) => void (payload.id, onMessage()) }], {}, providers));
  } else if (cfg.side === 'raw') {
    const nc = await rawNats();
    nc.subscribe(cfg.subject, {
      callback: (err, msg) => {
        if (err) throw err;
        const payload = decode(msg.data);
        void payload.id;
        onMessage();
      },
    });
    await nc.flush();
    close = () => nc.close();
  } else if (cfg.side === 'nestms' || cfg.side === 'nestms-cc') {
    ({ close } = await nestmsServer(
      [{ kind: 'event', pattern: cfg.subject, fn: (payload) => void (payload.id, onMessage()) }],
      cfg.side === 'nestms-cc',
    ));
  }
  return {
    close,
    go,
    report,
  };
}

async function eventsSend() {
  const payload = fixedJson(cfg.bytes);
  if (Buffer.byteLength(JSON.stringify(payload)) !== cfg.bytes) throw new Error('payload size mismatch');
  let publish;
  let flush;
  let close;
  if (isBus(cfg.side)) {
    const app = await busApp([]);
    publish = () => app.bus.publish(cfg.subject, payload);
    flush = () => app.bus.connections().get('producer').flush();
    close = app.close;
  } else if (cfg.side === 'raw') {
    const nc = await rawNats();
    publish = () => nc.publish(cfg.subject, encode(payload));
    flush = () => nc.flush();
    close = () => nc.close();
  } else if (cfg.side === 'nestms' || cfg.side === 'nestms-cc') {
    const client = await nestmsClient(cfg.side === 'nestms-cc');
    publish = () => client.emit(cfg.subject, payload);
    flush = async () => undefined;
    close = () => client.close();
  }
  return {
    close,
    go: async () => {
      const n = cfg.n;
      const batch = 1000;
      const cpu0 = process.cpuUsage();
      const t0 = now();
      let last;
      for (let i = 1; i <= n; i++) {
        last = publish();
        // Let the socket drain now and then; every side gets the same pacing.
        if (i % batch === 0 || i === n) {
          await toPromise(last);
          await tick();
        }
      }
      await flush();
      const cpu = process.cpuUsage(cpu0);
      return { type: 'sent', t0, ms: now() - t0, cpuUs: cpu.user + cpu.system };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: request/reply. The responder returns the request; the requester keeps `inflight`
// requests outstanding and records each one's latency.

async function rpcResp() {
  let close;
  if (isBus(cfg.side)) {
    ({ close } = await busApp([{ topic: cfg.subject, fn: (payload) => payload }]));
  } else if (cfg.side === 'raw') {
    const nc = await rawNats();
    nc.subscribe(cfg.subject, {
      callback: (err, msg) => {
        if (err) throw err;
        msg.respond(encode(decode(msg.data)));
      },
    });
    await nc.flush();
    close = () => nc.close();
  } else if (cfg.side === 'nestms' || cfg.side === 'nestms-cc') {
    ({ close } = await nestmsServer([{ kind: 'message', pattern: cfg.subject, fn: (payload) => payload }], cfg.side === 'nestms-cc'));
  }
  // CPU time so far, so the parent can charge each batch its responder CPU per request.
  return { close, go: () => ({ type: 'cpu', ...process.cpuUsage() }) };
}

async function rpcReq() {
  const payload = fixedJson(cfg.bytes);
  let request;
  let close;
  if (isBus(cfg.side)) {
    const app = await busApp([]);
    request = () => app.bus.rpcRequest(cfg.subject, payload, { timeout: 10_000 });
    close = app.close;
  } else if (cfg.side === 'raw') {
    const nc = await rawNats();
    request = () => nc.request(cfg.subject, encode(payload), { timeout: 10_000 }).then((m) => decode(m.data));
    close = () => nc.close();
  } else if (cfg.side === 'nestms' || cfg.side === 'nestms-cc') {
    const client = await nestmsClient(cfg.side === 'nestms-cc');
    const { lastValueFrom } = require('rxjs');
    request = () => lastValueFrom(client.send(cfg.subject, payload));
    close = () => client.close();
  }
  const runBatch = async (n, inflight, lat) => {
    let next = 0;
    const loop = async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const s = performance.now();
        const reply = await request();
        if (lat) lat[i] = performance.now() - s;
        if (reply.id !== payload.id) throw new Error('wrong reply');
      }
    };
    await Promise.all(Array.from({ length: inflight }, loop));
  };
  return {
    close,
    go: async ({ n, inflight, warmup }) => {
      await runBatch(warmup, inflight, null);
      const lat = new Float64Array(n);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await runBatch(n, inflight, lat);
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      lat.sort();
      const cpuUsPerReq = (cpu.user + cpu.system) / n;
      return {
        type: 'result',
        n,
        inflight,
        ms,
        rate: (n / ms) * 1000,
        p50: lat[Math.floor(n * 0.5)],
        p99: lat[Math.min(n - 1, Math.floor(n * 0.99))],
        cpuUsPerReq,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: large messages, one at a time. The parent asks the sender for message i and
// waits for the receiver's handler to report it; latency = handler time - publish start.

async function largeRecv() {
  const got = (payload, recovered) => {
    if (cfg.onGot) return cfg.onGot(payload);
    const t = now();
    send({ type: 'got', t, edges: payload && payload.edges ? payload.edges.length : -1, recovered });
  };
  let close;
  if (cfg.side === 'bus' || cfg.side === 'bus-os') {
    ({ close } = await busApp([{ topic: cfg.subject, fn: (payload, ctx) => got(payload, ctx.recovered) }], storageFor(cfg.side)));
  } else if (cfg.side === 'floor') {
    // Hand-written claim check: envelope → GET → JSON.parse → handler.
    const nc = await rawNats();
    const redis = await rawRedis();
    nc.subscribe(cfg.subject, {
      callback: (err, msg) => {
        if (err) throw err;
        const envelope = decode(msg.data);
        redis.get(KEY_PREFIX + envelope.token).then((json) => got(JSON.parse(json), true));
      },
    });
    await nc.flush();
    close = async () => {
      await nc.close();
      redis.disconnect();
    };
  } else if (cfg.side === 'nestms') {
    ({ close } = await nestmsServer([{ kind: 'event', pattern: cfg.subject, fn: (payload) => got(payload, false) }]));
  }
  return { close };
}

async function largeSend() {
  // One payload per size; `go({ bytes })` picks one.
  const payloads = new Map(cfg.sizes.map((size) => [size, largeJson(size)]));
  const sizes = Object.fromEntries([...payloads].map(([size, p]) => [size, Buffer.byteLength(JSON.stringify(p))]));
  let payload;
  let publish;
  let close;
  if (cfg.side === 'bus' || cfg.side === 'bus-os') {
    const app = await busApp([], storageFor(cfg.side));
    publish = () => app.bus.publish(cfg.subject, payload);
    close = app.close;
  } else if (cfg.side === 'floor') {
    const nc = await rawNats();
    const redis = await rawRedis();
    publish = async () => {
      const json = JSON.stringify(payload);
      const token = randomUUID();
      await redis.set(KEY_PREFIX + token, json, 'EX', 300);
      nc.publish(cfg.subject, Buffer.from(`{"token":"${token}","is_stored":true}`, 'utf8'));
    };
    close = async () => {
      await nc.close();
      redis.disconnect();
    };
  } else if (cfg.side === 'nestms') {
    const client = await nestmsClient();
    close = () => client.close();
    return {
      close,
      sizes,
      // How @nestjs/microservices fails: emit and send, each timed until it errors (or gives up).
      go: async (m) => {
        payload = payloads.get(m.bytes);
        const attempt = async (kind) => {
          const t0 = now();
          try {
            await Promise.race([
              toPromise(kind === 'emit' ? client.emit(cfg.subject, payload) : client.send(cfg.subject, payload)),
              sleep(cfg.failWaitMs).then(() => {
                throw Object.assign(new Error(`no answer within ${cfg.failWaitMs} ms`), { name: 'BenchTimeout' });
              }),
            ]);
            return { kind, ok: true, ms: now() - t0 };
          } catch (err) {
            return {
              kind,
              ok: false,
              ms: now() - t0,
              name: err && err.name,
              code: err && err.code,
              message: String((err && err.message) || err).slice(0, 200),
            };
          }
        };
        return { type: 'failure', bytes: sizes[m.bytes], attempts: [await attempt('emit'), await attempt('send')] };
      },
    };
  }
  return {
    close,
    sizes,
    go: async (m) => {
      payload = payloads.get(m.bytes);
      const before = stringifyCalls;
      const t0 = now();
      await publish();
      return { type: 'sent', t0, publishMs: now() - t0, encodes: stringifyCalls - before, bytes: sizes[m.bytes] };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: memory. 100 large messages to a slow handler; the receiver reports its peak RSS.

async function memRecv() {
  const n = cfg.n;
  let done = 0;
  const baseRss = process.resourceUsage().maxRSS;
  const finish = () => {
    if (++done === n) send({ type: 'done', count: done, baseRssKiB: baseRss, peakRssKiB: process.resourceUsage().maxRSS });
  };
  const slow = async (payload) => {
    void payload.edges.length;
    await sleep(cfg.handlerMs);
    finish();
  };
  let close;
  if (cfg.side === 'bus' || cfg.side === 'bus-c1') {
    const options = cfg.side === 'bus-c1' ? { maxConcurrent: 1 } : {};
    ({ close } = await busApp([{ topic: cfg.subject, fn: slow, options }]));
  } else if (cfg.side === 'floor') {
    // Hand-written: envelopes queue up; one GET + parse + handler at a time.
    const nc = await rawNats();
    const redis = await rawRedis();
    const queue = [];
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (queue.length) {
        const token = queue.shift();
        await slow(JSON.parse(await redis.get(KEY_PREFIX + token)));
      }
      busy = false;
    };
    nc.subscribe(cfg.subject, {
      callback: (err, msg) => {
        if (err) throw err;
        queue.push(decode(msg.data).token);
        void pump();
      },
    });
    await nc.flush();
    close = async () => {
      await nc.close();
      redis.disconnect();
    };
  }
  return {
    close,
    report: () => ({ type: 'done', count: done, baseRssKiB: baseRss, peakRssKiB: process.resourceUsage().maxRSS, incomplete: true }),
  };
}

async function memSend() {
  cfg.side = cfg.side === 'floor' ? 'floor' : 'bus';
  cfg.sizes = [cfg.bytes];
  const sender = await largeSend();
  return {
    close: sender.close,
    // The sender is reused across rounds; each round sends to its own fresh receiver.
    go: async ({ n, subject }) => {
      if (subject) cfg.subject = subject;
      const t0 = now();
      for (let i = 0; i < n; i++) await sender.go({ bytes: cfg.bytes });
      return { type: 'sent', ms: now() - t0 };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Scenario 5: durable events (JetStream). The sender publishes and waits for the stream's acks
// (`window` at a time); the receiver's durable pull consumer acks each message after its handler.
// Each side has its own stream (`cfg.stream`, file storage, 1 h max age) capturing `cfg.subject`.

const DURABLE_NAME = 'bench';

/** The stream every durable side uses: created by the receiver, before the sender publishes. */
const durableStream = () => ({ name: cfg.stream, subjects: [cfg.subject], maxAgeSeconds: 3600 });

async function durableRecv() {
  const { onMessage, go, report } = roundCounter(cfg.n);
  let close;
  if (cfg.side === 'bus' || cfg.side === 'bus-idem') {
    // bus-idem: the same durable with the inbox (a KV claim and a `done` record per message, issue 30).
    const options = cfg.side === 'bus-idem' ? { durable: DURABLE_NAME, idempotent: true } : { durable: DURABLE_NAME };
    ({ close } = await busApp([{ topic: cfg.subject, fn: (payload) => void (payload.id, onMessage()), options }], {
      jetstream: { streams: [durableStream()] },
    }));
  } else if (cfg.side === 'rawjs') {
    // Hand-wired @nats-io/jetstream: the same stream and a durable pull consumer with explicit ack.
    const { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } = require('@nats-io/jetstream');
    const { nanos } = require('@nats-io/transport-node');
    const nc = await rawNats();
    const jsm = await jetstreamManager(nc);
    const spec = durableStream();
    await jsm.streams.add({ name: spec.name, subjects: spec.subjects, max_age: nanos(spec.maxAgeSeconds * 1000) });
    await jsm.consumers.add(spec.name, {
      durable_name: DURABLE_NAME,
      filter_subject: cfg.subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
    });
    const consumer = await jetstream(nc).consumers.get(spec.name, DURABLE_NAME);
    // nats.js's default pull (100 messages on their way at once), as a hand-wired service gets it.
    const messages = await consumer.consume();
    (async () => {
      for await (const m of messages) {
        const payload = decode(m.data);
        void payload.id;
        m.ack();
        onMessage();
      }
    })();
    close = async () => {
      messages.stop();
      await nc.close();
    };
  } else if (cfg.side === 'peer') {
    ({ close } = await peerServer(onMessage));
  }
  return {
    close,
    go,
    report,
  };
}

async function durableSend() {
  const payload = fixedJson(cfg.bytes);
  let publish;
  let close;
  if (cfg.side === 'bus' || cfg.side === 'bus-idem') {
    // No `jetstream` option: a persisted publish binds to the stream that captures the subject.
    const app = await busApp([]);
    publish = () => app.bus.publish(cfg.subject, payload, { persist: true });
    close = app.close;
  } else if (cfg.side === 'rawjs') {
    const { jetstream } = require('@nats-io/jetstream');
    const nc = await rawNats();
    const js = jetstream(nc);
    publish = () => js.publish(cfg.subject, encode(payload));
    close = () => nc.close();
  } else if (cfg.side === 'peer') {
    const peer = await peerClient();
    publish = () => peer.client.emit(cfg.subject, payload);
    close = peer.close;
  }
  return {
    close,
    go: async () => {
      const n = cfg.n;
      const window = cfg.window;
      const cpu0 = process.cpuUsage();
      const t0 = now();
      // `window` publishes on their way, then all their acks; every side gets the same pacing.
      for (let i = 0; i < n; i += window) {
        const acks = [];
        for (let j = i; j < Math.min(n, i + window); j++) acks.push(toPromise(publish()));
        await Promise.all(acks);
      }
      const cpu = process.cpuUsage(cpu0);
      return { type: 'sent', t0, ms: now() - t0, cpuUs: cpu.user + cpu.system };
    },
  };
}

// The peer: a NestJS JetStream transport from npm (@nestjs-plugins/nestjs-nats-jetstream-transport,
// on its own nats.js 2.x): an @EventPattern handler on a durable push consumer it creates, acked by
// hand after the handler (manualAck) as the bus does; events sent with ClientProxy.emit, which
// resolves with the stream's ack.
async function peerServer(onMessage) {
  const { Controller, Module } = require('@nestjs/common');
  const { NestFactory } = require('@nestjs/core');
  const { Ctx, EventPattern, Payload } = require('@nestjs/microservices');
  const { NatsJetStreamServer } = require('@nestjs-plugins/nestjs-nats-jetstream-transport');
  class PeerController {
    handle(payload, ctx) {
      void payload.id;
      onMessage();
      ctx.message.ack();
    }
  }
  const desc = Object.getOwnPropertyDescriptor(PeerController.prototype, 'handle');
  Payload()(PeerController.prototype, 'handle', 0);
  Ctx()(PeerController.prototype, 'handle', 1);
  EventPattern(cfg.subject)(PeerController.prototype, 'handle', desc);
  Controller()(PeerController);
  class PeerModule {}
  Module({ controllers: [PeerController] })(PeerModule);
  const spec = durableStream();
  const app = await NestFactory.createMicroservice(PeerModule, {
    strategy: new NatsJetStreamServer({
      connectionOptions: { servers: [cfg.natsUrl], name: `bench-peer-${cfg.role}` },
      consumerOptions: { durable: DURABLE_NAME, deliverTo: DURABLE_NAME, manualAck: true, ackPolicy: 'Explicit', deliverPolicy: 'All' },
      streamConfig: { name: spec.name, subjects: spec.subjects, max_age: spec.maxAgeSeconds * 1e9 },
    }),
    logger: NEST_LOG,
  });
  await app.listen();
  return { close: () => app.close() };
}

async function peerClient() {
  const { NatsJetStreamClientProxy } = require('@nestjs-plugins/nestjs-nats-jetstream-transport');
  const client = new NatsJetStreamClientProxy({ connectionOptions: { servers: [cfg.natsUrl], name: `bench-peer-${cfg.role}` } });
  await client.connect();
  return { client, close: () => client.close() };
}

// ---------------------------------------------------------------------------------------------
// Scenario 6: latency at a fixed offered load (open loop). The sender sends on a schedule, not as
// fast as it can, so that queueing shows; each message carries the time it was *due* (`t`), and
// latency is counted from then, so a sender that falls behind its schedule is charged for it.

/** p50 / p99 / p99.9 / max (ms) of a list of latencies. */
function percentiles(lat) {
  const s = Float64Array.from(lat).sort();
  const at = (q) => (s.length ? s[Math.min(s.length - 1, Math.floor(s.length * q))] : NaN);
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: s.length ? s[s.length - 1] : NaN, count: s.length };
}

/**
 * Calls `sendOne(i, due)` for i = 0..n-1 at `rate` per second from now, catching up in a burst when
 * a timer fires late (as a real producer's backlog would); resolves with the CPU it took, once all
 * returned promises settle.
 */
async function onSchedule(n, rate, sendOne) {
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const pending = [];
  let i = 0;
  while (i < n) {
    const elapsed = now() - t0;
    const due = Math.min(n, Math.floor((elapsed * rate) / 1000) + 1);
    for (; i < due; i++) {
      const p = sendOne(i, t0 + (i * 1000) / rate);
      if (p && typeof p.then === 'function') pending.push(p);
    }
    if (i < n) await sleep(Math.max(1, t0 + (i * 1000) / rate - now()));
  }
  await Promise.all(pending);
  const cpu = process.cpuUsage(cpu0);
  return { t0, ms: now() - t0, cpuUs: cpu.user + cpu.system };
}

/** A receiver that records each message's latency from its due time `t`; `go` arms a new round. */
function latencyRecorder(n) {
  let lat = [];
  let cpu0 = process.cpuUsage();
  const done = (incomplete) => {
    const c = process.cpuUsage(cpu0);
    return { type: 'done', count: lat.length, last: now(), cpuUs: c.user + c.system, ...percentiles(lat), incomplete };
  };
  return {
    onMessage: (t) => {
      lat.push(now() - t);
      if (lat.length === n) send(done(false));
    },
    go: () => {
      lat = [];
      cpu0 = process.cpuUsage();
      return { type: 'armed' };
    },
    report: () => done(true),
  };
}

async function openEventsRecv() {
  const { onMessage, go, report } = latencyRecorder(cfg.n);
  let close;
  if (cfg.side === 'bus') {
    ({ close } = await busApp([{ topic: cfg.subject, fn: (payload) => onMessage(payload.t) }]));
  } else {
    const nc = await rawNats();
    nc.subscribe(cfg.subject, {
      callback: (err, msg) => {
        if (err) throw err;
        onMessage(decode(msg.data).t);
      },
    });
    await nc.flush();
    close = () => nc.close();
  }
  return { close, go, report };
}

async function openEventsSend() {
  const base = fixedJson(cfg.bytes);
  let publish;
  let close;
  if (cfg.side === 'bus') {
    const app = await busApp([]);
    publish = (payload) => app.bus.publish(cfg.subject, payload);
    close = app.close;
  } else {
    const nc = await rawNats();
    publish = (payload) => nc.publish(cfg.subject, encode(payload));
    close = () => nc.close();
  }
  return {
    close,
    go: async () => ({ type: 'sent', ...(await onSchedule(cfg.n, cfg.rate, (i, t) => publish({ ...base, id: i, t }))) }),
  };
}

async function openRpcReq() {
  const base = fixedJson(cfg.bytes);
  let request;
  let close;
  if (cfg.side === 'bus') {
    const app = await busApp([]);
    request = (payload) => app.bus.rpcRequest(cfg.subject, payload, { timeout: 10_000 });
    close = app.close;
  } else {
    const nc = await rawNats();
    request = (payload) => nc.request(cfg.subject, encode(payload), { timeout: 10_000 }).then((m) => decode(m.data));
    close = () => nc.close();
  }
  return {
    close,
    go: async ({ n, rate }) => {
      const lat = new Float64Array(n);
      const sent = await onSchedule(n, rate, (i, t) =>
        request({ ...base, id: i, t }).then((reply) => {
          lat[i] = now() - t;
          if (reply.id !== i) throw new Error('wrong reply');
        }),
      );
      return { type: 'result', ...sent, ...percentiles(lat) };
    },
  };
}

async function openLargeRecv() {
  const { onMessage, go, report } = latencyRecorder(cfg.n);
  cfg.onGot = (payload) => onMessage(payload.t);
  const recv = await largeRecv();
  return { close: recv.close, go, report };
}

async function openLargeSend() {
  cfg.sizes = [cfg.bytes];
  const payload = largeJson(cfg.bytes);
  let publish;
  let close;
  if (cfg.side === 'bus') {
    const app = await busApp([]);
    publish = (p) => app.bus.publish(cfg.subject, p);
    close = app.close;
  } else {
    const nc = await rawNats();
    const redis = await rawRedis();
    publish = async (p) => {
      const json = JSON.stringify(p);
      const token = randomUUID();
      await redis.set(KEY_PREFIX + token, json, 'EX', 300);
      nc.publish(cfg.subject, Buffer.from(`{"token":"${token}","is_stored":true}`, 'utf8'));
    };
    close = async () => {
      await nc.close();
      redis.disconnect();
    };
  }
  // A shallow copy per message: the due time changes, the 2 MiB of edges are shared.
  return { close, go: async () => ({ type: 'sent', ...(await onSchedule(cfg.n, cfg.rate, (i, t) => publish({ ...payload, t }))) }) };
}

// ---------------------------------------------------------------------------------------------
// Scenario 7: scaling. A queue group member whose handler awaits 2 ms of simulated I/O, one message
// at a time; and bootstrap of an app with `count` @Subscribe topics (or durables), timed and weighed.

async function queueRecv() {
  let count = 0;
  let last = 0;
  const { close } = await busApp([
    {
      topic: cfg.subject,
      fn: async () => {
        await sleep(cfg.handlerMs);
        count++;
        last = now();
      },
      options: { queue: 'bench-queue', maxConcurrent: 1 },
    },
  ]);
  return {
    close,
    go: () => {
      count = 0;
      last = 0;
      return { type: 'armed' };
    },
    report: () => ({ type: 'progress', count, last }),
  };
}

/** Boots an app with `cfg.count` subscriptions (durable ones with `cfg.durable`); `ready` carries the cost. */
async function bootApp() {
  const rss0 = process.memoryUsage().rss;
  const handlers = Array.from({ length: cfg.count }, (_, i) => ({
    topic: `${cfg.subject}.${i}`,
    fn: () => undefined,
    options: cfg.durable ? { durable: `boot${i}` } : {},
  }));
  const extra = cfg.durable ? { jetstream: { streams: [{ name: cfg.stream, subjects: [`${cfg.subject}.>`], maxAgeSeconds: 3600 }] } } : {};
  const t0 = now();
  const { close } = await busApp(handlers, extra);
  const bootMs = now() - t0;
  // Settle what bootstrap left for the collector, so RSS is what the subscriptions hold.
  if (global.gc) global.gc();
  await sleep(200);
  const m = process.memoryUsage();
  return { close, boot: { bootMs, rssMiB: m.rss / 1048576, rssGrowthMiB: (m.rss - rss0) / 1048576, heapMiB: m.heapUsed / 1048576 } };
}

// ---------------------------------------------------------------------------------------------

const roles = {
  'events-recv': eventsRecv,
  'events-send': eventsSend,
  'rpc-resp': rpcResp,
  'rpc-req': rpcReq,
  'large-recv': largeRecv,
  'large-send': largeSend,
  'mem-recv': memRecv,
  'mem-send': memSend,
  'durable-recv': durableRecv,
  'durable-send': durableSend,
  'open-events-recv': openEventsRecv,
  'open-events-send': openEventsSend,
  'open-rpc-req': openRpcReq,
  'open-large-recv': openLargeRecv,
  'open-large-send': openLargeSend,
  'queue-recv': queueRecv,
  boot: bootApp,
};

async function main() {
  const role = await roles[cfg.role]();
  process.on('message', async (m) => {
    try {
      if (m.cmd === 'go') send(await role.go(m));
      else if (m.cmd === 'report') send(role.report());
      // CPU time so far, for scenarios that charge each end's CPU per message from outside (large).
      else if (m.cmd === 'cpu') send({ type: 'cpu', ...process.cpuUsage() });
      else if (m.cmd === 'stop') {
        await Promise.race([Promise.resolve(role.close && role.close()).catch(() => undefined), sleep(3000)]);
        process.exit(0);
      }
    } catch (err) {
      send({ type: 'error', message: String((err && err.stack) || err) });
    }
  });
  send({ type: 'ready', sizes: role.sizes, boot: role.boot });
}

main().catch((err) => {
  send({ type: 'error', message: String((err && err.stack) || err) });
  setTimeout(() => process.exit(1), 100);
});
