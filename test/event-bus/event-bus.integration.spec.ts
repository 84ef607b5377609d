import Redis from 'ioredis';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { sc } from '../harness/text-codec';
import {
  EventBus,
  InvalidMessageError,
  InvalidOptionsError,
  MessageContext,
  MessageStorageError,
  NoRespondersError,
  PayloadTooLargeError,
  RedisStorageManager,
  REDIS_CLIENT_DEFAULTS,
  RemoteHandlerError,
  RpcTimeoutError,
} from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, sha256, sleep, waitUntil, MiB } from '../harness/wait';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('EventBus against real nats-server and redis-server', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis; // an independent client, to look at what the bus wrote
  let raw: NatsConnection; // an independent NATS client, to see what crosses the wire
  const buses: EventBus[] = [];

  async function makeBus(keyPrefix = 'eventbus:', extra: Partial<ConstructorParameters<typeof EventBus>[0]> = {}) {
    const client = new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS });
    const storage = new RedisStorageManager(client, { keyPrefix, ttlSeconds: 300 });
    await storage.connect();
    const bus = new EventBus({ nats: { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 0 }, ...extra }, storage);
    await bus.connect();
    buses.push(bus);
    const close = bus.close.bind(bus);
    bus.close = async () => {
      await close();
      await storage.disconnect();
    };
    return bus;
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close()));
    await raw?.close();
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('delivers a small message byte-identical, not through storage', async () => {
    const bus = await makeBus();
    const payload = { request_id: 'r-1', message: 'héllo ✓', nested: { n: 1.5, list: [true, null] } };
    const got: Array<[unknown, MessageContext]> = [];
    await bus.subscribe('t.small', (p, ctx) => void got.push([p, ctx]));
    const wire: Uint8Array[] = [];
    raw.subscribe('t.small', { callback: (_e, m) => void wire.push(m.data) });
    await raw.flush();

    await bus.publish('t.small', payload);

    await waitUntil(() => got.length === 1 && wire.length === 1, 'small message at both subscribers');
    expect(Buffer.from(wire[0]).toString()).toBe(JSON.stringify(payload));
    expect(JSON.stringify(got[0][0])).toBe(JSON.stringify(payload));
    expect(got[0][1]).toMatchObject({ subject: 't.small', recovered: false });
  });

  it('offloads a 5 MiB message: the wire carries the envelope, Redis holds prefix+token with a TTL, the handler gets the same bytes', async () => {
    const bus = await makeBus();
    const payload = bigPayload(5 * MiB);
    const json = JSON.stringify(payload);
    expect(Buffer.byteLength(json)).toBeGreaterThan(5 * MiB);
    const got: Array<[unknown, MessageContext]> = [];
    await bus.subscribe('t.large', (p, ctx) => void got.push([p, ctx]));
    const wire: string[] = [];
    raw.subscribe('t.large', { callback: (_e, m) => void wire.push(sc.decode(m.data)) });
    await raw.flush();

    await bus.publish('t.large', payload);

    await waitUntil(() => got.length === 1 && wire.length === 1, 'large message at both subscribers');
    const envelope = JSON.parse(wire[0]);
    expect(Object.keys(envelope).sort()).toEqual(['is_stored', 'token']);
    expect(envelope.is_stored).toBe(true);
    expect(envelope.token).toMatch(UUID);
    expect(wire[0]).toBe(`{"token":"${envelope.token}","is_stored":true}`);

    const key = `eventbus:${envelope.token}`;
    const ttl = await redis.ttl(key);
    expect(ttl).toBeGreaterThan(290);
    expect(ttl).toBeLessThanOrEqual(300);
    const stored = await redis.getBuffer(key);
    expect(sha256(stored!)).toBe(sha256(json));

    expect(sha256(JSON.stringify(got[0][0]))).toBe(sha256(json));
    expect(got[0][1]).toMatchObject({ subject: 't.large', recovered: true, token: envelope.token });
    // Not deleted on recovery: other subscribers may still need it.
    expect(await redis.exists(key)).toBe(1);
  });

  it('understands a message stored and announced the way the Python services did (keyPrefix "")', async () => {
    const bus = await makeBus('');
    const got: unknown[] = [];
    await bus.subscribe('t.python', (p) => void got.push(p));
    const token = 'jUh2DjpY8Mke3evRtdqFej'; // shortuuid, 22 characters
    const body = JSON.stringify({ request_id: 'py-1', edges: Array.from({ length: 3 }, (_, i) => ({ id: i })) });
    await redis.set(token, body, 'EX', 300);
    // Python's json.dumps puts spaces after separators.
    raw.publish('t.python', sc.encode(`{"token": "${token}", "is_stored": true}`));

    await waitUntil(() => got.length === 1, 'python-style message recovered');
    expect(JSON.stringify(got[0])).toBe(body);
  });

  it('round-trips a request and a reply that are each over 1 MiB', async () => {
    const bus = await makeBus();
    const request = bigPayload(1.5 * MiB, 'req');
    const reply = bigPayload(2 * MiB, 'rep');
    const seen: MessageContext[] = [];
    await bus.subscribe('t.rpc.large', (p: typeof request, ctx) => {
      seen.push(ctx);
      expect(sha256(JSON.stringify(p))).toBe(sha256(JSON.stringify(request)));
      return reply;
    });
    const wire: string[] = [];
    raw.subscribe('t.rpc.large', { callback: (_e, m) => void wire.push(sc.decode(m.data)) });
    await raw.flush();

    const got = await bus.rpcRequest<typeof reply>('t.rpc.large', request, { timeout: 10_000 });

    expect(sha256(JSON.stringify(got))).toBe(sha256(JSON.stringify(reply)));
    expect(seen[0].recovered).toBe(true);
    expect(wire[0]).toMatch(/^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/);
  });

  it('fails with RpcTimeoutError when nobody answers in time, and sends the request once', async () => {
    const bus = await makeBus();
    let received = 0;
    raw.subscribe('t.rpc.silent', { callback: () => void received++ });
    await raw.flush();
    const started = Date.now();
    const err: any = await bus.rpcRequest('t.rpc.silent', { x: 1 }, { timeout: 400 }).catch((e: any) => e);
    expect(err).toBeInstanceOf(RpcTimeoutError);
    expect(err.code).toBe('RPC_TIMEOUT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
    await sleep(200);
    expect(received).toBe(1);
  });

  it('fails with NoRespondersError at once when there is no subscriber', async () => {
    const bus = await makeBus();
    const started = Date.now();
    const err: any = await bus.rpcRequest('t.rpc.nobody', { x: 1 }, { timeout: 10_000 }).catch((e: any) => e);
    expect(err).toBeInstanceOf(NoRespondersError);
    expect(err.code).toBe('NO_RESPONDERS');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('fails with RemoteHandlerError at once when the remote handler throws', async () => {
    const bus = await makeBus();
    await bus.subscribe('t.rpc.throws', async () => {
      throw new Error('edge 42 is unknown');
    });
    const started = Date.now();
    const err: any = await bus.rpcRequest('t.rpc.throws', { x: 1 }, { timeout: 10_000 }).catch((e: any) => e);
    expect(err).toBeInstanceOf(RemoteHandlerError);
    expect(err.code).toBe('REMOTE_HANDLER_ERROR');
    expect(err.remoteMessage).toBe('edge 42 is unknown');
    expect(err.remoteCode).toBe(500);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('answers with the NATS service-error headers, which a raw requester can read', async () => {
    const bus = await makeBus();
    await bus.subscribe('t.rpc.headers', () => {
      throw new Error('nope');
    });
    const msg = await raw.request('t.rpc.headers', sc.encode('{}'), { timeout: 5000 });
    expect(msg.headers?.get('Nats-Service-Error')).toBe('nope');
    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe('500');
  });

  it('keeps the subscription working after a body that is not JSON', async () => {
    const bus = await makeBus();
    const got: unknown[] = [];
    await bus.subscribe('t.badjson', (p) => void got.push(p));
    raw.publish('t.badjson', sc.encode('{not json'));
    raw.publish('t.badjson', new Uint8Array([0xff, 0xfe, 0x00]));
    raw.publish('t.badjson', sc.encode('{"ok":true}'));
    await waitUntil(() => got.length === 1, 'the valid message after the bad ones');
    await sleep(100);
    expect(got).toEqual([{ ok: true }]);
  });

  it('applies the rpcTimeoutMs rule to the per-call timeout: a fraction or zero is an InvalidOptionsError naming it', async () => {
    const bus = await makeBus();
    for (const timeout of [0.5, 0, -1]) {
      const err = await bus.rpcRequest('t.timeout.rule', {}, { timeout }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).message).toContain('timeout');
    }
  });

  it('answers a request whose body is not JSON with a typed error instead of a timeout', async () => {
    const bus = await makeBus();
    await bus.subscribe('t.badjson.rpc', () => 'never');
    const msg = await raw.request('t.badjson.rpc', sc.encode('nope'), { timeout: 5000 });
    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe('400');
  });

  it('reads nothing for a forged envelope: bad token shapes never reach Redis, and keys outside the prefix are never read', async () => {
    const bus = await makeBus('eventbus:');
    const outside = '0f8fad5b-d9cb-469f-a165-70867728950e';
    await redis.set(outside, '{"secret":true}');
    await redis.set('secret', '{"secret":true}');
    const got: unknown[] = [];
    await bus.subscribe('t.forged', (p) => void got.push(p));
    const statsBefore = await keyspaceStats();

    const forged = ['secret', '../secret', '*', 'eventbus:*', 'a\r\nFLUSHALL', 'x'.repeat(10_000), '\u00e9'.repeat(22)];
    for (const token of forged) raw.publish('t.forged', sc.encode(JSON.stringify({ token, is_stored: true })));
    raw.publish('t.forged', sc.encode(JSON.stringify({ token: 123, is_stored: true })));
    await raw.flush();
    await sleep(300);
    const statsAfterShapes = await keyspaceStats();
    // No GET at all for tokens of a foreign shape.
    expect(statsAfterShapes).toEqual(statsBefore);

    // A valid-shaped token is read under the prefix only: a miss, not the bare key.
    raw.publish('t.forged', sc.encode(JSON.stringify({ token: outside, is_stored: true })));
    raw.publish('t.forged', sc.encode('{"after":"forgeries"}'));
    await waitUntil(() => got.length === 1, 'the valid message after the forgeries');
    const statsAfter = await keyspaceStats();
    expect(statsAfter.hits).toBe(statsBefore.hits);
    expect(statsAfter.misses).toBe(statsBefore.misses + 1);
    expect(got).toEqual([{ after: 'forgeries' }]);
    expect(await redis.get('secret')).toBe('{"secret":true}');
    expect(await redis.get(outside)).toBe('{"secret":true}');
  });

  it('treats an object with extra fields as a plain message, not an envelope', async () => {
    const bus = await makeBus();
    const got: unknown[] = [];
    await bus.subscribe('t.notenvelope', (p) => void got.push(p));
    const body = { token: '0f8fad5b-d9cb-469f-a165-70867728950e', is_stored: true, extra: 1 };
    raw.publish('t.notenvelope', sc.encode(JSON.stringify(body)));
    await waitUntil(() => got.length === 1, 'message delivered as is');
    expect(got[0]).toEqual(body);
  });

  it('recovers one large message at two plain (non-queue) subscribers', async () => {
    const a = await makeBus();
    const b = await makeBus();
    const publisher = await makeBus();
    const payload = bigPayload(3 * MiB, 'fanout');
    const hashes: string[] = [];
    await a.subscribe('t.fanout', (p) => void hashes.push(sha256(JSON.stringify(p))));
    await b.subscribe('t.fanout', (p) => void hashes.push(sha256(JSON.stringify(p))));
    await publisher.publish('t.fanout', payload);
    await waitUntil(() => hashes.length === 2, 'both subscribers recovered the message');
    expect(hashes).toEqual([sha256(JSON.stringify(payload)), sha256(JSON.stringify(payload))]);
  });

  it('rejects payloads that are not JSON-encodable with InvalidMessageError', async () => {
    const bus = await makeBus();
    await expect(bus.publish('t.x', undefined)).rejects.toBeInstanceOf(InvalidMessageError);
    await expect(bus.publish('t.x', { n: BigInt(1) })).rejects.toBeInstanceOf(InvalidMessageError);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(bus.publish('t.x', circular)).rejects.toMatchObject({ code: 'INVALID_MESSAGE' });
  });

  it('rejects a large payload with PayloadTooLargeError when no storage is configured', async () => {
    const bus = new EventBus({ nats: { servers: nats.url } }, null);
    await bus.connect();
    buses.push(bus);
    await expect(bus.publish('t.x', bigPayload(2 * MiB))).rejects.toBeInstanceOf(PayloadTooLargeError);
  });

  it('rejects a largeMessageThreshold above what the server accepts, naming the option', async () => {
    const bus = new EventBus({ nats: { servers: nats.url }, largeMessageThreshold: 2 * MiB }, null);
    await expect(bus.connect()).rejects.toThrow(/largeMessageThreshold/);
    await bus.close();
  });

  async function keyspaceStats() {
    const info = await redis.info('stats');
    const num = (name: string) => Number(new RegExp(`${name}:(\\d+)`).exec(info)![1]);
    return { hits: num('keyspace_hits'), misses: num('keyspace_misses') };
  }
});

describe('EventBus under server faults', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let bus: EventBus;
  let storage: RedisStorageManager;
  let raw: NatsConnection;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    storage = new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }));
    await storage.connect();
    bus = new EventBus({ nats: { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 0 } }, storage);
    await bus.connect();
    raw = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });

  afterAll(async () => {
    await bus?.close();
    await storage?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('rejects a large publish with MessageStorageError while Redis is down, and publishes nothing', async () => {
    const wire: string[] = [];
    raw.subscribe('f.redisdown', { callback: (_e, m) => void wire.push(sc.decode(m.data)) });
    await raw.flush();
    await redisServer.stop();
    try {
      const started = Date.now();
      const err: any = await bus.publish('f.redisdown', bigPayload(2 * MiB)).catch((e: any) => e);
      expect(err).toBeInstanceOf(MessageStorageError);
      expect(err.code).toBe('MESSAGE_STORAGE_ERROR');
      expect(Date.now() - started).toBeLessThan(6000);
      await bus.rpcRequest('f.redisdown', bigPayload(2 * MiB), { timeout: 1000 }).then(
        () => fail('rpcRequest should reject'),
        (e) => expect(e).toBeInstanceOf(MessageStorageError),
      );
      await sleep(300);
      expect(wire).toEqual([]);
    } finally {
      await redisServer.start();
    }
    // ioredis reconnects by itself; large publishes work again.
    await waitUntil(
      async () =>
        bus.publish('f.redisdown', bigPayload(2 * MiB)).then(
          () => true,
          () => false,
        ),
      'Redis back',
      15_000,
    );
    await waitUntil(() => wire.length >= 1, 'the envelope after Redis came back');
  });

  it('logs and skips a message whose stored body is gone, and keeps going', async () => {
    const got: unknown[] = [];
    await bus.subscribe('f.expired', (p) => void got.push(p));
    raw.publish('f.expired', sc.encode('{"token":"9b2d6f1e-3c4a-4b5d-8e6f-7a8b9c0d1e2f","is_stored":true}'));
    raw.publish('f.expired', sc.encode('{"n":2}'));
    await waitUntil(() => got.length === 1, 'the message after the expired one');
    expect(got).toEqual([{ n: 2 }]);
  });

  it('reconnects after a NATS restart mid-stream; later messages arrive', async () => {
    const got = new Set<number>();
    await bus.subscribe('f.restart', (p: { n: number }) => void got.add(p.n));
    for (let n = 0; n < 20; n++) await bus.publish('f.restart', { n });
    await waitUntil(() => got.size === 20, 'messages before the restart');

    await nats.restart();

    // Publishes made while reconnecting are buffered by the client; keep publishing through the gap.
    for (let n = 20; n < 40; n++) {
      await bus.publish('f.restart', { n });
      await sleep(20);
    }
    await waitUntil(() => [...got].filter((n) => n >= 20).length >= 1, 'messages after the restart', 20_000);
    for (let n = 40; n < 60; n++) await bus.publish('f.restart', { n });
    await waitUntil(() => [...got].filter((n) => n >= 40).length === 20, 'every message published after reconnecting', 20_000);
  });

  it('closes within shutdownTimeoutMs when a handler never finishes', async () => {
    const stuck = new EventBus({ nats: { servers: nats.url }, shutdownTimeoutMs: 500 }, null);
    await stuck.connect();
    let started = false;
    await stuck.subscribe('f.stuck', () => {
      started = true;
      return new Promise(() => undefined);
    });
    await stuck.publish('f.stuck', {});
    await waitUntil(() => started, 'stuck handler started');
    const t0 = Date.now();
    await stuck.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    await expect(stuck.publish('f.stuck', {})).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
  });

  it('closes in bounded time while NATS is down, and stays closed when NATS comes back', async () => {
    const lonely = new EventBus({ nats: { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 0 }, shutdownTimeoutMs: 1000 }, null);
    await lonely.connect();
    await lonely.subscribe('f.lonely', () => undefined);
    await nats.stop();
    try {
      await lonely.publish('f.lonely', { buffered: true });
      const t0 = Date.now();
      await lonely.close();
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      await nats.start();
    }
    // nats.js may settle drain() while disconnected without closing; its reconnect loop would
    // then bring the "closed" bus back to life and keep the process running.
    await new Promise((r) => setTimeout(r, 1000));
    const conns = [...lonely.connections().values()];
    expect(conns).toHaveLength(2);
    for (const c of conns) {
      expect(c.isConnected).toBe(false);
      expect(c.state).toBe('closed');
      // No live nats.js connection behind it: a revived one would report its server.
      expect(c.server).toBeUndefined();
    }
  });
});
