import { get } from 'node:http';
import fc from 'fast-check';
import Redis from 'ioredis';
import { connect, NatsConnection, Subscription } from '@nats-io/transport-node';
import {
  EventBus,
  EventBusError,
  EventBusErrorCode,
  InvalidMessageError,
  InvalidOptionsError,
  InvalidSubjectError,
  MessageContext,
  MessageStorageError,
  REDIS_CLIENT_DEFAULTS,
  RedisStorageManager,
  RemoteHandlerError,
  StoredMessageNotFoundError,
} from '../../lib';
import { freePort, NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { MiB, sleep } from '../harness/wait';
import { pick, watchCrashes } from '../reliability/reliability-helpers';

// Issue "hardening": the fuzz tests also generate topics, queue names, headers, invalid UTF-8 and thrown values.

const te = new TextEncoder();
// Strict, and keeping a BOM: the library hands JSON.parse the text as the bytes say (a BOM is not JSON whitespace).
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const KEY_PREFIX = `fuzz:${process.pid}:${Date.now()}:`;
const RUNS = pick(150, 1_500);
const TIMEOUT_MS = pick(60_000, 600_000);
const BIG_TEXT = 'x'.repeat(MiB + 64 * 1024); // over the default threshold (max_payload − 8 KiB): stored in Redis first

// ---------------------------------------------------------------------------------------------
// Models: what must be refused and what must be accepted (the zone between may go either way).
// ---------------------------------------------------------------------------------------------

const MAX_SUBJECT_BYTES = 3072;
const PLAIN_SUBJECT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// No UTF-8 form: the encoder would write U+FFFD, so two different strings would be one on the wire.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A topic NATS would misread, or a wildcard where the use allows none. */
function topicMustBeRefused(topic: unknown, use: 'publish' | 'subscribe'): boolean {
  if (typeof topic !== 'string' || topic === '') return true;
  // eslint-disable-next-line no-control-regex -- control characters are what this looks for
  if (/[\u0000-\u0020\u007f]/.test(topic) || LONE_SURROGATE.test(topic) || Buffer.byteLength(topic) > MAX_SUBJECT_BYTES) return true;
  const tokens = topic.split('.');
  return tokens.some((t, i) => t === '' || (use === 'publish' ? t === '*' || t === '>' : t === '>' && i !== tokens.length - 1));
}

const topicMustBeAccepted = (topic: unknown): boolean =>
  typeof topic === 'string' && PLAIN_SUBJECT.test(topic) && topic.length <= MAX_SUBJECT_BYTES;

/** A queue name NATS would misread; with its topic it must also fit one `SUB topic queue sid` line (3072 bytes together). */
function queueMustBeRefused(queue: unknown, topic: unknown = ''): boolean {
  if (queue === undefined) return false;
  return (
    typeof queue !== 'string' ||
    queue === '' ||
    // eslint-disable-next-line no-control-regex -- control characters are what this looks for
    /[\u0000-\u0020\u007f*>]/.test(queue) ||
    LONE_SURROGATE.test(queue) ||
    Buffer.byteLength(queue) + (typeof topic === 'string' ? Buffer.byteLength(topic) : 0) > MAX_SUBJECT_BYTES
  );
}

/**
 * Headers as the README allows them: header-token names, string values without CR or LF, without
 * leading or trailing whitespace (NATS trims it), well-formed Unicode.
 */
function headersAreValid(headers: unknown): boolean {
  if (!headers) return true;
  if (typeof headers !== 'object') return false;
  return Object.entries(headers).every(
    ([k, v]) => HEADER_TOKEN.test(k) && typeof v === 'string' && !/[\r\n]/.test(v) && v === v.trim() && !LONE_SURROGATE.test(v),
  );
}

/** What the handler must receive for a raw body: JSON.parse of valid UTF-8, unless it is (or looks like) an envelope. */
function expectedDelivery(bytes: Uint8Array): { deliver: true; value: unknown } | { deliver: false } {
  let value: unknown;
  try {
    value = JSON.parse(strictUtf8.decode(bytes));
  } catch {
    return { deliver: false };
  }
  const looksStored =
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    (value as Record<string, unknown>).is_stored === true &&
    Object.keys(value as object).length === 2 &&
    'token' in (value as object);
  return looksStored ? { deliver: false } : { deliver: true, value };
}

// ---------------------------------------------------------------------------------------------
// Arbitraries.
// ---------------------------------------------------------------------------------------------

/** Any UTF-16 code unit, lone surrogates included (unit 'binary' never yields one). */
const utf16Unit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));

