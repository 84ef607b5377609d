import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { EventBus, MessageContext } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';

// Dead letters that must always be published once, or given up on after a bounded number of tries
// (issue 26, items 1, 12 and 13), against a real nats-server with JetStream and a real Redis.
describe('durable dead letters (issue 26)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses = new TestBuses();
  let n = 0;
  const space = () => {
    n++;
    return { stream: `DL${n}`, subject: `dl${n}`, dead: `dl${n}dead` };
  };
  // The work stream and a stream that captures the dead letters, so they are published persisted.
  const jetstream = (stream: string, subject: string, dead: string) => ({
    streams: [
      { name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600 },
      { name: `${stream}DEAD`, subjects: [`${dead}.>`], maxAgeSeconds: 3600 },
    ],
  });

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  /** Dead letters as a plain subscriber of the dead-letter subject sees them (every copy sent, stored or not). */
  function collect(subject: string) {
    const got: Array<{ data: Buffer; headers: Array<[string, string]> }> = [];
    raw.subscribe(subject, {
      callback: (_err, m) => {
        const headers: Array<[string, string]> = [];
        for (const [k, v] of m.headers ?? []) for (const x of v) headers.push([k, x]);
        got.push({ data: Buffer.from(m.data), headers });
      },
    });
    return got;
  }
  const header = (hs: Array<[string, string]>, name: string) =>
    hs.filter(([k]) => k.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

  /** A durable whose handler always throws; counts its calls per message id. */
  async function failing(bus: EventBus, topic: string, durable: string, deadLetter: string, calls: Map<string, number[]>) {
    await bus.subscribe(
      topic,
      (p: { id: string }, ctx: MessageContext) => {
        calls.set(p.id, [...(calls.get(p.id) ?? []), ctx.deliveryCount!]);
        throw new Error(`refused ${p.id}`);
      },
      { durable, maxDeliver: 2, backoffMs: [100], ackWaitMs: 1000, deadLetter },
    );
  }

  it('item 1: a message published with Nats-Expected-Stream, or with headers that leave no room for the dead-letter headers, is dead-lettered once and terminated', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dl1:', { jetstream: jetstream(stream, subject, dead) });
    const letters = collect(`${dead}.x`);
    await raw.flush();
    const calls = new Map<string, number[]>();
    await failing(bus, `${subject}.x`, 'worker', `${dead}.x`, calls);

    // Accepted by its own stream; copied into the dead letter it would be refused by the dead-letter stream.
    await bus.publish(
      `${subject}.x`,
      { id: 'expected' },
      { persist: true, msgId: 'm-expected', headers: { 'Nats-Expected-Stream': stream } },
    );
    // Body and headers just under max_payload (1 MiB): the dead-letter headers (about 300 bytes) no longer fit.
    const maxPayload = raw.info!.max_payload;
    const bigHeader = 'h'.repeat(60_000);
    const overhead = Buffer.byteLength(JSON.stringify({ id: 'near-max', pad: '' })) + 12 + 'X-Big'.length + bigHeader.length + 4;
    const pad = 'p'.repeat(maxPayload - overhead - 40);
    await bus.publish(`${subject}.x`, { id: 'near-max', pad }, { persist: true, headers: { 'X-Big': bigHeader } });

    await waitUntil(() => letters.length >= 2, 'two dead letters', 15_000);
    // Several ack waits and backoff steps: a dead letter that failed would have been retried by now.
    await sleep(3000);
    expect({ letters: letters.length, calls: Object.fromEntries(calls) }).toEqual({
      letters: 2,
      calls: { expected: [1, 2], 'near-max': [1, 2] },
    });
    const stored = await (await jetstreamManager(raw)).streams.info(`${stream}DEAD`);
    expect(stored.state.messages).toBe(2);
    const byId = new Map(letters.map((l) => [header(l.headers, 'Eventbus-Dead-Seq')[0] === '1' ? 'expected' : 'near-max', l] as const));
    const expected = byId.get('expected')!;
    expect(header(expected.headers, 'Nats-Expected-Stream')).toEqual([]);
    expect(header(expected.headers, 'Eventbus-Dead-Reason')).toEqual(['max_deliver']);
    // The near-max body went by claim-check, and every header came along.
    const nearMax = byId.get('near-max')!;
    expect(JSON.parse(nearMax.data.toString())).toMatchObject({ is_stored: true });
    expect(header(nearMax.headers, 'X-Big')).toEqual([bigHeader]);
    const body = await bus.messageStorage!.recoverMessage(JSON.parse(nearMax.data.toString()));
    expect(JSON.parse(Buffer.from(body).toString())).toEqual({ id: 'near-max', pad });
  });

  it('item 1: a dead letter the dead-letter stream always refuses is tried 3 times, then the message is terminated, logged once and counted', async () => {
    const { stream, subject, dead } = space();
    const jsm = await jetstreamManager(raw);
    // The dead-letter stream takes nothing bigger than 64 bytes: every dead letter is refused.
    await jsm.streams.add({ name: `${stream}TINY`, subjects: [`${dead}.>`], max_msg_size: 64 });
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dl2:', {
      jetstream: { streams: [{ name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600 }] },
    });
    const letters = collect(`${dead}.x`);
    await raw.flush();
    logs.clear();
    const calls = new Map<string, number[]>();
    await failing(bus, `${subject}.x`, 'worker', `${dead}.x`, calls);
    await bus.publish(`${subject}.x`, { id: 'a' }, { persist: true });

    await waitUntil(() => logs.matching(/gave up dead-lettering/).length === 1, 'the give-up line', 15_000);
    await sleep(3000);
    // maxDeliver handler calls, then one dead-letter try on each of 3 deliveries; nothing after.
    expect(calls.get('a')).toEqual([1, 2]);
    expect(letters).toHaveLength(3);
    expect(logs.matching(/could not dead-letter/)).toHaveLength(2);
    const gaveUp = logs.matching(/gave up dead-lettering/);
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]).toContain(`message ${stream}#1 on "${subject}.x"`);
    expect(bus.subscriptionStats()[0].deadLettersFailed).toBe(1);
    const info = await jsm.consumers.info(stream, 'worker');
    expect({ pending: info.num_pending, ackPending: info.num_ack_pending }).toEqual({ pending: 0, ackPending: 0 });
  });

  it('item 12: two durables dead-lettering one message both keep theirs, each with its Eventbus-Dead-Durable', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dl3:', { jetstream: jetstream(stream, subject, dead) });
    const letters = collect(`${dead}.x`);
    await raw.flush();
    await failing(bus, `${subject}.x`, 'audit', `${dead}.x`, new Map());
    await failing(bus, `${subject}.x`, 'billing', `${dead}.x`, new Map());
    await bus.publish(`${subject}.x`, { id: 'both' }, { persist: true });

    await waitUntil(() => letters.length >= 2, 'two dead letters', 15_000);
    await sleep(1500);
    expect(letters).toHaveLength(2);
    // Both stored: their msgIds differ by the durable.
    const stored = await (await jetstreamManager(raw)).streams.info(`${stream}DEAD`);
    expect(stored.state.messages).toBe(2);
    expect(letters.map((l) => header(l.headers, 'Eventbus-Dead-Durable')).sort()).toEqual([['audit'], ['billing']]);
  });

  it('item 13: forged Eventbus-Dead-* headers of any case are stripped from the copy; the real ones are set once', async () => {
    const { stream, subject, dead } = space();
    const { bus } = await buses.withRedis(nats.url, redis.url, 'dl4:', { jetstream: jetstream(stream, subject, dead) });
    const letters = collect(`${dead}.x`);
    await raw.flush();
    await failing(bus, `${subject}.x`, 'audit', `${dead}.x`, new Map());
    const forged = { 'eventbus-dead-reason': 'forged-lowercase', 'EVENTBUS-DEAD-DURABLE': 'forged', 'Eventbus-Dead-Seq': '999' };
    await bus.publish(`${subject}.x`, { id: 'forged' }, { persist: true, headers: { ...forged, 'X-Keep': 'k' } });

    await waitUntil(() => letters.length >= 1, 'the dead letter', 15_000);
    await sleep(1000);
    expect(letters).toHaveLength(1);
    const hs = letters[0].headers;
    expect(header(hs, 'Eventbus-Dead-Reason')).toEqual(['max_deliver']);
    expect(header(hs, 'Eventbus-Dead-Durable')).toEqual(['audit']);
    expect(header(hs, 'Eventbus-Dead-Seq')).toEqual(['1']);
    expect(header(hs, 'X-Keep')).toEqual(['k']);
    expect(hs.filter(([, v]) => v === 'forged' || v === 'forged-lowercase' || v === '999')).toEqual([]);
  });
});
