import { MessageContext } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, sleep, waitUntil } from '../harness/wait';

// A storage outage during recovery is bounded (issue 31, item 5): past storageOutageMaxDeliveries
// the message is dead-lettered with reason `storage`; a short outage ends in none. Real nats-server
// and a real Redis that is stopped and started again (append-only, so the bodies survive).
describe('storage outage: dead-lettered as storage past its limit (issue 31)', () => {
  let nats: NatsServer;
  let logs: LogCapture;
  const buses = new TestBuses();

  beforeAll(async () => {
    nats = await NatsServer.start();
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await nats?.dispose();
  });

  const jetstream = (n: string) => ({
    streams: [
      { name: `SO${n}`, subjects: [`so${n}.work.>`], maxAgeSeconds: 3600 },
      { name: `SO${n}DEAD`, subjects: [`so${n}.dead.>`], maxAgeSeconds: 3600 },
    ],
  });

  it('an outage longer than the limit: one storage dead letter, the handler never called; once Redis is back the letter is read and replayed', async () => {
    const redis = await RedisServer.start({ args: ['--appendonly', 'yes'] });
    try {
      const { bus } = await buses.withRedis(nats.url, redis.url, 'so1:', { largeMessageThreshold: 64 * 1024, jetstream: jetstream('1') });
      await bus.publish('so1.work.x', bigPayload(200_000, 'long'), { persist: true });
      await redis.stop();
      const handled: Array<{ id: string; delivery: number }> = [];
      await bus.subscribe(
        'so1.work.x',
        (p: { id: string }, ctx: MessageContext) => void handled.push({ id: p.id, delivery: ctx.deliveryCount! }),
        { durable: 'reader', maxDeliver: 2, backoffMs: [50], ackWaitMs: 2000, deadLetter: 'so1.dead.x', storageOutageMaxDeliveries: 4 },
      );
      await waitUntil(async () => (await bus.deadLetters.list({ stream: 'SO1DEAD' })).length === 1, 'the storage dead letter', 20_000);
      const [letter] = await bus.deadLetters.list({ stream: 'SO1DEAD' });
      expect(letter).toMatchObject({ reason: 'storage', deliveries: 4, durable: 'reader', subject: 'so1.work.x', claimChecked: true });
      expect(letter.lastError).toMatch(/could not recover message|Connection|connect|closed|ECONNREFUSED|offline/i);
      // Terminated: no fifth delivery comes, and the handler never ran.
      await sleep(500);
      expect(handled).toEqual([]);

      await redis.start();
      // The storage client reconnects by itself; until then get() fails with MessageStorageError.
      let body: Awaited<ReturnType<typeof bus.deadLetters.get>> | undefined;
      await waitUntil(async () => !!(body = await bus.deadLetters.get(letter.id).catch(() => undefined)), 'the body readable again');
      expect(body!.payload).toEqual(bigPayload(200_000, 'long'));
      await bus.deadLetters.replay([letter.id]);
      await waitUntil(() => handled.length === 1, 'the replay handled');
      expect(handled[0].id).toBe('long');
    } finally {
      await buses.closeAll();
      await redis.dispose();
    }
  });

  it('a short outage (Redis back within a second) ends in 0 dead letters: the message is handled', async () => {
    const redis = await RedisServer.start({ args: ['--appendonly', 'yes'] });
    try {
      const { bus } = await buses.withRedis(nats.url, redis.url, 'so2:', { largeMessageThreshold: 64 * 1024, jetstream: jetstream('2') });
      await bus.publish('so2.work.x', bigPayload(200_000, 'short'), { persist: true });
      await redis.stop();
      const handled: string[] = [];
      await bus.subscribe('so2.work.x', (p: { id: string }) => void handled.push(p.id), {
        durable: 'reader',
        backoffMs: [100],
        ackWaitMs: 2000,
        deadLetter: 'so2.dead.x',
      });
      // Deliveries fail meanwhile; the default limit (20) is far off.
      await sleep(800);
      await redis.start();
      await waitUntil(() => handled.length === 1, 'handled after the outage', 15_000);
      expect(handled).toEqual(['short']);
      expect(await bus.deadLetters.list({ stream: 'SO2DEAD' })).toEqual([]);
    } finally {
      await buses.closeAll();
      await redis.dispose();
    }
  });

  it('storageOutageMaxDeliveries must be a whole number of at least 1, and only with durable', async () => {
    const redis = await RedisServer.start();
    try {
      const { bus } = await buses.withRedis(nats.url, redis.url, 'so3:', { jetstream: jetstream('3') });
      await expect(bus.subscribe('so3.work.x', () => undefined, { durable: 'r', storageOutageMaxDeliveries: 0 })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        option: 'storageOutageMaxDeliveries',
      });
      await expect(bus.subscribe('so3.work.y', () => undefined, { storageOutageMaxDeliveries: 3 })).rejects.toMatchObject({
        option: 'storageOutageMaxDeliveries',
      });
    } finally {
      await buses.closeAll();
      await redis.stop();
    }
  });
});