/** The pieces topics and queue names are built from: tokens, dots, wildcards, whitespace, control and protocol text. */
const subjectPiece = fc.oneof(
  { weight: 8, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,6}$/) },
  { weight: 5, arbitrary: fc.constant('.') },
  { weight: 2, arbitrary: fc.constantFrom('*', '>', '*.', '.>', 'a*', '>b', '**') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      ' ',
      '\r',
      '\n',
      '\r\n',
      '\t',
      '\u0000',
      '\u001b',
      '\u007f',
      '\u0085',
      '\u00a0',
      '\u2028',
      '\u3000',
      '\ufeff',
    ),
  },
  { weight: 2, arbitrary: fc.constantFrom('ü', '日本', '😀', '\u200b', ':', '$', '%', '/', '"', '\\', '#', '{', '}', '+') },
  { weight: 1, arbitrary: fc.constantFrom('\r\nPUB evil 2\r\nhi\r\n', ' _INBOX.stolen 5', '\r\nUNSUB 1\r\n', '\r\nCONNECT {}\r\n') },
);
const biasedSubject = fc.array(subjectPiece, { minLength: 1, maxLength: 12 }).map((p) => p.join(''));

/** Strings around the 3072-byte limit, with one- to four-byte characters, with and without dots. */
const longSubject = fc
  .tuple(fc.integer({ min: MAX_SUBJECT_BYTES - 8, max: MAX_SUBJECT_BYTES + 8 }), fc.constantFrom('a', 'é', '日', '😀'), fc.boolean())
  .map(([bytes, ch, dotted]) => {
    const s = ch.repeat(Math.floor(bytes / Buffer.byteLength(ch)));
    return dotted ? s.replace(/(.{7})./gu, '$1.').replace(/\.$/, 'z') : s;
  });

/** Anything but a string, including values whose String() throws. */
const oddValue = fc
  .oneof(
    fc.anything({ maxDepth: 2, withNullPrototype: true, withBoxedValues: true, withBigInt: true, withMap: true, withSet: true }),
    fc.constantFrom<unknown>(
      null,
      undefined,
      42,
      NaN,
      true,
      [],
      ['a', 'b'],
      {},
      Symbol('topic'),
      Object.create(null),
      { toString: null },
      { toString: () => 'ok.topic' },
      {
        toString() {
          throw new Error('toString refused');
        },
      },
    ),
  )
  .filter((v) => typeof v !== 'string');

const stringTopic = fc.oneof(
  { weight: 2, arbitrary: fc.string() },
  { weight: 2, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 1, arbitrary: fc.string({ unit: utf16Unit, maxLength: 8 }) },
  { weight: 8, arbitrary: biasedSubject },
  { weight: 2, arbitrary: longSubject },
  { weight: 1, arbitrary: fc.constant('x'.repeat(100_000)) },
);

const stringQueue = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,10}$/) },
  { weight: 2, arbitrary: fc.string() },
  { weight: 1, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 3, arbitrary: biasedSubject },
  { weight: 2, arbitrary: longSubject },
);

/** Topic and queue for `subscribe` where at least one of them is not a string. */
const oddTopicOrQueue = fc.oneof(
  fc.tuple(oddValue, fc.oneof(stringQueue, oddValue)),
  fc.tuple(
    fc.oneof(fc.constant('fuzz.odd'), stringTopic),
    oddValue.filter((q) => q !== undefined),
  ),
);

const headerName = fc.oneof(
  { weight: 6, arbitrary: fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/) },
  { weight: 2, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      'X Bad',
      'X:Bad',
      'X\r\nInjected: 1',
      'NATS/1.0',
      'Nats-Service-Error-Code',
      'x-a',
      'X-A',
      '__proto__',
      'ü',
    ),
  },
);
const headerValue = fc.oneof(
  { weight: 6, arbitrary: fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$/) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: utf16Unit, maxLength: 4 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      ' padded ',
      '\tx',
      'a\rb',
      'a\nb',
      '\r\n',
      'x: y',
      'a\u0000b',
      'tab\tinside',
      'ü✓😀',
      '\ud800',
      'v'.repeat(5000),
    ),
  },
  { weight: 2, arbitrary: fc.anything({ maxDepth: 1 }) },
);
const headersArb = fc.oneof(
  { weight: 8, arbitrary: fc.dictionary(headerName, headerValue, { maxKeys: 4 }) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 1 }) },
);

