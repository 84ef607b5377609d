import fc from 'fast-check';
import Redis from 'ioredis';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, isValidToken, REDIS_CLIENT_DEFAULTS, RedisStorageManager, RemoteHandlerError } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { sleep, waitUntil } from '../harness/wait';
import { captureLogs, LogCapture, pick, report, watchCrashes } from './reliability-helpers';

const PREFIX = 'bad:';
const RUNS = pick(150, 2_000);
const FLOOD_N = pick(5_000, 50_000);
const te = new TextEncoder();

// Keys a hostile envelope might try to reach. None may be read, overwritten or deleted.
const OUTSIDE_UUID = '0b6f1c2e-7d3a-4e5f-8a9b-1c2d3e4f5a6b';
const SENTINELS: Record<string, string> = {
  secret: 'top-secret',
  'other:secret': 'x',
  [OUTSIDE_UUID]: 'bare token key, outside the prefix',
  'bad:*': 'glob-looking key inside the prefix',
  'bad:../secret': 'path-looking key inside the prefix',
};

/** Tokens that must never become a Redis key read. */
const hostileToken = fc.oneof(
  fc.constantFrom<unknown>(
    null,
    '',
    '*',
    'bad:*',
    '../secret',
    '..\\secret',
    '/etc/passwd',
    'secret',
    'other:secret',
    `${OUTSIDE_UUID}\r\nDEL secret`,
    `${OUTSIDE_UUID}\nFLUSHALL`,
    `\r\nFLUSHALL\r\n`,
    `${OUTSIDE_UUID} `,
    ` ${OUTSIDE_UUID}`,
    `{${OUTSIDE_UUID}}`,
    'ｊUh2DjpY8Mke3evRtdqFej',
    'jUh2DjpY8Mke3evRtdqFe\u0000',
    '😀'.repeat(22),
    'x'.repeat(10_000),
    'a'.repeat(22) + '\n',
    [OUTSIDE_UUID],
    { token: OUTSIDE_UUID },
    0,
    true,
  ),
  fc.string({ maxLength: 64 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.uuid().map((u) => u + fc.sample(fc.constantFrom('\r\n', '\n', '*', '/..', ' ', '\u2028', '?', '['), 1)[0]),
  fc.array(fc.uuid(), { maxLength: 3 }),
  fc.integer(),
);
/** Tokens that are well formed but unknown: read inside the prefix, not found, logged. */
const unknownValidToken = fc.oneof(fc.uuid(), fc.stringMatching(/^[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{22}$/));

const envelopeLike = fc
  .record(
    {
      token: fc.oneof(hostileToken, unknownValidToken),
      is_stored: fc.oneof(fc.constant<unknown>(true), fc.constantFrom<unknown>('true', 1, false, null, [true], {})),
    },
    { requiredKeys: [] },
  )
  .chain((env) =>
    fc.oneof(
      fc.constant(env as Record<string, unknown>),
      fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }).map((extra) => ({ ...extra, ...env })),
    ),
  )
  .map((env) => te.encode(JSON.stringify(env)));

const deepJson = fc.tuple(fc.integer({ min: 1, max: 50_000 }), fc.constantFrom('array', 'object', 'envelope')).map(([depth, kind]) => {
  if (kind === 'array') return te.encode('['.repeat(depth) + ']'.repeat(depth));
  if (kind === 'object') return te.encode('{"a":'.repeat(depth) + '1' + '}'.repeat(depth));
  // An envelope whose token is itself deeply nested.
  return te.encode(`{"is_stored":true,"token":${'['.repeat(depth)}"${OUTSIDE_UUID}"${']'.repeat(depth)}}`);
});

const oddBodies = fc
  .constantFrom(
    '',
    'null',
    '[]',
    '{}',
    '""',
    '0',
    'true',
    '\uFEFF{}',
    '{"token":"x","is_stored":true',
    `{"token":"${OUTSIDE_UUID}","is_stored":true,"token":"secret"}`,
    `{"token":"secret","token":"${OUTSIDE_UUID}","is_stored":true}`,
    `{"token": "${OUTSIDE_UUID}\\r\\nDEL secret", "is_stored": true}`,
    `{"__proto__":{"is_stored":true},"token":"${OUTSIDE_UUID}"}`,
    `{"constructor":{"prototype":{"is_stored":true}},"token":"${OUTSIDE_UUID}","is_stored":true}`,
    '\u0000\u0000\u0000',
    'x'.repeat(10_000),
  )
  .map((s) => te.encode(s));

/**
 * How the bus must answer a request carrying `bytes`, worked out here without the codec: 400 for a
 * body that is not UTF-8 JSON or an envelope with a forged token, 404 for an envelope whose token
 * is well formed but stored nowhere, else the handler's reply.
 */
function expectedAnswer(bytes: Uint8Array): { status: number } | { reply: string } {
  let parsed: unknown;
  try {
    // fatal: invalid UTF-8 throws; ignoreBOM: a leading BOM stays in the text, where JSON refuses it.
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes));
  } catch {
    return { status: 400 };
  }
  if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
    const keys = Object.keys(parsed);
    const env = parsed as Record<string, unknown>;
    if (keys.length === 2 && keys.includes('token') && env.is_stored === true) return { status: isValidToken(env.token) ? 404 : 400 };
    if (keys.length === 1 && typeof env.__marker === 'number') return { reply: '"marker"' };
  }
  return { reply: '"ok"' };
}

