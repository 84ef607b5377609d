import { EventBus, MessageStorageError, ObjectStoreStorageManager } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sleep, waitUntil } from '../harness/wait';

// Stored bodies must outlive the messages a stream keeps, also when another deployment changes the
// stream (issue 26, items 7 and 8). Real nats-server with JetStream and a real Redis.
describe('stored bodies and the stream that keeps their messages (issue 26)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let logs: LogCapture;
  const buses = new TestBuses();

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  const ttlsOf = (prefix: string) =>
    redis
      .cli('--scan', '--pattern', `${prefix}*`)
      .split('\n')
      .filter(Boolean)
      .map((k) => Number(redis.cli('TTL', k)));

  it('item 7: after a second deployment raises the stream age from 60 s to 3600 s, the first one stores bodies for the new age', async () => {
    const stream = (maxAgeSeconds: number) => ({ jetstream: { streams: [{ name: 'AGE', subjects: ['age.>'], maxAgeSeconds }] } });
    const { bus: v1 } = await buses.withRedis(nats.url, redis.url, 'age1:', stream(60));
    await v1.publish('age.x', bigPayload(2 * MiB), { persist: true });
    expect(ttlsOf('age1:')).toEqual([expect.any(Number)]);
    expect(ttlsOf('age1:')[0]).toBeLessThanOrEqual(300);

    // The next version starts beside it and updates the stream.
    await buses.withRedis(nats.url, redis.url, 'age2:', stream(3600));
    await sleep(1100);
    redis.cli('DEL', ...redis.cli('--scan', '--pattern', 'age1:*').split('\n').filter(Boolean));
    await v1.publish('age.x', bigPayload(2 * MiB), { persist: true });
    const [ttl] = ttlsOf('age1:');
    expect(ttl).toBeGreaterThan(3600);
  });

  it('item 7: with the object store, a publish that the raised stream age makes impossible (age + 60 > bucket TTL) is refused', async () => {
    const storage = new ObjectStoreStorageManager({ bucket: 'agebucket', ttlSeconds: 600 });
    const v1 = buses.track(
      new EventBus(
        { nats: { servers: nats.url }, jetstream: { streams: [{ name: 'OAGE', subjects: ['oage.>'], maxAgeSeconds: 60 }] } },
        storage,
      ),
    );
    await v1.connect();
    await expect(v1.publish('oage.x', bigPayload(2 * MiB), { persist: true })).resolves.toMatchObject({ stream: 'OAGE', seq: 1 });
    const v2 = buses.track(
      new EventBus({ nats: { servers: nats.url }, jetstream: { streams: [{ name: 'OAGE', subjects: ['oage.>'], maxAgeSeconds: 3600 }] } }),
    );
    await v2.connect();
    await sleep(1100);
    const err = await v1.publish('oage.x', bigPayload(2 * MiB), { persist: true }).catch((e) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect(err.message).toMatch(/must live 3660 s/);
  });

  it('item 8: a large publish without persist to a subject a stream captures warns once per subject, naming the stream', async () => {
    const { bus } = await buses.withRedis(nats.url, redis.url, 'np:', {
      jetstream: { streams: [{ name: 'NOPERSIST', subjects: ['np.>'], maxAgeSeconds: 86_400 }] },
    });
    logs.clear();
    for (let i = 0; i < 3; i++) await bus.publish('np.a', bigPayload(2 * MiB));
    await bus.publish('np.b', bigPayload(2 * MiB));
    // Small ones are not stored: nothing to warn about.
    await bus.publish('np.c', { small: true });
    await waitUntil(() => logs.matching(/without persist: true/).length === 2, 'two warnings');
    await sleep(300);
    const lines = logs.matching(/without persist: true/);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('"np.a"');
    expect(lines[0]).toContain('stream NOPERSIST keeps the message 86400 s');
    expect(lines[0]).toContain('lives 300 s');
    expect(lines[1]).toContain('"np.b"');
  });
});
