import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, MessageContext, Subscribe } from '../../lib';
import { EventBusTestingModule, TestEventBus } from '../../lib/testing';

// Durable backoff without waiting real time: TestEventBus.advance(ms) moves the broker's clock.

const runs: number[] = [];

@Injectable()
class Payments {
  @Subscribe('payments.charge', { durable: 'charger', maxDeliver: 3, backoffMs: [60_000, 600_000], deadLetter: 'payments-dead.charge' })
  charge(_payment: { id: string }, ctx: MessageContext) {
    runs.push(ctx.deliveryCount!);
    throw new Error('card declined');
  }
}

const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus], providers: [Payments] })
class AppModule {}

describe('durables on the testing module', () => {
  let bus: EventBus;
  let probe: TestEventBus;
  let close: () => Promise<void>;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(
        EventBusTestingModule.forRoot({
          jetstream: {
            streams: [
              { name: 'PAYMENTS', subjects: ['payments.>'], maxAgeSeconds: 3600 },
              { name: 'PAYMENTS_DEAD', subjects: ['payments-dead.>'], maxAgeSeconds: 3600 },
            ],
          },
        }),
      )
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    bus = app.get(EventBus);
    probe = app.get(TestEventBus);
    close = () => app.close();
  });

  afterAll(() => close?.());

  it('advance() brings each backoff step due at once; after maxDeliver the last run is dead-lettered', async () => {
    const started = Date.now();
    await bus.publish('payments.charge', { id: 'p1' }, { persist: true, msgId: 'p1' });
    await until(() => runs.length === 1);
    await probe.advance(59_000);
    expect(runs).toEqual([1]);
    await probe.advance(1_000);
    await until(() => runs.length === 2);
    await probe.advance(600_000);
    const dead = await probe.waitFor('payments-dead.charge');
    expect(runs).toEqual([1, 2, 3]);
    expect(dead).toMatchObject({
      payload: { id: 'p1' },
      persisted: true,
      headers: { 'Eventbus-Dead-Reason': 'max_deliver', 'Eventbus-Dead-Deliveries': '3', 'Eventbus-Dead-Error': 'card declined' },
    });
    expect(probe.handled('payments.charge').map((h) => [h.outcome, h.deliveryCount])).toEqual([
      ['error', 1],
      ['error', 2],
      ['dead-lettered', 3],
    ]);
    expect(probe.published('payments.charge')).toEqual([
      { topic: 'payments.charge', payload: { id: 'p1' }, headers: { 'Nats-Msg-Id': 'p1' }, persisted: true },
    ]);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
