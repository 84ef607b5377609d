import Redis from 'ioredis';
import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  DeadLetterNotFoundError,
  DeadLetters,
  EventBus,
  EventBusModule,
  InvalidOptionsError,
  MessageContext,
  REPLAYED_FROM_HEADER,
} from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, waitUntil } from '../harness/wait';

// Dead letters as data (issue 31, item 1): bus.deadLetters lists, reads, replays and purges the dead
// letters of a real nats-server's dead-letter stream; claim-checked bodies come back from a real Redis.
describe('DeadLetters service (issue 31)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses = new TestBuses();
  let n = 0;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    redis = new Redis(redisServer.url);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    redis?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.stop()]);
  });

  /** A bus whose durable `worker` on `<s>.work.*` always fails; its dead letters go to stream `<S>DEAD`. */
  async function failingSetup() {
    n++;
    const s = `svc${n}`;
    const S = `SVC${n}`;
    const { bus } = await buses.withRedis(nats.url, redisServer.url, `${s}:`, {
      largeMessageThreshold: 64 * 1024,
      jetstream: {
        streams: [
          { name: S, subjects: [`${s}.work.>`, `${s}.again.>`], maxAgeSeconds: 3600 },
          { name: `${S}DEAD`, subjects: [`${s}.dead.>`], maxAgeSeconds: 3600 },
        ],
      },
    });
    for (const [topic, durable] of [
      [`${s}.work.a`, 'worker'],
      [`${s}.work.b`, 'other'],
    ]) {
      await bus.subscribe(
        topic,
        (p: { id: string }) => {
          throw new Error(`refused ${p.id}`);
        },
        { durable, maxDeliver: 2, backoffMs: [50], ackWaitMs: 2000, deadLetter: `${s}.dead.x` },
      );
    }
    return { bus, s, S, dead: `${S}DEAD` };
  }

  async function deadLettered(bus: EventBus, stream: string, count: number) {
    await waitUntil(async () => (await bus.deadLetters.list({ stream })).length >= count, `${count} dead letters in ${stream}`, 20_000);
  }

  it('lists entries with their headers as fields, filters them, and gets bodies, a claim-checked one recovered from Redis', async () => {
    const { bus, s, dead } = await failingSetup();
    await bus.publish(`${s}.work.a`, { id: 'a1' }, { persist: true, headers: { 'X-Tenant': 't1' } });
    await bus.publish(`${s}.work.a`, bigPayload(200_000, 'a2'), { persist: true });
    await bus.publish(`${s}.work.b`, { id: 'b1' }, { persist: true });
    await deadLettered(bus, dead, 3);

    // No stream named: found because its last message is a dead letter.
    const all = await bus.deadLetters.list();
    expect(all.map((e) => e.stream)).toEqual([dead, dead, dead]);
    const byTopic = await bus.deadLetters.list({ topic: `${s}.work.a` });
    expect(byTopic).toHaveLength(2);
    const [first, big] = byTopic;
    expect(first).toMatchObject({
      id: `${dead}:${first.seq}`,
      subject: `${s}.work.a`,
      deadLetterSubject: `${s}.dead.x`,
      durable: 'worker',
      reason: 'max_deliver',
      deliveries: 2,
      lastError: 'refused a1',
      claimChecked: false,
      size: Buffer.byteLength(JSON.stringify({ id: 'a1' })),
    });
    expect(first.time).toBeInstanceOf(Date);
    expect(big.claimChecked).toBe(true);
    expect(big.size).toBeLessThan(512);
    expect((await bus.deadLetters.list({ durable: 'other' })).map((e) => e.subject)).toEqual([`${s}.work.b`]);
    expect(await bus.deadLetters.list({ topic: `${s}.work.*`, limit: 1 })).toHaveLength(1);
    expect(await bus.deadLetters.list({ topic: `${s}.>`, reason: 'corrupt' })).toHaveLength(0);
    expect(await bus.deadLetters.list({ stream: dead, since: new Date(Date.now() + 60_000) })).toHaveLength(0);
    expect((await bus.deadLetters.list({ stream: dead, since: big.time })).map((e) => e.id)).toEqual(
      all.filter((e) => e.time >= big.time).map((e) => e.id),
    );

    const one = await bus.deadLetters.get(first.id);
    expect(one.payload).toEqual({ id: 'a1' });
    expect(one.headers['X-Tenant']).toEqual(['t1']);
    const recovered = await bus.deadLetters.get(big.id);
    expect(recovered.payload).toEqual(bigPayload(200_000, 'a2'));
    expect(Buffer.from(recovered.body).toString()).toBe(JSON.stringify(bigPayload(200_000, 'a2')));
  });

  it('unknown and malformed ids, a missing stream and a bad limit are typed errors', async () => {
    const { bus, s, dead } = await failingSetup();
    await bus.publish(`${s}.work.a`, { id: 'x' }, { persist: true });
    await deadLettered(bus, dead, 1);
    await expect(bus.deadLetters.get(`${dead}:999`)).rejects.toThrow(DeadLetterNotFoundError);
    await expect(bus.deadLetters.get('no-colon')).rejects.toMatchObject({ code: 'DEAD_LETTER_NOT_FOUND', id: 'no-colon' });
    await expect(bus.deadLetters.get('NO_SUCH_STREAM:1')).rejects.toThrow(/no stream "NO_SUCH_STREAM"/);
    // The work stream's message 1 is no dead letter.
    await expect(bus.deadLetters.get(`SVC${n}:1`)).rejects.toThrow(/not a dead letter/);
    await expect(bus.deadLetters.list({ stream: 'NO_SUCH_STREAM' })).rejects.toThrow(InvalidOptionsError);
    await expect(bus.deadLetters.list({ limit: 0 })).rejects.toThrow(InvalidOptionsError);
    const [e] = await bus.deadLetters.list({ stream: dead });
    // One unknown id among known ones: nothing is purged.
    await expect(bus.deadLetters.purge([e.id, `${dead}:999`])).rejects.toThrow(DeadLetterNotFoundError);
    expect(await bus.deadLetters.list({ stream: dead })).toHaveLength(1);
  });

  it('replays to another subject once per dead letter, also when the replay is repeated after a crash part way', async () => {
    const { bus, s, dead } = await failingSetup();
    for (const id of ['r1', 'r2', 'r3']) await bus.publish(`${s}.work.a`, { id }, { persist: true });
    await bus.publish(`${s}.work.a`, bigPayload(200_000, 'r4'), { persist: true });
    await deadLettered(bus, dead, 4);
    const got: Array<{ id: string; from: string | undefined; delivery: number | undefined }> = [];
    await bus.subscribe(
      `${s}.again.x`,
      (p: { id: string }, ctx: MessageContext) => {
        got.push({ id: p.id, from: ctx.headers?.get(REPLAYED_FROM_HEADER), delivery: ctx.deliveryCount });
      },
      { durable: 'again' },
    );
    const letters = await bus.deadLetters.list({ stream: dead });
    // The "crash": the first two were replayed, then the process died; the operator runs it all again.
    const part = await bus.deadLetters.replay(
      letters.slice(0, 2).map((e) => e.id),
      { to: `${s}.again.x` },
    );
    expect(part.map((r) => r.duplicate)).toEqual([false, false]);
    const again = await bus.deadLetters.replay({ stream: dead }, { to: `${s}.again.x` });
    expect(again.map((r) => [r.id, r.duplicate])).toEqual(letters.map((e, i) => [e.id, i < 2]));
    await waitUntil(() => got.length >= 4, 'four replayed messages');
    // The stream's own count of the target subject: a doubled replay would be stored twice.
    const jsm = await jetstreamManager(raw);
    const info = await jsm.streams.info(`SVC${n}`, { subjects_filter: `${s}.again.x` });
    expect(info.state.subjects?.[`${s}.again.x`]).toBe(4);
    expect(got.map((g) => g.id).sort()).toEqual(['r1', 'r2', 'r3', 'r4']);
    expect(got.find((g) => g.id === 'r1')!.from).toBe(letters[0].id);
    // The dead letters stay until purged.
    expect(await bus.deadLetters.list({ stream: dead })).toHaveLength(4);
  });

  it('replays to the original subject by default, where the durable gets it again', async () => {
    const { bus, s, dead } = await failingSetup();
    await bus.publish(`${s}.work.b`, { id: 'back' }, { persist: true });
    await deadLettered(bus, dead, 1);
    const [e] = await bus.deadLetters.list({ stream: dead });
    const [r] = await bus.deadLetters.replay([e.id]);
    expect(r).toMatchObject({ id: e.id, to: `${s}.work.b`, stream: `SVC${n}`, duplicate: false });
    // It fails again on the same durable: a second dead letter, whose original is the replay.
    await deadLettered(bus, dead, 2);
    const second = (await bus.deadLetters.list({ stream: dead }))[1];
    expect(second).toMatchObject({ subject: `${s}.work.b`, sourceSeq: r.seq });
  });

  it('purges by id and by filter; a claim-checked body is deleted from Redis with its dead letter', async () => {
    const { bus, s, dead } = await failingSetup();
    await bus.publish(`${s}.work.a`, { id: 'p1' }, { persist: true });
    await bus.publish(`${s}.work.a`, bigPayload(200_000, 'p2'), { persist: true });
    await bus.publish(`${s}.work.b`, { id: 'p3' }, { persist: true });
    await deadLettered(bus, dead, 3);
    const [p1, p2] = await bus.deadLetters.list({ stream: dead, durable: 'worker' });
    const token = (JSON.parse(Buffer.from((await jsmGet(dead, p2.seq)).data).toString()) as { token: string }).token;
    expect(await redis.exists(`svc${n}:${token}`)).toBe(1);

    expect(await bus.deadLetters.purge([p1.id])).toEqual([p1.id]);
    await expect(bus.deadLetters.get(p1.id)).rejects.toThrow(DeadLetterNotFoundError);
    expect(await bus.deadLetters.purge({ stream: dead, durable: 'worker' })).toEqual([p2.id]);
    await waitUntil(async () => (await redis.exists(`svc${n}:${token}`)) === 0, 'the stored body deleted');
    expect((await bus.deadLetters.list({ stream: dead })).map((e) => e.durable)).toEqual(['other']);
  });

  it("is injectable in a Nest app: the bus's own service, listing through the app's connection", async () => {
    const { bus, s, dead } = await failingSetup();
    await bus.publish(`${s}.work.a`, { id: 'nest' }, { persist: true });
    await deadLettered(bus, dead, 1);
    @Injectable()
    class Ops {
      constructor(readonly deadLetters: DeadLetters) {}
    }
    const moduleRef = await Test.createTestingModule({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url } })],
      providers: [Ops],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      const ops = app.get(Ops);
      expect(ops.deadLetters).toBe(app.get(EventBus).deadLetters);
      expect((await ops.deadLetters.list({ stream: dead })).map((e) => e.subject)).toEqual([`${s}.work.a`]);
    } finally {
      await app.close();
    }
  });

  async function jsmGet(stream: string, seq: number) {
    const jsm = await jetstreamManager(raw);
    return (await jsm.streams.getMessage(stream, { seq }))!;
  }
});
