import { connect, headers as natsHeaders, NatsConnection } from '@nats-io/transport-node';
import { EventBus, InvalidOptionsError, MessageContext, NotPersistedError, RedisStorageManager, StoredMessageEnvelope } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sleep, waitUntil } from '../harness/wait';

// Durable delivery against a real nats-server with JetStream (-js -sd) and a real Redis.
describe('durable delivery (JetStream)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  const buses = new TestBuses();
  let n = 0;
  /** A fresh stream and subject space per test, so durables and counts never mix. */
  const space = () => {
    n++;
    return { stream: `T${n}`, subject: `dur${n}` };
  };
  const jetstream = (stream: string, subject: string, extra: object = {}) => ({
    streams: [{ name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600, ...extra }],
  });

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  it('persist: true resolves with the stream and sequence; a repeated msgId is a duplicate; the durable handler gets it once with deliveryCount, stream and seq', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd1:', { jetstream: jetstream(stream, subject) });
    const seen: Array<{ payload: unknown; ctx: MessageContext }> = [];
    await bus.subscribe(`${subject}.status`, (payload, ctx) => void seen.push({ payload, ctx }), { durable: 'notifier' });

    const first = await bus.publish(`${subject}.status`, { id: 'a' }, { persist: true, msgId: 'a' });
    expect(first).toEqual({ stream, seq: 1, duplicate: false });
    const again = await bus.publish(`${subject}.status`, { id: 'a' }, { persist: true, msgId: 'a' });
    expect(again).toEqual({ stream, seq: 1, duplicate: true });
    expect(await bus.publish(`${subject}.status`, { id: 'b' }, { persist: true })).toEqual({ stream, seq: 2, duplicate: false });

    await waitUntil(() => seen.length === 2, 'two deliveries');
    await sleep(300);
    expect(seen.map((s) => s.payload)).toEqual([{ id: 'a' }, { id: 'b' }]);
    expect(seen[0].ctx).toMatchObject({ subject: `${subject}.status`, deliveryCount: 1, stream, seq: 1, recovered: false });
    expect(seen[0].ctx.reply).toBeUndefined();
    expect(seen[1].ctx).toMatchObject({ deliveryCount: 1, stream, seq: 2 });
  });

  it('persist: true on a subject no stream captures rejects with NotPersistedError (NOT_PERSISTED); msgId without persist is refused', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd2:', { jetstream: jetstream(stream, subject) });
    const err = await bus.publish('nobody.keeps.this', { x: 1 }, { persist: true }).catch((e) => e);
    expect(err).toBeInstanceOf(NotPersistedError);
    expect(err.code).toBe('NOT_PERSISTED');
    expect(err.subject).toBe('nobody.keeps.this');
    // A large one: nothing is stored for a message no stream would keep.
    const before = redis.cli('--scan', '--pattern', 'd2:*');
    const big = await bus.publish('nobody.keeps.this', bigPayload(2 * MiB), { persist: true }).catch((e) => e);
    expect(big).toBeInstanceOf(NotPersistedError);
    expect(redis.cli('--scan', '--pattern', 'd2:*')).toEqual(before);
    await expect(bus.publish(`${subject}.x`, {}, { msgId: 'm' } as never)).rejects.toThrow(InvalidOptionsError);
  });
});
