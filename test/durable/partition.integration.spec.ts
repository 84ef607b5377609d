import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError, MessageContext, Subscribe } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, sleep, waitUntil } from '../harness/wait';

interface Item {
  key: string;
  i: number;
}

// Ordered, partitioned durables (issue 31, part 3) against a real nats-server with JetStream and a real Redis.
describe('durable partitionBy', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let logs: LogCapture;
  const buses = new TestBuses();
  let n = 0;
  const space = () => {
    n++;
    return { stream: `PRT${n}`, subject: `prt${n}` };
  };
  const jetstream = (stream: string, subject: string) => ({
    streams: [
      { name: stream, subjects: [`${subject}.work.>`], maxAgeSeconds: 3600 },
      { name: `${stream}DEAD`, subjects: [`${subject}.dead.>`], maxAgeSeconds: 3600 },
    ],
  });

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  it('1,000 messages over 20 keys with maxConcurrent 4: each key in publish order, one at a time, keys in parallel, never more than 4 handlers', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'prt1:', { jetstream: jetstream(stream, subject) });
    await bus.connect();
    const keys = Array.from({ length: 20 }, (_, k) => `k${k}`);
    const published: Record<string, number[]> = {};
    // Published before the subscribe: the durable then takes them as fast as it can.
    // Keys drawn at random (a fixed seed), so that 4 slots often hold two messages of one key.
    let seed = 42;
    const draw = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % 20;
    for (let i = 0; i < 1000; i++) {
      const key = keys[draw()];
      (published[key] ??= []).push(i);
      await bus.publish(`${subject}.work.x`, { key, i }, { persist: true });
    }
    const handled: Record<string, number[]> = {};
    const runningKeys = new Set<string>();
    let running = 0;
    let most = 0;
    let sameKeyOverlap = 0;
    await bus.subscribe(
      `${subject}.work.x`,
      async (p: Item) => {
        if (runningKeys.has(p.key)) sameKeyOverlap++;
        runningKeys.add(p.key);
        most = Math.max(most, ++running);
        // Uneven handler times: without the order, a later message of a key would finish first.
        await sleep(p.i % 4);
        (handled[p.key] ??= []).push(p.i);
        running--;
        runningKeys.delete(p.key);
      },
      { durable: 'ordered', partitionBy: (p: Item) => p.key, maxConcurrent: 4 },
    );
    await waitUntil(() => Object.values(handled).flat().length >= 1000, '1,000 handled', 60_000);
    await sleep(300);

    expect(Object.values(handled).flat()).toHaveLength(1000);
    for (const key of keys) expect(handled[key]).toEqual(published[key]);
    expect(sameKeyOverlap).toBe(0);
    expect(most).toBeLessThanOrEqual(4);
    expect(most).toBeGreaterThan(1);
  });

  it('a failing message blocks only its key: retried in process with backoff (deliveryCount 1, 2, 3), the next message of its key waits, other keys go on', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'prt2:', { jetstream: jetstream(stream, subject) });
    await bus.connect();
    const log: string[] = [];
    const counts: number[] = [];
    await bus.subscribe(
      `${subject}.work.x`,
      (p: { id: string }, ctx: MessageContext) => {
        if (p.id === 'a1') {
          counts.push(ctx.deliveryCount!);
          if (counts.length < 3) throw new Error(`a1 refused (${counts.length})`);
        }
        log.push(p.id);
      },
      { durable: 'blocker', partitionBy: (p: { id: string }) => p.id[0], backoffMs: [400], maxDeliver: 5 },
    );
    for (const id of ['a1', 'a2', 'b1', 'b2', 'a3', 'b3']) await bus.publish(`${subject}.work.x`, { id }, { persist: true });
    await waitUntil(() => log.length === 6, 'all handled', 20_000);

    expect(counts).toEqual([1, 2, 3]);
    // Key a in order, after a1's third delivery; key b all done while a1 waited out its backoff.
    expect(log.filter((id) => id.startsWith('a'))).toEqual(['a1', 'a2', 'a3']);
    expect(log.filter((id) => id.startsWith('b'))).toEqual(['b1', 'b2', 'b3']);
    expect(log.indexOf('b3')).toBeLessThan(log.indexOf('a1'));
  });

  it('after maxDeliver failures the message is dead-lettered (max_deliver, deliveries counted) and its key goes on; a key function that throws dead-letters its message as invalid_message', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'prt3:', {
      jetstream: jetstream(stream, subject),
      largeMessageThresholdBytes: 1024,
    });
    await bus.connect();
    const log: string[] = [];
    let poisonRuns = 0;
    await bus.subscribe(
      `${subject}.work.x`,
      (p: { id: string }) => {
        if (p.id === 'a1') {
          poisonRuns++;
          throw new Error('a1 always fails');
        }
        log.push(p.id);
      },
      {
        durable: 'dl',
        partitionBy: (p: { id: string; key?: unknown }) => {
          if (p.id === 'bad') throw new Error('no key here');
          return p.id[0];
        },
        backoffMs: [100],
        maxDeliver: 3,
        deadLetter: `${subject}.dead.x`,
      },
    );
    await bus.publish(`${subject}.work.x`, bigPayload(4096, 'a1'), { persist: true });
    await bus.publish(`${subject}.work.x`, { id: 'a2' }, { persist: true });
    await bus.publish(`${subject}.work.x`, { id: 'bad' }, { persist: true });
    await bus.publish(`${subject}.work.x`, { id: 'c1' }, { persist: true });
    await waitUntil(async () => (await bus.deadLetters.list({ stream: `${stream}DEAD` })).length === 2, 'two dead letters', 20_000);
    await waitUntil(() => log.length === 2, 'a2 and c1 handled');

    expect(poisonRuns).toBe(3);
    expect(log.sort()).toEqual(['a2', 'c1']);
    const letters = await bus.deadLetters.list({ stream: `${stream}DEAD` });
    const byReason = Object.fromEntries(letters.map((l) => [l.reason, l]));
    expect(Object.keys(byReason).sort()).toEqual(['invalid_message', 'max_deliver']);
    expect(byReason.max_deliver.lastError).toContain('a1 always fails');
    expect(byReason.invalid_message.lastError).toContain('partitionBy threw');
    // The claim-checked poison message's body is still readable from its dead letter.
    const letter = await bus.deadLetters.get(byReason.max_deliver.id);
    expect((letter.payload as { id: string }).id).toBe('a1');
    expect(letter.claimChecked).toBe(true);
  });

  it('partitionBy is checked: not a function, with batch, or without durable stops the subscribe with InvalidOptionsError', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'prt4:', { jetstream: jetstream(stream, subject) });
    const refused = async (options: object, message: RegExp) => {
      const err = await bus.subscribe(`${subject}.work.x`, () => undefined, options as never).catch((e: InvalidOptionsError) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe('partitionBy');
      expect((err as Error).message).toMatch(message);
    };
    await refused({ durable: 'p', partitionBy: 'key' }, /must be a function/);
    await refused({ durable: 'p', partitionBy: () => 'k', batch: { size: 2, maxWaitMs: 10 } }, /cannot be combined with batch/);
    await refused({ partitionBy: () => 'k' }, /durable subscriptions only/);
  });

  it('@Subscribe(topic, { durable, partitionBy }) in a Nest app keeps per-key order', async () => {
    const { stream, subject } = space();
    const got: string[] = [];
    @Injectable()
    class Orders {
      @Subscribe(`${subject}.work.o`, { durable: 'orders', partitionBy: (p: { customer: string }) => p.customer, maxConcurrent: 2 })
      async take(p: { customer: string; n: number }) {
        await sleep(p.n % 2 ? 5 : 0);
        got.push(`${p.customer}${p.n}`);
      }
    }
    @Module({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url }, jetstream: jetstream(stream, subject) })],
      providers: [Orders],
    })
    class AppModule {}
    const app = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      for (let i = 0; i < 10; i++)
        for (const customer of ['x', 'y']) await bus.publish(`${subject}.work.o`, { customer, n: i }, { persist: true });
      await waitUntil(() => got.length === 20, 'all handled');
      const seq = (c: string) => got.filter((g) => g.startsWith(c)).map((g) => Number(g.slice(1)));
      expect(seq('x')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(seq('y')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    } finally {
      await app.close();
    }
  });
});
