import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, InvalidOptionsError, MessageContext, Subscribe } from '../../lib';
import { inboxBucket } from '../../lib/durable/inbox';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';

/** The KV key of an id recorded by durable `durable` of `stream`: `<stream>.<durable>.m.<base64url msgId>`. */
const msgKey = (stream: string, durable: string, msgId: string) => `${stream}.${durable}.m.${Buffer.from(msgId).toString('base64url')}`;

// The server's users: `full` may do anything; `lossy` has its acks dropped (a lost ack, as after a
// crash between the record and the ack); `nokv` cannot reach the inbox's KV subjects, while its
// stream and consumer work. The config is rewritten and reloaded (SIGHUP) to lift a fault.
// JetStream is in the file too (not -js): a reload of a file without it would turn JetStream off.
const STORE_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-idem-'));
const PERMISSIONS = (nokvDenied: boolean) => `
jetstream { store_dir: "${STORE_DIR}" }
authorization {
  users = [
    { user: full, password: pw }
    { user: lossy, password: pw, permissions: { publish: { allow: ">", deny: ["$JS.ACK.>"] }, subscribe: { allow: ">" } } }
    { user: nokv, password: pw, permissions: { publish: { allow: ">", deny: ${nokvDenied ? '["$KV.>", "$JS.API.DIRECT.GET.KV_>", "$JS.API.STREAM.MSG.GET.KV_>"]' : '[]'} }, subscribe: { allow: ">" } } }
  ]
}
`;

const billed: unknown[] = [];

@Injectable()
class Billing {
  @Subscribe('idemmod.orders.placed', { durable: 'mod-billing', idempotent: { windowSeconds: 120 } })
  bill(order: unknown) {
    billed.push(order);
  }
}

