import { randomBytes } from 'node:crypto';
import { Controller, INestApplication, Module } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import Redis from 'ioredis';
import request from 'supertest';
import { firstValueFrom } from 'rxjs';
import {
  EventBus,
  EventBusModule,
  EventBusModuleOptions,
  InvalidOptionsError,
  MESSAGE_STORAGE_MANAGER,
  MessageContext,
  REDIS_CLIENT_DEFAULTS,
  RedisStorageManager,
  ZSTD_AVAILABLE,
  withBodyCodec,
} from '../../lib';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, waitUntil } from '../harness/wait';

// Issue 32: the body codec through EventBusModule (bootstrap refusals, /_health), the
// @nestjs/microservices transport and durable delivery, against real nats-server and Redis.
const K1 = randomBytes(32);
const MARKER = 'CODEC-PATHS-MARKER-99';
const MAGIC = Buffer.from([0, 0x45, 0x42, 0x43, 0x31]);
const report = (bytes: number, id: string) => ({
  id,
  marker: MARKER,
  rows: Array.from({ length: Math.ceil(bytes / 60) }, (_, i) => ({ i, ok: i % 3 > 0 })),
});

@Controller()
class Handlers {
  @MessagePattern('bcp.size')
  size(@Payload() data: { rows: unknown[] }) {
    return { rows: data.rows.length, echo: report(MiB, 'reply') };
  }
}

