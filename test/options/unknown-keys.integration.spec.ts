import { Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError } from '../../lib';
import { NatsServer } from '../harness/local-servers';

// Issue 19, item 5: a typo or a wrong type in the options fails bootstrap naming the option,
// instead of starting silently with the default.
describe('options: unknown keys and wrong types are refused', () => {
  let nats: NatsServer;

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false });
  });

  afterAll(async () => {
    await nats?.dispose();
  });

  const refusal = (fn: () => unknown): InvalidOptionsError => {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidOptionsError);
      return err as InvalidOptionsError;
    }
    throw new Error('not refused');
  };

  it('EventBus refuses a misspelt option and suggests the right one', () => {
    const err = refusal(() => new EventBus({ nats: { servers: nats.url }, rpcTimeout: 5 } as never));
    expect(err.option).toBe('rpcTimeout');
    expect(err.message).toMatch(/is not an option; did you mean "rpcTimeoutMs"\?/);
  });

  it('EventBus refuses wrong types for the nats.js options it sets defaults for', () => {
    expect(refusal(() => new EventBus({ nats: { servers: nats.url, pingInterval: 'abc' as never } })).option).toBe('nats.pingInterval');
    expect(refusal(() => new EventBus({ nats: { servers: nats.url, maxReconnectAttempts: -2 } })).option).toBe('nats.maxReconnectAttempts');
    expect(() => new EventBus({ nats: { servers: nats.url, maxReconnectAttempts: -1, reconnectJitter: 0 } })).not.toThrow();
  });

  it('the module refuses unknown storage and health keys at bootstrap, naming them; a Nest app with a typo does not start', async () => {
    expect(
      refusal(() => EventBusModule.forRoot({ nats: { servers: nats.url }, health: { path: 'h', timeoutMS: 5 } as never })).option,
    ).toBe('health.timeoutMS');
    for (const [options, option, hint] of [
      // A key without its unit suffix gets the suffixed one suggested (issue 25).
      [{ nats: { servers: nats.url }, storage: { redis: { url: 'redis://127.0.0.1:1' }, ttl: 5 } }, 'storage.ttl', 'ttlSeconds'],
      [{ nats: { servers: nats.url }, storage: { useFactory: () => null, injects: [] } }, 'storage.injects', 'inject'],
      [{ nats: { servers: nats.url }, rpcTimeout: 5 }, 'rpcTimeout', 'rpcTimeoutMs'],
      [{ nats: { servers: nats.url }, shutdownTimeout: 5 }, 'shutdownTimeout', 'shutdownTimeoutMs'],
    ] as const) {
      @Module({ imports: [EventBusModule.forRoot(options as never)] })
      class AppModule {}
      const err = await Test.createTestingModule({ imports: [AppModule] })
        .compile()
        .then(
          async (ref) => {
            const app = ref.createNestApplication({ logger: false });
            try {
              await app.init();
            } finally {
              await app.close().catch(() => undefined);
            }
          },
          (e: unknown) => e,
        )
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe(option);
      expect((err as InvalidOptionsError).message).toContain(`is not an option; did you mean "${hint}"?`);
    }
  });
});
