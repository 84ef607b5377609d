import { Controller, INestApplication } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import Redis from 'ioredis';
import { firstValueFrom } from 'rxjs';
import { InvalidOptionsError, REDIS_CLIENT_DEFAULTS, RedisStorageManager } from '../../lib';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, sha256, sleep, waitUntil } from '../harness/wait';

/** Handlers running now and at most, and what they got. */
const seen = { running: 0, peak: 0, shas: [] as string[] };

@Controller()
class Handlers {
  @EventPattern('budget.event')
  async onEvent(@Payload() data: { i: number; text: string }) {
    seen.running++;
    seen.peak = Math.max(seen.peak, seen.running);
    try {
      await sleep(150);
      seen.shas[data.i] = sha256(data.text);
    } finally {
      seen.running--;
    }
  }

  @MessagePattern('budget.echo')
  echo(@Payload() data: { text: string }) {
    return { bytes: data.text.length };
  }
}

// Issue 26 item 18: the @nestjs/microservices transport holds, per pattern, at most its byte budget
// (maxHeldBytes) of received and recovered bodies, as @Subscribe does. Real nats-server and Redis.
describe('EventBusTransport byte budget (issue 26 item 18)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let app: INestApplication;
  let client: EventBusClientProxy;
  const storages: RedisStorageManager[] = [];
  const storage = () => {
    const s = new RedisStorageManager(new Redis(redis.url, { ...REDIS_CLIENT_DEFAULTS }));
    storages.push(s);
    return s;
  };

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    const ref = await Test.createTestingModule({ controllers: [Handlers] }).compile();
    app = ref.createNestApplication({ logger: false });
    app.connectMicroservice({
      strategy: new EventBusTransport({ nats: { servers: [nats.url] }, storage: storage(), maxHeldBytes: 8 * MiB }),
    });
    await app.startAllMicroservices();
    await app.init();
    client = new EventBusClientProxy({ nats: { servers: [nats.url] }, storage: storage() });
    await client.connect();
  });

  afterAll(async () => {
    await client?.close();
    await app?.close();
    await Promise.all(storages.map((s) => s.disconnect()));
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  it('a burst of 40 emits of 2 MiB with maxHeldBytes 8 MiB: every one handled, at most 4 bodies held at once', async () => {
    const bodies = Array.from({ length: 40 }, (_, i) => ({ i, text: String.fromCharCode(97 + (i % 26)).repeat(2 * MiB) }));
    await Promise.all(bodies.map((b) => firstValueFrom(client.emit('budget.event', b))));
    await waitUntil(() => seen.shas.filter(Boolean).length === bodies.length, 'all 40 handled', 20_000);
    expect(seen.shas).toEqual(bodies.map((b) => sha256(b.text)));
    // 8 MiB / 2 MiB: the recovered bodies of handlers running at once never pass the budget.
    expect(seen.peak).toBeLessThanOrEqual(4);
    expect(seen.peak).toBeGreaterThanOrEqual(2);
  });

  it('requests still get their replies within the budget', async () => {
    const replies = await Promise.all(
      Array.from({ length: 12 }, () => firstValueFrom(client.send('budget.echo', { text: 'x'.repeat(2 * MiB) }))),
    );
    expect(replies).toEqual(Array.from({ length: 12 }, () => ({ bytes: 2 * MiB })));
  });

  it('maxHeldBytes, maxConcurrentHandlers and maxPendingMessages are checked', () => {
    for (const bad of [{ maxHeldBytes: 0 }, { maxConcurrentHandlers: 1.5 }, { maxPendingMessages: -1 }]) {
      expect(() => new EventBusTransport({ nats: { servers: [nats.url] }, ...bad })).toThrow(InvalidOptionsError);
    }
  });
});