const invalidUtf8 = fc.constantFrom(
  [0x80], // lone continuation bytes
  [0xbf],
  [0x80, 0x80, 0x80],
  [0xc0, 0xaf], // overlong "/"
  [0xc1, 0xbf],
  [0xe0, 0x80, 0xaf],
  [0xf0, 0x80, 0x80, 0xaf],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xed, 0xa0, 0x80], // UTF-16 surrogates
  [0xed, 0xbf, 0xbf],
  [0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80],
  [0xc3], // truncated sequences
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
  [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
  [0xf5, 0x80, 0x80, 0x80],
  [0xfe],
  [0xff, 0xfe],
);
const jsonInner = (s: string) => JSON.stringify(s).slice(1, -1);
const concatBytes = (...parts: Array<Uint8Array | readonly number[]>) => Uint8Array.from(parts.flatMap((p) => [...p]));
/** A JSON string literal that is valid except for one bad UTF-8 sequence inside it. */
const badUtf8InString = fc
  .tuple(fc.string({ unit: 'binary', maxLength: 10 }), invalidUtf8, fc.string({ unit: 'binary', maxLength: 10 }), fc.boolean())
  .map(([a, bad, b, inObject]) => {
    const open = inObject ? `{"k":"${jsonInner(a)}` : `"${jsonInner(a)}`;
    const close = inObject ? `${jsonInner(b)}"}` : `${jsonInner(b)}"`;
    return concatBytes(te.encode(open), bad, te.encode(close));
  });
/** Valid JSON with a bad sequence spliced in anywhere. */
const badUtf8Anywhere = fc.tuple(fc.jsonValue({ maxDepth: 2 }), invalidUtf8, fc.nat()).map(([v, bad, at]) => {
  const bytes = te.encode(JSON.stringify(v) ?? 'null');
  const i = at % (bytes.length + 1);
  return concatBytes(bytes.subarray(0, i), bad, bytes.subarray(i));
});
const validJson = fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }).map((v) => te.encode(JSON.stringify(v) ?? 'null'));
const rawBody = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 512 }) },
  { weight: 3, arbitrary: badUtf8InString },
  { weight: 2, arbitrary: badUtf8Anywhere },
  { weight: 3, arbitrary: validJson },
  { weight: 1, arbitrary: validJson.map((b) => concatBytes([0xef, 0xbb, 0xbf], b)) }, // BOM
);

/** A value to throw, built fresh per run (some cannot be built once and reused), printed by its label. */
interface ThrownRecipe {
  label: string;
  make(): unknown;
}
const recipe = (label: string, make: () => unknown): ThrownRecipe => ({ label, make, [fc.toStringMethod]: () => label }) as ThrownRecipe;
const refuse = () => {
  throw new Error('refused');
};
const errorWith = (props: PropertyDescriptorMap) => Object.defineProperties(new Error('base'), props);
const NASTY_THROWN: ThrownRecipe[] = [
  recipe('undefined', () => undefined),
  recipe('null', () => null),
  recipe('Symbol', () => Symbol('thrown\r\n')),
  recipe('BigInt', () => 10n ** 30n),
  recipe('Object.create(null)', () => Object.create(null)),
  recipe('throwing toString', () => ({ toString: refuse })),
  recipe('throwing toString and toJSON', () => ({ toString: refuse, toJSON: refuse })),
  recipe('throwing Symbol.toPrimitive', () => ({ [Symbol.toPrimitive]: refuse, toJSON: refuse })),
  recipe('toString returning an object', () => ({ toString: () => ({}), valueOf: () => ({}) })),
  recipe('cyclic object', () => {
    const o: Record<string, unknown> = { toString: null };
    o.self = o;
    return o;
  }),
  recipe('throwing getter "message" (not an Error)', () => Object.defineProperty({}, 'message', { get: refuse })),
  recipe('Error with throwing getter "message"', () => errorWith({ message: { get: refuse } })),
  recipe('Error with throwing getter "stack"', () => errorWith({ stack: { get: refuse } })),
  recipe('Error with numeric message', () => errorWith({ message: { value: 42 } })),
  recipe('Error with object message', () => errorWith({ message: { value: { a: 1 } } })),
  recipe('Error with symbol message', () => errorWith({ message: { value: Symbol('message') } })),
  recipe('Error with undefined message', () => errorWith({ message: { value: undefined } })),
  recipe('Error with CR/LF/control message', () => new Error('line one\r\nline two\u0000\u0007\u001b[31m')),
  recipe('Error with a 100k message', () => new Error('m'.repeat(100_000))),
  recipe('frozen Error', () => Object.freeze(new Error('frozen'))),
  recipe('AggregateError', () => new AggregateError([new Error('a'), 'b'], 'many')),
  recipe('Error with cyclic cause', () => {
    const e = new Error('cyclic');
    e.cause = e;
    return e;
  }),
  recipe('library error', () => new InvalidMessageError('bad input')),
  recipe('library error, empty message', () => new MessageStorageError('')),
  recipe('StoredMessageNotFoundError', () => new StoredMessageNotFoundError('tok')),
  recipe('revoked Proxy', () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    return proxy;
  }),
  recipe('Proxy throwing on every trap', () => new Proxy({}, { get: refuse, getPrototypeOf: refuse, has: refuse, ownKeys: refuse })),
  recipe('a function', () => () => undefined),
  recipe('CR/LF string', () => 'first\r\nNats-Service-Error-Code: 200\r\n\r\n'),
  recipe('control-char string', () => '\u0000\u0001\u001f\u007f'),
  recipe('empty string', () => ''),
  recipe('100k string', () => 's'.repeat(100_000)),
];
const byLabel = (label: string) => NASTY_THROWN.find((r) => r.label === label)!;
const thrownArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_THROWN) },
  {
    weight: 2,
    arbitrary: fc
      .anything({
        maxDepth: 2,
        withNullPrototype: true,
        withBoxedValues: true,
        withBigInt: true,
        withMap: true,
        withSet: true,
        withDate: true,
      })
      .map((v) => recipe(`anything: ${fc.stringify(v)}`, () => v)),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary' }).map((s) => recipe(`string ${JSON.stringify(s)}`, () => s)) },
);

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Calls `op`, which must return a promise and never throw; its result or rejection. */
async function settle<T>(what: string, op: () => Promise<T>): Promise<Outcome<T>> {
  let pending: Promise<T>;
  try {
    pending = op();
  } catch (err) {
    throw new Error(`${what} threw synchronously instead of rejecting: ${safeText(err)}`, { cause: err });
  }
  expect(pending).toBeInstanceOf(Promise);
  return pending.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error }),
  );
}