const anyBadBody = fc.oneof(
  fc.uint8Array({ maxLength: 4096 }),
  fc.jsonValue({ maxDepth: 6 }).map((v) => te.encode(JSON.stringify(v))),
  envelopeLike,
  deepJson,
  oddBodies,
);

describe('reliability under bad input (property-based, fast-check)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let monitorClient: Redis;
  let raw: NatsConnection;
  let bus: EventBus;
  let storage: RedisStorageManager;
  let logs: LogCapture;
  let crashes: ReturnType<typeof watchCrashes>;
  const commands: string[][] = [];

  // Markers: the valid message sent after each bad one. Resolved by the handler.
  const markerWaiters = new Map<number, () => void>();
  let marker = 0;
  let badHandled = 0;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    for (const [k, v] of Object.entries(SENTINELS)) await redis.set(k, v);
    // monitor() opens a connection of its own; keep that one to close it.
    monitorClient = await new Redis(redisServer.url, { lazyConnect: true }).monitor();
    monitorClient.on('monitor', (_time: string, args: string[]) => commands.push(args));
    raw = await connect({ servers: nats.url });
    logs = captureLogs();
    crashes = watchCrashes();
    storage = new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: PREFIX });
    await storage.connect();
    bus = new EventBus({ nats: { servers: nats.url, name: 'bad-input' } }, storage);
    await bus.connect();
    const handler = (p: unknown) => {
      if (p && typeof p === 'object' && !Array.isArray(p) && typeof (p as any).__marker === 'number' && Object.keys(p).length === 1) {
        markerWaiters.get((p as any).__marker)?.();
        return 'marker';
      }
      badHandled++;
      return 'ok';
    };
    await bus.subscribe('rel.bad.in', handler);
    await bus.subscribe('rel.bad.rpc', handler);
    await bus.subscribe('rel.flood.x', () => undefined);
  });

  afterAll(async () => {
    await bus?.close();
    await storage?.disconnect();
    await raw?.close();
    monitorClient?.disconnect();
    redis?.disconnect();
    crashes?.stop();
    logs?.restore();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  /** Publish `bytes`, then a valid marker; resolve once the marker was handled. */
  async function sendThenValid(subject: string, bytes: Uint8Array): Promise<void> {
    const k = ++marker;
    const handled = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`valid message after bad input was not handled (marker ${k})`)), 5000);
      markerWaiters.set(k, () => {
        clearTimeout(t);
        markerWaiters.delete(k);
        resolve();
      });
    });
    raw.publish(subject, bytes);
    raw.publish(subject, te.encode(JSON.stringify({ __marker: k })));
    await handled;
  }

  /** Every key any client touched since `from` is under the prefix and has a valid token shape. */
  function keysTouched(from = 0): { keys: string[]; outside: string[][] } {
    const keyed = new Set([
      'get',
      'getbuffer',
      'set',
      'del',
      'unlink',
      'exists',
      'getdel',
      'expire',
      'ttl',
      'type',
      'keys',
      'scan',
      'flushall',
      'flushdb',
    ]);
    const keys: string[] = [];
    const outside: string[][] = [];
    for (const args of commands.slice(from)) {
      const cmd = String(args[0]).toLowerCase();
      if (['ping', 'info', 'client', 'select', 'hello', 'command', 'monitor', 'quit'].includes(cmd)) continue;
      if (!keyed.has(cmd)) {
        outside.push(args);
        continue;
      }
      const key = String(args[1]);
      keys.push(key);
      if (!key.startsWith(PREFIX) || !isValidToken(key.slice(PREFIX.length))) outside.push(args);
    }
    return { keys, outside };
  }

  async function sentinelsIntact(): Promise<boolean> {
    const before = commands.length;
    let intact = true;
    for (const [k, v] of Object.entries(SENTINELS)) if ((await redis.get(k)) !== v) intact = false;
    // MONITOR reports these GETs late; wait for them, so the next test's `from` starts after them
    // and they are never counted as reads made by the bus.
    const last = Object.keys(SENTINELS).pop();
    await waitUntil(
      () => commands.slice(before).some((c) => String(c[0]).toLowerCase() === 'get' && String(c[1]) === last),
      'MONITOR echoed the sentinel reads',
    );
    return intact;
  }

  it(
    'random bodies at a subscribed topic: no crash, nothing outside the prefix touched, the next valid message is handled',
    async () => {
      const from = commands.length;
      const started = Date.now();
      await fc.assert(
        fc.asyncProperty(anyBadBody, async (bytes) => {
          await sendThenValid('rel.bad.in', bytes);
          return crashes.errors.length === 0;
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
      await sleep(200); // let MONITOR catch up
      const { keys, outside } = keysTouched(from);
      report('badInput.bodies', {
        runs: RUNS,
        ms: Date.now() - started,
        handlerCalledForNonEnvelopeJson: badHandled,
        redisKeysRead: keys.length,
        keysOutsidePrefixOrShape: outside.length,
        droppedLogLines: logs.matching(/dropped message on "rel\.bad\.in"/).length,
        recoveryFailureLines: logs.matching(/could not recover message on "rel\.bad\.in"/).length,
      });
      expect(crashes.errors).toEqual([]);
      expect(outside).toEqual([]);
      expect(await sentinelsIntact()).toBe(true);
      // Log lines never carry the raw token of a forged envelope (no CR/LF injection into logs).
      expect(logs.lines.filter((l) => /[\r\n]/.test(l.message) && l.level !== 'log')).toEqual([]);
    },
    pick(120_000, 1_200_000),
  );

  it(
    'envelopes with every hostile token shape: only keys under the prefix with a valid token are ever read',
    async () => {
      const from = commands.length;
      await fc.assert(
        fc.asyncProperty(envelopeLike, async (bytes) => {
          await sendThenValid('rel.bad.in', bytes);
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
      // And the exact envelope shape with hostile tokens, which must be refused before any read.
      await fc.assert(
        fc.asyncProperty(hostileToken, async (token) => {
          await sendThenValid('rel.bad.in', te.encode(JSON.stringify({ token, is_stored: true })));
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
      await sleep(200);
      const { keys, outside } = keysTouched(from);
      report('badInput.envelopes', { runs: RUNS * 2, redisKeysRead: keys.length, keysOutsidePrefixOrShape: outside.length });
      expect(keys.length).toBeGreaterThan(0); // MONITOR saw the reads of valid-shaped unknown tokens
      expect(outside).toEqual([]);
      expect(await sentinelsIntact()).toBe(true);
      expect(crashes.errors).toEqual([]);
    },
    pick(120_000, 1_200_000),
  );

  it(
    'bad requests are answered with an error at once, never a hang',
    async () => {
      const statuses: Record<number, number> = {};
      let replies = 0;
      let maxMs = 0;
      /** Send `bytes` as a request; its answer must be the one `expectedAnswer` names. */
      const check = async (bytes: Uint8Array) => {
        const t0 = Date.now();
        let m: Awaited<ReturnType<NatsConnection['request']>>;
        try {
          m = await raw.request('rel.bad.rpc', bytes, { timeout: 3000 });
        } catch (err) {
          throw new Error(`request with bad input did not get an answer: ${(err as Error).message}`, { cause: err });
        }
        maxMs = Math.max(maxMs, Date.now() - t0);
        const expected = expectedAnswer(bytes);
        const code = m.headers?.get('Nats-Service-Error-Code');
        if ('status' in expected) {
          // The same status in a JSON body, for requesters that read no headers.
          expect({ code, body: JSON.parse(Buffer.from(m.data).toString()) }).toEqual({
            code: String(expected.status),
            body: { status: expected.status, error: expect.any(String) },
          });
          expect(m.headers?.get('Nats-Service-Error')).toBeTruthy();
          statuses[expected.status] = (statuses[expected.status] ?? 0) + 1;
        } else {
          expect({ code, body: Buffer.from(m.data).toString() }).toEqual({ code: undefined, body: expected.reply });
          replies++;
        }
      };
      // Each kind of answer at least once, whatever the random runs draw.
      await check(Uint8Array.of(0xff, 0xfe, 0x7b)); // not UTF-8
      await check(te.encode('{"token":')); // not JSON
      await check(te.encode(JSON.stringify({ token: '../secret', is_stored: true }))); // forged token
      await check(te.encode(JSON.stringify({ token: OUTSIDE_UUID, is_stored: true }))); // well formed, stored nowhere
      await check(te.encode(JSON.stringify({ token: OUTSIDE_UUID, is_stored: true, extra: 1 }))); // not an envelope: the handler's
      await fc.assert(fc.asyncProperty(anyBadBody, check), { numRuns: Math.ceil(RUNS / 2), endOnFailure: true });
      // Through the bus's own requester: a typed error carrying the status.
      const unknown = await bus.rpcRequest('rel.bad.rpc', { token: OUTSIDE_UUID, is_stored: true }, { timeout: 3000 }).catch((e) => e);
      const forged = await bus.rpcRequest('rel.bad.rpc', { token: 'secret', is_stored: true }, { timeout: 3000 }).catch((e) => e);
      report('badInput.requests', {
        runs: Math.ceil(RUNS / 2),
        errorReplies: statuses,
        normalReplies: replies,
        maxMs,
        typed: unknown?.constructor?.name,
      });
      expect(maxMs).toBeLessThan(3000);
      expect(statuses[400]).toBeGreaterThan(0);
      expect(statuses[404]).toBeGreaterThan(0);
      expect(replies).toBeGreaterThan(0);
      expect(unknown).toBeInstanceOf(RemoteHandlerError);
      expect(unknown).toMatchObject({ code: 'REMOTE_HANDLER_ERROR', remoteCode: 404, subject: 'rel.bad.rpc' });
      expect(forged).toBeInstanceOf(RemoteHandlerError);
      expect(forged).toMatchObject({ code: 'REMOTE_HANDLER_ERROR', remoteCode: 400, subject: 'rel.bad.rpc' });
      expect(crashes.errors).toEqual([]);
    },
    pick(120_000, 1_200_000),
  );

  it(
    'a flood of envelopes with unknown valid-shaped tokens does not hold up other subjects',
    async () => {
      const latencies: number[] = [];
      await bus.subscribe('rel.flood.other', (p: { at: number }) => void latencies.push(Date.now() - p.at));
      const from = commands.length;
      const OTHER = 200;
      let otherSent = 0;
      const started = Date.now();
      const tokens = fc.sample(unknownValidToken, Math.min(FLOOD_N, 5000));
      for (let i = 0; i < FLOOD_N; i++) {
        raw.publish('rel.flood.x', te.encode(`{"token":"${tokens[i % tokens.length]}","is_stored":true}`));
        if (i % Math.floor(FLOOD_N / OTHER) === 0 && otherSent < OTHER) {
          raw.publish('rel.flood.other', te.encode(JSON.stringify({ at: Date.now() })));
          otherSent++;
        }
        if (i % 100 === 99) await new Promise((r) => setImmediate(r));
      }
      await waitUntil(() => latencies.length === otherSent, `other subject: ${otherSent} messages`, 30_000);
      const floodSentMs = Date.now() - started;
      await waitUntil(() => GETs(from) >= FLOOD_N * 0.9, 'flood recoveries attempted', 60_000).catch(() => undefined);
      const sorted = [...latencies].sort((a, b) => a - b);
      report('badInput.flood', {
        floodEnvelopes: FLOOD_N,
        otherMessages: otherSent,
        otherReceived: latencies.length,
        otherLatencyP50Ms: sorted[Math.floor(sorted.length / 2)],
        otherLatencyP99Ms: sorted[Math.floor(sorted.length * 0.99)],
        otherLatencyMaxMs: sorted[sorted.length - 1],
        floodGETs: GETs(from),
        floodMs: Date.now() - started,
        floodSentMs,
      });
      expect(latencies.length).toBe(otherSent);
      expect(sorted[Math.floor(sorted.length * 0.99)]).toBeLessThan(1000);
      expect(keysTouched(from).outside).toEqual([]);
      expect(crashes.errors).toEqual([]);
    },
    pick(90_000, 900_000),
  );

  function GETs(from: number): number {
    let n = 0;
    for (const args of commands.slice(from)) if (String(args[0]).toLowerCase() === 'get') n++;
    return n;
  }
});
