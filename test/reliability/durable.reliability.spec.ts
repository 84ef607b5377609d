// Durable delivery (JetStream) under faults, against real nats-server processes (-js -sd) and Redis:
// the server SIGKILLed mid-flow, a consumer process SIGKILLed mid-handler, the stream leader of an
// R3 stream killed in a 3-node cluster, and poison interleaved with a flood of good messages.
import { randomUUID } from 'node:crypto';
import { ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { EventBus, MessageContext, NotPersistedError, PersistAck } from '../../lib';
import { NatsCluster, NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';
import { captureLogs, DeliveryCounter, ensureBuilt, LogCapture, pick, report, watchCrashes } from './reliability-helpers';

/** Publish statistics of a flow whose rejected publishes are retried with the same msgId. */
interface PublishStats {
  /** Publishes that resolved (each id once). */
  stored: number;
  /** Rejections, by error class. */
  rejections: Record<string, number>;
  /** Ids that needed more than one attempt. */
  retriedIds: number;
  /** Retries the stream answered with `duplicate: true`: the first attempt had been stored, only its ack was lost. */
  duplicateAcks: number;
  /** Ids given up on (only when retrying is turned off, to show what the retry buys). */
  givenUp: number;
}

/**
 * Publishes ids 0..total-1 as `{ id }` with `persist: true, msgId: <prefix><id>`, `inFlight` at a
 * time; a rejected publish is retried with the same msgId until the stream stores it.
 * `RELIABILITY_NO_RETRY=1` gives up on the first rejection instead (the test must then fail).
 */
function persistedFlow(bus: EventBus, subject: string, total: number, inFlight: number, msgIdPrefix: string | null) {
  const stats: PublishStats = { stored: 0, rejections: {}, retriedIds: 0, duplicateAcks: 0, givenUp: 0 };
  const retry = process.env.RELIABILITY_NO_RETRY !== '1';
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const id = next++;
      for (let attempt = 1; ; attempt++) {
        try {
          const opts = msgIdPrefix === null ? { persist: true as const } : { persist: true as const, msgId: `${msgIdPrefix}${id}` };
          const ack: PersistAck = await bus.publish(subject, { id }, opts);
          stats.stored++;
          if (attempt > 1) stats.retriedIds++;
          if (attempt > 1 && ack.duplicate) stats.duplicateAcks++;
          break;
        } catch (err) {
          const name = (err as Error)?.constructor?.name ?? String(err);
          stats.rejections[name] = (stats.rejections[name] ?? 0) + 1;
          if (!retry) {
            stats.givenUp++;
            break;
          }
          await sleep(50);
        }
      }
    }
  };
  const done = Promise.all(Array.from({ length: inFlight }, worker));
  return { stats, done, started: () => next };
}

/** Messages a stream holds, read from the server (a duplicate stored twice would show here). */
async function streamMessages(servers: string | string[], stream: string): Promise<number> {
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}

/** The fixture consumer process; `lines` collects its JSON stdout lines. */
function startConsumerProcess(env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, [join(__dirname, 'fixtures', 'durable-consumer.js')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, any>> = [];
  let stderr = '';
  let buf = '';
  child.stdout!.on('data', (d) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(line));
      } catch {
        /* a Nest log line */
      }
    }
  });
  child.stderr!.on('data', (d) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  return { child, lines, exited, stderr: () => stderr };
}

const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

/** What a fault scenario's report says of delivery and of the publishes it retried, alike for each. */
function deliveryFigures(counter: DeliveryCounter, flow: ReturnType<typeof persistedFlow>, redelivered: number[]) {
  return {
    handled: counter.received,
    lost: counter.lost,
    duplicated: counter.duplicated,
    redeliveries: redelivered.length,
    maxDeliveryCount: Math.max(1, ...redelivered),
    rejectedPublishes: sum(flow.stats.rejections),
    rejectionsByError: flow.stats.rejections,
    retriedIds: flow.stats.retriedIds,
    retriesStoredBefore: flow.stats.duplicateAcks,
  };
}

