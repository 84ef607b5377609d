import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstream as jsClient, jetstreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { EventBus, MessageContext, ObjectStoreStorageManager } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sleep, waitUntil } from '../harness/wait';

// Stored bodies on durable subjects that are damaged or whose storage stalls (issue 26, items 2
// and 3), against a real nats-server with JetStream and a real Redis.
describe('durable delivery and the stored body (issue 26)', () => {
  let nats: NatsServer;
  let raw: NatsConnection;
  const buses = new TestBuses();

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await nats?.dispose();
  });

  /** Dead letters as a plain subscriber sees them. */
  function collect(subject: string) {
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

  it('item 2: a damaged object-store body is dead-lettered at once with reason corrupt, not retried', async () => {
    const storage = new ObjectStoreStorageManager({ bucket: 'durcorrupt', ttlSeconds: 3600 });
    const bus = buses.track(
      new EventBus(
        {
          nats: { servers: nats.url },
          jetstream: { streams: [{ name: 'CORRUPT', subjects: ['corrupt.>'], maxAgeSeconds: 600 }] },
        },
        storage,
      ),
    );
    await bus.connect();
    const dead = collect('corruptdead.x');
    await raw.flush();
    await bus.publish('corrupt.x', bigPayload(3 * MiB), { persist: true });
    // Replace the body's second chunk by other bytes of the same size.
    const envelope = JSON.parse(
      Buffer.from((await (await jetstreamManager(raw)).streams.getMessage('CORRUPT', { seq: 1 }))!.data).toString(),
    );
    const object = (await (await new Objm(raw).open('durcorrupt')).info(envelope.token))!;
    const jsm = await jetstreamManager(raw);
    const bucket = 'OBJ_durcorrupt';
    const second = await jsm.streams.getMessage(bucket, { seq: (await jsm.streams.info(bucket)).state.first_seq + 1 });
    await jsm.streams.deleteMessage(bucket, second!.seq);
    await jsClient(raw).publish(`$O.durcorrupt.C.${object.nuid}`, Buffer.alloc(second!.data.byteLength, 0x20));

    const deliveries: number[] = [];
    await bus.subscribe('corrupt.x', (_p, ctx: MessageContext) => void deliveries.push(ctx.deliveryCount!), {
      durable: 'reader',
      maxDeliver: 3,
      backoffMs: [100],
      ackWaitMs: 1000,
      deadLetter: 'corruptdead.x',
    });
    await waitUntil(() => dead.length === 1, 'the dead letter', 10_000);
    await sleep(2000);
    expect(deliveries).toEqual([]);
    expect(dead).toHaveLength(1);
    expect(dead[0].headers).toMatchObject({ 'Eventbus-Dead-Reason': 'corrupt', 'Eventbus-Dead-Deliveries': '1' });
    // The dead letter carries the envelope, byte for byte.
    expect(JSON.parse(dead[0].data.toString())).toEqual(envelope);
    const info = await jsm.consumers.info('CORRUPT', 'reader');
    expect({ pending: info.num_pending, ackPending: info.num_ack_pending, delivered: info.delivered.stream_seq }).toEqual({
      pending: 0,
      ackPending: 0,
      delivered: 1,
    });
  });

  it('item 3: deliveries that failed because Redis was down do not count against maxDeliver: the handler still gets maxDeliver tries', async () => {
    // Keeps its data across the restart (append-only file), so the body survives the outage.
    const redis = await RedisServer.start({ args: ['--appendonly', 'yes'] });
    try {
      const { bus } = await buses.withRedis(nats.url, redis.url, 'ds3:', {
        jetstream: { streams: [{ name: 'STALL', subjects: ['stall.>'], maxAgeSeconds: 3600 }] },
      });
      const dead = collect('stalldead.x');
      await raw.flush();
      await bus.publish('stall.x', bigPayload(2 * MiB), { persist: true });
      await redis.stop();
      const handled: number[] = [];
      await bus.subscribe(
        'stall.x',
        (_p, ctx: MessageContext) => {
          handled.push(ctx.deliveryCount!);
          throw new Error('not yet');
        },
        { durable: 'reader', maxDeliver: 3, backoffMs: [150], ackWaitMs: 1000, deadLetter: 'stalldead.x' },
      );
      // Several failed recoveries: more deliveries than maxDeliver before the handler ever runs.
      await sleep(1500);
      expect(handled).toEqual([]);
      await redis.start();
      await waitUntil(() => dead.length === 1, 'the dead letter', 15_000);
      const outage = handled[0] - 1;
      expect(outage).toBeGreaterThanOrEqual(3);
      // maxDeliver handler calls, on consecutive deliveries after the outage.
      expect(handled).toEqual([outage + 1, outage + 2, outage + 3]);
      expect(dead[0].headers).toMatchObject({ 'Eventbus-Dead-Reason': 'max_deliver', 'Eventbus-Dead-Deliveries': String(outage + 3) });
    } finally {
      await buses.closeAll();
      await redis.dispose();
    }
  });
});
