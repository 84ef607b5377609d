import Redis from 'ioredis';
import { connect, NatsConnection } from '@nats-io/transport-node';
import {
  EventBus,
  EventBusError,
  InMemoryStorageManager,
  MessageStorageError,
  NoRespondersError,
  NotConnectedError,
  PayloadTooLargeError,
  RemoteHandlerError,
  RpcTimeoutError,
  StoredMessageEnvelope,
} from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { MiB, sleep, waitUntil } from '../harness/wait';

// Issue 13, items 8, 9 and 11, against real servers: rpcRequest's timeout is end to end, every
// rejection is one of our classes, and what a failed operation stored does not stay behind.
describe('hardening: deadlines, typed errors, no orphan keys', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let raw: NatsConnection;
  const buses = new TestBuses();
  let prefixes = 0;

  // Each bus has a key prefix of its own unless told to share one (a receiver reads its sender's keys).
  async function makeBus(opts: { keyPrefix?: string } = {}) {
    const keyPrefix = opts.keyPrefix ?? `dl${++prefixes}:`;
    const { bus, storage } = await buses.withRedis(nats.url, redisServer.url, keyPrefix);
    return { bus, storage, keys: () => redis.keys(`${keyPrefix}*`) };
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await buses.closeAll();
    redis?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  // Redis answers nothing (writes and reads) for `ms`: a stalled store, not a dead one.
  const pauseRedis = (ms: number) => redis.call('CLIENT', 'PAUSE', String(ms), 'ALL');

  it('rpcRequest times out at its own timeout while Redis stalls the store, and the late-stored body is deleted (items 8, 11)', async () => {
    const { bus, keys } = await makeBus();
    const sub = raw.subscribe('dl.store', { callback: (_e, m) => void m.respond('"never reached"') });
    await raw.flush();
    await pauseRedis(1500);
    const started = Date.now();
    const err = await bus.rpcRequest('dl.store', { text: 'x'.repeat(2 * MiB) }, { timeout: 200 }).catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(RpcTimeoutError);
    expect((err as RpcTimeoutError).timeoutMs).toBe(200);
    // Not the storage's 5 s operation timeout, not the pause: the caller's 200 ms.
    expect(elapsed).toBeLessThan(1000);
    // The SET lands when the pause ends; nobody will read that body, so it is deleted.
    await sleep(1600);
    await waitUntil(async () => (await keys()).length === 0, 'the late-stored request body deleted', 3000);
    sub.unsubscribe();
  });

  it('rpcRequest times out at its own timeout while Redis stalls the recovery of a large reply (item 8)', async () => {
    const { bus, storage } = await makeBus();
    // A stored reply that exists; the responder stalls Redis just before answering with its envelope.
    const envelope: StoredMessageEnvelope = await storage.storeMessage(Buffer.from(JSON.stringify({ text: 'y'.repeat(2 * MiB) })));
    const sub = raw.subscribe('dl.recover', {
      callback: (_e, m) => {
        void pauseRedis(1500).then(() => m.respond(JSON.stringify(envelope)));
      },
    });
    await raw.flush();
    const started = Date.now();
    const err = await bus.rpcRequest('dl.recover', { q: 1 }, { timeout: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcTimeoutError);
    expect(Date.now() - started).toBeLessThan(1200);
    sub.unsubscribe();
    await sleep(1600);
  });

  it('a request waiting when close() runs fails at once with NotConnectedError, not RpcTimeoutError (item 8)', async () => {
    const { bus } = await makeBus();
    // A responder that never answers.
    const sub = raw.subscribe('dl.silent', { callback: () => undefined });
    await raw.flush();
    const pending = bus.rpcRequest('dl.silent', { q: 1 }, { timeout: 20_000 }).catch((e: unknown) => e);
    await sleep(50);
    const started = Date.now();
    await bus.close();
    const err = await pending;
    expect(err).toBeInstanceOf(NotConnectedError);
    expect((err as NotConnectedError).code).toBe('NOT_CONNECTED');
    expect(Date.now() - started).toBeLessThan(3000);
    sub.unsubscribe();
  });

  it('a large rpcRequest that gets NoRespondersError leaves no key behind (item 11)', async () => {
    const { bus, keys } = await makeBus();
    const err = await bus.rpcRequest('dl.nobody', { text: 'x'.repeat(2 * MiB) }, { timeout: 2000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoRespondersError);
    await waitUntil(async () => (await keys()).length === 0, 'the request body deleted', 3000);
  });

  it('close() during large publishes sends them before it drains; none is rejected and no key is orphaned (item 11)', async () => {
    const { bus, keys } = await makeBus();
    const { bus: receiver } = await makeBus({ keyPrefix: `dl${prefixes}:` });
    const got: number[] = [];
    await receiver.subscribe('dl.closing', (p: { i: number }) => void got.push(p.i));
    const publishes = [0, 1, 2, 3, 4].map((i) =>
      bus.publish('dl.closing', { i, text: 'z'.repeat(2 * MiB) }).then(
        () => 'sent',
        (e: unknown) => e,
      ),
    );
    await bus.close();
    expect(await Promise.all(publishes)).toEqual(['sent', 'sent', 'sent', 'sent', 'sent']);
    await waitUntil(() => got.length === 5, 'all five large publishes delivered');
    expect(got.sort()).toEqual([0, 1, 2, 3, 4]);
    // Each key is a body that was published: five, no more.
    expect((await keys()).length).toBe(5);
  });

  it('headers that push a small body over max_payload offload it instead of a raw nats.js error (item 9)', async () => {
    const { bus } = await makeBus();
    const got: Array<{ len: number; header?: string }> = [];
    await bus.subscribe(
      'dl.headers',
      (p: { text: string }, ctx) => void got.push({ len: p.text.length, header: ctx.headers?.get('X-Big') }),
    );
    const bigHeader = 'h'.repeat(64 * 1024);
    // 1 MiB minus 16 KiB: under the threshold alone, over max_payload with the header.
    const text = 'b'.repeat(MiB - 16 * 1024);
    await bus.publish('dl.headers', { text }, { headers: { 'X-Big': bigHeader } });
    await waitUntil(() => got.length === 1, 'the message with a large header');
    expect(got[0]).toEqual({ len: text.length, header: bigHeader });
  });

  it('headers that leave no room under max_payload are a PayloadTooLargeError, and nothing is stored (item 9)', async () => {
    const { bus, keys } = await makeBus();
    const err = await bus
      .publish('dl.headers', { text: 'x'.repeat(2 * MiB) }, { headers: { 'X-Huge': 'h'.repeat(MiB) } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PayloadTooLargeError);
    expect((err as PayloadTooLargeError).code).toBe('PAYLOAD_TOO_LARGE');
    expect((err as Error).message).toMatch(/headers take/);
    expect(await keys()).toEqual([]);
    // Small body, huge header: nats.js would refuse it; the caller gets our class with nats.js's error as cause.
    const small = await bus.publish('dl.headers', { n: 1 }, { headers: { 'X-Huge': 'h'.repeat(MiB + 10) } }).catch((e: unknown) => e);
    expect(small).toBeInstanceOf(PayloadTooLargeError);
  });

  it("a custom storage's untyped throw reaches the caller as MessageStorageError with the original as cause (item 9)", async () => {
    class Throwing extends InMemoryStorageManager {
      async recoverMessage(): Promise<Uint8Array> {
        throw 'disk on fire';
      }
    }
    const store = new Throwing();
    const bus = new EventBus({ nats: { servers: nats.url } }, store);
    await bus.connect();
    buses.track(bus);
    const envelope = await store.storeMessage(Buffer.from('{"a":1}'));
    const sub = raw.subscribe('dl.custom', { callback: (_e, m) => void m.respond(JSON.stringify(envelope)) });
    await raw.flush();
    const err = await bus.rpcRequest('dl.custom', { q: 1 }, { timeout: 2000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect(err).toBeInstanceOf(EventBusError);
    expect((err as MessageStorageError).cause).toBe('disk on fire');
    sub.unsubscribe();
  });

  it('a custom storage that returns a token receivers would reject fails the publish at once, naming it; nothing is published', async () => {
    class BadTokens extends InMemoryStorageManager {
      async storeMessage(): Promise<StoredMessageEnvelope> {
        return { token: 'order-42', is_stored: true };
      }
    }
    const bus = new EventBus({ nats: { servers: nats.url } }, new BadTokens());
    await bus.connect();
    buses.track(bus);
    const seen: string[] = [];
    const sub = raw.subscribe('dl.badtoken', { callback: (_e, m) => void seen.push(m.string()) });
    await raw.flush();
    const err = await bus.publish('dl.badtoken', { text: 'x'.repeat(2 * MiB) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as Error).message).toMatch(/"order-42".*UUID/);
    await raw.flush();
    await sleep(100);
    expect(seen).toEqual([]);
    sub.unsubscribe();
  });

  it('a responder that cannot decode or recover a request answers at once with the documented remoteCode: 400, 404, 503', async () => {
    class FailingRecover extends InMemoryStorageManager {
      async recoverMessage(): Promise<Uint8Array> {
        throw new MessageStorageError('store unreachable');
      }
    }
    const { bus } = await makeBus();
    const failing = new EventBus({ nats: { servers: nats.url } }, new FailingRecover());
    await failing.connect();
    buses.track(failing);
    await bus.subscribe('dl.codes', () => 'ok');
    await failing.subscribe('dl.codes.storage', () => 'ok');
    const codeOf = async (subject: string, body: Uint8Array | string) => {
      const reply = await raw.request(subject, body, { timeout: 2000 });
      return reply.headers?.get('Nats-Service-Error-Code');
    };
    const unknownToken = JSON.stringify({ token: '0b3c6a52-3d6e-4a8e-9f3a-7d1c2b4e5f60', is_stored: true });
    expect(await codeOf('dl.codes', new Uint8Array([0xff, 0xfe, 0xc3]))).toBe('400');
    expect(await codeOf('dl.codes', unknownToken)).toBe('404');
    expect(await codeOf('dl.codes.storage', unknownToken)).toBe('503');
    // Through rpcRequest, the same codes arrive as RemoteHandlerError.remoteCode.
    const { bus: requester } = await makeBus();
    const viaBus = await requester.rpcRequest('dl.codes', 'not an envelope', { timeout: 2000 });
    expect(viaBus).toBe('ok');
    const forgedSub = raw.subscribe('dl.codes.relay', {
      callback: (_e, m) =>
        void raw.request('dl.codes', unknownToken, { timeout: 2000 }).then((r) => m.respond(r.data, { headers: r.headers })),
    });
    await raw.flush();
    const err = await requester.rpcRequest('dl.codes.relay', 1, { timeout: 2000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteHandlerError);
    expect((err as RemoteHandlerError).remoteCode).toBe(404);
    forgedSub.unsubscribe();
  });
});
