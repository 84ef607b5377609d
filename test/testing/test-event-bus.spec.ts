import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, MessageContext, Subscribe } from '../../lib';
import { EventBusTestingModule, TestEventBus } from '../../lib/testing';
import { MiB } from '../harness/wait';

// TestEventBus: what was published, waiting for a publish, and what the handlers did.

@Injectable()
class Orders {
  @Subscribe('orders.created')
  created(order: { id: number; fail?: boolean }, _ctx: MessageContext) {
    if (order.fail) throw new Error(`order ${order.id} refused`);
    return undefined;
  }

  @Subscribe('orders.price')
  price(order: { id: number }) {
    return { id: order.id, total: 10 * order.id };
  }
}

export const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus], providers: [Orders] })
class AppModule {}

describe('TestEventBus', () => {
  let bus: EventBus;
  let probe: TestEventBus;
  let close: () => Promise<void>;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(EventBusTestingModule.forRoot())
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    bus = app.get(EventBus);
    probe = app.get(TestEventBus);
    close = () => app.close();
  });

  afterAll(() => close?.());

  beforeEach(() => probe.reset());

  it('published() lists publishes oldest first, with their headers; requests and replies are not listed', async () => {
    await bus.publish('orders.created', { id: 1 }, { headers: { 'x-tenant': 'acme' } });
    await bus.publish('orders.shipped', { id: 1 });
    await bus.rpcRequest('orders.price', { id: 2 });
    await probe.waitFor('orders.shipped');
    expect(probe.published().map((m) => m.topic)).toEqual(['orders.created', 'orders.shipped']);
    expect(probe.published('orders.created')).toEqual([
      { topic: 'orders.created', payload: { id: 1 }, headers: { 'x-tenant': 'acme' }, persisted: false },
    ]);
    expect(probe.published('orders.*')).toHaveLength(2);
  });

  it('published() shows a claim-checked body as its payload, with its token', async () => {
    await bus.publish('orders.created', { id: 3, text: 'x'.repeat(2 * MiB) });
    const m = await probe.waitFor('orders.created');
    expect((m.payload as { text: string }).text.length).toBe(2 * MiB);
    expect(typeof m.token).toBe('string');
  });

  it('waitFor() returns one already seen, or waits for the next match, or fails naming the topic', async () => {
    await bus.publish('orders.created', { id: 4 });
    await expect(probe.waitFor('orders.created')).resolves.toMatchObject({ payload: { id: 4 } });
    const next = probe.waitFor('orders.created', (m) => (m.payload as { id: number }).id === 5);
    await bus.publish('orders.created', { id: 6 });
    await bus.publish('orders.created', { id: 5 });
    await expect(next).resolves.toMatchObject({ payload: { id: 5 } });
    await expect(probe.waitFor('orders.none', undefined, 50)).rejects.toThrow(/orders\.none.*50 ms/);
  });

  it('handled() lists handler runs with their outcomes, and reset() forgets them', async () => {
    await bus.publish('orders.created', { id: 7 });
    await bus.publish('orders.created', { id: 8, fail: true });
    await bus.rpcRequest('orders.price', { id: 1 });
    await waitForRuns(probe, 3);
    const runs = probe.handled('orders.created');
    expect(runs.map((r) => r.outcome)).toEqual(['ok', 'error']);
    expect((runs[1].error as Error).message).toBe('order 8 refused');
    expect(probe.handled('orders.>')).toHaveLength(3);
    probe.reset();
    expect(probe.handled()).toEqual([]);
    expect(probe.published()).toEqual([]);
  });

  it('EventBusTestingModule.override finds the bus module without the constant', async () => {
    @Module({ imports: [EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } })], providers: [Orders] })
    class InlineModule {}
    @Module({ imports: [InlineModule] })
    class RootModule {}
    const moduleRef = await EventBusTestingModule.override(Test.createTestingModule({ imports: [RootModule] }), RootModule).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      await expect(app.get(EventBus).rpcRequest('orders.price', { id: 3 })).resolves.toEqual({ id: 3, total: 30 });
    } finally {
      await app.close();
    }
  });
});

async function waitForRuns(probe: TestEventBus, n: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (probe.handled().length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}
