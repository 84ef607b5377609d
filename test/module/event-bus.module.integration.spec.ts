import { Controller, INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import Redis from 'ioredis';
import { connect, errors, NatsConnection } from '@nats-io/transport-node';
import { sc } from '../harness/text-codec';
import request from 'supertest';
import {
  EventBus,
  EventBusModule,
  EventBusModuleOptions,
  InMemoryStorageManager,
  MESSAGE_STORAGE_MANAGER,
  MessageContext,
  NoRespondersError,
  RemoteHandlerError,
  StoredMessageEnvelope,
  Subscribe,
} from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, sha256, sleep, waitUntil, MiB } from '../harness/wait';

/** What handlers saw, shared by the test classes below. */
const seen: Array<{ where: string; payload: any; ctx: MessageContext }> = [];

@Injectable()
class EdgeHandlers {
  constructor(readonly bus: EventBus) {}

  @Subscribe('m.edge.list', { queue: 'velocloud-bridge' })
  listEdges(req: { request_id: string }, ctx: MessageContext) {
    seen.push({ where: 'provider', payload: req, ctx });
    return { request_id: req.request_id, edges: ['e1', 'e2'] };
  }

  @Subscribe('m.edge.status')
  async status(req: { size: number }, ctx: MessageContext) {
    seen.push({ where: 'provider-status', payload: req, ctx });
    return bigPayload(req.size, 'status');
  }

  @Subscribe('m.large.event')
  @Subscribe('m.large.event.alias')
  large(payload: unknown, ctx: MessageContext) {
    seen.push({ where: 'large', payload, ctx });
  }

  @Subscribe('m.fails')
  fails() {
    throw new Error('edge store unavailable');
  }
}

/** Calls of the plain method below; it must never run, whatever message arrives. */
const plainCalls: unknown[] = [];
@Injectable()
class MixedHandlers {
  @Subscribe('m.mixed.subscribed')
  subscribed() {
    return 'subscribed';
  }

  // No @Subscribe: its name is a valid topic, and it sits next to a subscribed method.
  notASubscriber(payload: unknown) {
    plainCalls.push(payload);
    return 'plain method';
  }
}

/** Two feature modules that know nothing of each other, each injecting the bus. */
@Injectable()
class OrdersService {
  constructor(readonly bus: EventBus) {}

  @Subscribe('m.shared.orders')
  count(req: { n: number }) {
    return { orders: req.n + 1 };
  }
}
@Module({ providers: [OrdersService] })
class OrdersModule {}

@Injectable()
class BillingService {
  constructor(readonly bus: EventBus) {}

  @Subscribe('m.shared.billing')
  bill(req: { n: number }) {
    return { billed: req.n * 2 };
  }
}
@Module({ providers: [BillingService] })
class BillingModule {}

@Controller()
class NotificationController {
  @Subscribe('m.notify', { queue: 'notifier' })
  notify(payload: unknown, ctx: MessageContext) {
    seen.push({ where: 'controller', payload, ctx });
  }
}

let slowStarted = 0;
let slowFinished = 0;
@Injectable()
class SlowHandlers {
  @Subscribe('m.slow')
  async slow() {
    slowStarted++;
    await sleep(800);
    slowFinished++;
    return 'done';
  }
}

/** A storage that records what went through it, for the override tests. */
class RecordingStorage extends InMemoryStorageManager {
  static instances: RecordingStorage[] = [];
  stored = 0;
  constructor() {
    super();
    RecordingStorage.instances.push(this);
  }
  async storeMessage(body: Uint8Array): Promise<StoredMessageEnvelope> {
    this.stored++;
    return super.storeMessage(body);
  }
}

