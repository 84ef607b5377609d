import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, EventBusModule, InvalidOptionsError, Subscribe } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { sleep } from '../harness/wait';

// Options a call does not know are refused, as module options are: at bootstrap for @Subscribe, at once for calls.
describe('unknown keys in @Subscribe, publish and rpcRequest options', () => {
  let nats: NatsServer;
  let raw: NatsConnection;
  const buses = new TestBuses();

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await nats?.dispose();
  });

  /** Bootstraps a Nest app with `handlers`; resolves with the bootstrap error (or undefined). */
  async function bootstrapError(handlers: unknown): Promise<InvalidOptionsError | undefined> {
    @Module({ imports: [EventBusModule.forRoot({ nats: { servers: nats.url } })], providers: [handlers as never] })
    class AppModule {}
    const app = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
    try {
      await app.init();
      return undefined;
    } catch (err) {
      return err as InvalidOptionsError;
    } finally {
      await app.close().catch(() => undefined);
    }
  }

  // batch is an option since issue 31 (test/durable/batch.integration.spec.ts checks it).
  it('@Subscribe with a key a later version may add (partitions) stops bootstrap naming the key and the method', async () => {
    for (const key of ['partitions']) {
      @Injectable()
      class Handlers {
        @Subscribe('uk.later', { [key]: true } as never)
        onLater() {}
      }
      const err = await bootstrapError(Handlers);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err!.option).toBe(key);
      expect(err!.message).toContain('Handlers.onLater');
      expect(err!.message).toContain('is not an option');
    }
  });

  it('@Subscribe with batch but no durable stops bootstrap naming the method', async () => {
    @Injectable()
    class BatchHandlers {
      @Subscribe('uk.batch', { batch: { size: 2, maxWaitMs: 100 } })
      onBatch() {}
    }
    const err = await bootstrapError(BatchHandlers);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err!.option).toBe('batch');
    expect(err!.message).toContain('BatchHandlers.onBatch');
    expect(err!.message).toContain("add durable: '<name>'");
  });

  // idempotent became an option in issue 30; without a durable it is still refused at bootstrap.
  it('@Subscribe with idempotent but no durable stops bootstrap naming the method', async () => {
    @Injectable()
    class EagerHandlers {
      @Subscribe('uk.idem', { idempotent: true })
      onIdem() {}
    }
    const err = await bootstrapError(EagerHandlers);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err!.option).toBe('idempotent');
    expect(err!.message).toContain('EagerHandlers.onIdem');
    expect(err!.message).toContain("add durable: '<name>'");
  });

  it('@Subscribe with a typo gets a "did you mean"', async () => {
    @Injectable()
    class TypoHandlers {
      @Subscribe('uk.typo', { durable: 'w', maxDelivery: 3 } as never)
      onTypo() {}
    }
    const err = await bootstrapError(TypoHandlers);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err!.option).toBe('maxDelivery');
    expect(err!.message).toContain('did you mean "maxDeliver"');
    expect(err!.message).toContain('TypoHandlers.onTypo');
  });

  // delayMs and notBefore are options since issue 31 (persisted publishes only): without persist, and a typo of them, are refused.
  it('publish with delayMs or notBefore but no persist, a mistyped delayMs, and rpcRequest with a mistyped timeoutMs, are InvalidOptionsError at once; nothing is sent', async () => {
    const bus = buses.track(new EventBus({ nats: { servers: nats.url } }));
    await bus.connect();
    const got: string[] = [];
    raw.subscribe('uk.>', { callback: (_e, m) => void got.push(m.subject) });
    await raw.flush();

    const delayed = await bus.publish('uk.delayed', {}, { delayMs: 2000 } as never).catch((e) => e);
    expect(delayed).toBeInstanceOf(InvalidOptionsError);
    expect(delayed.option).toBe('delayMs');
    expect(delayed.message).toContain('add persist: true');
    const notBefore = await bus.publish('uk.later', {}, { notBefore: Date.now() + 1000 } as never).catch((e) => e);
    expect(notBefore).toBeInstanceOf(InvalidOptionsError);
    expect(notBefore.option).toBe('notBefore');
    const typoDelay = await bus.publish('uk.later', {}, { persist: true, delayMS: 2000 } as never).catch((e) => e);
    expect(typoDelay).toBeInstanceOf(InvalidOptionsError);
    expect(typoDelay.message).toContain('did you mean "delayMs"');
    await expect(bus.publish('uk.later', {}, { partitionBy: 'id' } as never)).rejects.toThrow(/partitionBy/);
    // timeoutMs is an option since issue 28 (timeout its deprecated name): a typo of it is refused.
    const typo = await bus.rpcRequest<never>('uk.rpc', {}, { timeoutMS: 50 } as never).catch((e: InvalidOptionsError) => e);
    expect(typo).toBeInstanceOf(InvalidOptionsError);
    expect(typo.message).toContain('did you mean "timeoutMs"');
    await expect(bus.subscribe('uk.sub', () => undefined, { idempotent: true } as never)).rejects.toThrow(InvalidOptionsError);

    // What each call does take still works.
    await bus.publish('uk.ok', {}, { headers: { a: 'b' } });
    await waitFor(() => got.includes('uk.ok'));
    await sleep(100);
    expect(got).toEqual(['uk.ok']);
  });

  const waitFor = async (check: () => boolean) => {
    for (let i = 0; i < 100 && !check(); i++) await sleep(20);
  };
});
