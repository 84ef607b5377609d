import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, InMemoryStorageManager, InvalidOptionsError, MessageContext, NotPersistedError, PayloadTooLargeError } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sha256, sleep, waitUntil } from '../harness/wait';

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

  /** Dead letters arriving on `subject`, as a plain subscriber sees them. */
  function deadLetters(subject: string) {
    const got: Array<{ data: Buffer; headers: Record<string, string> }> = [];
    raw.subscribe(subject, {
      callback: (_err, m) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of m.headers ?? []) headers[k] = v[0];
        got.push({ data: Buffer.from(m.data), headers });
      },
    });
    return got;
  }

  it('a handler that always throws is delivered exactly maxDeliver times, spaced by the backoff, then dead-lettered with Eventbus-Dead-Reason: max_deliver; other messages keep flowing', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd3:', { jetstream: jetstream(stream, subject) });
    const dead = deadLetters(`${subject}dead.status`);
    await raw.flush();
    const attempts: Array<{ at: number; count: number }> = [];
    const good: number[] = [];
    await bus.subscribe(
      `${subject}.status`,
      (p: { poison?: boolean; i?: number }, ctx) => {
        if (!p.poison) return void good.push(p.i!);
        attempts.push({ at: Date.now(), count: ctx.deliveryCount! });
        throw new Error('cannot handle this one');
      },
      // A short ack wait, so that a message left pending (not terminated) would come back within the test.
      { durable: 'worker', maxDeliver: 3, backoffMs: [300, 600], ackWaitMs: 1000, deadLetter: `${subject}dead.status` },
    );
    await bus.publish(`${subject}.status`, { poison: true }, { persist: true, headers: { 'X-Trace': 't1' } });
    for (let i = 0; i < 20; i++) await bus.publish(`${subject}.status`, { i }, { persist: true });

    await waitUntil(() => dead.length === 1, 'the dead letter');
    expect(attempts.map((a) => a.count)).toEqual([1, 2, 3]);
    // Spaced by the backoff: 300 ms, then 600 ms (the server may be later, never earlier).
    expect(attempts[1].at - attempts[0].at).toBeGreaterThanOrEqual(280);
    expect(attempts[2].at - attempts[1].at).toBeGreaterThanOrEqual(580);
    // The rest did not wait for the poison message.
    expect(good.sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(JSON.parse(dead[0].data.toString())).toEqual({ poison: true });
    expect(dead[0].headers).toMatchObject({
      'Eventbus-Dead-Reason': 'max_deliver',
      'Eventbus-Dead-Subject': `${subject}.status`,
      'Eventbus-Dead-Stream': stream,
      'Eventbus-Dead-Seq': '1',
      'Eventbus-Dead-Deliveries': '3',
      'Eventbus-Dead-Error': 'cannot handle this one',
      'X-Trace': 't1',
    });
    // Terminated: never delivered again, though two ack waits pass, and dead-lettered once.
    await sleep(2500);
    expect(attempts).toHaveLength(3);
    expect(dead).toHaveLength(1);
  });

  it('bad input on a durable subject goes to the dead letter at once (not JSON, forged token, unknown token), without reaching the handler; the rest flows', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd4:', { jetstream: jetstream(stream, subject) });
    const dead = deadLetters(`${subject}dead.in`);
    await raw.flush();
    const handled: unknown[] = [];
    await bus.subscribe(`${subject}.in`, (p) => void handled.push(p), { durable: 'worker', deadLetter: `${subject}dead.in` });

    const notJson = Buffer.from([0x7b, 0xff, 0xfe, 0x00, 0x41]);
    const forged = Buffer.from(JSON.stringify({ token: '../../../etc/passwd', is_stored: true }));
    const unknown = Buffer.from(JSON.stringify({ token: '3b241101-e2bb-4255-8caf-4136c566a962', is_stored: true }));
    // Straight into the stream, as a careless or hostile publisher would.
    for (const body of [notJson, forged, unknown]) raw.publish(`${subject}.in`, body);
    await bus.publish(`${subject}.in`, { ok: 1 }, { persist: true });

    await waitUntil(() => dead.length === 3 && handled.length === 1, 'three dead letters and the good message');
    const byReason = Object.fromEntries(dead.map((d) => [d.headers['Eventbus-Dead-Reason'], d]));
    expect(Object.keys(byReason).sort()).toEqual(['forbidden', 'invalid_message', 'not_found']);
    expect(byReason.invalid_message.data.equals(notJson)).toBe(true);
    expect(byReason.forbidden.data.equals(forged)).toBe(true);
    expect(byReason.not_found.data.equals(unknown)).toBe(true);
    // At once: first delivery, no retries for what can never succeed.
    for (const d of dead) expect(d.headers['Eventbus-Dead-Deliveries']).toBe('1');
    expect(handled).toEqual([{ ok: 1 }]);
  });

  it('without deadLetter, a failed message is logged naming subject, stream and sequence, and not redelivered', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd5:', { jetstream: jetstream(stream, subject) });
    const logs = captureLogs();
    try {
      let calls = 0;
      await bus.subscribe(
        `${subject}.x`,
        () => {
          calls++;
          throw new Error('nope');
        },
        { durable: 'w', maxDeliver: 2, backoffMs: [100] },
      );
      await bus.publish(`${subject}.x`, { a: 1 }, { persist: true });
      await waitUntil(() => logs.matching(/dropped message/).length === 1, 'the drop line');
      expect(logs.matching(/dropped message/)[0]).toContain(`message ${stream}#1 on "${subject}.x" after 2 deliveries (max_deliver)`);
      await sleep(500);
      expect(calls).toBe(2);
    } finally {
      logs.restore();
    }
  });

  it('a 2 MiB persisted message is stored for as long as its stream keeps it, and with Redis stopped at delivery it is handled intact once Redis is back', async () => {
    const { stream, subject } = space();
    // A Redis that keeps its data across a restart (append-only file), so the body survives the outage.
    const durableRedis = await RedisServer.start({ args: ['--appendonly', 'yes'] });
    try {
      const { bus } = await buses.withRedis(nats.url, durableRedis.url, 'd6:', { jetstream: jetstream(stream, subject) });
      const payload = bigPayload(2 * MiB, 'large-1');
      const ack = await bus.publish(`${subject}.big`, payload, { persist: true, msgId: 'large-1' });
      expect(ack).toEqual({ stream, seq: 1, duplicate: false });
      const keys = durableRedis.cli('--scan', '--pattern', 'd6:*').split('\n').filter(Boolean);
      expect(keys).toHaveLength(1);
      // The stream keeps messages 3600 s: the body lives at least that long (plus a margin), not the storage's 300 s.
      expect(Number(durableRedis.cli('TTL', keys[0]))).toBeGreaterThan(3600);

      await durableRedis.stop();
      const got: Array<{ digest: string; ctx: MessageContext }> = [];
      await bus.subscribe(`${subject}.big`, (p, ctx) => void got.push({ digest: sha256(JSON.stringify(p)), ctx }), {
        durable: 'reader',
        backoffMs: [300],
        maxDeliver: 2,
      });
      // Several failed recoveries: more than maxDeliver, and still not dead-lettered.
      await sleep(1500);
      expect(got).toHaveLength(0);
      await durableRedis.start();
      await waitUntil(() => got.length === 1, 'the large message after Redis returned', 15_000);
      expect(got[0].digest).toBe(sha256(JSON.stringify(payload)));
      expect(got[0].ctx.recovered).toBe(true);
      expect(got[0].ctx.deliveryCount).toBeGreaterThan(2);
    } finally {
      await buses.closeAll();
      await durableRedis.dispose();
    }
  });

  it('instances sharing a durable split the messages; another durable gets every one', async () => {
    const { stream, subject } = space();
    const opts = { jetstream: jetstream(stream, subject) };
    const [{ bus: a1 }, { bus: a2 }, { bus: b }] = await Promise.all([
      buses.withRedis(nats.url, redis.url, 'd7:', opts),
      buses.withRedis(nats.url, redis.url, 'd7:', opts),
      buses.withRedis(nats.url, redis.url, 'd7:', opts),
    ]);
    const seen = { a1: [] as number[], a2: [] as number[], b: [] as number[] };
    // A little work per message, so that both instances of "shared" get some.
    const slow = (into: number[]) => async (p: { i: number }) => {
      into.push(p.i);
      await sleep(2);
    };
    await a1.subscribe(`${subject}.work`, slow(seen.a1), { durable: 'shared' });
    await a2.subscribe(`${subject}.work`, slow(seen.a2), { durable: 'shared' });
    await b.subscribe(`${subject}.work`, slow(seen.b), { durable: 'audit' });
    const total = 300;
    await Promise.all(Array.from({ length: total }, (_, i) => a1.publish(`${subject}.work`, { i }, { persist: true })));

    await waitUntil(() => seen.a1.length + seen.a2.length === total && seen.b.length === total, 'every message', 20_000);
    await sleep(300);
    const shared = [...seen.a1, ...seen.a2].sort((x, y) => x - y);
    expect(shared).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(seen.a1.length).toBeGreaterThan(0);
    expect(seen.a2.length).toBeGreaterThan(0);
    expect([...seen.b].sort((x, y) => x - y)).toEqual(shared);
  });

  it('a handler running longer than ackWaitMs keeps its message (no redelivery while it works)', async () => {
    const { stream, subject } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd8:', { jetstream: jetstream(stream, subject) });
    const counts: number[] = [];
    let done = 0;
    await bus.subscribe(
      `${subject}.slow`,
      async (_p, ctx) => {
        counts.push(ctx.deliveryCount!);
        await sleep(3500);
        done++;
      },
      { durable: 'slow', ackWaitMs: 1000 },
    );
    await bus.publish(`${subject}.slow`, { a: 1 }, { persist: true });
    await waitUntil(() => done === 1, 'the slow handler', 10_000);
    await sleep(1500);
    expect(counts).toEqual([1]);
  });

  it('close() lets a running handler finish and acks it: a new instance of the durable does not get it again', async () => {
    const { stream, subject } = space();
    const opts = { jetstream: jetstream(stream, subject) };
    const { bus } = await buses.withRedis(nats.url, redis.url, 'd9:', opts);
    let finished = 0;
    let started = 0;
    await bus.subscribe(
      `${subject}.job`,
      async () => {
        started++;
        await sleep(800);
        finished++;
      },
      // The same settings as the next instance below: a durable in use is not changed by another (issue 26 item 16).
      { durable: 'jobs', ackWaitMs: 1000 },
    );
    await bus.publish(`${subject}.job`, { a: 1 }, { persist: true });
    await waitUntil(() => started === 1, 'the handler started');
    await bus.close();
    expect(finished).toBe(1);

    const { bus: next } = await buses.withRedis(nats.url, redis.url, 'd9:', opts);
    const again: unknown[] = [];
    await next.subscribe(`${subject}.job`, (p) => void again.push(p), { durable: 'jobs', ackWaitMs: 1000 });
    await next.publish(`${subject}.job`, { b: 2 }, { persist: true });
    await waitUntil(() => again.length >= 1, 'the second message');
    await sleep(1500);
    expect(again).toEqual([{ b: 2 }]);
  });

  it('a large persisted publish without message storage is PayloadTooLargeError, and nothing reaches the stream', async () => {
    const { stream, subject } = space();
    const bus = buses.track(new EventBus({ nats: { servers: nats.url }, jetstream: jetstream(stream, subject) }));
    await bus.connect();
    const err = await bus.publish(`${subject}.big`, bigPayload(2 * MiB), { persist: true }).catch((e) => e);
    expect(err).toBeInstanceOf(PayloadTooLargeError);
    expect(await bus.publish(`${subject}.small`, { a: 1 }, { persist: true })).toEqual({ stream, seq: 1, duplicate: false });
  });

  describe('bootstrap errors', () => {
    it('a server without JetStream fails connect() with InvalidOptionsError naming jetstream', async () => {
      const plain = await NatsServer.start({ jetstream: false });
      try {
        const bus = buses.track(new EventBus({ nats: { servers: plain.url }, jetstream: { streams: [] } }));
        const err = await bus.connect().catch((e) => e);
        expect(err).toBeInstanceOf(InvalidOptionsError);
        expect(err.option).toBe('jetstream');
        expect(err.message).toMatch(/-js/);
        // Without `jetstream`, a durable subscription finds out the same way.
        const other = buses.track(new EventBus({ nats: { servers: plain.url } }));
        await other.connect();
        const sub = await other.subscribe('x.y', () => undefined, { durable: 'd' }).catch((e) => e);
        expect(sub).toBeInstanceOf(InvalidOptionsError);
        expect(sub.option).toBe('jetstream');
      } finally {
        await buses.closeAll();
        await plain.dispose();
      }
    });

    it('a durable topic that no stream captures is an InvalidOptionsError naming the topic', async () => {
      const bus = buses.track(new EventBus({ nats: { servers: nats.url } }));
      await bus.connect();
      const err = await bus.subscribe('no.stream.here', () => undefined, { durable: 'd' }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.message).toContain('no JetStream stream captures "no.stream.here"');
    });

    it('with message storage, a stream without maxAgeSeconds is refused: its stored bodies would expire before its messages', async () => {
      const bus = buses.track(
        new EventBus(
          { nats: { servers: nats.url }, jetstream: { streams: [{ name: 'FOREVER', subjects: ['forever.>'] }] } },
          new InMemoryStorageManager(),
        ),
      );
      const err = await bus.connect().catch((e) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.option).toBe('jetstream.streams[0].maxAgeSeconds');
    });

    it('bad durable options are InvalidOptionsError naming the option', async () => {
      const bus = buses.track(new EventBus({ nats: { servers: nats.url } }));
      await bus.connect();
      const cases: Array<[object, string]> = [
        [{ durable: 'a.b' }, 'durable'],
        [{ durable: 'a', queue: 'q' }, 'queue'],
        [{ durable: 'a', maxDeliver: 0 }, 'maxDeliver'],
        [{ durable: 'a', backoffMs: [] }, 'backoffMs'],
        [{ durable: 'a', backoffMs: [100, -1] }, 'backoffMs[1]'],
        [{ durable: 'a', ackWaitMs: 10 }, 'ackWaitMs'],
        [{ durable: 'a', deadLetter: 'x.*' }, 'topic'],
        [{ durable: 'a', deadLetter: 'opt.dead' }, 'deadLetter'],
        [{ maxDeliver: 3 }, 'maxDeliver'],
      ];
      for (const [opts, option] of cases) {
        const err = await bus.subscribe('opt.>', () => undefined, opts).catch((e) => e);
        if (option === 'topic') expect(err.code).toBe('INVALID_SUBJECT');
        else expect({ opts, option: err.option }).toEqual({ opts, option });
      }
    });
  });
});