describe('body codec through the module, the transport and durable delivery (issue 32)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let raw: NatsConnection;
  let app: INestApplication | undefined;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url });
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    redis?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  async function boot(storage: Record<string, unknown>, extra: Partial<EventBusModuleOptions> = {}): Promise<INestApplication> {
    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url },
          largeMessageThreshold: 64 * 1024,
          storage: { redis: { url: redisServer.url }, ...storage } as EventBusModuleOptions['storage'],
          shutdownTimeoutMs: 1000,
          ...extra,
        }),
      ],
    })
    class AppModule {}
    const created = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
    await created.init();
    return created;
  }

  async function bootError(storage: Record<string, unknown>): Promise<InvalidOptionsError> {
    try {
      app = await boot(storage);
    } catch (err) {
      return err as InvalidOptionsError;
    }
    throw new Error('bootstrap did not fail');
  }

  it("keyPrefix '' (the Python wire): the codec is refused at bootstrap, naming the option and allReadersUseThisLibrary", async () => {
    const err = await bootError({ keyPrefix: '', encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.option).toBe('storage.encryption');
    expect(err.message).toMatch(/a Python service cannot read an encrypted or compressed body.*storage\.allReadersUseThisLibrary: true/);
    const shadow = await bootError({ keyPrefix: '', compression: 'gzip', allReadersUseThisLibrary: true, legacyShadowCopy: true });
    expect(shadow.option).toBe('storage.legacyShadowCopy');
  });

  it("keyPrefix '' with allReadersUseThisLibrary: bare-token keys hold encoded bodies, and no shadow copy is written", async () => {
    app = await boot({
      keyPrefix: '',
      encryption: { keys: { k1: K1.toString('base64') }, currentKeyId: 'k1' },
      compression: 'gzip',
      allReadersUseThisLibrary: true,
    });
    expect(app.get<RedisStorageManager>(MESSAGE_STORAGE_MANAGER).legacyShadowCopy).toBe(false);
    const bus = app.get(EventBus);
    const got: unknown[] = [];
    let token = '';
    await bus.subscribe('bcp.legacy', (p, ctx: MessageContext) => void (got.push(p), (token = ctx.token!)));
    await bus.publish('bcp.legacy', report(MiB, 'legacy'));
    await waitUntil(() => got.length === 1, 'the body');
    const stored = (await redis.getBuffer(token))!;
    expect(stored.subarray(0, 5)).toEqual(MAGIC);
    expect(stored.includes(MARKER)).toBe(false);
    expect(await redis.keys('eventbus:shadow:*')).toEqual([]);
  });

  if (ZSTD_AVAILABLE) {
    it(`compression 'zstd' on Node ${process.versions.node}: boots, and a body round-trips compressed with zstd (marker 3)`, async () => {
      app = await boot({ keyPrefix: 'bcz:', compression: 'zstd' });
      const bus = app.get(EventBus);
      const got: unknown[] = [];
      let token = '';
      await bus.subscribe('bcp.zstd', (p, ctx: MessageContext) => void (got.push(p), (token = ctx.token!)));
      await bus.publish('bcp.zstd', report(MiB, 'zstd'));
      await waitUntil(() => got.length === 1, 'the body');
      expect(got[0]).toEqual(report(MiB, 'zstd'));
      expect((await redis.getBuffer(`bcz:${token}`))![5]).toBe(3);
    });
  } else {
    it(`compression 'zstd' on Node ${process.versions.node}: bootstrap fails with InvalidOptionsError naming storage.compression`, async () => {
      const err = await bootError({ keyPrefix: 'bcz:', compression: 'zstd' });
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.option).toBe('storage.compression');
      expect(err.message).toMatch(/'zstd' needs Node 22\.15, 23\.8 or later/);
    });
  }

  it('/_health: storage is down while the key provider throws or answers without the current key, up again when it recovers', async () => {
    let provide: () => Record<string, Buffer> = () => ({ k1: K1 });
    app = await boot({ keyPrefix: 'bch:', encryption: { keys: async () => provide(), currentKeyId: 'k1', keyProviderIntervalMs: 0 } });
    const http = app.getHttpServer();
    expect((await request(http).get('/_health')).status).toBe(200);
    provide = () => {
      throw new Error('vault sealed');
    };
    const sealed = await request(http).get('/_health');
    expect(sealed.status).toBe(503);
    expect(sealed.body.error.storage).toEqual({ status: 'down', message: 'encryption key provider is unusable' });
    expect(JSON.stringify(sealed.body)).not.toContain('vault sealed');
    provide = () => ({ k0: K1 });
    expect((await request(http).get('/_health')).status).toBe(503);
    // Meanwhile the bus keeps the keys it had: a large publish still works.
    await app.get(EventBus).publish('bcp.health', report(MiB, 'h'));
    provide = () => ({ k1: K1 });
    expect((await request(http).get('/_health')).status).toBe(200);
  });

  it('@nestjs/microservices transport: a large request and a large reply are stored encrypted and arrive whole', async () => {
    const store = async () =>
      withBodyCodec(new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: 'bcm:' }), {
        encryption: { keys: { k1: K1 }, currentKeyId: 'k1' },
      });
    const serverStore = await store();
    const clientStore = await store();
    const ref = await Test.createTestingModule({ controllers: [Handlers] }).compile();
    app = ref.createNestApplication({ logger: false });
    const strategy = new EventBusTransport({ nats: { servers: [nats.url] }, storage: serverStore, largeMessageThreshold: 64 * 1024 });
    app.connectMicroservice({ strategy });
    await app.startAllMicroservices();
    await app.init();
    const client = new EventBusClientProxy({ nats: { servers: [nats.url] }, storage: clientStore, largeMessageThreshold: 64 * 1024 });
    try {
      await client.connect();
      const answer = await firstValueFrom(client.send('bcp.size', report(2 * MiB, 'req')));
      expect(answer).toEqual({ rows: report(2 * MiB, 'req').rows.length, echo: report(MiB, 'reply') });
      const keys = await redis.keys('bcm:*');
      expect(keys.length).toBeGreaterThanOrEqual(2); // the request's body and the reply's
      for (const key of keys) {
        const stored = (await redis.getBuffer(key))!;
        expect(stored.subarray(0, 5)).toEqual(MAGIC);
        expect(stored.includes(MARKER)).toBe(false);
      }
    } finally {
      await client.close();
      await Promise.all([serverStore.disconnect(), clientStore.disconnect()]);
    }
  });

  it('durable delivery: a persisted large message is stored encrypted and delivered; a tampered one is dead-lettered as corrupt', async () => {
    app = await boot(
      { keyPrefix: 'bcd:', encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } },
      { jetstream: { streams: [{ name: 'BCD', subjects: ['bcd.>'], maxAgeSeconds: 120 }] } },
    );
    const bus = app.get(EventBus);
    const dead: Array<Record<string, string>> = [];
    raw.subscribe('bcddead.x', {
      callback: (_e, m) => {
        const h: Record<string, string> = {};
        for (const [k, v] of m.headers ?? []) h[k] = v[0];
        dead.push(h);
      },
    });
    await raw.flush();
    await bus.publish('bcd.x', report(MiB, 'tampered'), { persist: true });
    const jsm = await jetstreamManager(raw);
    const envelope = JSON.parse(Buffer.from((await jsm.streams.getMessage('BCD', { seq: 1 }))!.data).toString());
    const stored = (await redis.getBuffer(`bcd:${envelope.token}`))!;
    expect(stored.subarray(0, 5)).toEqual(MAGIC);
    stored[stored.byteLength - 3] ^= 0xff;
    await redis.set(`bcd:${envelope.token}`, stored, 'KEEPTTL');
    await bus.publish('bcd.x', report(MiB, 'fine'), { persist: true });
    const got: string[] = [];
    await bus.subscribe('bcd.x', (p) => void got.push((p as { id: string }).id), {
      durable: 'reader',
      maxDeliver: 3,
      backoffMs: [100],
      ackWaitMs: 2000,
      deadLetter: 'bcddead.x',
    });
    await waitUntil(() => got.includes('fine') && dead.length === 1, 'the fine message and the dead letter');
    expect(got).toEqual(['fine']);
    expect(dead[0]).toMatchObject({ 'Eventbus-Dead-Reason': 'corrupt', 'Eventbus-Dead-Deliveries': '1' });
  });
});