describe('durable delivery (JetStream) under faults', () => {
  let logs: LogCapture;
  let crashes: ReturnType<typeof watchCrashes>;
  const buses = new TestBuses();
  const cleanup: Array<() => Promise<unknown>> = [];

  beforeAll(() => {
    logs = captureLogs();
    crashes = watchCrashes();
  });

  afterEach(async () => {
    await buses.closeAll();
    for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
    // Nothing crashes: no uncaught exception or unhandled rejection in any scenario.
    expect(crashes.errors).toEqual([]);
  });

  afterAll(() => {
    crashes.stop();
    logs.restore();
  });

  /** A connected bus without message storage (the messages are small), reconnecting fast. */
  async function plainBus(servers: string | string[], jetstream: object, name: string) {
    const bus = buses.track(
      new EventBus(
        { nats: { servers, name, reconnectTimeWait: 100, reconnectJitter: 0 }, jetstream: { apiTimeoutMs: 1000, ...jetstream } },
        null,
      ),
    );
    await bus.connect();
    return bus;
  }

  it('nats-server SIGKILLed and restarted on the same store while persisted messages flow: rejected publishes retried with their msgId, zero lost, duplicates counted', async () => {
    const nats = await NatsServer.start();
    cleanup.push(() => nats.dispose());
    const TOTAL = pick(4000, 40_000);
    const streams = [{ name: 'REL_KILL', subjects: ['rel.kill.>'], maxAgeSeconds: 3600 }];
    const producer = await plainBus(nats.url, { streams }, 'durable-kill-producer');
    const consumer = await plainBus(nats.url, { streams }, 'durable-kill-consumer');
    const counter = new DeliveryCounter(TOTAL);
    const redelivered: number[] = [];
    await consumer.subscribe(
      'rel.kill.events',
      (p: { id: number }, ctx: MessageContext) => {
        counter.hit(p.id);
        if (ctx.deliveryCount! > 1) redelivered.push(ctx.deliveryCount!);
      },
      { durable: 'counter', ackWaitMs: 2000 },
    );

    const flow = persistedFlow(producer, 'rel.kill.events', TOTAL, 32, 'kill-');
    await waitUntil(() => flow.started() >= TOTAL / 3, 'a third of the flow published', 20_000);
    const killedAt = flow.started();
    await nats.stop('SIGKILL');
    await sleep(pick(1000, 3000));
    await nats.start();
    await flow.done;
    await waitUntil(() => counter.lost === 0, 'every id handled', 30_000).catch(() => undefined);
    // Late redeliveries (an ack lost in the crash comes back after ackWaitMs) count as duplicates.
    await sleep(2500);

    const stored = await streamMessages(nats.url, 'REL_KILL');
    report('durable.natsKill', {
      published: TOTAL,
      killedAfter: killedAt,
      storedInStream: stored,
      ...deliveryFigures(counter, flow, redelivered),
    });
    expect(flow.stats.givenUp).toBe(0);
    expect(counter.lostIds().slice(0, 20)).toEqual([]);
    // msgId deduplication: each id is stored once, however many times its publish was retried.
    expect(stored).toBe(TOTAL);
    // The fault was real: publishes were rejected (and retried), and every rejection was a NotPersistedError.
    expect(flow.stats.retriedIds).toBeGreaterThan(0);
    expect(Object.keys(flow.stats.rejections)).toEqual([NotPersistedError.name]);
  }, 90_000);

  it('a consumer process SIGKILLed mid-handler: its message is redelivered to another instance of the durable, with deliveryCount 2', async () => {
    ensureBuilt();
    const nats = await NatsServer.start();
    cleanup.push(() => nats.dispose());
    const ACK_WAIT_MS = 2000;
    const env = { NATS_URL: nats.url, TOPIC: 'rel.proc.jobs', DURABLE: 'jobs', STREAM: 'REL_PROC', ACK_WAIT_MS: String(ACK_WAIT_MS) };
    const proc = startConsumerProcess(env);
    cleanup.push(async () => {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
      await proc.exited;
    });
    await waitUntil(() => proc.lines.some((l) => l.ready) || proc.child.exitCode !== null, 'the consumer process ready', 30_000);
    expect({ exit: proc.child.exitCode, stderr: proc.stderr() }).toEqual({ exit: null, stderr: '' });

    const producer = await plainBus(nats.url, {}, 'durable-proc-producer');
    const ack = await producer.publish('rel.proc.jobs', { job: 'j-1' }, { persist: true, msgId: 'j-1' });
    await waitUntil(() => proc.lines.some((l) => l.handling), 'the consumer process took the job', 10_000);
    // Held past two ack waits: the child's bus keeps it with in-progress, so nobody else gets it yet.
    const survivor = await plainBus(nats.url, {}, 'durable-proc-survivor');
    const got: Array<{ payload: unknown; deliveryCount?: number; seq?: number; at: number }> = [];
    await survivor.subscribe(
      'rel.proc.jobs',
      (payload, ctx) => void got.push({ payload, deliveryCount: ctx.deliveryCount, seq: ctx.seq, at: Date.now() }),
      {
        durable: 'jobs',
        ackWaitMs: ACK_WAIT_MS,
      },
    );
    await sleep(2 * ACK_WAIT_MS + 500);
    expect(got).toEqual([]);

    proc.child.kill('SIGKILL');
    expect(await proc.exited).toBe('SIGKILL');
    const killedAt = Date.now();
    await waitUntil(() => got.length >= 1, 'the job redelivered to the surviving instance', 15_000);
    // Nothing else arrives later: the survivor acked it.
    await producer.publish('rel.proc.jobs', { job: 'j-2' }, { persist: true, msgId: 'j-2' });
    await waitUntil(() => got.length >= 2, 'the next job', 10_000);
    await sleep(ACK_WAIT_MS + 500);

    report('durable.consumerKill', {
      childDeliveries: proc.lines.filter((l) => l.handling).map((l) => l.deliveryCount),
      redeliveredAfterMs: got[0].at - killedAt,
      survivorGot: got.map((g) => ({ payload: g.payload, deliveryCount: g.deliveryCount })),
    });
    expect(proc.lines.filter((l) => l.handling)).toEqual([{ handling: { job: 'j-1' }, deliveryCount: 1, seq: ack.seq }]);
    expect(got.map(({ payload, deliveryCount, seq }) => ({ payload, deliveryCount, seq }))).toEqual([
      { payload: { job: 'j-1' }, deliveryCount: 2, seq: ack.seq },
      { payload: { job: 'j-2' }, deliveryCount: 1, seq: ack.seq + 1 },
    ]);
  }, 90_000);

  it('3-node JetStream cluster, R3 stream: the stream leader SIGKILLed mid-flow; publishes retried with their msgId, zero lost', async () => {
    const cluster = await NatsCluster.start({ size: 3, jetstream: true });
    cleanup.push(() => cluster.dispose());
    const TOTAL = pick(3000, 30_000);
    const streams = [{ name: 'REL_R3', subjects: ['rel.r3.>'], maxAgeSeconds: 3600, replicas: 3 }];
    const producer = await plainBus(cluster.urls, { streams }, 'durable-r3-producer');
    const consumer = await plainBus(cluster.urls, { streams }, 'durable-r3-consumer');
    const counter = new DeliveryCounter(TOTAL);
    const redelivered: number[] = [];
    // The longest time without a delivery: how long the consumer stalls across the failover.
    let lastHandledAt = 0;
    let longestPauseMs = 0;
    await consumer.subscribe(
      'rel.r3.events',
      (p: { id: number }, ctx: MessageContext) => {
        counter.hit(p.id);
        if (ctx.deliveryCount! > 1) redelivered.push(ctx.deliveryCount!);
        const now = Date.now();
        if (lastHandledAt && now - lastHandledAt > longestPauseMs) longestPauseMs = now - lastHandledAt;
        lastHandledAt = now;
      },
      { durable: 'counter', ackWaitMs: 2000 },
    );
    let leader: string | undefined;
    await waitUntil(async () => !!(leader = await cluster.streamLeader('REL_R3')), 'the stream leader', 15_000);
    expect(leader).toMatch(/^n[0-2]$/);

    const flow = persistedFlow(producer, 'rel.r3.events', TOTAL, 32, 'r3-');
    await waitUntil(() => flow.started() >= TOTAL / 3, 'a third of the flow published', 20_000);
    const killedAt = flow.started();
    const t0 = Date.now();
    await cluster.kill(leader!);
    let newLeader: string | undefined;
    await waitUntil(
      async () => {
        newLeader = await cluster.streamLeader('REL_R3');
        return !!newLeader && newLeader !== leader;
      },
      'a new stream leader',
      30_000,
    );
    const electedMs = Date.now() - t0;
    await flow.done;
    await waitUntil(() => counter.lost === 0, 'every id handled', 30_000).catch(() => undefined);
    await sleep(2500);

    if (process.env.RELIABILITY_DEBUG) console.log(logs.lines.map((l) => `${l.level ?? ''} ${l.context ?? ''} ${l.message}`).join('\n'));
    const running = cluster.nodes.filter((n) => n.running).map((n) => n.url);
    const stored = await streamMessages(running, 'REL_R3');
    report('durable.clusterLeaderKill', {
      published: TOTAL,
      killedAfter: killedAt,
      killedLeader: leader,
      newLeader,
      newLeaderAfterMs: electedMs,
      consumerLongestPauseMs: longestPauseMs,
      storedInStream: stored,
      ...deliveryFigures(counter, flow, redelivered),
    });
    expect(flow.stats.givenUp).toBe(0);
    expect(counter.lostIds().slice(0, 20)).toEqual([]);
    expect(stored).toBe(TOTAL);
    expect(newLeader).not.toBe(leader);
  }, 120_000);

  it('poison interleaved with a flood of good persisted messages (not JSON, forged and unknown tokens, a handler-throwing marker): every good one handled once, every poison in the dead letter with its reason', async () => {
    const nats = await NatsServer.start();
    const redis = await RedisServer.start();
    cleanup.push(
      () => nats.dispose(),
      () => redis.dispose(),
    );
    const GOOD = pick(3000, 30_000);
    const POISON_EVERY = 20;
    const { bus } = await buses.withRedis(nats.url, redis.url, 'relpoison:', {
      nats: { name: 'durable-poison' },
      jetstream: { streams: [{ name: 'REL_POISON', subjects: ['rel.poison.>'], maxAgeSeconds: 3600 }] },
    });
    const raw = await connect({ servers: nats.url });
    cleanup.push(() => raw.close());
    const rawJs = jetstream(raw);
    const dead: Array<{ reason: string; deliveries: string; data: string }> = [];
    raw.subscribe('rel.poisondead.in', {
      callback: (_err, m) => {
        dead.push({
          reason: m.headers?.get('Eventbus-Dead-Reason') ?? '',
          deliveries: m.headers?.get('Eventbus-Dead-Deliveries') ?? '',
          data: Buffer.from(m.data).toString('base64'),
        });
      },
    });
    await raw.flush();

    const counter = new DeliveryCounter(GOOD);
    let throwing = 0;
    await bus.subscribe(
      'rel.poison.in',
      (p: { id?: number; poison?: number }) => {
        if (p.poison !== undefined) {
          throwing++;
          throw new Error(`poison ${p.poison}`);
        }
        counter.hit(p.id!);
      },
      // A short ack wait, so that a message left unsettled would come back (and be dead-lettered again) within the test.
      { durable: 'worker', maxDeliver: 3, backoffMs: [50, 100], ackWaitMs: 2000, deadLetter: 'rel.poisondead.in' },
    );

    // Each kind of poison, with the dead-letter reason it must get.
    const kinds: Array<[string, (n: number) => Buffer]> = [
      ['invalid_message', (n) => Buffer.concat([Buffer.from([0x7b, 0xff, 0xfe, 0x00]), Buffer.from(`#${n}`)])],
      ['forbidden', (n) => Buffer.from(JSON.stringify({ token: `../../../etc/passwd-${n}`, is_stored: true }))],
      ['not_found', () => Buffer.from(JSON.stringify({ token: randomUUID(), is_stored: true }))],
      ['max_deliver', (n) => Buffer.from(JSON.stringify({ poison: n }))],
    ];
    const sentPoison: Record<string, string[]> = { invalid_message: [], forbidden: [], not_found: [], max_deliver: [] };
    let next = 0;
    const t0 = Date.now();
    const worker = async () => {
      while (next < GOOD) {
        const id = next++;
        if (id % POISON_EVERY === 0) {
          const n = id / POISON_EVERY;
          const [reason, make] = kinds[n % kinds.length];
          const body = make(n);
          sentPoison[reason].push(body.toString('base64'));
          // Straight into the stream, as a careless or hostile publisher would.
          await rawJs.publish('rel.poison.in', body);
        }
        await bus.publish('rel.poison.in', { id }, { persist: true, msgId: `good-${id}` });
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    const publishedMs = Date.now() - t0;
    const poisonTotal = Object.values(sentPoison).reduce((a, l) => a + l.length, 0);
    await waitUntil(() => counter.lost === 0 && dead.length >= poisonTotal, 'every good message and every dead letter', 60_000).catch(
      () => undefined,
    );
    const doneMs = Date.now() - t0;
    // Two ack waits: anything not acked or terminated would be redelivered by now.
    await sleep(4500);

    const consumerInfo = await (await jetstreamManager(raw)).consumers.info('REL_POISON', 'worker');
    const deadBy: Record<string, string[]> = {};
    for (const d of dead) (deadBy[d.reason] ??= []).push(d.data);
    report('durable.poisonFlood', {
      good: GOOD,
      poison: Object.fromEntries(Object.entries(sentPoison).map(([k, v]) => [k, v.length])),
      handled: counter.received,
      lost: counter.lost,
      duplicated: counter.duplicated,
      deadLetters: Object.fromEntries(Object.entries(deadBy).map(([k, v]) => [k, v.length])),
      handlerThrows: throwing,
      consumer: {
        ackPending: consumerInfo.num_ack_pending,
        pending: consumerInfo.num_pending,
        redelivered: consumerInfo.num_redelivered,
        waiting: consumerInfo.num_waiting,
      },
      publishedMs,
      allSettledMs: doneMs,
    });
    expect(counter.lostIds().slice(0, 20)).toEqual([]);
    expect(counter.duplicated).toBe(0);
    for (const reason of Object.keys(sentPoison))
      expect({ reason, dead: (deadBy[reason] ?? []).sort() }).toEqual({ reason, dead: sentPoison[reason].sort() });
    expect(dead).toHaveLength(poisonTotal);
    // What can never succeed is dead-lettered at its first delivery; the throwing marker after exactly maxDeliver.
    for (const d of dead)
      expect({ reason: d.reason, deliveries: d.deliveries }).toEqual({
        reason: d.reason,
        deliveries: d.reason === 'max_deliver' ? '3' : '1',
      });
    expect(throwing).toBe(3 * sentPoison.max_deliver.length);
    // Every message settled on the server: nothing waits for an ack, nothing is left to deliver.
    expect({ ackPending: consumerInfo.num_ack_pending, pending: consumerInfo.num_pending }).toEqual({ ackPending: 0, pending: 0 });
  }, 120_000);
});
