import { INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, NatsConnection } from '@nats-io/transport-node';
import request from 'supertest';
import {
  EventBus,
  EventBusModule,
  EventBusModuleOptions,
  InvalidOptionsError,
  MESSAGE_STORAGE_MANAGER,
  MessageContext,
  ObjectStoreStorageManager,
  Subscribe,
} from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { bigPayload, MiB, waitUntil } from '../harness/wait';

// Issue 16: with `storage: { objectStore }` nothing of Redis is needed: loading ioredis at all
// fails this file (a Redis form below proves the trap is live).
jest.mock('ioredis', () => {
  throw new Error('ioredis was loaded');
});

const seen: Array<{ json: string; ctx: MessageContext }> = [];

@Injectable()
class LargeHandlers {
  @Subscribe('osm.large')
  large(payload: unknown, ctx: MessageContext) {
    seen.push({ json: JSON.stringify(payload), ctx });
  }

  @Subscribe('osm.rpc')
  rpc(req: { size: number }) {
    return bigPayload(req.size, 'reply');
  }
}

describe('EventBusModule with storage: { objectStore } (no Redis)', () => {
  let nats: NatsServer;
  let raw: NatsConnection;

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await nats?.dispose();
  });

  async function startApp(options: EventBusModuleOptions, providers: any[] = []): Promise<INestApplication> {
    @Module({ imports: [EventBusModule.forRoot(options)], providers })
    class AppModule {}
    const ref = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = ref.createNestApplication({ logger: false });
    try {
      await app.init();
    } catch (err) {
      await app.close().catch(() => undefined);
      throw err;
    }
    return app;
  }

  const bootError = (options: EventBusModuleOptions) =>
    startApp(options).then(
      async (app) => {
        await app.close();
        return undefined;
      },
      (e: unknown) => e,
    );

  it('bootstraps, creates the bucket with the options, carries 3 MiB events and an 8 MiB reply, and /_health checks the bucket', async () => {
    const app = await startApp({ nats: { servers: nats.url }, storage: { objectStore: { bucket: 'module', ttlSeconds: 90 } } }, [
      LargeHandlers,
    ]);
    await app.listen(0, '127.0.0.1');
    try {
      expect(app.get(MESSAGE_STORAGE_MANAGER)).toBeInstanceOf(ObjectStoreStorageManager);
      const stream = await (await jetstreamManager(raw)).streams.info('OBJ_module');
      expect(stream.config.max_age).toBe(90e9);
      expect(stream.config.storage).toBe('file');

      const bus = app.get(EventBus);
      const event = bigPayload(3 * MiB, 'event');
      await bus.publish('osm.large', event);
      await waitUntil(() => seen.length === 1, 'the @Subscribe handler', 20_000);
      expect(seen[0].ctx.recovered).toBe(true);
      expect(seen[0].json).toBe(JSON.stringify(event));
      const reply = await bus.rpcRequest('osm.rpc', { size: 8 * MiB }, { timeout: 30_000 });
      expect(JSON.stringify(reply)).toBe(JSON.stringify(bigPayload(8 * MiB, 'reply')));

      const http = app.getHttpServer();
      const up = await request(http).get('/_health');
      expect(up.status).toBe(200);
      expect(up.body.details.storage.status).toBe('up');
      // The bucket gone (deleted by an operator): the storage indicator says so, NATS stays up.
      await (await jetstreamManager(raw)).streams.delete('OBJ_module');
      const down = await request(http).get('/_health');
      expect(down.status).toBe(503);
      expect(down.body.details.storage.status).toBe('down');
      expect(down.body.details.nats.status).toBe('up');
      expect(JSON.stringify(down.body)).not.toMatch(/nats:\/\/|127\.0\.0\.1/);
    } finally {
      await app.close();
    }
  });

  it.each([
    [{ objectStore: { ttlSeconds: -1 } }, 'storage.objectStore.ttlSeconds'],
    [{ objectStore: { bucket: 'has space' } }, 'storage.objectStore.bucket'],
    [{ objectStore: { replica: 3 } }, 'storage.objectStore.replica'],
    [{ objectStore: {}, ttlSeconds: 5 }, 'storage.ttlSeconds'],
    [{ objectStore: 'eventbus' }, 'storage.objectStore'],
  ])('a bad option %j fails bootstrap with InvalidOptionsError naming %s', async (storage, option) => {
    const err = await bootError({ nats: { servers: nats.url }, storage: storage as never });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe(option);
  });

  // Issue 25: the production snippet's replicas: 3 on a single dev server named JetStream 10074 only.
  it('replicas the server cannot place fail bootstrap naming storage.objectStore.replicas and what to use', async () => {
    const err = await bootError({ nats: { servers: nats.url }, storage: { objectStore: { bucket: 'osm-r3', replicas: 3 } } });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err).toMatchObject({ code: 'INVALID_OPTIONS', option: 'storage.objectStore.replicas' });
    expect((err as Error).message).toMatch(
      /is 3, which the server cannot place \(JetStream 10074: .*non-clustered.*\); a single nats-server keeps 1 replica/,
    );
  });

  it("stream replicas the server cannot place fail bootstrap naming the stream's replicas", async () => {
    const err = await bootError({
      nats: { servers: nats.url },
      storage: { objectStore: { bucket: 'osm-r1', ttlSeconds: 600 } },
      jetstream: { streams: [{ name: 'OSM_R3', subjects: ['osm.r3.>'], maxAgeSeconds: 60, replicas: 3 }] },
    });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe('jetstream.streams (OSM_R3).replicas');
    expect((err as Error).message).toMatch(/JetStream 10074/);
  });

  it('the ioredis trap is live: a Redis storage form does load it', async () => {
    const err = await bootError({ nats: { servers: nats.url }, storage: { redis: { url: 'redis://127.0.0.1:1' } } });
    expect(String((err as Error)?.message)).toMatch(/ioredis was loaded/);
  });
});
