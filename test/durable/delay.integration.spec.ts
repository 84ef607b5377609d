import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, InvalidOptionsError, MessageContext } from '../../lib';
import { NOT_BEFORE_HEADER } from '../../lib/durable/delay';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';

interface Call {
  id: string;
  at: number;
  deliveryCount: number;
  due?: number;
}

// Delays (issue 31, part 2) against nats-server 2.9 (no Nats-Schedule): the due time rides in a header and
// the durable naks an early delivery with the time left.
describe('delayed durable delivery and ctx.retryIn', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  const buses = new TestBuses();
  let n = 0;
  const space = () => {
    n++;
    return { stream: `DLY${n}`, subject: `dly${n}`, dead: `dly${n}dead` };
  };
  const jetstream = (stream: string, subject: string, dead: string) => ({
    streams: [
      { name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600 },
      { name: `${stream}DEAD`, subjects: [`${dead}.>`], maxAgeSeconds: 3600 },
    ],
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

  /** A durable recording each handler call with its time, delivery count and due header. */
  async function recording(bus: EventBus, topic: string, opts: object, onCall?: (p: { id: string }, ctx: MessageContext) => void) {
    const calls: Call[] = [];
    await bus.subscribe(
      topic,
      (p: { id: string }, ctx: MessageContext) => {
        const due = ctx.headers?.get(NOT_BEFORE_HEADER);
        calls.push({ id: p.id, at: Date.now(), deliveryCount: ctx.deliveryCount!, due: due ? Number(due) : undefined });
        onCall?.(p, ctx);
      },
      { durable: 'delayed', backoffMs: [100], ...opts },
    );
    return calls;
  }

  it('delayMs: not handled before its due header; one published after it without a delay is handled first; the early deliveries do not use up maxDeliver 1', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dly1:', { jetstream: jetstream(stream, subject, dead) });
    // maxDeliver 1: had the early delivery counted, the handler could not run at all.
    const calls = await recording(bus, `${subject}.x`, { maxDeliver: 1, deadLetter: `${dead}.x` });

    const before = Date.now();
    await bus.publish(`${subject}.x`, { id: 'later' }, { persist: true, delayMs: 1500 });
    await bus.publish(`${subject}.x`, { id: 'now' }, { persist: true });
    await waitUntil(() => calls.length === 2, 'both handled');
    await sleep(300);

    expect(calls.map((c) => c.id)).toEqual(['now', 'later']);
    const later = calls[1];
    // The header says when, by the publisher's clock (the same clock here).
    expect(later.due).toBeGreaterThanOrEqual(before + 1500);
    expect(later.at).toBeGreaterThanOrEqual(later.due!);
    // It was delivered (at least) once before it was due, and that delivery never reached the handler.
    expect(later.deliveryCount).toBeGreaterThanOrEqual(2);
    expect(calls[0]).toMatchObject({ id: 'now', deliveryCount: 1, due: undefined });
  });

  it('notBefore: a Date ahead is held until then; a time already past is handled at once; a failing delayed message still gets maxDeliver handler runs', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dly2:', { jetstream: jetstream(stream, subject, dead) });
    const calls = await recording(bus, `${subject}.x`, { maxDeliver: 2, deadLetter: `${dead}.x` }, (p) => {
      if (p.id === 'fails') throw new Error('refused');
    });
    const letters: string[] = [];
    raw.subscribe(`${dead}.x`, { callback: (_e, m) => void letters.push(m.headers?.get('Eventbus-Dead-Reason') ?? '') });
    await raw.flush();

    const at = new Date(Date.now() + 1200);
    await bus.publish(`${subject}.x`, { id: 'dated' }, { persist: true, notBefore: at });
    await bus.publish(`${subject}.x`, { id: 'fails' }, { persist: true, notBefore: at.getTime() });
    await bus.publish(`${subject}.x`, { id: 'past' }, { persist: true, notBefore: new Date(Date.now() - 60_000) });
    await waitUntil(() => letters.length === 1, 'the failing one dead-lettered');
    await sleep(300);

    const dated = calls.find((c) => c.id === 'dated')!;
    expect(dated.due).toBe(at.getTime());
    expect(dated.at).toBeGreaterThanOrEqual(at.getTime());
    expect(calls[0]).toMatchObject({ id: 'past', deliveryCount: 1 });
    // Two handler runs (maxDeliver 2), both at or after the due time, then one dead letter.
    const failing = calls.filter((c) => c.id === 'fails');
    expect(failing).toHaveLength(2);
    for (const c of failing) expect(c.at).toBeGreaterThanOrEqual(at.getTime());
    expect(letters).toEqual(['max_deliver']);
  });

  it('delayMs / notBefore are checked at once: without persist, both, negative, fractional, an invalid Date: InvalidOptionsError, nothing sent', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dly3:', { jetstream: jetstream(stream, subject, dead) });
    const got: string[] = [];
    raw.subscribe(`${subject}.>`, { callback: (_e, m) => void got.push(m.subject) });
    await raw.flush();
    const refused = async (opts: object, option: string, text: string) => {
      const err = await bus.publish(`${subject}.x`, {}, opts as never).catch((e: InvalidOptionsError) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe(option);
      expect((err as Error).message).toContain(text);
    };
    await refused({ delayMs: 1000 }, 'delayMs', 'add persist: true');
    await refused({ notBefore: new Date() }, 'notBefore', 'add persist: true');
    await refused({ persist: true, delayMs: 1000, notBefore: new Date() }, 'delayMs', 'not both');
    await refused({ persist: true, delayMs: -1 }, 'delayMs', 'whole number');
    await refused({ persist: true, delayMs: 1.5 }, 'delayMs', 'whole number');
    await refused({ persist: true, notBefore: new Date('nonsense') }, 'notBefore', 'valid Date');
    await refused({ persist: true, notBefore: '2030-01-01' }, 'notBefore', 'valid Date');
    await sleep(200);
    expect(got).toEqual([]);
  });

  it("a delay past the stream's maxAgeSeconds (3600 s) is refused with InvalidOptionsError, nothing stored or sent; one within it is stored", async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dly6:', { jetstream: jetstream(stream, subject, dead) });
    const got: string[] = [];
    raw.subscribe(`${subject}.>`, { callback: (_e, m) => void got.push(m.subject) });
    await raw.flush();
    const tooLate = async (opts: object, option: string) => {
      const err = await bus.publish(`${subject}.x`, { id: 'late' }, opts as never).catch((e: InvalidOptionsError) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe(option);
      expect((err as Error).message).toContain(`past stream ${stream}'s max age of 3600 s`);
    };
    await tooLate({ persist: true, delayMs: 3_601_000 }, 'delayMs');
    await tooLate({ persist: true, notBefore: new Date(Date.now() + 2 * 3600_000) }, 'notBefore');
    await sleep(200);
    expect(got).toEqual([]);
    const ack = await bus.publish(`${subject}.x`, { id: 'soon' }, { persist: true, delayMs: 3_500_000 });
    expect(ack).toMatchObject({ stream });
  });

  it('ctx.retryIn(ms): nak with that delay, no failure; it counts as a delivery (maxDeliver 3: three handler runs, then a dead letter); on a core subscription it throws InvalidOptionsError', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dly4:', { jetstream: jetstream(stream, subject, dead) });
    const letters: string[] = [];
    raw.subscribe(`${dead}.x`, { callback: (_e, m) => void letters.push(m.headers?.get('Eventbus-Dead-Reason') ?? '') });
    await raw.flush();
    const asked: number[] = [];
    const calls = await recording(bus, `${subject}.x`, { maxDeliver: 3, deadLetter: `${dead}.x`, backoffMs: [30_000] }, (p, ctx) => {
      // 'once' is retried once and then handled; 'always' asks every time.
      if (p.id === 'always' || ctx.deliveryCount === 1) {
        ctx.retryIn(400);
        asked.push(Date.now());
      }
    });
    const thrown: unknown[] = [];
    await bus.subscribe(`${subject}.core`, (_p, ctx: MessageContext) => {
      try {
        ctx.retryIn(10);
      } catch (err) {
        thrown.push(err);
      }
    });

    await bus.publish(`${subject}.x`, { id: 'once' }, { persist: true });
    await bus.publish(`${subject}.x`, { id: 'always' }, { persist: true });
    await bus.publish(`${subject}.core`, {});
    await waitUntil(() => letters.length === 1 && calls.filter((c) => c.id === 'once').length === 2, 'retries done');
    await sleep(500);

    const once = calls.filter((c) => c.id === 'once');
    expect(once.map((c) => c.deliveryCount)).toEqual([1, 2]);
    // Redelivered after the asked 400 ms, not after the 30 s failure backoff.
    expect(once[1].at - once[0].at).toBeGreaterThanOrEqual(400);
    expect(calls.filter((c) => c.id === 'always').map((c) => c.deliveryCount)).toEqual([1, 2, 3]);
    expect(letters).toEqual(['max_deliver']);
    expect(thrown).toHaveLength(1);
    expect(thrown[0]).toBeInstanceOf(InvalidOptionsError);
    expect((thrown[0] as InvalidOptionsError).option).toBe('retryIn');
  });
});
