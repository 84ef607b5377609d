import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { InvalidOptionsError } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';

// Two deployments sharing a stream or a durable consumer must not rewrite each other's settings
// (issue 26, item 16). Real nats-server with JetStream and a real Redis.
describe('config drift on shared streams and durables (issue 26 item 16)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  let logs: LogCapture;
  const buses = new TestBuses();
  const S = 1_000_000_000;

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    jsm = await jetstreamManager(raw);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  const stream = (
    name: string,
    subjects: string[],
    maxAgeSeconds: number,
    allowDestructiveUpdates?: boolean,
    duplicateWindowSeconds?: number,
  ) => ({
    jetstream: {
      streams: [{ name, subjects, maxAgeSeconds, duplicateWindowSeconds }],
      ...(allowDestructiveUpdates !== undefined ? { allowDestructiveUpdates } : {}),
    },
  });

  it('a deployment asking for a shorter maxAgeSeconds, or fewer subjects, fails bootstrap naming the option, and the backlog stays', async () => {
    // A 1 s duplicate window, so that the server itself accepts a 2 s age (it refuses a window longer than the age).
    const { bus: first } = await buses.withRedis(nats.url, redis.url, 'dr1:', stream('DRIFT1', ['dr1.>', 'dr1b.>'], 3600, undefined, 1));
    for (let i = 0; i < 3; i++) await first.publish('dr1.x', { i }, { persist: true });

    const shorter = await buses
      .withRedis(nats.url, redis.url, 'dr1:', stream('DRIFT1', ['dr1.>', 'dr1b.>'], 2, undefined, 1))
      .catch((e) => e);
    expect(shorter).toBeInstanceOf(InvalidOptionsError);
    expect(shorter.option).toBe('jetstream.streams (DRIFT1).maxAgeSeconds');
    expect(shorter.message).toMatch(/max age 3600 s, and this one asks for 2 s/);
    expect(shorter.message).toMatch(/jetstream\.allowDestructiveUpdates: true/);

    const fewer = await buses.withRedis(nats.url, redis.url, 'dr1:', stream('DRIFT1', ['dr1.>'], 3600, undefined, 1)).catch((e) => e);
    expect(fewer).toBeInstanceOf(InvalidOptionsError);
    expect(fewer.option).toBe('jetstream.streams (DRIFT1).subjects');
    expect(fewer.message).toMatch(/removing dr1b\.>/);

    await sleep(2500);
    const info = await jsm.streams.info('DRIFT1');
    expect(info.config.max_age).toBe(3600 * S);
    expect(info.config.subjects.sort()).toEqual(['dr1.>', 'dr1b.>']);
    expect(info.state.messages).toBe(3);
  });

  it('growing a stream is applied and logged with old → new; shrinking with allowDestructiveUpdates is applied and logged', async () => {
    await buses.withRedis(nats.url, redis.url, 'dr2:', stream('DRIFT2', ['dr2.>'], 60));
    logs.clear();
    await buses.withRedis(nats.url, redis.url, 'dr2:', stream('DRIFT2', ['dr2.>', 'dr2b.>'], 3600));
    expect(logs.matching(/DRIFT2/)).toEqual(['JetStream stream DRIFT2 updated: subjects [dr2.>] → [dr2.>, dr2b.>], max_age 60 s → 3600 s']);
    expect((await jsm.streams.info('DRIFT2')).config.max_age).toBe(3600 * S);

    logs.clear();
    await buses.withRedis(nats.url, redis.url, 'dr2:', stream('DRIFT2', ['dr2.>'], 30, true));
    expect(logs.matching(/DRIFT2/)).toEqual(['JetStream stream DRIFT2 updated: subjects [dr2.>, dr2b.>] → [dr2.>], max_age 3600 s → 30 s']);
    expect((await jsm.streams.info('DRIFT2')).config.max_age).toBe(30 * S);
  });

  it("another deployment's shorter ackWaitMs on a shared durable is refused, and a running 4 s handler's message is not redelivered", async () => {
    const { bus: first } = await buses.withRedis(nats.url, redis.url, 'dr3:', stream('DRIFT3', ['dr3.>'], 3600));
    const counts: number[] = [];
    let done = 0;
    await first.subscribe(
      'dr3.job',
      async (_p, ctx) => {
        counts.push(ctx.deliveryCount!);
        await sleep(4000);
        done++;
      },
      { durable: 'shared', ackWaitMs: 5000 },
    );
    await first.publish('dr3.job', { a: 1 }, { persist: true });
    await waitUntil(() => counts.length === 1, 'the handler started');

    const { bus: second } = await buses.withRedis(nats.url, redis.url, 'dr3:', { jetstream: { streams: [] } });
    const err = await second.subscribe('dr3.job', () => undefined, { durable: 'shared', ackWaitMs: 1000 }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.option).toBe('ackWaitMs');
    expect(err.message).toMatch(
      /durable "shared" on stream DRIFT3 already exists with ackWaitMs 5000, and this subscription asks for 1000/,
    );
    expect(err.message).toMatch(/jetstream\.allowDestructiveUpdates: true/);
    // The bus's own retry settings are compared too.
    const retries = await second
      .subscribe('dr3.job', () => undefined, { durable: 'shared', ackWaitMs: 5000, maxDeliver: 2 })
      .catch((e) => e);
    expect(retries).toBeInstanceOf(InvalidOptionsError);
    expect(retries.option).toBe('maxDeliver');
    expect(retries.message).toMatch(/maxDeliver 5, and this subscription asks for 2/);

    await waitUntil(() => done === 1, 'the slow handler', 10_000);
    await sleep(1500);
    expect(counts).toEqual([1]);
    expect((await jsm.consumers.info('DRIFT3', 'shared')).config.ack_wait).toBe(5 * S);
  });

  it('with allowDestructiveUpdates a durable consumer is changed and the change logged', async () => {
    const { bus: first } = await buses.withRedis(nats.url, redis.url, 'dr4:', stream('DRIFT4', ['dr4.>'], 3600));
    await first.subscribe('dr4.job', () => undefined, { durable: 'shared', ackWaitMs: 5000 });
    logs.clear();
    const { bus: second } = await buses.withRedis(nats.url, redis.url, 'dr4:', {
      jetstream: { streams: [], allowDestructiveUpdates: true },
    });
    await second.subscribe('dr4.job', () => undefined, { durable: 'shared', ackWaitMs: 2000, backoffMs: [100] });
    expect(logs.matching(/consumer shared/)).toEqual([
      'JetStream consumer shared on DRIFT4 updated: ackWaitMs 5000 → 2000, backoffMs [1000,5000,30000] → [100]',
    ]);
    expect((await jsm.consumers.info('DRIFT4', 'shared')).config.ack_wait).toBe(2 * S);
  });

  it('jetstream.allowDestructiveUpdates must be a boolean', async () => {
    const err = await buses
      .withRedis(nats.url, redis.url, 'dr5:', { jetstream: { allowDestructiveUpdates: 'yes' as unknown as boolean } })
      .catch((e) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.option).toBe('jetstream.allowDestructiveUpdates');
  });
});
