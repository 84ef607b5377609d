import { randomBytes, randomUUID } from 'node:crypto';
import { connect, NatsConnection } from '@nats-io/transport-node';
import Redis from 'ioredis';
import {
  EventBus,
  MessageStorageManager,
  ObjectStoreStorageManager,
  REDIS_CLIENT_DEFAULTS,
  RedisStorageManager,
  StoredMessageEnvelope,
  withBodyCodec,
  BodyCodecOptions,
} from '../../lib';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, waitUntil } from '../harness/wait';

// Issue 32 against real servers: what the body codec stores in Redis, in the object store and in a
// custom store, that the envelope on NATS is unchanged, that a tampered, cut or swapped body is
// rejected with nothing delivered while the subscription keeps working, and key rotation.
const K1 = randomBytes(32);
const K2 = randomBytes(32);
const MARKER = 'SITE-REPORT-MARKER-0c41';
const MAGIC = Buffer.from([0, 0x45, 0x42, 0x43, 0x31]);

/** About `bytes` of a site report (the kind of body that gets stored), with a marker string in it. */
function siteReport(bytes: number, id: string) {
  const sites = Array.from({ length: Math.ceil(bytes / 110) }, (_, i) => ({
    site: `edge-${i}`,
    state: i % 7 ? 'up' : 'degraded',
    latencyMs: i % 89,
  }));
  return { id, marker: MARKER, sites };
}

/** A store of one's own that ignores StoreHints.token: bodies are encrypted without the token binding. */
class MapStore extends MessageStorageManager {
  static readonly shared = new Map<string, Buffer>();
  async storeMessage(body: Uint8Array): Promise<StoredMessageEnvelope> {
    const token = randomUUID();
    MapStore.shared.set(token, Buffer.from(body));
    return { token, is_stored: true };
  }
  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    return MapStore.shared.get(envelope.token)!;
  }
}

interface Backend {
  make(): MessageStorageManager;
  rawGet(token: string): Promise<Buffer>;
  rawPut(token: string, bytes: Buffer): Promise<void>;
}

