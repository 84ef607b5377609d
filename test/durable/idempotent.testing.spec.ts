import { Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError } from '../../lib';
import { EventBusTestingModule } from '../../lib/testing';

const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus] })
class AppModule {}

// The in-process broker of the testing module has no JetStream KV: idempotent is refused, saying so.
describe('idempotent durables on the testing module', () => {
  it('subscribe with idempotent is refused with InvalidOptionsError naming the option and the way out', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(
        EventBusTestingModule.forRoot({ jetstream: { streams: [{ name: 'ORDERS', subjects: ['orders.>'], maxAgeSeconds: 3600 }] } }),
      )
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      const err = await bus.subscribe('orders.placed', () => undefined, { durable: 'billing', idempotent: true }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.option).toBe('idempotent');
      expect(err.message).toContain('in-process broker has no JetStream KV: test idempotent durables against a nats-server');
      // The same durable without idempotent works there.
      await expect(bus.subscribe('orders.placed', () => undefined, { durable: 'billing' })).resolves.toMatchObject({ durable: 'billing' });
    } finally {
      await app.close();
    }
  });
});
