import { connect, NatsConnection } from '@nats-io/transport-node';
import { DiscardPolicy, jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { EventBus, NotPersistedError, RETRYABLE_NOT_PERSISTED_REASONS } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sleep } from '../harness/wait';

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => undefined as unknown as NotPersistedError,
    (e: NotPersistedError) => e,
  );

// Persisted publishes that a real nats-server (JetStream on) refuses: each failure says why, as the server answered.
describe('persisted publish failures (reason, retryable, no body left behind)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  const buses = new TestBuses();

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    jsm = await jetstreamManager(raw);
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  const keys = (prefix: string) => redis.cli('--scan', '--pattern', `${prefix}*`).split('\n').filter(Boolean);
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => undefined as unknown as NotPersistedError,
      (e: NotPersistedError) => e,
    );

  it('a small persisted publish to a subject no stream captures, on a server with JetStream, says no_stream (not "jetstream is not enabled"), not retryable', async () => {
    const { bus } = await buses.withRedis(nats.url, redis.url, 'pf1:');
    const err = await refusal(bus.publish('pf1.nobody', { x: 1 }, { persist: true }));
    expect(err).toBeInstanceOf(NotPersistedError);
    expect(err.code).toBe('NOT_PERSISTED');
    expect(err.reason).toBe('no_stream');
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/no stream captures the subject/);
    expect(err.message).not.toMatch(/jetstream is not enabled/i);
  });

  it('limits, size and expectations each give their own reason; only transient ones are retryable', async () => {
    await jsm.streams.add({ name: 'PF_MSGS', subjects: ['pfm.>'], max_msgs: 1, discard: DiscardPolicy.New });
    await jsm.streams.add({ name: 'PF_BYTES', subjects: ['pfb.>'], max_bytes: 300, discard: DiscardPolicy.New });
    await jsm.streams.add({ name: 'PF_SIZE', subjects: ['pfs.>'], max_msg_size: 64 });
    const { bus } = await buses.withRedis(nats.url, redis.url, 'pf2:');

    await bus.publish('pfm.a', { n: 1 }, { persist: true });
    const full = await refusal(bus.publish('pfm.a', { n: 2 }, { persist: true }));
    expect([full.reason, full.retryable]).toEqual(['max_messages', true]);
    expect(full.message).toMatch(/maximum messages exceeded/);

    await bus.publish('pfb.a', { t: 'x'.repeat(150) }, { persist: true });
    const bytes = await refusal(bus.publish('pfb.a', { t: 'x'.repeat(150) }, { persist: true }));
    expect([bytes.reason, bytes.retryable]).toEqual(['max_bytes', true]);

    const big = await refusal(bus.publish('pfs.a', { t: 'x'.repeat(200) }, { persist: true }));
    expect([big.reason, big.retryable]).toEqual(['message_too_large', false]);
    expect(big.message).toMatch(/message size exceeds maximum/);

    const seq = await refusal(bus.publish('pfm.b', {}, { persist: true, headers: { 'Nats-Expected-Last-Sequence': '7' } }));
    expect([seq.reason, seq.retryable]).toEqual(['wrong_last_sequence', false]);
    const id = await refusal(bus.publish('pfb.b', {}, { persist: true, headers: { 'Nats-Expected-Last-Msg-Id': 'nope' } }));
    expect([id.reason, id.retryable]).toEqual(['wrong_last_msg_id', false]);
    const other = await refusal(bus.publish('pfb.b', {}, { persist: true, headers: { 'Nats-Expected-Stream': 'ELSEWHERE' } }));
    expect([other.reason, other.retryable]).toEqual(['wrong_stream', false]);

    expect([...RETRYABLE_NOT_PERSISTED_REASONS].sort()).toEqual(['max_bytes', 'max_messages', 'timeout', 'unavailable']);
  });

  it('a large persisted publish after its stream was deleted says no_stream and leaves no stored body behind', async () => {
    await jsm.streams.add({ name: 'PF_GONE', subjects: ['pfg.>'], max_age: 3600 * 1e9 });
    const { bus } = await buses.withRedis(nats.url, redis.url, 'pf3:');
    // The first one is stored, and the bus learns (and keeps) which stream captures the subject.
    await bus.publish('pfg.a', bigPayload(2 * MiB), { persist: true });
    expect(keys('pf3:')).toHaveLength(1);
    await jsm.streams.delete('PF_GONE');

    for (let i = 0; i < 3; i++) {
      const err = await refusal(bus.publish('pfg.a', bigPayload(2 * MiB), { persist: true, msgId: `g${i}` }));
      expect(err).toBeInstanceOf(NotPersistedError);
      expect([err.reason, err.retryable]).toEqual(['no_stream', false]);
    }
    // The delete is not awaited by publish; give it a moment, then only the first (still valid) body remains.
    await sleep(200);
    expect(keys('pf3:')).toHaveLength(1);
  });

  it('a large persisted publish that a full stream refuses leaves no stored body behind', async () => {
    await jsm.streams.add({ name: 'PF_FULL', subjects: ['pff.>'], max_msgs: 1, discard: DiscardPolicy.New, max_age: 3600 * 1e9 });
    const { bus } = await buses.withRedis(nats.url, redis.url, 'pf4:');
    await bus.publish('pff.a', { small: true }, { persist: true });
    const err = await refusal(bus.publish('pff.a', bigPayload(2 * MiB), { persist: true }));
    expect([err.reason, err.retryable]).toEqual(['max_messages', true]);
    await sleep(200);
    expect(keys('pf4:')).toEqual([]);
  });
});

describe('persisted publish on a server without JetStream', () => {
  let nats: NatsServer;
  const buses = new TestBuses();
  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false });
  });
  afterAll(async () => {
    await buses.closeAll();
    await nats?.dispose();
  });

  it('rejects with NotPersistedError reason jetstream_disabled, not retryable', async () => {
    const bus = buses.track(new EventBus({ nats: { servers: nats.url } }));
    await bus.connect();
    const err = await refusal(bus.publish('pfx.a', { x: 1 }, { persist: true }));
    expect(err).toBeInstanceOf(NotPersistedError);
    expect([err.reason, err.retryable]).toEqual(['jetstream_disabled', false]);
  });
});
