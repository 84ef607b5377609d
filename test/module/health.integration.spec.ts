import { INestApplication, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { EventBus, EventBusModule, MessageStorageError } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, MiB, waitUntil } from '../harness/wait';

// /_health against real servers: it answers within health.timeoutMs as a whole, and a Redis that answers PING
// but refuses writes is reported down.
describe('/_health: bounded in time, and storage writability', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let app: INestApplication | undefined;

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  async function startApp(timeoutMs: number): Promise<INestApplication> {
    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url, pingInterval: 60_000 },
          storage: { redis: { url: redis.url }, keyPrefix: 'hl:' },
          health: { timeoutMs },
          shutdownTimeoutMs: 1000,
        }),
      ],
    })
    class AppModule {}
    const created = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
    await created.init();
    return created;
  }

  it('with NATS frozen and 6 connections, /_health answers 503 within about one health.timeoutMs, not one per connection', async () => {
    const timeoutMs = 600;
    app = await startApp(timeoutMs);
    const bus = app.get(EventBus);
    for (let i = 0; i < 5; i++) await bus.addConsumer(`c${i}`);
    expect(bus.connections().size).toBe(6);
    expect((await request(app.getHttpServer()).get('/_health')).status).toBe(200);

    const pid = (nats as unknown as { child: { pid: number } }).child.pid;
    process.kill(pid, 'SIGSTOP');
    try {
      const started = Date.now();
      const res = await request(app.getHttpServer()).get('/_health');
      const tookMs = Date.now() - started;
      expect(res.status).toBe(503);
      expect(Object.values(res.body.error.nats.connections)).toHaveLength(6);
      // One timeout plus the request's own overhead; one after another it was 6 × 600 ms.
      expect(tookMs).toBeLessThan(timeoutMs * 2);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('a Redis that refuses writes (maxmemory 1, noeviction: OOM) makes /_health report storage down; it is up again once Redis takes writes', async () => {
    app = await startApp(2000);
    const http = app.getHttpServer();
    expect((await request(http).get('/_health')).status).toBe(200);
    redis.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    redis.cli('CONFIG', 'SET', 'maxmemory', '1');
    try {
      // The failure users see: a large publish is refused.
      await expect(app.get(EventBus).publish('hl.big', bigPayload(2 * MiB))).rejects.toThrow(MessageStorageError);
      const res = await request(http).get('/_health');
      expect(res.status).toBe(503);
      expect(res.body.error.storage).toEqual({ status: 'down', message: 'storage refuses writes' });
      expect(res.body.info.nats.status).toBe('up');
    } finally {
      redis.cli('CONFIG', 'SET', 'maxmemory', '0');
    }
    await waitUntil(async () => (await request(http).get('/_health')).status === 200, '/_health back to 200');
  });
});