describe('EventBusModule in a Nest app, against real servers', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let raw: NatsConnection;

  const baseOptions = (): EventBusModuleOptions => ({
    nats: { servers: nats.url, name: 'module-test', reconnectTimeWait: 100 },
    storage: { redis: { url: redisServer.url }, ttlSeconds: 120, keyPrefix: 'mod:' },
  });

  async function startApp(imports: any[], providers: any[] = [], controllers: any[] = []): Promise<INestApplication> {
    @Module({ imports, providers, controllers })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    return app;
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });

  afterAll(async () => {
    await raw?.close();
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  beforeEach(() => {
    seen.length = 0;
  });

  describe('with Redis storage (forRoot)', () => {
    let app: INestApplication;
    let bus: EventBus;

    beforeAll(async () => {
      app = await startApp([EventBusModule.forRoot(baseOptions())], [EdgeHandlers, MixedHandlers], [NotificationController]);
      bus = app.get(EventBus);
    });
    afterAll(async () => {
      await app?.close();
    });

    it('provides one EventBus singleton, shared by every module', async () => {
      const shared = await startApp([EventBusModule.forRoot(baseOptions()), OrdersModule, BillingModule]);
      try {
        const ordersBus = shared.get(OrdersService).bus;
        const billingBus = shared.get(BillingService).bus;
        expect(ordersBus).toBeInstanceOf(EventBus);
        expect(billingBus).toBe(ordersBus);
        expect(shared.get(EventBus)).toBe(ordersBus);
        // Each module's bus reaches the other module's handler.
        expect(await billingBus.rpcRequest('m.shared.orders', { n: 1 }, { timeout: 5000 })).toEqual({ orders: 2 });
        expect(await ordersBus.rpcRequest('m.shared.billing', { n: 3 }, { timeout: 5000 })).toEqual({ billed: 6 });
        // One bus, one set of connections: a second instance would open its own.
        expect([...ordersBus.connections().keys()]).toEqual(['producer', 'consumer:default']);
      } finally {
        await shared.close();
      }
    });

    it('discovers @Subscribe on a provider; the return value is the reply', async () => {
      const reply = await bus.rpcRequest<{ edges: string[] }>('m.edge.list', { request_id: 'r1' }, { timeout: 5000 });
      expect(reply).toEqual({ request_id: 'r1', edges: ['e1', 'e2'] });
      expect(seen[0]).toMatchObject({ where: 'provider', payload: { request_id: 'r1' } });
      expect(seen[0].ctx.subject).toBe('m.edge.list');
      expect(seen[0].ctx.reply).toBeTruthy();
    });

    it('discovers @Subscribe on a controller', async () => {
      await bus.publish('m.notify', { message: 'hi' });
      await waitUntil(() => seen.some((s) => s.where === 'controller'), 'controller handler called');
      expect(seen.find((s) => s.where === 'controller')!.payload).toEqual({ message: 'hi' });
    });

    it('recovers a large message before the handler runs, on every stacked topic', async () => {
      const payload = bigPayload(3 * MiB);
      await bus.publish('m.large.event', payload);
      await bus.publish('m.large.event.alias', payload);
      await waitUntil(() => seen.filter((s) => s.where === 'large').length === 2, 'both large messages handled');
      for (const s of seen.filter((x) => x.where === 'large')) {
        expect(s.ctx.recovered).toBe(true);
        expect(s.ctx.token).toMatch(/^[0-9a-f-]{36}$/);
        expect(sha256(JSON.stringify(s.payload))).toBe(sha256(JSON.stringify(payload)));
        expect(await redis.ttl(`mod:${s.ctx.token}`)).toBeGreaterThan(100);
      }
    });

    it('offloads a large reply taken from an async return value; it lives for the short reply TTL, not deleted on the responder word', async () => {
      const before = new Set(await redis.keys('mod:*'));
      const reply = await bus.rpcRequest<{ id: string; text: string }>('m.edge.status', { size: 2 * MiB }, { timeout: 10_000 });
      expect(sha256(JSON.stringify(reply))).toBe(sha256(JSON.stringify(bigPayload(2 * MiB, 'status'))));
      const added = (await redis.keys('mod:*')).filter((k) => !before.has(k));
      expect(added).toHaveLength(1);
      const ttl = await redis.ttl(added[0]);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60);
    });

    it('turns a handler throw into RemoteHandlerError for the requester', async () => {
      const err: any = await bus.rpcRequest('m.fails', {}, { timeout: 10_000 }).catch((e: any) => e);
      expect(err).toBeInstanceOf(RemoteHandlerError);
      expect(err.remoteMessage).toBe('edge store unavailable');
    });

    it('ignores methods without @Subscribe', async () => {
      plainCalls.length = 0;
      // The subscribed neighbour answers, so the provider was discovered.
      for (let i = 0; i < 5; i++) expect(await bus.rpcRequest('m.mixed.subscribed', { i }, { timeout: 5000 })).toBe('subscribed');
      await bus.publish('m.mixed.subscribed', { event: true });
      // Nothing listens where the plain method's name would put it.
      const err: any = await bus.rpcRequest('notASubscriber', { direct: true }, { timeout: 2000 }).catch((e: any) => e);
      expect(err).toBeInstanceOf(NoRespondersError);
      expect(err.code).toBe('NO_RESPONDERS');
      // A round trip after the event: had the plain method shared the subscribed topic, it would have run by now.
      expect(await bus.rpcRequest('m.mixed.subscribed', {}, { timeout: 5000 })).toBe('subscribed');
      expect(plainCalls).toEqual([]);
    });
  });

  describe('health endpoint', () => {
    it('answers 200, then 503 while Redis is stopped, then 200 after Redis restarts; never shows URLs or secrets', async () => {
      const app = await startApp([EventBusModule.forRoot(baseOptions())]);
      await app.listen(0, '127.0.0.1');
      try {
        const http = app.getHttpServer();
        const up = await request(http).get('/_health');
        expect(up.status).toBe(200);
        expect(up.body.status).toBe('ok');
        expect(up.body.details.nats.status).toBe('up');
        expect(up.body.details.storage.status).toBe('up');
        expect(JSON.stringify(up.body)).not.toMatch(/redis:\/\/|nats:\/\/|127\.0\.0\.1/);

        await redisServer.stop();
        const down = await request(http).get('/_health');
        expect(down.status).toBe(503);
        expect(down.body.details.storage.status).toBe('down');
        expect(down.body.details.nats.status).toBe('up');
        expect(JSON.stringify(down.body)).not.toMatch(/redis:\/\/|nats:\/\/|127\.0\.0\.1/);

        await redisServer.start();
        await waitUntil(async () => (await request(http).get('/_health')).status === 200, '/_health back to 200', 15_000);
      } finally {
        if (!redisServer.running) await redisServer.start();
        await app.close();
      }
    });

    it('answers 503 while NATS is down', async () => {
      const app = await startApp([EventBusModule.forRoot(baseOptions())], [NotificationController]);
      await app.listen(0, '127.0.0.1');
      try {
        const http = app.getHttpServer();
        expect((await request(http).get('/_health')).status).toBe(200);
        await nats.stop();
        await waitUntil(async () => (await request(http).get('/_health')).status === 503, '/_health 503 with NATS down');
        await nats.start();
        await waitUntil(async () => (await request(http).get('/_health')).status === 200, '/_health 200 after NATS restarts', 20_000);
      } finally {
        if (!nats.running) await nats.start();
        await app.close();
      }
    });

    it('serves on another path, or not at all', async () => {
      const moved = await startApp([EventBusModule.forRoot({ ...baseOptions(), health: { path: 'status/live' } })]);
      await moved.listen(0, '127.0.0.1');
      expect((await request(moved.getHttpServer()).get('/status/live')).status).toBe(200);
      expect((await request(moved.getHttpServer()).get('/_health')).status).toBe(404);
      await moved.close();

      const off = await startApp([EventBusModule.forRoot({ ...baseOptions(), health: { enabled: false } })]);
      await off.listen(0, '127.0.0.1');
      expect((await request(off.getHttpServer()).get('/_health')).status).toBe(404);
      await off.close();
    });
  });

  describe('storage override', () => {
    it('takes a storage class from the options (useClass)', async () => {
      RecordingStorage.instances = [];
      const app = await startApp(
        [EventBusModule.forRoot({ nats: { servers: nats.url }, storage: { useClass: RecordingStorage } })],
        [EdgeHandlers],
      );
      const keysBefore = (await redis.keys('*')).length;
      try {
        const bus = app.get(EventBus);
        expect(app.get(MESSAGE_STORAGE_MANAGER)).toBeInstanceOf(RecordingStorage);
        await bus.publish('m.large.event', bigPayload(2 * MiB));
        await waitUntil(() => seen.some((s) => s.where === 'large'), 'large message via custom storage');
        expect(RecordingStorage.instances[0].stored).toBe(1);
        expect((await redis.keys('*')).length).toBe(keysBefore); // Redis untouched by this app
      } finally {
        await app.close();
      }
    });

    it('takes a storage factory from the options (useFactory with inject)', async () => {
      const STORE_TTL = 'STORE_TTL';
      @Module({ providers: [{ provide: STORE_TTL, useValue: 42 }], exports: [STORE_TTL] })
      class TtlModule {}
      let madeWith: number | undefined;
      const app = await startApp([
        TtlModule,
        EventBusModule.forRoot({
          nats: { servers: nats.url },
          storage: {
            useFactory: (ttl: number) => {
              madeWith = ttl;
              return new InMemoryStorageManager({ ttlSeconds: ttl });
            },
            inject: [STORE_TTL],
          },
        }),
      ]);
      expect(madeWith).toBe(42);
      expect(app.get(MESSAGE_STORAGE_MANAGER)).toBeInstanceOf(InMemoryStorageManager);
      await app.close();
    });

    it('can be replaced in tests with overrideProvider(MESSAGE_STORAGE_MANAGER)', async () => {
      const fake = new RecordingStorage();
      @Module({ imports: [EventBusModule.forRoot(baseOptions())], providers: [EdgeHandlers] })
      class AppModule {}
      const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
        .overrideProvider(MESSAGE_STORAGE_MANAGER)
        .useValue(fake)
        .compile();
      const app = moduleRef.createNestApplication({ logger: false });
      await app.init();
      try {
        const before = (await redis.keys('mod:*')).length;
        await app.get(EventBus).publish('m.large.event', bigPayload(2 * MiB));
        await waitUntil(() => seen.some((s) => s.where === 'large'), 'large message via overridden storage');
        expect(fake.stored).toBe(1);
        expect((await redis.keys('mod:*')).length).toBe(before);
      } finally {
        await app.close();
      }
    });
  });

  describe('forRootAsync', () => {
    it('builds options from a factory that reads config', async () => {
      const CONFIG = 'CONFIG';
      @Module({
        providers: [{ provide: CONFIG, useValue: { NATS_URL: nats.url, REDIS_URL: redisServer.url, PREFIX: 'async:' } }],
        exports: [CONFIG],
      })
      class ConfigModule {}

      const app = await startApp(
        [
          EventBusModule.forRootAsync({
            imports: [ConfigModule],
            inject: [CONFIG],
            useFactory: (cfg: Record<string, string>) => ({
              nats: { servers: cfg.NATS_URL },
              storage: { redis: { url: cfg.REDIS_URL }, keyPrefix: cfg.PREFIX },
            }),
            health: { path: 'async-health' },
          }),
        ],
        [EdgeHandlers],
      );
      try {
        await app.listen(0, '127.0.0.1');
        expect((await request(app.getHttpServer()).get('/async-health')).status).toBe(200);
        await app.get(EventBus).publish('m.large.event', bigPayload(2 * MiB));
        await waitUntil(() => seen.some((s) => s.where === 'large'), 'large message');
        const token = seen.find((s) => s.where === 'large')!.ctx.token;
        expect(await redis.exists(`async:${token}`)).toBe(1);
      } finally {
        await app.close();
      }
    });
  });

  describe('bad configuration', () => {
    it.each([
      [{ nats: {} }, 'nats.servers'],
      [{ nats: { servers: 'nats://127.0.0.1:1' }, maxConcurrentHandlers: 0 }, 'maxConcurrentHandlers'],
      [{ nats: { servers: 'nats://127.0.0.1:1' }, storage: { redis: { url: 'http://x' } } }, 'storage.redis.url'],
      [
        { nats: { servers: 'nats://127.0.0.1:1' }, storage: { redis: { url: 'redis://127.0.0.1:1' }, ttlSeconds: -5 } },
        'storage.ttlSeconds',
      ],
      [{ nats: { servers: 'nats://127.0.0.1:1' }, storage: { nonsense: true } }, 'storage'],
    ])('stops bootstrap with an error naming the option (%j)', async (options, option) => {
      const err: any = await startApp([EventBusModule.forRoot(options as any)]).catch((e: any) => e);
      expect(err).toBeInstanceOf(Error);
      expect(err.code).toBe('INVALID_OPTIONS');
      expect(err.message).toContain(`"${option}"`);
    });
  });

  describe('shutdown', () => {
    it('lets an in-flight handler finish during app.close(), and its reply still goes out', async () => {
      slowStarted = 0;
      slowFinished = 0;
      const app = await startApp([EventBusModule.forRoot(baseOptions())], [SlowHandlers]);
      await raw.flush();
      const replyPromise = raw.request('m.slow', sc.encode('{}'), { timeout: 5000 });
      await waitUntil(() => slowStarted === 1, 'slow handler started');
      await app.close();
      expect(slowFinished).toBe(1);
      const reply = await replyPromise;
      expect(sc.decode(reply.data)).toBe('"done"');
      // After close the bus takes no more messages.
      // nats.js v3: a RequestError whose cause is NoRespondersError (the server's 503 status).
      const after = await raw.request('m.slow', sc.encode('{}'), { timeout: 2000 }).catch((e: unknown) => e);
      expect(after).toBeInstanceOf(errors.RequestError);
      expect((after as InstanceType<typeof errors.RequestError>).isNoResponders()).toBe(true);
    });
  });
});
