import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { EventBus, MessageContext } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';

// How a durable subscription takes messages from its consumer (issue 26, items 4, 5 and 6), against
// a real nats-server with JetStream. No storage: the messages are small.
describe('durable pulls (issue 26)', () => {
  let nats: NatsServer;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses = new TestBuses();

  async function bus(streams: object[] | undefined, name: string): Promise<EventBus> {
    const b = buses.track(new EventBus({ nats: { servers: nats.url, name }, ...(streams ? { jetstream: { streams } } : {}) } as never));
    await b.connect();
    return b;
  }

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await raw?.close();
    await nats?.dispose();
  });

  it('item 5: with maxConcurrent 1 and handlers longer than the ack wait, each message is handled once, with deliveryCount 1', async () => {
    const streams = [{ name: 'SLOT', subjects: ['slot.>'], maxAgeSeconds: 3600 }];
    const b = await bus(streams, 'slot');
    const runs: Array<{ i: number; count: number }> = [];
    await b.subscribe(
      'slot.x',
      async (p: { i: number }, ctx: MessageContext) => {
        runs.push({ i: p.i, count: ctx.deliveryCount! });
        await sleep(1300);
      },
      { durable: 'slot', maxConcurrent: 1, ackWaitMs: 1000 },
    );
    for (let i = 0; i < 4; i++) await b.publish('slot.x', { i }, { persist: true });
    await waitUntil(() => runs.length >= 4, 'four handler runs', 15_000);
    // Long enough for a message left waiting past its ack wait to come back.
    await sleep(2500);
    expect(runs).toEqual([0, 1, 2, 3].map((i) => ({ i, count: 1 })));
  });

  it('item 6: close() hands back at once what was taken but not started; another instance handles it well before the ack wait', async () => {
    const streams = [{ name: 'CLOSE', subjects: ['close.>'], maxAgeSeconds: 3600 }];
    const first = await bus(streams, 'close-1');
    const handled: Array<{ i: number; by: string; count: number }> = [];
    const handler = (by: string, ms: number) => async (p: { i: number }, ctx: MessageContext) => {
      handled.push({ i: p.i, by, count: ctx.deliveryCount! });
      await sleep(ms);
    };
    const opts = { durable: 'closer', maxConcurrent: 2, ackWaitMs: 20_000 };
    await first.subscribe('close.x', handler('first', 1000), opts);
    for (let i = 0; i < 20; i++) await first.publish('close.x', { i }, { persist: true });
    await waitUntil(() => handled.length === 2, 'two handlers started');
    await first.close();
    expect(handled.map((h) => h.i).sort((a, b) => a - b)).toEqual([0, 1]);

    const second = await bus(streams, 'close-2');
    const resumed = Date.now();
    await second.subscribe('close.x', handler('second', 0), opts);
    await waitUntil(() => handled.length >= 20, 'the other 18', 10_000);
    const tookMs = Date.now() - resumed;
    await sleep(500);
    expect(handled.filter((h) => h.by === 'second').map((h) => h.i)).toEqual(Array.from({ length: 18 }, (_, i) => i + 2));
    expect(handled).toHaveLength(20);
    // Far from the 20 s ack wait.
    expect(tookMs).toBeLessThan(3000);
  });

  it('item 4: a consumer deleted under a running durable is re-created with a warning; a stream that is gone marks JetStream down in health, logged once, until it is back', async () => {
    const jsm = await jetstreamManager(raw);
    // Managed by operations, not by the bus: the bus cannot re-create the stream itself.
    await jsm.streams.add({ name: 'GONE', subjects: ['gone.>'], max_age: 3600 * 1e9 });
    const b = await bus(undefined, 'gone');
    const got: number[] = [];
    await b.subscribe('gone.x', (p: { i: number }) => void got.push(p.i), { durable: 'keeper', ackWaitMs: 2000 });
    await b.publish('gone.x', { i: 0 }, { persist: true });
    await waitUntil(() => got.length === 1, 'the first message');
    logs.clear();

    // nats-server 2.9 sometimes answers "directory not empty" while the consumer writes its state, having
    // deleted it all the same: try again, and expect one warning per deletion.
    let deletions = 0;
    await waitUntil(async () => {
      deletions++;
      return jsm.consumers.delete('GONE', 'keeper').then(
        () => true,
        () => false,
      );
    }, 'the consumer deleted');
    for (let i = 1; i <= 5; i++) await b.publish('gone.x', { i }, { persist: true });
    const deleted = Date.now();
    await waitUntil(() => [1, 2, 3, 4, 5].every((i) => got.includes(i)), 'the five after the consumer was deleted', 15_000);
    const recreatedAfterMs = Date.now() - deleted;
    // Re-created, the consumer starts at the stream's first message: message 0 comes again.
    expect(new Set(got)).toEqual(new Set([0, 1, 2, 3, 4, 5]));
    const recreated = logs.matching(/its consumer was gone .*re-created it/).length;
    expect(recreated).toBeGreaterThanOrEqual(1);
    expect(recreated).toBeLessThanOrEqual(deletions);
    await expect(b.pingJetStream()).resolves.toBeUndefined();
    expect(recreatedAfterMs).toBeLessThan(10_000);

    // Now the stream itself: the consumer cannot be re-created.
    logs.clear();
    await jsm.streams.delete('GONE');
    await waitUntil(() => logs.matching(/cannot pull/).length === 1, 'the cannot-pull line', 15_000);
    await expect(b.pingJetStream()).rejects.toThrow(/keeper/);
    await sleep(2500);
    expect(logs.matching(/cannot pull/)).toHaveLength(1);

    // Operations put the stream back: the consumer is re-created and health comes back.
    await jsm.streams.add({ name: 'GONE', subjects: ['gone.>'], max_age: 3600 * 1e9 });
    got.length = 0;
    await b.publish('gone.x', { i: 7 }, { persist: true });
    await waitUntil(() => got.includes(7), 'a message on the re-created stream', 15_000);
    await expect(b.pingJetStream()).resolves.toBeUndefined();
  });
});
