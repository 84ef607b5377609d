import { Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { bigPayload, MiB, waitUntil } from '../harness/wait';

// A bucket name the server would refuse (its stream "OBJ_<bucket>" over 255 characters) is an option error, not a bootstrap crash.
describe('object store bucket names and the server limit', () => {
  let nats: NatsServer;

  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterAll(async () => {
    await nats?.dispose();
  });

  async function bootstrap(bucket: string) {
    @Module({ imports: [EventBusModule.forRoot({ nats: { servers: nats.url }, storage: { objectStore: { bucket } } })] })
    class AppModule {}
    // Refused while the module compiles (the storage provider is built) or initializes (the bucket is created).
    try {
      const app = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
      await app.init().catch(async (err: unknown) => {
        await app.close().catch(() => undefined);
        throw err;
      });
      return { app, error: undefined };
    } catch (err) {
      return { app: undefined, error: err as InvalidOptionsError };
    }
  }

  it('a 252-character bucket stops bootstrap with InvalidOptionsError naming storage.objectStore.bucket; 251 works end to end', async () => {
    const tooLong = await bootstrap('b'.repeat(252));
    expect(tooLong.error).toBeInstanceOf(InvalidOptionsError);
    expect(tooLong.error!.option).toBe('storage.objectStore.bucket');
    expect(tooLong.error!.message).toMatch(/at most 251 characters, got 252/);

    const longest = await bootstrap('b'.repeat(251));
    try {
      expect(longest.error).toBeUndefined();
      const bus = longest.app!.get(EventBus);
      const got: unknown[] = [];
      await bus.subscribe('bn.big', (p) => void got.push(p));
      const payload = bigPayload(2 * MiB);
      await bus.publish('bn.big', payload);
      await waitUntil(() => got.length === 1, 'the large message through the 251-character bucket');
      expect(got[0]).toEqual(payload);
    } finally {
      await longest.app?.close();
    }
  });
});