/** One of the library's error classes with a known code, never a raw Error or TypeError. */
function expectLibraryError(err: unknown): asserts err is EventBusError {
  if (!(err instanceof EventBusError)) throw new Error(`expected an EventBusError, got ${safeText(err)}`);
  expect(Object.values(EventBusErrorCode)).toContain(err.code);
}

function safeText(v: unknown): string {
  try {
    return v instanceof Error ? `${v.constructor.name}: ${v.message}` : fc.stringify(v);
  } catch {
    return typeof v;
  }
}

/** Values keyed by run number, awaited with a timeout whose timer is always cleared. */
class Mailbox<T> {
  private readonly got = new Map<number, T[]>();
  private readonly waiters = new Map<number, (v: T) => void>();

  put(key: number, value: T): void {
    const list = this.got.get(key) ?? [];
    list.push(value);
    this.got.set(key, list);
    this.waiters.get(key)?.(value);
  }

  count(key: number): number {
    return this.got.get(key)?.length ?? 0;
  }

  keys(): number[] {
    return [...this.got.keys()];
  }

  take(key: number, what: string, ms = 3000): Promise<T> {
    const first = this.got.get(key)?.[0];
    if (first !== undefined) return Promise.resolve(first);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.set(key, (v) => {
        clearTimeout(timer);
        this.waiters.delete(key);
        resolve(v);
      });
    });
  }
}

/** The subject of a message that a subscription on `topic` receives: each wildcard token made literal. */
const concreteSubject = (topic: string) =>
  topic
    .split('.')
    .map((t) => (t === '*' || t === '>' ? 'w' : t))
    .join('.');

