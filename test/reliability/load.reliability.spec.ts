import { randomBytes } from 'node:crypto';
import { INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import Redis from 'ioredis';
import { EventBus, EventBusModule, MessageContext, REDIS_CLIENT_DEFAULTS, RedisStorageManager, Subscribe } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { sha256, sleep, waitUntil } from '../harness/wait';
import { captureLogs, DeliveryCounter, LogCapture, MiB, pick, report, rssMiB, sampleRss } from './reliability-helpers';

// Sizes: `npm test` / `npm run soak`.
const SMALL_N = pick(20_000, 200_000);
const LARGE_N = pick(20, 500);
const FLOOD_N = pick(5_000, 100_000);

/** Where the handlers of both app instances report; set per test. */
const sink = {
  small: (_instance: number, _id: number) => {},
  large: (_instance: number, _p: LargePayload, _ctx: MessageContext) => {},
};
interface LargePayload {
  id: number;
  sha: string;
  data: string;
}

let instances = 0;
@Injectable()
class LoadHandlers {
  readonly instance = instances++;

  @Subscribe('rel.load.small', { queue: 'load-workers' })
  small(p: { id: number }) {
    sink.small(this.instance, p.id);
  }

  @Subscribe('rel.load.large', { queue: 'load-workers' })
  large(p: LargePayload, ctx: MessageContext) {
    sink.large(this.instance, p, ctx);
  }
}

describe('reliability under load', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let logs: LogCapture;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    logs = captureLogs();
  });

  afterAll(async () => {
    logs?.restore();
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  describe('a queue group spread over two Nest app instances', () => {
    const apps: INestApplication[] = [];

    beforeAll(async () => {
      for (let i = 0; i < 2; i++) {
        @Module({
          imports: [
            EventBusModule.forRoot({
              nats: { servers: nats.url, name: `load-${i}`, reconnectTimeWait: 100 },
              storage: { redis: { url: redisServer.url }, ttlSeconds: 120, keyPrefix: 'load:' },
              health: { enabled: false },
            }),
          ],
          providers: [LoadHandlers],
        })
        class AppModule {}
        const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
        const app = moduleRef.createNestApplication({ logger: logs });
        await app.init();
        apps.push(app);
      }
    });

    afterAll(async () => {
      await Promise.all(apps.map((a) => a.close()));
    });

    it(
      `delivers ${SMALL_N} small messages exactly once across the group`,
      async () => {
        const counter = new DeliveryCounter(SMALL_N);
        const perInstance = new Map<number, number>();
        sink.small = (instance, id) => {
          counter.hit(id);
          perInstance.set(instance, (perInstance.get(instance) ?? 0) + 1);
        };
        const bus = apps[0].get(EventBus);
        const filler = 'x'.repeat(64);
        const started = Date.now();
        const BATCH = 500;
        for (let id = 0; id < SMALL_N; id++) {
          await bus.publish('rel.load.small', { id, filler });
          // Let the in-process consumers run; a publisher alone would outrun them and fill buffers.
          if (id % BATCH === BATCH - 1) {
            await new Promise((r) => setImmediate(r));
            if (counter.received < id - 20 * BATCH)
              await waitUntil(() => counter.received >= id - 5 * BATCH, 'consumers to catch up', 30_000);
          }
        }
        const published = Date.now();
        await waitUntil(() => counter.received >= SMALL_N, `${SMALL_N} messages received (have ${counter.received})`, 60_000);
        await sleep(300); // a duplicate would arrive now
        const elapsed = Date.now() - started;
        report('load.small', {
          published: SMALL_N,
          received: counter.received,
          lost: counter.lost,
          duplicated: counter.duplicated,
          perInstance: Object.fromEntries(perInstance),
          publishMs: published - started,
          totalMs: elapsed,
          msgPerSec: Math.round((SMALL_N * 1000) / elapsed),
          rssMiB: rssMiB(),
        });
        expect(counter.lost).toBe(0);
        expect(counter.duplicated).toBe(0);
        expect(counter.received).toBe(SMALL_N);
        // Spread over both instances.
        expect(perInstance.size).toBe(2);
        for (const n of perInstance.values()) expect(n).toBeGreaterThan(SMALL_N / 10);
      },
      pick(120_000, 900_000),
    );

    it(
      `delivers ${LARGE_N} large messages (1-8 MiB) intact, checked by SHA-256`,
      async () => {
        const counter = new DeliveryCounter(LARGE_N);
        const corrupt: number[] = [];
        const notRecovered: number[] = [];
        const perInstance = new Map<number, number>();
        const deletes: Promise<unknown>[] = [];
        sink.large = (instance, p, ctx) => {
          if (sha256(p.data) !== p.sha) corrupt.push(p.id);
          if (!ctx.recovered || !ctx.token) notRecovered.push(p.id);
          // Keep Redis small over a long soak: the test, not the bus, removes what it has checked.
          if (ctx.token) deletes.push(redis.del(`load:${ctx.token}`));
          counter.hit(p.id);
          perInstance.set(instance, (perInstance.get(instance) ?? 0) + 1);
        };
        const bus = apps[1].get(EventBus);
        const rss = sampleRss();
        const started = Date.now();
        let bytes = 0;
        for (let id = 0; id < LARGE_N; id++) {
          const size = MiB + Math.floor(Math.random() * 7 * MiB);
          const data = randomBytes(Math.floor((size * 3) / 4)).toString('base64');
          bytes += data.length;
          await bus.publish('rel.load.large', { id, sha: sha256(data), data });
          // At most 3 in flight, so memory stays bounded however many are sent.
          await waitUntil(() => counter.received >= id - 2, 'large messages to be received', 60_000);
        }
        await waitUntil(() => counter.received >= LARGE_N, `${LARGE_N} large messages received`, 60_000);
        await Promise.all(deletes);
        const elapsed = Date.now() - started;
        const peak = rss.stop();
        report('load.large', {
          published: LARGE_N,
          received: counter.received,
          lost: counter.lost,
          duplicated: counter.duplicated,
          corrupt: corrupt.length,
          notRecovered: notRecovered.length,
          perInstance: Object.fromEntries(perInstance),
          MiB: Math.round(bytes / MiB),
          totalMs: elapsed,
          MiBPerSec: Math.round((bytes / MiB / elapsed) * 1000 * 10) / 10,
          peakRssMiB: peak,
        });
        expect(corrupt).toEqual([]);
        expect(notRecovered).toEqual([]);
        expect(counter.lost).toBe(0);
        expect(counter.duplicated).toBe(0);
      },
      pick(120_000, 1_800_000),
    );
  });

  it(
    'a slow handler: concurrency and pending limits hold, a slow-consumer line names the subject, memory stays bounded',
    async () => {
      const MAX_CONCURRENT = 4;
      const MAX_PENDING = 200;
      const storageClient = new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS });
      const storage = new RedisStorageManager(storageClient, { keyPrefix: 'slow:' });
      await storage.connect();
      const bus = new EventBus(
        { nats: { servers: nats.url, name: 'slow' }, maxConcurrentHandlers: MAX_CONCURRENT, maxPendingMessages: MAX_PENDING },
        storage,
      );
      await bus.connect();
      try {
        let inFlight = 0;
        let maxInFlight = 0;
        let handled = 0;
        await bus.subscribe('rel.slow', async () => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await sleep(20);
          inFlight--;
          handled++;
        });
        // The dispatcher is internal: if a refactor moved or renamed it, fail here rather than check the bounds of nothing.
        const live = (bus as any).receiver?.subscriptions?.dispatchers?.() as Array<{
          pending: number;
          inFlight: number;
          droppedCount: number;
        }>;
        expect(live).toHaveLength(1);
        const dispatcher = live[0];
        expect(dispatcher).toEqual(expect.objectContaining({ pending: 0, inFlight: 0, droppedCount: 0 }));
        let maxPending = 0;
        const probe = setInterval(() => {
          maxPending = Math.max(maxPending, dispatcher.pending);
        }, 5);
        logs.clear();
        const baseline = rssMiB();
        const rss = sampleRss(10);
        const body = 'y'.repeat(1024);
        for (let id = 0; id < FLOOD_N; id++) {
          await bus.publish('rel.slow', { id, body });
          if (id % 250 === 249) await new Promise((r) => setImmediate(r));
        }
        await bus.connections().get('producer')!.flush();
        await waitUntil(() => inFlight === 0 && dispatcher.pending === 0, 'slow subscription to drain', 60_000);
        clearInterval(probe);
        const peak = rss.stop();
        const slowLines = logs.matching(/slow consumer/);
        const dropped = FLOOD_N - handled;
        report('load.slowConsumer', {
          published: FLOOD_N,
          handled,
          droppedByDesign: dropped,
          maxInFlight,
          maxConcurrentHandlers: MAX_CONCURRENT,
          maxPendingSeen: maxPending,
          maxPendingMessages: MAX_PENDING,
          droppedByDispatcher: dispatcher.droppedCount,
          slowConsumerLines: slowLines.length,
          firstSlowLine: slowLines[0],
          baselineRssMiB: baseline,
          peakRssMiB: peak,
        });
        expect(maxInFlight).toBeLessThanOrEqual(MAX_CONCURRENT);
        expect(maxInFlight).toBe(MAX_CONCURRENT);
        expect(maxPending).toBeLessThanOrEqual(MAX_PENDING);
        // The probe saw the queue fill, so the bound above was put to the test.
        expect(maxPending).toBeGreaterThan(MAX_PENDING / 2);
        expect(handled).toBeGreaterThanOrEqual(MAX_PENDING);
        expect(dropped).toBeGreaterThan(0);
        // Every message not handled was dropped by the pending bound, nowhere else.
        expect(dispatcher.droppedCount).toBe(dropped);
        // What an operator sees: each slow-consumer line names the subject and a queue held at the bound.
        expect(slowLines.length).toBeGreaterThan(0);
        for (const line of slowLines)
          expect(line).toMatch(new RegExp(`^slow consumer on "rel\\.slow": ${MAX_PENDING} messages waiting, \\d+ dropped so far$`));
        const lastDropped = Number(/(\d+) dropped so far/.exec(slowLines[slowLines.length - 1])![1]);
        expect(lastDropped).toBeGreaterThan(0);
        expect(lastDropped).toBeLessThanOrEqual(dropped);
        // What the bus holds is bounded by maxPending x 1 KiB; allow generous room for GC and the client.
        expect(peak - baseline).toBeLessThan(256);
      } finally {
        await bus.close();
        await storage.disconnect();
      }
    },
    pick(60_000, 600_000),
  );
});