describe('body codec on real servers (issue 32)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses: EventBus[] = [];
  const clients: Redis[] = [];

  const backends: Record<string, () => Backend> = {
    redis: () => ({
      make: () => {
        const client = new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS, lazyConnect: false });
        clients.push(client);
        return new RedisStorageManager(client, { keyPrefix: 'bc:' });
      },
      rawGet: async (token) => (await redis.getBuffer(`bc:${token}`))!,
      rawPut: async (token, bytes) => void (await redis.set(`bc:${token}`, bytes, 'EX', 300)),
    }),
    'object store': () => {
      const writer = new ObjectStoreStorageManager({ bucket: 'bodycodec' });
      let attached: Promise<void> | undefined;
      const ready = () => (attached ??= writer.attachConnection!({ connection: raw } as never));
      return {
        make: () => new ObjectStoreStorageManager({ bucket: 'bodycodec' }),
        // The manager without a codec reads and writes the stored bytes as they are.
        rawGet: async (token) => (await ready(), Buffer.from(await writer.recoverMessage({ token, is_stored: true }))),
        rawPut: async (token, bytes) => void (await ready(), await writer.storeMessage(bytes, { token })),
      };
    },
    'a custom store': () => ({
      make: () => new MapStore(),
      rawGet: async (token) => MapStore.shared.get(token)!,
      rawPut: async (token, bytes) => void MapStore.shared.set(token, bytes),
    }),
  };

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url });
    logs = captureLogs();
  });
  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.close()));
    clients.splice(0).forEach((c) => c.disconnect());
  });
  afterAll(async () => {
    logs.restore();
    redis?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  async function bus(backend: Backend, codec: BodyCodecOptions): Promise<EventBus> {
    const store = backend.make();
    await store.open?.();
    // Stored above 64 KiB whatever the test server's max_payload.
    const b = new EventBus({ nats: { servers: nats.url }, largeMessageThreshold: 64 * 1024 }, await withBodyCodec(store, codec));
    buses.push(b);
    await b.connect();
    return b;
  }

  /** Publish `payload` where nobody listens but a raw NATS subscriber: the envelope it was sent as. */
  async function storedEnvelope(publisher: EventBus, payload: unknown): Promise<{ wire: string; token: string }> {
    const subject = `hold.${randomUUID()}`;
    const sub = raw.subscribe(subject, { max: 1 });
    await raw.flush();
    await publisher.publish(subject, payload);
    for await (const m of sub) return { wire: m.string(), token: JSON.parse(m.string()).token };
    throw new Error('no envelope');
  }

  const encryptGzip = (current = 'k1', keys: Record<string, Buffer> = { k1: K1 }): BodyCodecOptions => ({
    encryption: { keys, currentKeyId: current },
    compression: 'gzip',
  });

  describe.each(Object.keys(backends))('%s', (kind) => {
    let backend: Backend;
    beforeAll(() => {
      backend = backends[kind]();
    });

    it('a 2 MiB report: the envelope on NATS is exactly {"token","is_stored":true}; the stored value has no plaintext; the subscriber gets the report', async () => {
      const publisher = await bus(backend, encryptGzip());
      const subscriber = await bus(backend, { encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
      const got: unknown[] = [];
      const subject = `bc.${kind.replace(/ /g, '-')}.report`;
      await subscriber.subscribe(subject, (p) => void got.push(p));
      const wire = raw.subscribe(subject, { max: 1 });
      await raw.flush();
      const report = siteReport(2 * MiB, 'r1');
      await publisher.publish(subject, report);
      let envelope = '';
      for await (const m of wire) envelope = m.string();
      expect(envelope.length).toBeLessThan(100);
      expect(envelope).toMatch(/^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/);
      const stored = await backend.rawGet(JSON.parse(envelope).token);
      expect(stored.subarray(0, 5)).toEqual(MAGIC);
      expect(stored.includes(MARKER)).toBe(false);
      expect(stored.byteLength).toBeLessThan(Buffer.byteLength(JSON.stringify(report)) / 4); // gzip kept
      await waitUntil(() => got.length === 1, 'the report');
      expect(got[0]).toEqual(report);
    });

    it.each([
      ['a flipped byte', async (token: string) => backend.rawPut(token, flip(await backend.rawGet(token)))],
      ['a truncated body', async (token: string) => backend.rawPut(token, (await backend.rawGet(token)).subarray(0, -20))],
      [
        'a body swapped in from another message (a custom store without honoursTokenHint delivers it)',
        async (token: string, other: string) => backend.rawPut(token, await backend.rawGet(other)),
      ],
    ])('%s is rejected: typed error logged, handler not called, and the next message is delivered', async (what, tamper) => {
      const publisher = await bus(backend, encryptGzip());
      const subscriber = await bus(backend, encryptGzip());
      const subject = `bc.${kind.replace(/ /g, '-')}.tamper`;
      const got: Array<{ id: string }> = [];
      await subscriber.subscribe(subject, (p) => void got.push(p as { id: string }));
      const victim = await storedEnvelope(publisher, siteReport(2 * MiB, 'victim'));
      const other = await storedEnvelope(publisher, siteReport(2 * MiB, 'other'));
      await tamper(victim.token, other.token);
      logs.clear();
      raw.publish(subject, victim.wire);
      // A custom store that ignores StoreHints.token gets unbound bodies: a swap there delivers the other body (documented).
      const swappedIntoCustom = what.includes('swapped') && kind === 'a custom store';
      if (swappedIntoCustom) await waitUntil(() => got.length === 1, 'the swapped body');
      else await waitUntil(() => logs.matching(new RegExp(victim.token)).length > 0, `the rejection of ${what}`);
      // The object store's own digest catches a cut body first; the codec catches the rest.
      const line = logs.matching(new RegExp(victim.token)).join('\n');
      if (!swappedIntoCustom) expect(line).toMatch(/was rejected: (it failed AES-256-GCM authentication|it is cut short)|is not whole/);
      await publisher.publish(subject, siteReport(2 * MiB, 'next'));
      await waitUntil(() => got.some((p) => p.id === 'next'), 'the next message');
      expect(got.map((p) => p.id)).toEqual(swappedIntoCustom ? ['other', 'next'] : ['next']);
    });
  });

  it('rotation: a body under the old key is read after rotating; a removed key is logged as UNKNOWN_ENCRYPTION_KEY naming it', async () => {
    const backend = backends.redis();
    const before = await bus(backend, encryptGzip('k1', { k1: K1 }));
    const rotated = await bus(backend, encryptGzip('k2', { k1: K1, k2: K2 }));
    const removed = await bus(backend, encryptGzip('k2', { k2: K2 }));
    const got: string[] = [];
    await rotated.subscribe('bc.rotate.rotated', (p) => void got.push((p as { id: string }).id));
    await removed.subscribe('bc.rotate.removed', (p) => void got.push(`removed:${(p as { id: string }).id}`));
    const old = await storedEnvelope(before, siteReport(2 * MiB, 'old-key'));
    expect((await backend.rawGet(old.token)).subarray(8, 10).toString()).toBe('k1');
    logs.clear();
    raw.publish('bc.rotate.rotated', old.wire);
    raw.publish('bc.rotate.removed', old.wire);
    await waitUntil(() => got.includes('old-key') && logs.matching(/k1/).length > 0, 'both outcomes');
    expect(logs.matching(new RegExp(old.token)).join('\n')).toMatch(
      /encrypted with key "k1", which is not among storage\.encryption\.keys/,
    );
    const fresh = await storedEnvelope(rotated, siteReport(2 * MiB, 'new-key'));
    expect((await backend.rawGet(fresh.token)).subarray(8, 10).toString()).toBe('k2');
    expect(got).toEqual(['old-key']);
  });

  it('a stored body from before the upgrade (plain JSON under a Python-style token) is still read by a bus with the codec', async () => {
    const subscriber = await bus(backends.redis(), encryptGzip());
    const got: unknown[] = [];
    await subscriber.subscribe('bc.legacy', (p) => void got.push(p));
    const token = 'jUh2DjpY8Mke3evRtdqFej';
    await redis.set(`bc:${token}`, JSON.stringify({ from: 'before the upgrade' }), 'EX', 60);
    raw.publish('bc.legacy', JSON.stringify({ token, is_stored: true }));
    await waitUntil(() => got.length === 1, 'the plain body');
    expect(got[0]).toEqual({ from: 'before the upgrade' });
  });
});

function flip(buf: Buffer): Buffer {
  const copy = Buffer.from(buf);
  copy[copy.byteLength >> 1] ^= 0x01;
  return copy;
}