describe('fuzz: topics, queue names, headers, invalid UTF-8 and thrown values (fast-check, real servers)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let storage: RedisStorageManager;
  let bus: EventBus;
  let raw: NatsConnection;
  let logs: LogCapture;
  let crashes: ReturnType<typeof watchCrashes>;
  let monitorPort: number;
  let run = 0;

  beforeAll(async () => {
    monitorPort = await freePort();
    [nats, redisServer] = await Promise.all([
      NatsServer.start({ jetstream: false, args: ['-m', String(monitorPort)] }),
      RedisServer.start(),
    ]);
    logs = captureLogs(); // handlers fail on purpose hundreds of times; keep the output readable
    redis = new Redis(redisServer.url);
    storage = new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: KEY_PREFIX });
    await storage.connect();
    bus = new EventBus({ nats: { servers: nats.url, name: 'fuzz' } }, storage);
    await bus.connect();
    raw = await connect({ servers: nats.url, name: 'fuzz-raw' });
  });

  afterAll(async () => {
    await bus?.close();
    await storage?.disconnect();
    await raw?.close();
    redis?.disconnect();
    logs?.restore();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  beforeEach(() => {
    crashes = watchCrashes();
    logs.clear();
  });

  afterEach(() => crashes.stop());

  /** No unhandled rejection or uncaught exception so far (after letting pending ones surface). */
  async function expectNoCrashes(): Promise<void> {
    await sleep(50);
    expect(crashes.errors.map(safeText)).toEqual([]);
  }

  /** A known-good publish reaches a subscriber on `consumer`: the producer and that consumer connection still work. */
  async function expectBusStillDelivers(consumer?: string): Promise<void> {
    const box = new Mailbox<unknown>();
    const sub = await bus.subscribe('fuzz.known.good', (p: { n: number }) => box.put(p.n, p), { consumer });
    try {
      const n = ++run;
      await bus.publish('fuzz.known.good', { n });
      expect(await box.take(n, 'the known-good publish')).toEqual({ n });
    } finally {
      await sub.unsubscribe();
    }
  }

  /** The subscriptions the server holds for the connection named `name` (monitoring endpoint, no keep-alive socket). */
  function serverSubscriptions(name: string): Promise<Array<{ subject: string; qgroup?: string }>> {
    return new Promise((resolve, reject) => {
      const req = get({ host: '127.0.0.1', port: monitorPort, path: '/connz?subs=detail&limit=1024', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          try {
            const conns: Array<{ name?: string; subscriptions_list_detail?: Array<{ subject: string; qgroup?: string }> }> =
              JSON.parse(body).connections ?? [];
            resolve(conns.filter((c) => c.name === name).flatMap((c) => c.subscriptions_list_detail ?? []));
          } catch (err) {
            reject(err);
          }
        });
      });
      req.on('error', reject);
    });
  }

  /**
   * Publish and request on generated topics. A raw catch-all on `>` sees every subject on the server (and answers
   * requests, so rpcRequest does not time out): a valid topic must arrive on exactly that subject, nothing else may.
   */
  async function fuzzTopics(topics: fc.Arbitrary<unknown>, examples: Array<[unknown, 'publish' | 'rpc']>) {
    type Seen = { subject: string; body: unknown };
    const seen = new Mailbox<Seen>();
    const spyNc = await connect({ servers: nats.url, name: 'fuzz-spy' });
    const spy: Subscription = spyNc.subscribe('>', {
      callback: (_err, m) => {
        let body: { fuzzRun?: unknown };
        try {
          body = m.json();
        } catch {
          return;
        }
        if (typeof body?.fuzzRun !== 'number') return; // replies and other traffic
        seen.put(body.fuzzRun, { subject: m.subject, body });
        if (m.reply) m.respond(te.encode(JSON.stringify({ echo: body.fuzzRun })));
      },
    });
    await spyNc.flush();
    const sent = new Set<number>();
    const stats = { accepted: 0, refused: 0 };
    try {
      await fc.assert(
        fc.asyncProperty(topics, fc.constantFrom<'publish' | 'rpc'>('publish', 'rpc'), async (topic, via) => {
          const n = ++run;
          const payload = { fuzzRun: n, topic: typeof topic === 'string' ? topic : null };
          const t = topic as string;
          const outcome = await settle<unknown>(via, () =>
            via === 'publish' ? bus.publish(t, payload) : bus.rpcRequest(t, payload, { timeout: 200 }),
          );
          if (!outcome.ok) {
            stats.refused++;
            expectLibraryError(outcome.error);
            expect(outcome.error).toBeInstanceOf(InvalidSubjectError);
            expect(outcome.error.code).toBe('INVALID_SUBJECT');
            expect(topicMustBeAccepted(topic)).toBe(false);
            return;
          }
          stats.accepted++;
          sent.add(n);
          expect(topicMustBeRefused(topic, 'publish')).toBe(false);
          if (via === 'rpc') expect(outcome.value).toEqual({ echo: n });
          // No subject injection: it arrived on exactly that subject, with exactly that payload.
          expect(await seen.take(n, `the ${via} on ${JSON.stringify(topic)}`)).toEqual({ subject: topic, body: payload });
          // And the bus's own subscriber on exactly that topic gets it, under that subject.
          const box = new Mailbox<{ p: unknown; subject: string }>();
          const sub = await bus.subscribe(t, (p: { fuzzRun: number }, ctx: MessageContext) =>
            box.put(p.fuzzRun, { p, subject: ctx.subject }),
          );
          try {
            const m = ++run;
            sent.add(m);
            await bus.publish(t, { fuzzRun: m, topic: t });
            expect(await box.take(m, `the bus subscriber on ${JSON.stringify(topic)}`)).toEqual({
              p: { fuzzRun: m, topic: t },
              subject: t,
            });
            expect((await seen.take(m, 'the catch-all')).subject).toBe(t);
          } finally {
            await sub.unsubscribe();
          }
        }),
        { numRuns: RUNS * 2, examples },
      );
      await spyNc.flush();
      await sleep(100);
      // Nothing arrived that was not published on purpose, and nothing twice.
      expect(seen.keys().filter((k) => !sent.has(k))).toEqual([]);
      expect(seen.keys().filter((k) => seen.count(k) !== 1)).toEqual([]);
    } finally {
      spy.unsubscribe();
      await spyNc.close();
    }
    await expectBusStillDelivers();
    await expectNoCrashes();
    return stats;
  }

  it(
    'topics (any string): publish and rpcRequest refuse bad ones with InvalidSubjectError; a valid one goes exactly where it says',
    async () => {
      const stats = await fuzzTopics(stringTopic, [
        ['a\r\nPUB evil 2\r\nhi', 'publish'],
        ['orders _INBOX.stolen', 'rpc'],
        ['ü.日本.😀', 'publish'],
        ['a'.repeat(MAX_SUBJECT_BYTES), 'rpc'],
        // Lone surrogates: each would reach the wire as U+FFFD, the same subject for all of them.
        ['orders.\ud800', 'publish'],
        ['orders.\udc00', 'rpc'],
      ]);
      expect(stats.accepted).toBeGreaterThan(10);
      expect(stats.refused).toBeGreaterThan(10);
    },
    TIMEOUT_MS,
  );

  it(
    'topics (not strings): publish and rpcRequest reject with InvalidSubjectError, even when String() of the value throws',
    async () => {
      const stats = await fuzzTopics(oddValue, [
        [{ toString: null }, 'publish'],
        [Object.create(null), 'rpc'],
        [Symbol('topic'), 'publish'],
      ]);
      expect(stats.accepted).toBe(0);
    },
    TIMEOUT_MS,
  );

  /**
   * Subscribe with generated topics and queue names on a consumer connection of its own (if one subscription
   * broke it, the other tests still run); after each, a known-good subscription on it still receives.
   */
  async function fuzzSubscribe(pairs: fc.Arbitrary<[unknown, unknown]>, consumer: string, examples: Array<[[unknown, unknown]]>) {
    const good = new Mailbox<unknown>();
    const goodSub = await bus.subscribe('fuzz.sub.good', (p: { n: number }) => good.put(p.n, p), { consumer });
    const stats = { accepted: 0, refused: 0 };
    try {
      await fc.assert(
        fc.asyncProperty(pairs, async ([topic, queue]) => {
          const box = new Mailbox<string>();
          const handler = (p: { fuzzRun: number }, ctx: MessageContext) => box.put(p.fuzzRun, ctx.subject);
          const outcome = await settle('subscribe', () => bus.subscribe(topic as string, handler, { queue: queue as string, consumer }));
          if (!outcome.ok) {
            stats.refused++;
            expectLibraryError(outcome.error);
            if (!(outcome.error instanceof InvalidSubjectError)) expect(outcome.error).toBeInstanceOf(InvalidOptionsError);
            expect(
              topicMustBeAccepted(topic) && (queue === undefined || (topicMustBeAccepted(queue) && !queueMustBeRefused(queue, topic))),
            ).toBe(false);
          } else {
            stats.accepted++;
            expect(topicMustBeRefused(topic, 'subscribe') || queueMustBeRefused(queue, topic)).toBe(false);
            try {
              // The server holds exactly that subject and queue group (not a re-encoded or truncated one).
              const held = await serverSubscriptions(`fuzz:${consumer}`);
              expect(held.map((h) => ({ subject: h.subject, queue: h.qgroup || undefined }))).toContainEqual({ subject: topic, queue });
              // The subscription is live: a message on a subject it covers reaches its handler.
              const subject = concreteSubject(topic as string);
              const n = ++run;
              await bus.publish(subject, { fuzzRun: n });
              expect(await box.take(n, `delivery on ${JSON.stringify(subject)}`)).toBe(subject);
            } finally {
              await outcome.value.unsubscribe();
            }
          }
          // The consumer connection still serves the known-good subscription.
          const n = ++run;
          await bus.publish('fuzz.sub.good', { n });
          await good.take(n, 'the known-good subscription');
        }),
        // No shrinking: a failure may leave the consumer connection broken, and every shrunk input would fail too.
        { numRuns: RUNS * 2, examples, endOnFailure: true },
      );
    } finally {
      await goodSub.unsubscribe();
    }
    expect(bus.subscriptionStats().filter((s) => s.consumer === consumer)).toEqual([]);
    await expectBusStillDelivers(consumer);
    await expectNoCrashes();
    return stats;
  }

  it(
    'subscribe (string topics and queue names): resolves, or rejects with InvalidSubjectError; the consumer keeps serving',
    async () => {
      const stats = await fuzzSubscribe(fc.tuple(fc.oneof(stringTopic, biasedSubject), stringQueue), 'fuzz-subscribe-strings', [
        [['alerts.*.raised', 'my group']],
        [['alerts', 'q*']],
        [['a.>.b', undefined]],
        // Each within 3072 bytes, but together over the server's 4 KiB max_control_line (`SUB topic queue sid`).
        [['a'.repeat(2100), 'q'.repeat(2100)]],
        // Lone surrogates reach the server as U+FFFD: "\ud800" and "\udc00" would be one queue group.
        [['jobs', '\ud800']],
      ]);
      expect(stats.accepted).toBeGreaterThan(10);
      expect(stats.refused).toBeGreaterThan(10);
    },
    TIMEOUT_MS,
  );

  it(
    'subscribe (topic or queue not a string): rejects with InvalidSubjectError, even when String() of the value throws',
    async () => {
      const stats = await fuzzSubscribe(oddTopicOrQueue, 'fuzz-subscribe-odd', [
        [[{ toString: null }, undefined]],
        [['fuzz.odd', Object.create(null)]],
        [[42, 'q']],
      ]);
      expect(stats.accepted).toBe(0);
    },
    TIMEOUT_MS,
  );

  it(
    'headers: accepted ones arrive exactly; refused ones are EventBusErrors and leave no Redis key behind',
    async () => {
      type Got = { headers: MessageContext['headers']; recovered: boolean; size: number };
      const got = new Mailbox<Got>();
      const record = (p: { fuzzRun: number; text?: string }, ctx: MessageContext) =>
        got.put(p.fuzzRun, { headers: ctx.headers, recovered: ctx.recovered, size: p.text?.length ?? 0 });
      const subs = [
        await bus.subscribe('fuzz.headers', record),
        await bus.subscribe('fuzz.headers.rpc', (p: { fuzzRun: number; text?: string }, ctx) => (record(p, ctx), 'ok')),
      ];
      const keyCount = async () => (await redis.keys(`${KEY_PREFIX}*`)).length;
      const stats = { accepted: 0, refused: 0, big: 0 };
      try {
        await fc.assert(
          fc.asyncProperty(headersArb, fc.boolean(), fc.constantFrom<'publish' | 'rpc'>('publish', 'rpc'), async (headers, big, via) => {
            const n = ++run;
            const payload = big ? { fuzzRun: n, text: BIG_TEXT } : { fuzzRun: n };
            const opts = { headers: headers as Record<string, string> };
            const keysBefore = await keyCount();
            const outcome = await settle<unknown>(via, () =>
              via === 'publish'
                ? bus.publish('fuzz.headers', payload, opts)
                : bus.rpcRequest('fuzz.headers.rpc', payload, { ...opts, timeout: 5000 }),
            );
            if (!outcome.ok) {
              stats.refused++;
              expectLibraryError(outcome.error);
              expect(headersAreValid(headers)).toBe(false);
              // Refused before anything was stored.
              expect(await keyCount()).toBe(keysBefore);
              return;
            }
            stats.accepted++;
            if (big) stats.big++;
            expect(headersAreValid(headers)).toBe(true);
            if (via === 'rpc') expect(outcome.value).toBe('ok');
            const arrived = await got.take(n, 'the message with headers');
            expect(arrived.recovered).toBe(big);
            expect(arrived.size).toBe(big ? BIG_TEXT.length : 0);
            const sent = headers ? Object.entries(headers as object) : [];
            for (const [name, value] of sent) expect({ name, value: arrived.headers?.get(name) }).toEqual({ name, value });
          }),
          {
            numRuns: RUNS,
            examples: [
              [{ 'X-Bad': 'a\r\nb' }, true, 'publish'],
              [{ 'bad name': 'v' }, true, 'rpc'],
              [{ 'X-Retry': 3 }, true, 'publish'],
              [{ 'X-Ok': 'v', 'x-ok': 'w' }, true, 'rpc'],
              // Accepted as valid, so they must arrive as sent: not trimmed, not turned into U+FFFD.
              [{ 'X-Padded': ' padded ' }, false, 'publish'],
              [{ 'X-Lone': 'a\ud800' }, false, 'publish'],
            ],
          },
        );
      } finally {
        await Promise.all(subs.map((s) => s.unsubscribe()));
      }
      expect(stats.accepted).toBeGreaterThan(10);
      expect(stats.refused).toBeGreaterThan(10);
      expect(stats.big).toBeGreaterThan(0);
      await expectBusStillDelivers();
      await expectNoCrashes();
    },
    TIMEOUT_MS,
  );

  it(
    'invalid UTF-8: the handler gets exactly JSON.parse of valid UTF-8 JSON, a bad request is answered at once with 400',
    async () => {
      const got = new Mailbox<unknown>();
      let current = 0;
      const markers = new Mailbox<true>();
      const subs = [
        await bus.subscribe('fuzz.utf8', (p: unknown) => {
          if (p && typeof p === 'object' && typeof (p as { fuzzMarker?: unknown }).fuzzMarker === 'number') {
            markers.put((p as { fuzzMarker: number }).fuzzMarker, true);
          } else got.put(current, p);
        }),
        await bus.subscribe('fuzz.utf8.rpc', (p: unknown) => p),
      ];
      const stats = { delivered: 0, dropped: 0 };
      try {
        await fc.assert(
          fc.asyncProperty(rawBody, async (bytes) => {
            const expected = expectedDelivery(bytes);
            const n = ++run;
            current = n;
            // The raw body, then a marker behind it on the same connection: once the marker is handled, so was the body.
            raw.publish('fuzz.utf8', bytes);
            raw.publish('fuzz.utf8', te.encode(JSON.stringify({ fuzzMarker: n })));
            await markers.take(n, 'the marker behind the raw body');
            if (expected.deliver) {
              stats.delivered++;
              expect(got.count(n)).toBe(1);
              expect(await got.take(n, 'the valid body')).toEqual(expected.value);
            } else {
              stats.dropped++;
              expect(got.count(n)).toBe(0);
            }
            const t0 = Date.now();
            const reply = await raw.request('fuzz.utf8.rpc', bytes, { timeout: 2000 });
            expect(Date.now() - t0).toBeLessThan(1000);
            const code = reply.headers?.get('Nats-Service-Error-Code');
            if (expected.deliver) {
              expect(code ?? '').toBe('');
              expect(JSON.parse(strictUtf8.decode(reply.data))).toEqual(expected.value);
            } else {
              // An envelope-shaped body is looked up (404 when unknown); everything else is the caller's fault.
              expect(['400', '404']).toContain(code);
              if (code === '404') expect(JSON.parse(strictUtf8.decode(bytes))).toHaveProperty('is_stored', true);
            }
          }),
          {
            numRuns: RUNS * 2,
            examples: [
              [Uint8Array.from([0x22, 0xc0, 0xaf, 0x22])], // overlong "/"
              [Uint8Array.from([0x22, 0xed, 0xa0, 0x80, 0x22])], // surrogate
              [Uint8Array.from([0x22, 0xe2, 0x82, 0x22])], // truncated
              [Uint8Array.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])], // BOM + {}
              [te.encode('"\\ud800"')], // a lone surrogate written as an escape is valid JSON
            ],
          },
        );
        // The subscription keeps working afterwards.
        const n = ++run;
        current = n;
        raw.publish('fuzz.utf8', te.encode('{"after":"fuzz ✓"}'));
        expect(await got.take(n, 'a valid body after the fuzzing')).toEqual({ after: 'fuzz ✓' });
      } finally {
        await Promise.all(subs.map((s) => s.unsubscribe()));
      }
      expect(stats.delivered).toBeGreaterThan(10);
      expect(stats.dropped).toBeGreaterThan(10);
      await expectNoCrashes();
    },
    TIMEOUT_MS,
  );

  it(
    'thrown values: every request to a handler that throws (or rejects with) anything fails at once with RemoteHandlerError',
    async () => {
      let thrower: () => unknown = () => undefined;
      const sub = await bus.subscribe('fuzz.throws', () => thrower());
      try {
        await fc.assert(
          fc.asyncProperty(thrownArb, fc.constantFrom<'throw' | 'reject'>('throw', 'reject'), async (thrown, how) => {
            thrower =
              how === 'throw'
                ? () => {
                    throw thrown.make();
                  }
                : () => Promise.reject(thrown.make());
            const t0 = Date.now();
            const outcome = await settle('rpcRequest', () => bus.rpcRequest('fuzz.throws', { n: ++run }, { timeout: 2000 }));
            const ms = Date.now() - t0;
            expect(outcome.ok).toBe(false);
            if (outcome.ok) return;
            expectLibraryError(outcome.error);
            expect(outcome.error.code).toBe('REMOTE_HANDLER_ERROR');
            expect(outcome.error).toBeInstanceOf(RemoteHandlerError);
            expect(ms).toBeLessThan(1000);
            const remote = outcome.error as RemoteHandlerError;
            // The description travels in a header: one line, no control characters, bounded.
            // eslint-disable-next-line no-control-regex -- control characters are what this looks for
            expect(remote.remoteMessage).not.toMatch(/[\u0000-\u001f\u007f]/);
            expect(remote.remoteMessage.length).toBeLessThanOrEqual(1024);
            expect([400, 404, 500, 503]).toContain(remote.remoteCode);
          }),
          {
            numRuns: RUNS * 2,
            examples: [
              [byLabel('Error with numeric message'), 'throw'],
              [byLabel('Error with throwing getter "stack"'), 'reject'],
              [byLabel('revoked Proxy'), 'throw'],
            ],
          },
        );
      } finally {
        await sub.unsubscribe();
      }
      await expectBusStillDelivers();
      await expectNoCrashes();
    },
    TIMEOUT_MS,
  );
});
