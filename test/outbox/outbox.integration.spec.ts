import { NatsConnection } from '@nats-io/transport-node';
import { JetStreamManager } from '@nats-io/jetstream';
import { Client, Pool } from 'pg';
import { EventBus, InvalidMessageError, InvalidOptionsError, InvalidSubjectError, PayloadTooLargeError } from '../../lib';
import { EventBusOutbox, OutboxRelay } from '../../lib/outbox';
import type { PgPoolClientLike } from '../../lib/outbox';
import type { RelayedRow } from '../../lib/outbox';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { PostgresServer, PostgresHandle } from '../harness/postgres-server';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { bigPayload, sha256, waitUntil } from '../harness/wait';
import {
  commitRows,
  freshTable,
  rawJetStream,
  relayFor,
  rolledBackRows,
  rowCount,
  settings,
  streamCount,
  streamMessages,
} from './outbox-fixture';

// The transactional outbox (issue 30, part 2) against a real PostgreSQL 15, nats-server with
// JetStream and Redis, all started by the harness.
describe('outbox: rows written in a transaction, relayed as persisted messages', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let postgres: PostgresHandle;
  let pool: Pool;
  let raw: { nc: NatsConnection; jsm: JetStreamManager };
  let bus: EventBus;
  let logs: LogCapture;
  const buses = new TestBuses();
  const relays: OutboxRelay[] = [];
  const THRESHOLD = 64 * 1024;

  beforeAll(async () => {
    [nats, redis, postgres] = await Promise.all([NatsServer.start(), RedisServer.start(), PostgresServer.start()]);
    pool = new Pool({ connectionString: postgres.url, max: 20 });
    raw = await rawJetStream(nats.url);
    ({ bus } = await buses.withRedis(nats.url, redis.url, 'ob:', {
      largeMessageThreshold: THRESHOLD,
      jetstream: { streams: [{ name: 'OB', subjects: ['ob.>'], maxAgeSeconds: 600 }] },
    }));
    logs = captureLogs();
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await raw.jsm.streams.purge('OB');
  });
  afterAll(async () => {
    logs?.restore();
    await buses.closeAll();
    await raw?.nc.close();
    await pool?.end();
    await Promise.all([nats?.dispose(), redis?.dispose(), postgres?.dispose()]);
  });

  const start = (relay: OutboxRelay) => {
    relays.push(relay);
    relay.start();
    return relay;
  };

  it('committed rows arrive in id order with the payload bytes as written and msgId = the row id; the table is emptied', async () => {
    await freshTable(pool, 'ob_commit');
    const outbox = new EventBusOutbox(bus, 'ob_commit');
    const payloads = [{ a: 1, text: 'ünïcode ✓' }, [1, 2, { deep: null }], 'plain string', 42.5];
    const client = await pool.connect();
    const written: string[] = [];
    await client.query('BEGIN');
    for (const p of payloads) written.push((await outbox.publish(client, 'ob.commit', p)).msgId);
    const rowIds = (await client.query('SELECT id::text AS id FROM ob_commit ORDER BY seq')).rows.map((r) => r.id);
    await client.query('COMMIT');
    client.release();
    expect(written).toEqual(rowIds);

    start(relayFor(pool, bus, 'ob_commit'));
    await waitUntil(async () => (await streamCount(raw.jsm, 'OB')) === payloads.length, 'four messages in the stream');
    const stored = await streamMessages(raw.jsm, 'OB');
    expect(stored.map((m) => m.msgId)).toEqual(rowIds);
    expect(stored.map((m) => m.data.toString('utf8'))).toEqual(payloads.map((p) => JSON.stringify(p)));
    expect(stored.every((m) => m.subject === 'ob.commit')).toBe(true);
    await waitUntil(async () => (await rowCount(pool, 'ob_commit')) === 0, 'rows deleted after publishing');
  });

  it('rows of a rolled-back transaction are never published', async () => {
    await freshTable(pool, 'ob_rollback');
    const outbox = new EventBusOutbox(bus, 'ob_rollback');
    const relay = start(relayFor(pool, bus, 'ob_rollback'));
    await relay.ready();
    const rolledBack = await rolledBackRows(pool, outbox, 'ob.rollback', 5);
    const [marker] = await commitRows(pool, outbox, 'ob.rollback', 1);
    await waitUntil(async () => (await streamMessages(raw.jsm, 'OB')).some((m) => m.msgId === marker), 'the committed marker');
    // The relay has passed the rolled-back rows' place in seq order: had they been visible, they came first.
    const ids = (await streamMessages(raw.jsm, 'OB')).map((m) => m.msgId);
    expect(ids).toEqual([marker]);
    expect(ids.filter((id) => rolledBack.includes(id!))).toEqual([]);
  });

  it('works with anything that has query(text, values): a TypeORM-like query that returns the rows, and a plain pg Client', async () => {
    await freshTable(pool, 'ob_duck');
    const outbox = new EventBusOutbox(bus, 'ob_duck');
    const client = new Client({ connectionString: postgres.url });
    await client.connect();
    // TypeORM's EntityManager.query / QueryRunner.query answer the rows array, not pg's { rows }.
    const entityManagerLike = { query: (text: string, values?: unknown[]) => client.query(text, values).then((r) => r.rows) };
    await client.query('BEGIN');
    const viaDuck = await outbox.publish(entityManagerLike, 'ob.duck', { via: 'query-only' }, { msgId: 'order-7:created' });
    const viaClient = await outbox.publish(client, 'ob.duck', { via: 'pg Client' });
    await client.query('COMMIT');
    await client.end();
    expect(viaDuck.msgId).toBe('order-7:created');

    start(relayFor(pool, bus, 'ob_duck'));
    await waitUntil(async () => (await streamCount(raw.jsm, 'OB')) === 2, 'both messages');
    const stored = await streamMessages(raw.jsm, 'OB');
    expect(stored.map((m) => [m.msgId, JSON.parse(m.data.toString())])).toEqual([
      ['order-7:created', { via: 'query-only' }],
      [viaClient.id, { via: 'pg Client' }],
    ]);
  });

  it('a relay that dies between publish and delete leaves the rows; the next relay publishes them again and JetStream drops the duplicates', async () => {
    await freshTable(pool, 'ob_dedupe');
    const outbox = new EventBusOutbox(bus, 'ob_dedupe');
    const ids = await commitRows(pool, outbox, 'ob.dedupe', 10);
    // The crash: publishing succeeded, the delete never happened, the transaction rolled back.
    class DiesBeforeDelete extends OutboxRelay {
      attempts = 0;
      protected override async deleteRelayed(_client: PgPoolClientLike, _rows: RelayedRow[]): Promise<void> {
        this.attempts++;
        throw new Error('killed between publish and delete');
      }
    }
    const dying = new DiesBeforeDelete(pool as never, bus, settings('ob_dedupe'));
    start(dying);
    await waitUntil(() => dying.attempts > 0, 'the dying relay published once');
    await dying.stop();
    expect(await streamCount(raw.jsm, 'OB')).toBe(10);
    expect(await rowCount(pool, 'ob_dedupe')).toBe(10);

    const next = start(relayFor(pool, bus, 'ob_dedupe'));
    await waitUntil(async () => (await rowCount(pool, 'ob_dedupe')) === 0, 'the next relay deleted the rows');
    expect(next.relayed).toBe(10);
    const stored = await streamMessages(raw.jsm, 'OB');
    expect(stored.map((m) => m.msgId)).toEqual(ids);
  });

  it('a relay keeps seq order across batches: 250 rows, batch 100, stored in the order written', async () => {
    await freshTable(pool, 'ob_order');
    const outbox = new EventBusOutbox(bus, 'ob_order');
    const ids: string[] = [];
    for (let t = 0; t < 5; t++) ids.push(...(await commitRows(pool, outbox, 'ob.order', 50, t * 50)));
    start(relayFor(pool, bus, 'ob_order', { batchSize: 100 }));
    await waitUntil(async () => (await streamCount(raw.jsm, 'OB')) === 250, '250 messages in the stream');
    const stored = await streamMessages(raw.jsm, 'OB');
    expect(stored.map((m) => m.msgId)).toEqual(ids);
    expect(stored.map((m) => JSON.parse(m.data.toString()).i)).toEqual(ids.map((_, i) => i));
  });

  it('two relays on one table publish every row once between them', async () => {
    await freshTable(pool, 'ob_race');
    const outbox = new EventBusOutbox(bus, 'ob_race');
    const ids: string[] = [];
    for (let t = 0; t < 10; t++) ids.push(...(await commitRows(pool, outbox, 'ob.race', 40, t * 40)));
    // Each relay on a bus of its own, counted at the bus: JetStream would hide a double send.
    const sends = new Map<string, number>();
    const counted = async () => {
      const { bus: own } = await buses.withRedis(nats.url, redis.url, 'ob:', { largeMessageThreshold: THRESHOLD });
      const publish = own.publish.bind(own);
      own.publish = ((topic: string, payload: unknown, opts: { msgId: string }) => {
        sends.set(opts.msgId, (sends.get(opts.msgId) ?? 0) + 1);
        return publish(topic, payload, opts as never);
      }) as never;
      return own;
    };
    const [a, b] = [
      relayFor(pool, await counted(), 'ob_race', { batchSize: 10 }),
      relayFor(pool, await counted(), 'ob_race', { batchSize: 10 }),
    ];
    start(a);
    start(b);
    await waitUntil(async () => (await rowCount(pool, 'ob_race')) === 0, 'all 400 rows relayed', 30_000);
    expect(a.relayed + b.relayed).toBe(400);
    expect(a.relayed).toBeGreaterThan(0);
    expect(b.relayed).toBeGreaterThan(0);
    expect([...sends.values()].filter((n) => n !== 1)).toEqual([]);
    expect([...sends.keys()].sort()).toEqual([...ids].sort());
    expect(await streamCount(raw.jsm, 'OB')).toBe(400);
  });

  it('a large payload is claim-checked at relay time and keeps its place between small ones', async () => {
    await freshTable(pool, 'ob_large');
    const outbox = new EventBusOutbox(bus, 'ob_large');
    const big = bigPayload(300 * 1024, 'large');
    const client = await pool.connect();
    await client.query('BEGIN');
    const before = await outbox.publish(client, 'ob.large', { n: 'before' });
    const large = await outbox.publish(client, 'ob.large', big);
    const after = await outbox.publish(client, 'ob.large', { n: 'after' });
    await client.query('COMMIT');
    client.release();

    const received: Array<{ payload: unknown; recovered: boolean }> = [];
    const sub = await bus.subscribe('ob.large', (payload, ctx) => void received.push({ payload, recovered: ctx.recovered }), {
      durable: 'ob-large-reader',
    });
    start(relayFor(pool, bus, 'ob_large'));
    await waitUntil(() => received.length === 3, 'three deliveries');
    await sub.unsubscribe();
    // Handlers run concurrently (the large one recovers its body first): the stream holds the order.
    const byName = (r: { payload: unknown }) => (r.payload as { n?: string; id?: string }).n ?? (r.payload as { id: string }).id;
    expect(received.map((r) => [byName(r), r.recovered]).sort()).toEqual([
      ['after', false],
      ['before', false],
      ['large', true],
    ]);
    const recoveredBig = received.find((r) => r.recovered)!.payload;
    expect(sha256(JSON.stringify(recoveredBig))).toBe(sha256(JSON.stringify(big)));
    const stored = await streamMessages(raw.jsm, 'OB');
    expect(stored.map((m) => m.msgId)).toEqual([before.id, large.id, after.id]);
    // On the wire: an envelope naming the stored body, far below the payload's size.
    expect(stored[1].data.byteLength).toBeLessThan(THRESHOLD);
  });

  it('NOTIFY wakes the relay: with a 10-minute poll interval a commit is still relayed', async () => {
    await freshTable(pool, 'ob_notify');
    const outbox = new EventBusOutbox(bus, 'ob_notify');
    const relay = start(relayFor(pool, bus, 'ob_notify', { pollIntervalMs: 600_000 }));
    await relay.ready();
    const notifiedBefore = relay.notified;
    const [id] = await commitRows(pool, outbox, 'ob.notify', 1);
    // Only a NOTIFY can explain a delivery before the next poll, ten minutes away.
    await waitUntil(async () => (await streamMessages(raw.jsm, 'OB')).some((m) => m.msgId === id), 'the row relayed', 20_000);
    expect(relay.notified).toBeGreaterThan(notifiedBefore);
  });

  it('bad input is a typed error at publish(tx, …), and nothing is written', async () => {
    await freshTable(pool, 'ob_bad');
    const outbox = new EventBusOutbox(bus, 'ob_bad');
    const client = await pool.connect();
    await client.query('BEGIN');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const refused = (p: Promise<unknown>) =>
      p.then(
        () => {
          throw new Error('not refused');
        },
        (e: unknown) => e,
      );
    expect(await refused(outbox.publish(client, 'ob.bad', { n: BigInt(1) }))).toBeInstanceOf(InvalidMessageError);
    expect(await refused(outbox.publish(client, 'ob.bad', circular))).toBeInstanceOf(InvalidMessageError);
    expect(await refused(outbox.publish(client, 'ob.bad', undefined))).toBeInstanceOf(InvalidMessageError);
    expect(await refused(outbox.publish(client, 'ob..bad', {}))).toBeInstanceOf(InvalidSubjectError);
    expect(await refused(outbox.publish(client, 'ob.*', {}))).toBeInstanceOf(InvalidSubjectError);
    expect(await refused(outbox.publish(client, 'ob.bad', {}, { msgId: 'two\r\nlines' }))).toBeInstanceOf(InvalidOptionsError);
    expect(await refused(outbox.publish(client, 'ob.bad', {}, { persist: true } as never))).toBeInstanceOf(InvalidOptionsError);
    expect(await refused(outbox.publish(client, 'ob.bad', {}, { headers: { 'X-Bad': 'two\r\nlines' } }))).toBeInstanceOf(
      InvalidOptionsError,
    );
    expect(await refused(outbox.publish(client, 'ob.bad', {}, { headers: { 'no name': 'x' } }))).toBeInstanceOf(InvalidOptionsError);
    expect(await refused(outbox.publish({} as never, 'ob.bad', {}))).toBeInstanceOf(InvalidOptionsError);
    // The transaction is still usable: nothing reached PostgreSQL.
    expect((await client.query('SELECT count(*)::int AS n FROM ob_bad')).rows[0].n).toBe(0);
    await client.query('ROLLBACK');
    client.release();

    // Without storage, a body over the threshold could never be relayed: refused now.
    const bare = buses.track(new EventBus({ nats: { servers: nats.url }, largeMessageThreshold: THRESHOLD }));
    await bare.connect();
    const err = await refused(new EventBusOutbox(bare, 'ob_bad').publish(pool, 'ob.bad', bigPayload(THRESHOLD * 2)));
    expect(err).toBeInstanceOf(PayloadTooLargeError);
    expect((err as Error).message).toContain('"ob.bad"');
  });

  it('with NATS refusing (no stream for the topic) the rows stay, the log names the row and topic, and they go out once a stream exists', async () => {
    await freshTable(pool, 'ob_nostream');
    const outbox = new EventBusOutbox(bus, 'ob_nostream');
    const ids = await commitRows(pool, outbox, 'obx.nostream', 3);
    logs.clear();
    start(relayFor(pool, bus, 'ob_nostream'));
    await waitUntil(() => logs.matching(/outbox relay: publishing outbox row/).length > 0, 'a log line about the failed publish');
    expect(logs.matching(/outbox relay/)[0]).toMatch(new RegExp(`row ${ids[0]} to "obx.nostream" failed: .*the rows stay in ob_nostream`));
    expect(await rowCount(pool, 'ob_nostream')).toBe(3);
    await raw.jsm.streams.add({ name: 'OBX', subjects: ['obx.>'], max_age: 600 * 1e9 });
    try {
      await waitUntil(async () => (await rowCount(pool, 'ob_nostream')) === 0, 'relayed once the stream exists', 20_000);
      expect((await streamMessages(raw.jsm, 'OBX')).map((m) => m.msgId)).toEqual(ids);
    } finally {
      await raw.jsm.streams.delete('OBX');
    }
  });
});
