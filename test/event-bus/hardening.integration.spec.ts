import Redis from 'ioredis';
import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, EventBusModule, InvalidOptionsError, InvalidSubjectError, RemoteHandlerError, Subscribe } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { watchCrashes } from '../reliability/reliability-helpers';
import { TestBuses } from '../harness/buses';
import { MiB, sleep, waitUntil } from '../harness/wait';

// Issue 13, items 2, 3, 6 and 7, against real servers: what careless or hostile input must not do.
describe('hardening: subjects, headers, thrown values, timer limits', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let raw: NatsConnection;
  const buses = new TestBuses();

  async function makeBus(redisUrl = redisServer.url) {
    return (await buses.withRedis(nats.url, redisUrl, 'hard:', { nats: { reconnectTimeWait: 100, reconnectJitter: 0 } })).bus;
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await buses.closeAll();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('refuses topics NATS would misread, before the wire; the connection and other subscriptions keep working', async () => {
    const bus = await makeBus();
    const orders: unknown[] = [];
    await bus.subscribe('orders', (p) => void orders.push(p));
    const bad = ['orders evil', 'orders\r\nPUB x 1', 'a\tb', '', 'foo..bar', '.foo', 'foo.', 'x'.repeat(5000), 'orders.*', 'orders.>'];
    for (const topic of bad) {
      const err = await bus.publish(topic, { n: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidSubjectError);
      expect((err as InvalidSubjectError).code).toBe('INVALID_SUBJECT');
      const rpcErr = await bus.rpcRequest(topic, { n: 1 }, { timeout: 500 }).catch((e: unknown) => e);
      expect(rpcErr).toBeInstanceOf(InvalidSubjectError);
    }
    for (const topic of [{} as unknown as string, 42 as unknown as string]) {
      expect(await bus.publish(topic, 1).catch((e: unknown) => e)).toBeInstanceOf(InvalidSubjectError);
    }
    // The producer connection is still up and delivers.
    await bus.publish('orders', { n: 2 });
    await waitUntil(() => orders.length === 1, 'the good publish');
    await sleep(100);
    expect(orders).toEqual([{ n: 2 }]);
  });

  it('refuses bad subscribe topics and queue names; the consumer connection keeps serving the others', async () => {
    const bus = await makeBus();
    const got: unknown[] = [];
    await bus.subscribe('alerts', (p) => void got.push(p));
    for (const [topic, queue] of [
      ['alerts high', undefined],
      ['alerts', 'my group'],
      ['alerts', 'q*'],
      ['foo..bar', undefined],
      ['a.>.b', undefined],
      ['y'.repeat(5000), undefined],
    ] as Array<[string, string | undefined]>) {
      const err = await bus.subscribe(topic, () => undefined, { queue }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidSubjectError);
    }
    // Wildcards where subscribing allows them.
    const wild: string[] = [];
    await bus.subscribe('alerts.*.raised', (_p, ctx) => void wild.push(ctx.subject));
    await bus.subscribe('alerts.>', (_p, ctx) => void wild.push(ctx.subject));
    await bus.publish('alerts', { n: 1 });
    await bus.publish('alerts.disk.raised', { n: 2 });
    await waitUntil(() => got.length === 1 && wild.length === 2, 'deliveries after the refused subscriptions');
    expect(wild.sort()).toEqual(['alerts.disk.raised', 'alerts.disk.raised']);
  });

  it('fails bootstrap for a bad @Subscribe, naming the method', async () => {
    @Injectable()
    class BadHandlers {
      @Subscribe('edge list')
      onList() {}
    }
    @Module({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url }, health: { enabled: false } })],
      providers: [BadHandlers],
    })
    class BadModule {}
    const moduleRef = await Test.createTestingModule({ imports: [BadModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const err = await app.init().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidSubjectError);
    expect((err as Error).message).toContain('BadHandlers.onList');
    await app.close().catch(() => undefined);
  });

  it('refuses a non-string header before storing, with Redis down, and leaves no unhandled rejection', async () => {
    const down = await RedisServer.start();
    const bus = await makeBus(down.url);
    await down.stop();
    const crashes = watchCrashes();
    try {
      const err = await bus
        .publish('hard.headers', { text: 'x'.repeat(1.2 * MiB) }, { headers: { 'X-Retry': 3 as unknown as string } })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toContain('headers.X-Retry');
      for (const headers of [{ 'X-Bad': 'a\r\nb' }, { 'bad name': 'v' }] as Array<Record<string, string>>) {
        expect(await bus.publish('hard.headers', { n: 1 }, { headers }).catch((e: unknown) => e)).toBeInstanceOf(InvalidOptionsError);
      }
      await sleep(300);
      expect(crashes.errors).toEqual([]);
    } finally {
      crashes.stop();
      await down.dispose();
    }
  });

  it('answers every throw at once with RemoteHandlerError, whatever was thrown', async () => {
    const bus = await makeBus();
    const throws: unknown[] = [new Error('bad\rthing'), Object.create(null), 'plain string', 42, new Error('line one\nline two\u0007')];
    let i = 0;
    await bus.subscribe('hard.throws', () => {
      throw throws[i++];
    });
    for (let n = 0; n < throws.length; n++) {
      const t0 = Date.now();
      const err = await bus.rpcRequest('hard.throws', { n }, { timeout: 5000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteHandlerError);
      expect(Date.now() - t0).toBeLessThan(2000);
      // eslint-disable-next-line no-control-regex -- control characters are what this looks for
      expect((err as RemoteHandlerError).remoteMessage).not.toMatch(/[\r\n\u0007]/);
    }
  });

  it('refuses timeouts a timer cannot hold (2^31 ms and more) instead of firing after 1 ms; a large valid one works', async () => {
    const bus = await makeBus();
    await bus.subscribe('hard.slowish', async () => {
      await sleep(50);
      return 'ok';
    });
    for (const timeout of [2 ** 31, 2 ** 40, Infinity]) {
      const err = await bus.rpcRequest('hard.slowish', {}, { timeout }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
    }
    expect(await bus.rpcRequest('hard.slowish', {}, { timeout: 2 ** 31 - 1 })).toBe('ok');
    expect(() => new EventBus({ nats: { servers: nats.url }, rpcTimeoutMs: 2 ** 31 })).toThrow(InvalidOptionsError);
    expect(() => new EventBus({ nats: { servers: nats.url }, shutdownTimeoutMs: Infinity })).toThrow(InvalidOptionsError);
  });

  it('refuses invalid UTF-8 and overlong forms with InvalidMessageError instead of handing U+FFFD to the handler (item 10)', async () => {
    const bus = await makeBus();
    const got: unknown[] = [];
    await bus.subscribe('hard.utf8', (p) => void got.push(p));
    await bus.subscribe('hard.utf8.rpc', (p) => p);
    // "\"" + ff fe c3 + "\"", and "\"" + c0 af (overlong "/") + "\""
    const bad = [Uint8Array.from([0x22, 0xff, 0xfe, 0xc3, 0x22]), Uint8Array.from([0x22, 0xc0, 0xaf, 0x22])];
    for (const body of bad) {
      raw.publish('hard.utf8', body);
      const reply = await raw.request('hard.utf8.rpc', body, { timeout: 5000 });
      expect(reply.headers?.get('Nats-Service-Error-Code')).toBe('400');
      expect(reply.headers?.get('Nats-Service-Error')).toContain('UTF-8');
    }
    raw.publish('hard.utf8', new TextEncoder().encode('"héllo ✓"'));
    await waitUntil(() => got.length === 1, 'the valid message');
    expect(got).toEqual(['héllo ✓']);
  });

  it('one refused publish during a reconnect does not drop the publishes held behind it (item 4)', async () => {
    const bus = await makeBus();
    const got: number[] = [];
    const consumer = await makeBus();
    await consumer.subscribe('hard.held', (p: { i: number }) => void got.push(p.i));
    await nats.stop();
    await waitUntil(() => [...bus.connections().values()].every((c) => c.state === 'reconnecting'), 'reconnecting');
    for (const i of [0, 1, 2]) await bus.publish('hard.held', { i });
    expect(await bus.publish('', { i: -1 }).catch((e: unknown) => e)).toBeInstanceOf(InvalidSubjectError);
    for (const i of [3, 4, 5]) await bus.publish('hard.held', { i });
    await nats.start();
    await waitUntil(() => got.length === 6, 'all six held publishes', 15_000);
    expect(got).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('a responder cannot make a requester delete another message body by answering with its envelope (item 1)', async () => {
    const bus = await makeBus();
    const redis = new Redis(redisServer.url);
    // A connection of its own: the item 4 test restarted the server under the shared one.
    const attackerNc = await connect({ servers: nats.url });
    try {
      // A large event, stored for fan-out; an attacker records its envelope from the wire.
      const recorded: string[] = [];
      const spy = attackerNc.subscribe('hard.fanout', { callback: (_e, m) => void recorded.push(m.string()) });
      await attackerNc.flush();
      await bus.publish('hard.fanout', { text: 'x'.repeat(2 * MiB) });
      await waitUntil(() => recorded.length === 1, 'envelope recorded');
      spy.unsubscribe();
      const token = JSON.parse(recorded[0]).token as string;
      expect(await redis.exists(`hard:${token}`)).toBe(1);
      // ... and answers an unrelated request with it.
      const attacker = attackerNc.subscribe('hard.victim.rpc', { callback: (_e, m) => void m.respond(recorded[0]) });
      await attackerNc.flush();
      const reply = await bus.rpcRequest<{ text: string }>('hard.victim.rpc', { q: 1 }, { timeout: 5000 });
      expect(reply.text.length).toBe(2 * MiB);
      attacker.unsubscribe();
      await sleep(200);
      // The event's body is still there for its slow subscribers.
      expect(await redis.exists(`hard:${token}`)).toBe(1);
    } finally {
      redis.disconnect();
      await attackerNc.close();
    }
  });
});
