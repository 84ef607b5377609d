import Redis from 'ioredis';
import { MessageContext } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, waitUntil } from '../harness/wait';

// A dead letter's claim-checked body lives as long as the dead-letter stream keeps the letter, not
// as long as the source stream kept the message (issue 31, item 1).
describe('dead letter bodies outlive their source stream', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let logs: LogCapture;
  const buses = new TestBuses();

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.stop()]);
  });

  it('source stream 60 s, dead-letter stream 1 day: the dead letter gets its own stored copy with a TTL of a day and a minute; with the original gone it still reads and replays', async () => {
    const { bus } = await buses.withRedis(nats.url, redisServer.url, 'dlb1:', {
      largeMessageThresholdBytes: 4096,
      jetstream: {
        streams: [
          { name: 'DLBSRC', subjects: ['dlb.work.>', 'dlb.again.>'], maxAgeSeconds: 60 },
          { name: 'DLBDEAD', subjects: ['dlb.dead.>'], maxAgeSeconds: 86_400 },
        ],
      },
    });
    let originalToken: string | undefined;
    await bus.subscribe(
      'dlb.work.x',
      (_p: unknown, ctx: MessageContext) => {
        originalToken = ctx.token;
        throw new Error('refused');
      },
      { durable: 'worker', maxDeliver: 1, deadLetter: 'dlb.dead.x' },
    );
    const replayed: Array<{ id: string; text: string }> = [];
    await bus.subscribe('dlb.again.x', (p: { id: string; text: string }) => void replayed.push(p), { durable: 'again' });
    const sent = bigPayload(20_000, 'kept');
    await bus.publish('dlb.work.x', sent, { persist: true });
    await waitUntil(async () => (await bus.deadLetters.list({ stream: 'DLBDEAD' })).length === 1, 'the dead letter', 15_000);

    expect(originalToken).toBeDefined();
    const keys = (await redis.keys('dlb1:*')).sort();
    expect(keys).toHaveLength(2);
    const original = `dlb1:${originalToken}`;
    const copy = keys.find((k) => k !== original) as string;
    expect(keys).toContain(original);
    // The original lives by its stream (60 s and a minute) or the store's default TTL (300 s), whichever is longer.
    expect(await redis.ttl(original)).toBeLessThanOrEqual(300);
    expect(await redis.ttl(copy)).toBeGreaterThan(86_400);
    expect(await redis.ttl(copy)).toBeLessThanOrEqual(86_460);

    // The source's body expires (deleted here): the dead letter does not need it.
    await redis.del(original);
    const [entry] = await bus.deadLetters.list({ stream: 'DLBDEAD' });
    expect(entry.claimChecked).toBe(true);
    expect(entry.reason).toBe('max_deliver');
    const letter = await bus.deadLetters.get(entry.id);
    expect(letter.payload).toEqual(sent);
    await bus.deadLetters.replay([entry.id], { to: 'dlb.again.x' });
    await waitUntil(() => replayed.length === 1, 'the replay handled');
    expect(replayed[0]).toEqual(sent);
  });
});
