import { EventBus, MessageContext } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { sleep, waitUntil } from '../harness/wait';
import { registerSdk, TestSdk } from './otel-sdk';

// Lag gauges (issue 31, item 5): eventbus.consumer.pending, .ack_pending and .redelivered per
// durable, read from a real nats-server's consumer info, collected through a real OTel SDK reader.
describe('consumer lag gauges (issue 31)', () => {
  let nats: NatsServer;
  let sdk: TestSdk;
  let logs: LogCapture;
  const buses = new TestBuses();
  let n = 0;

  beforeAll(async () => {
    nats = await NatsServer.start();
    sdk = registerSdk();
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await sdk?.shutdown();
    await nats?.dispose();
  });

  async function busWith(consumerLagIntervalMs: number) {
    n++;
    const bus = buses.track(
      new EventBus({
        nats: { servers: nats.url },
        jetstream: { streams: [{ name: `LAG${n}`, subjects: [`lag${n}.>`] }], consumerLagIntervalMs },
      }),
    );
    await bus.connect();
    return { bus, topic: `lag${n}.work` };
  }

  /** The three gauges' values for `topic`'s durable, from one collection. */
  async function gauges(topic: string, durable: string) {
    const at = { 'messaging.destination.name': topic, 'messaging.consumer.group.name': durable };
    const value = async (name: string) => {
      const points = await sdk.points(name, at);
      return points.length ? (points[0].value as number) : undefined;
    };
    return {
      pending: await value('eventbus.consumer.pending'),
      ackPending: await value('eventbus.consumer.ack_pending'),
      redelivered: await value('eventbus.consumer.redelivered'),
    };
  }

  function gate() {
    let open!: () => void;
    const opened = new Promise<void>((r) => (open = r));
    return { open, opened };
  }

  it('pending and ack_pending follow a durable whose handlers are held, and fall to 0 once they finish', async () => {
    const { bus, topic } = await busWith(100);
    const g = gate();
    let done = 0;
    await bus.subscribe(
      topic,
      async () => {
        await g.opened;
        done++;
      },
      { durable: 'held', maxConcurrent: 2 },
    );
    for (let i = 0; i < 6; i++) await bus.publish(topic, { i }, { persist: true });
    await waitUntil(() => bus.subscriptionStats().some((s) => s.durable === 'held' && s.running === 2), 'two handlers running');
    // The bus pulls only what it has slots for: 2 delivered and unacked, 4 still in the stream for it.
    await waitUntil(async () => {
      const v = await gauges(topic, 'held');
      return v.pending === 4 && v.ackPending === 2;
    }, 'pending 4, ack_pending 2');
    expect(await gauges(topic, 'held')).toEqual({ pending: 4, ackPending: 2, redelivered: 0 });

    g.open();
    await waitUntil(() => done === 6, 'all six handled');
    await waitUntil(async () => {
      const v = await gauges(topic, 'held');
      return v.pending === 0 && v.ackPending === 0;
    }, 'pending and ack_pending back to 0');
  });

  it('redelivered counts a message that failed once and is being handled again', async () => {
    const { bus, topic } = await busWith(100);
    const g = gate();
    let second = false;
    await bus.subscribe(
      topic,
      async (_p: unknown, ctx: MessageContext) => {
        if (ctx.deliveryCount === 1) throw new Error('first try fails');
        second = true;
        await g.opened;
      },
      { durable: 'retry', backoffMs: [50] },
    );
    await bus.publish(topic, { id: 1 }, { persist: true });
    await waitUntil(() => second, 'the second delivery');
    await waitUntil(async () => (await gauges(topic, 'retry')).redelivered === 1, 'redelivered 1');
    expect(await gauges(topic, 'retry')).toEqual({ pending: 0, ackPending: 1, redelivered: 1 });
    g.open();
  });

  it('the consumer info is read at most once per interval: collections in between report the last reading', async () => {
    const { bus, topic } = await busWith(60_000);
    const g = gate();
    await bus.subscribe(topic, () => g.opened, { durable: 'slow', maxConcurrent: 1 });
    // The first collection reads the idle consumer.
    expect(await gauges(topic, 'slow')).toEqual({ pending: 0, ackPending: 0, redelivered: 0 });
    for (let i = 0; i < 3; i++) await bus.publish(topic, { i }, { persist: true });
    await waitUntil(() => bus.subscriptionStats().some((s) => s.durable === 'slow' && s.running === 1), 'one handler running');
    await sleep(200);
    // The server now has 2 pending and 1 unacked, but within the interval the reading is not redone.
    expect(await gauges(topic, 'slow')).toEqual({ pending: 0, ackPending: 0, redelivered: 0 });
    g.open();
  });

  it('a core subscription has no gauges', async () => {
    const { bus, topic } = await busWith(100);
    await bus.subscribe(`${topic}.core`, () => undefined);
    expect((await sdk.points('eventbus.consumer.pending', { 'messaging.destination.name': `${topic}.core` })).length).toBe(0);
  });
});