// Idempotent durables (issue 30) against a real nats-server with JetStream and a real Redis.
describe('idempotent durables (the inbox)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  const buses = new TestBuses();
  let n = 0;
  const space = () => {
    n++;
    return { stream: `I${n}`, subject: `idem${n}` };
  };
  // A 1-second duplicate window: a second copy with the same msgId, published after it, is a new stream message.
  const jetstream = (stream: string, subject: string) => ({
    streams: [{ name: stream, subjects: [`${subject}.>`], maxAgeSeconds: 3600, duplicateWindowSeconds: 1 }],
  });
  const busAs = (user: string, prefix: string, stream: string, subject: string) =>
    buses.withRedis(nats.url, redis.url, prefix, { nats: { user, pass: 'pw' }, jetstream: jetstream(stream, subject) }).then((b) => b.bus);
  /** Publish the same msgId twice as two stream messages: the second after the stream's duplicate window. */
  async function publishTwice(bus: EventBus, topic: string, payload: unknown, msgId: string) {
    const first = await bus.publish(topic, payload, { persist: true, msgId });
    await sleep(1200);
    const second = await bus.publish(topic, payload, { persist: true, msgId });
    expect(second.duplicate).toBe(false);
    expect(second.seq).toBeGreaterThan(first.seq);
    return [first, second];
  }
  /** Rewrite the server's configuration and have it reload it (SIGHUP): permissions change on the running server. */
  const reload = (config: string) => {
    const server = nats as unknown as { configFile: string; child: { pid: number } };
    fs.writeFileSync(server.configFile, config);
    process.kill(server.child.pid, 'SIGHUP');
  };
  /** The durable has nothing left to deliver and nothing waiting for an ack. */
  async function drained(stream: string, durable: string, delivered: number) {
    await waitUntil(async () => {
      const info = await jsm.consumers.info(stream, durable);
      return info.num_ack_pending === 0 && info.num_pending === 0 && info.delivered.stream_seq === delivered;
    }, `${durable} drained up to ${delivered}`);
  }

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false, config: PERMISSIONS(false) }), RedisServer.start()]);
    raw = await connect({ servers: nats.url, user: 'full', pass: 'pw' });
    jsm = await jetstreamManager(raw);
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
    fs.rmSync(STORE_DIR, { recursive: true, force: true });
  });

  it('a msgId already handled is acked without the handler (counted in duplicatesSkipped); the record is "done" in a bucket whose age limit is the window', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i1:', stream, subject);
    const seen: Array<{ payload: unknown; ctx: MessageContext }> = [];
    await bus.subscribe(`${subject}.order`, (payload, ctx) => void seen.push({ payload, ctx }), { durable: 'billing', idempotent: true });

    await publishTwice(bus, `${subject}.order`, { id: 'o-1' }, 'o-1');
    await drained(stream, 'billing', 2);
    expect(seen.map((s) => s.payload)).toEqual([{ id: 'o-1' }]);
    expect(seen[0].ctx).toMatchObject({ stream, seq: 1, deliveryCount: 1 });
    expect(bus.subscriptionStats()[0]).toMatchObject({ durable: 'billing', duplicatesSkipped: 1 });

    const kv = await new Kvm(raw).open(inboxBucket(600));
    expect((await kv.status()).ttl).toBe(600_000);
    const record = await kv.get(msgKey(stream, 'billing', 'o-1'));
    expect(record?.string()).toMatch(/^done \d+$/);
  });

  it('without msgId the id is stream and sequence: a republish is a new message and runs the handler again', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i2:', stream, subject);
    const seen: unknown[] = [];
    await bus.subscribe(`${subject}.x`, (payload) => void seen.push(payload), { durable: 'plain', idempotent: { windowSeconds: 30 } });
    await bus.publish(`${subject}.x`, { n: 1 }, { persist: true });
    await bus.publish(`${subject}.x`, { n: 1 }, { persist: true });
    await drained(stream, 'plain', 2);
    expect(seen).toEqual([{ n: 1 }, { n: 1 }]);
    const kv = await new Kvm(raw).open(inboxBucket(30));
    expect((await kv.status()).ttl).toBe(30_000);
    expect((await kv.get(`${stream}.plain.s.1`))?.string()).toMatch(/^done /);
    expect((await kv.get(`${stream}.plain.s.2`))?.string()).toMatch(/^done /);
    expect(bus.subscriptionStats()[0].duplicatesSkipped).toBe(0);
  });

  it('after the window the record is gone: the same msgId runs the handler again', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i3:', stream, subject);
    const seen: unknown[] = [];
    await bus.subscribe(`${subject}.x`, (payload) => void seen.push(payload), { durable: 'short', idempotent: { windowSeconds: 2 } });
    await bus.publish(`${subject}.x`, { v: 1 }, { persist: true, msgId: 'w' });
    await waitUntil(() => seen.length === 1, 'first run');
    await sleep(3000);
    expect(await (await new Kvm(raw).open(inboxBucket(2))).get(msgKey(stream, 'short', 'w'))).toBeNull();
    await bus.publish(`${subject}.x`, { v: 2 }, { persist: true, msgId: 'w' });
    await drained(stream, 'short', 2);
    expect(seen).toEqual([{ v: 1 }, { v: 2 }]);
  });

  it('a handler that fails gives its id back: the redelivery runs it, and once it succeeds a later copy is skipped', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i4:', stream, subject);
    let calls = 0;
    await bus.subscribe(
      `${subject}.x`,
      () => {
        calls++;
        if (calls === 1) throw new Error('first try fails');
      },
      { durable: 'retry', idempotent: true, backoffMs: [100] },
    );
    await publishTwice(bus, `${subject}.x`, {}, 'r');
    await drained(stream, 'retry', 2);
    expect(calls).toBe(2);
    expect(bus.subscriptionStats()[0].duplicatesSkipped).toBe(1);
  });

  it('a lost ack: the message handled and recorded comes back to another instance, which acks it without the handler', async () => {
    const { stream, subject } = space();
    // `lossy` cannot ack: the server redelivers after the ack wait, as after a crash between record and ack.
    const lossy = await busAs('lossy', 'i5a:', stream, subject);
    const ranOnLossy: unknown[] = [];
    await lossy.subscribe(`${subject}.x`, (p) => void ranOnLossy.push(p), { durable: 'pay', idempotent: true, ackWaitMs: 1000 });
    await lossy.publish(`${subject}.x`, { pay: 1 }, { persist: true, msgId: 'p-1' });
    await waitUntil(() => ranOnLossy.length === 1, 'handled on the lossy instance');
    // The lossy instance keeps getting it back and skipping it; its ack never arrives.
    await waitUntil(() => (lossy.subscriptionStats()[0].duplicatesSkipped ?? 0) >= 1, 'a redelivery skipped');
    expect((await jsm.consumers.info(stream, 'pay')).num_ack_pending).toBe(1);
    await lossy.close();

    const healthy = await busAs('full', 'i5b:', stream, subject);
    const ranOnHealthy: unknown[] = [];
    await healthy.subscribe(`${subject}.x`, (p) => void ranOnHealthy.push(p), { durable: 'pay', idempotent: true, ackWaitMs: 1000 });
    await drained(stream, 'pay', 1);
    expect(healthy.subscriptionStats()[0].duplicatesSkipped).toBe(1);
    expect(ranOnHealthy).toEqual([]);
    expect(ranOnLossy).toEqual([{ pay: 1 }]);
  });

  it("two instances racing on one id: the second waits on the first one's claim and never runs the handler", async () => {
    const { stream, subject } = space();
    const [a, b] = [await busAs('full', 'i6a:', stream, subject), await busAs('full', 'i6b:', stream, subject)];
    const runs: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const handler = (name: string) => async () => {
      runs.push(name);
      await gate;
    };
    const opts = { durable: 'race', idempotent: true, maxConcurrent: 1 } as const;
    await a.subscribe(`${subject}.x`, handler('a'), opts);
    await b.subscribe(`${subject}.x`, handler('b'), opts);
    await publishTwice(a, `${subject}.x`, {}, 'same');
    // Both copies are out: one held by the running handler, the other delivered to the other instance.
    await waitUntil(async () => (await jsm.consumers.info(stream, 'race')).delivered.stream_seq === 2, 'both delivered');
    await sleep(1500);
    expect(runs).toHaveLength(1);
    const kv = await new Kvm(raw).open(inboxBucket(600));
    expect((await kv.get(msgKey(stream, 'race', 'same')))?.string()).toMatch(/^claim \S+ \d+$/);
    release();
    await drained(stream, 'race', 2);
    expect(runs).toHaveLength(1);
    const skipped = [a, b].map((bus) => bus.subscriptionStats()[0].duplicatesSkipped ?? 0);
    expect(skipped[0] + skipped[1]).toBe(1);
    expect((await kv.get(msgKey(stream, 'race', 'same')))?.string()).toMatch(/^done /);
  });

  it("KV unreachable: the handler is not run and the message is nak'ed; once KV is back it is handled once", async () => {
    const { stream, subject } = space();
    const bus = await busAs('nokv', 'i7:', stream, subject);
    const seen: unknown[] = [];
    // The consumer's acks and naks, as the server receives them.
    const naks: string[] = [];
    raw.subscribe(`$JS.ACK.${stream}.kvdown.>`, { callback: (_e, m) => void naks.push(m.string()) });
    const logs = captureLogs();
    try {
      await bus.subscribe(`${subject}.x`, (p) => void seen.push(p), {
        durable: 'kvdown',
        idempotent: true,
        backoffMs: [200, 500],
        maxDeliver: 2,
      });
      // Cut the inbox off (the stream and the consumer still work), then publish.
      reload(PERMISSIONS(true));
      await sleep(500);
      await bus.publish(`${subject}.x`, { k: 1 }, { persist: true, msgId: 'k-1' });
      // Nak'ed more times than maxDeliver (2): an inbox outage does not count against it, nothing is dead-lettered.
      await waitUntil(() => naks.length >= 4, 'four naks', 30_000);
      expect(naks.every((body) => body.startsWith('-NAK'))).toBe(true);
      await waitUntil(() => logs.matching(/inbox bucket .* unreachable.*handler not run/).length > 0, 'the log line');
      expect(seen).toEqual([]);

      reload(PERMISSIONS(false));
      await waitUntil(() => seen.length === 1, 'handled once KV is back', 30_000);
      await drained(stream, 'kvdown', 1);
      expect(seen).toEqual([{ k: 1 }]);
    } finally {
      reload(PERMISSIONS(false));
      logs.restore();
    }
  }, 60_000);

  it('a claim left by a crashed instance holds the id until its lease expires, then is taken over and the handler runs once', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i9:', stream, subject);
    const kv = await new Kvm(raw).create(inboxBucket(600), { ttl: 600_000, history: 1 });
    // As a crashed instance leaves it: a claim whose lease ends 2 s from now, never renewed.
    await kv.put(msgKey(stream, 'crash', 'c-1'), `claim dead-host-1-0.1 ${Date.now() + 2000}`);
    const seen: unknown[] = [];
    const logs = captureLogs();
    try {
      await bus.subscribe(`${subject}.x`, (p) => void seen.push(p), { durable: 'crash', idempotent: true, backoffMs: [250] });
      await bus.publish(`${subject}.x`, { c: 1 }, { persist: true, msgId: 'c-1' });
      await sleep(1000);
      expect(seen).toEqual([]);
      await waitUntil(() => seen.length === 1, 'taken over after the lease', 10_000);
      await drained(stream, 'crash', 1);
      expect(seen).toEqual([{ c: 1 }]);
      expect(logs.matching(/took over the expired claim of dead-host-1-0\.1/)).toHaveLength(1);
      expect((await kv.get(msgKey(stream, 'crash', 'c-1')))?.string()).toMatch(/^done /);
    } finally {
      logs.restore();
    }
  });

  it('@Subscribe({ durable, idempotent }) through EventBusModule: a second copy of one msgId is not handled', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url, user: 'full', pass: 'pw' },
          jetstream: { streams: [{ name: 'IDEMMOD', subjects: ['idemmod.>'], maxAgeSeconds: 3600, duplicateWindowSeconds: 1 }] },
        }),
      ],
      providers: [Billing],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      await publishTwice(bus, 'idemmod.orders.placed', { order: 7 }, 'order-7');
      await drained('IDEMMOD', 'mod-billing', 2);
      expect(billed).toEqual([{ order: 7 }]);
      expect(bus.subscriptionStats().find((s) => s.durable === 'mod-billing')?.duplicatesSkipped).toBe(1);
      expect((await (await new Kvm(raw).open(inboxBucket(120))).get(msgKey('IDEMMOD', 'mod-billing', 'order-7')))?.string()).toMatch(
        /^done /,
      );
    } finally {
      await app.close();
    }
  });

  it('refuses a bad idempotent option with InvalidOptionsError naming it', async () => {
    const { stream, subject } = space();
    const bus = await busAs('full', 'i8:', stream, subject);
    for (const idempotent of [{ windowSeconds: 0 }, { windowSeconds: 1.5 }, { windowSecs: 5 }, 'yes']) {
      const err = await bus.subscribe(`${subject}.x`, () => undefined, { durable: 'bad', idempotent } as never).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.option).toMatch(/^idempotent/);
    }
    const core = await bus.subscribe(`${subject}.x`, () => undefined, { idempotent: true }).catch((e) => e);
    expect(core).toBeInstanceOf(InvalidOptionsError);
    expect(core.message).toContain('durable subscriptions only');
  });
});
