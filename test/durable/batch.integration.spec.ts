import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError, MessageContext, Subscribe } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { bigPayload, sleep, waitUntil } from '../harness/wait';

interface Call {
  ids: string[];
  counts: number[];
  recovered: boolean[];
}

// Batch handlers (issue 31, part 4) against a real nats-server with JetStream and a real Redis.
describe('durable batch handlers', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  const buses = new TestBuses();
  let n = 0;
  const space = () => {
    n++;
    return { stream: `BAT${n}`, subject: `bat${n}` };
  };
  const jetstream = (stream: string, subject: string) => ({ streams: [{ name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600 }] });

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  /** A batch durable recording each call; `fail(call number)` makes that call throw. */
  async function batching(
    bus: EventBus,
    topic: string,
    batch: { size: number; maxWaitMs: number },
    extra: object = {},
    fail = (_call: number) => false,
  ) {
    const calls: Call[] = [];
    const handler = (payloads: Array<{ id: string }>, contexts: MessageContext[]) => {
      calls.push({
        ids: payloads.map((p) => p.id),
        counts: contexts.map((c) => c.deliveryCount!),
        recovered: contexts.map((c) => c.recovered),
      });
      if (fail(calls.length)) throw new Error(`batch ${calls.length} refused`);
    };
    // bus.subscribe is typed for single handlers; with batch the method takes (payloads, contexts).
    await bus.subscribe(topic, handler as never, { durable: 'batcher', batch, backoffMs: [100], ...extra });
    return calls;
  }

  it('batch { size: 3 }: 7 waiting messages come as arrays of 3, 3 and (after maxWaitMs) 1, in stream order, with their contexts', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'bat1:', { jetstream: jetstream(stream, subject) });
    await bus.connect();
    for (let i = 1; i <= 7; i++) await bus.publish(`${subject}.x`, { id: `m${i}` }, { persist: true });
    const calls = await batching(bus, `${subject}.x`, { size: 3, maxWaitMs: 400 });
    await waitUntil(() => calls.flatMap((c) => c.ids).length === 7, 'all 7 handled');
    await sleep(600);

    expect(calls.map((c) => c.ids)).toEqual([['m1', 'm2', 'm3'], ['m4', 'm5', 'm6'], ['m7']]);
    expect(calls.flatMap((c) => c.counts)).toEqual([1, 1, 1, 1, 1, 1, 1]);
  });

  it('a partial batch goes after maxWaitMs: 2 messages with size 10 are one call of 2', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'bat2:', { jetstream: jetstream(stream, subject) });
    const calls = await batching(bus, `${subject}.x`, { size: 10, maxWaitMs: 300 });
    await bus.publish(`${subject}.x`, { id: 'a' }, { persist: true });
    await bus.publish(`${subject}.x`, { id: 'b' }, { persist: true });
    await waitUntil(() => calls.length === 1, 'one call');
    await sleep(800);
    expect(calls.map((c) => c.ids)).toEqual([['a', 'b']]);
  });

  it('a batch handler that throws: every message of the batch is redelivered (deliveryCount 2) and acked once it resolves; a claim-checked one is recovered before the call', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'bat3:', {
      jetstream: jetstream(stream, subject),
      largeMessageThresholdBytes: 1024,
    });
    await bus.connect();
    await bus.publish(`${subject}.x`, { id: 'p' }, { persist: true });
    await bus.publish(`${subject}.x`, { ...bigPayload(4096, 'q') }, { persist: true });
    await bus.publish(`${subject}.x`, { id: 'r' }, { persist: true });
    const calls = await batching(bus, `${subject}.x`, { size: 3, maxWaitMs: 400 }, { maxDeliver: 3 }, (call) => call === 1);
    await waitUntil(() => calls.length === 2, 'retried once');
    await sleep(800);

    expect(calls.map((c) => c.ids)).toEqual([
      ['p', 'q', 'r'],
      ['p', 'q', 'r'],
    ]);
    expect(calls.map((c) => c.counts)).toEqual([
      [1, 1, 1],
      [2, 2, 2],
    ]);
    expect(calls[0].recovered).toEqual([false, true, false]);
  });

  it('batch is checked: size 0 or over 1000, a missing maxWaitMs, an unknown key, or batch without durable stop the subscribe with InvalidOptionsError', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'bat4:', { jetstream: jetstream(stream, subject) });
    const refused = async (options: object, option: string) => {
      const err = await bus.subscribe(`${subject}.x`, () => undefined, options as never).catch((e: InvalidOptionsError) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe(option);
    };
    await refused({ durable: 'b', batch: { size: 0, maxWaitMs: 100 } }, 'batch.size');
    await refused({ durable: 'b', batch: { size: 1001, maxWaitMs: 100 } }, 'batch.size');
    await refused({ durable: 'b', batch: { size: 2 } }, 'batch.maxWaitMs');
    await refused({ durable: 'b', batch: { size: 2, maxWaitMs: 0 } }, 'batch.maxWaitMs');
    await refused({ durable: 'b', batch: { size: 2, maxWaitMs: 10, max: 3 } }, 'batch.max');
    await refused({ batch: { size: 2, maxWaitMs: 10 } }, 'batch');
  });

  it('@Subscribe(topic, { durable, batch }) in a Nest app: the method gets (payloads, contexts)', async () => {
    const { stream, subject } = space();
    const got: Array<{ ids: string[]; subjects: string[] }> = [];
    @Injectable()
    class Sink {
      @Subscribe(`${subject}.x`, { durable: 'sink', batch: { size: 2, maxWaitMs: 300 } })
      take(payloads: Array<{ id: string }>, contexts: MessageContext[]) {
        got.push({ ids: payloads.map((p) => p.id), subjects: contexts.map((c) => c.subject) });
      }
    }
    @Module({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url }, jetstream: jetstream(stream, subject) })],
      providers: [Sink],
    })
    class AppModule {}
    const app = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      await bus.publish(`${subject}.x`, { id: 'one' }, { persist: true });
      await bus.publish(`${subject}.x`, { id: 'two' }, { persist: true });
      await waitUntil(() => got.flatMap((g) => g.ids).length === 2, 'both handled');
      expect(got.flatMap((g) => g.ids)).toEqual(['one', 'two']);
      expect(got.flatMap((g) => g.subjects)).toEqual([`${subject}.x`, `${subject}.x`]);
    } finally {
      await app.close();
    }
  });
});
