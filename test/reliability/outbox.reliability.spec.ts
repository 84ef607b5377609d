import { Pool } from 'pg';
import { EventBus, MessageContext } from '../../lib';
import { EventBusOutbox, OutboxRelay } from '../../lib/outbox';
import type { PgPoolClientLike, RelayedRow } from '../../lib/outbox';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { PostgresServer, PostgresHandle } from '../harness/postgres-server';
import { TestBuses } from '../harness/buses';
import { sleep, waitUntil } from '../harness/wait';
import { freshTable, rawJetStream, relayFor, rowCount, settings, streamMessages } from '../outbox/outbox-fixture';
import { captureLogs, LogCapture, report, watchCrashes } from './reliability-helpers';

// The outbox under faults (issue 30): a relay killed between publish and delete, a PostgreSQL
// restart, NATS down for 10 s while 1,000 rows are committed, two relays racing. Every committed
// row must be in the stream exactly once (JetStream dedupes by msgId = row id) and reach an
// idempotent subscriber; no row of a rolled-back transaction ever. Real PostgreSQL, NATS, Redis.
describe('outbox reliability', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let postgres: PostgresHandle;
  let pool: Pool;
  let logs: LogCapture;
  const buses = new TestBuses();
  const crashes = watchCrashes();

  beforeAll(async () => {
    [nats, redis, postgres] = await Promise.all([NatsServer.start(), RedisServer.start(), PostgresServer.start()]);
    pool = newPool();
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    crashes.stop();
    logs?.restore();
    await pool?.end();
    await Promise.all([nats?.dispose(), redis?.dispose(), postgres?.dispose()]);
  });

  /** A pg Pool as an app would have it: an 'error' listener, so a server restart does not crash the process. */
  function newPool(): Pool {
    const p = new Pool({ connectionString: postgres.url, max: 10 });
    p.on('error', () => undefined);
    return p;
  }

  async function busFor(stream: string, subjects: string) {
    const { bus } = await buses.withRedis(nats.url, redis.url, `rel-${stream}:`, {
      jetstream: { streams: [{ name: stream, subjects: [subjects], maxAgeSeconds: 600 }] },
      nats: { reconnectTimeWait: 200 },
    });
    return bus;
  }

  /** A durable subscriber that counts deliveries per msgId; an idempotent one acts once per id. */
  async function subscriber(bus: EventBus, topic: string, durable: string) {
    const calls = new Map<string, number>();
    await bus.subscribe(
      topic,
      (_payload: unknown, ctx: MessageContext) => {
        const id = ctx.headers?.get('Nats-Msg-Id') ?? `no-id:${ctx.stream}:${ctx.seq}`;
        calls.set(id, (calls.get(id) ?? 0) + 1);
      },
      { durable },
    );
    return calls;
  }

  /**
   * Commits `total` rows in transactions of `perTx`, and after every fourth one rolls back a
   * transaction of 5 rows. A transaction that fails (PostgreSQL restarting) is retried whole: its
   * rows count as committed only once COMMIT answered.
   */
  async function write(outbox: EventBusOutbox, topic: string, total: number, perTx: number, pauseMs = 0, db = pool) {
    const committed: string[] = [];
    const rolledBack: string[] = [];
    let failedTx = 0;
    for (let tx = 0; committed.length < total; tx++) {
      const client = await db.connect().catch(() => null);
      if (!client) {
        failedTx++;
        await sleep(100);
        continue;
      }
      const ids: string[] = [];
      let broken = false;
      let committing = false;
      // As an app must: a checked-out pg client whose server goes away emits 'error'.
      const onError = () => (broken = true);
      client.on('error', onError);
      try {
        await client.query('BEGIN');
        const rollback = tx % 4 === 3;
        for (let i = 0; i < (rollback ? 5 : Math.min(perTx, total - committed.length)); i++) {
          ids.push((await outbox.publish(client, topic, { tx, i, rollback })).msgId);
        }
        if (rollback) {
          await client.query('ROLLBACK');
          rolledBack.push(...ids);
        } else {
          committing = true;
          await client.query('COMMIT');
          committed.push(...ids);
        }
      } catch {
        broken = true;
        failedTx++;
        await client.query('ROLLBACK').catch(() => undefined);
        // Failed before COMMIT: PostgreSQL aborted it with the connection. A COMMIT that got no
        // answer may or may not have committed: its rows are counted neither way.
        if (!committing) rolledBack.push(...ids);
        await sleep(100);
      } finally {
        client.removeListener('error', onError);
        client.release(broken);
      }
      if (pauseMs) await sleep(pauseMs);
    }
    return { committed, rolledBack, failedTx };
  }

  /** The stream holds each committed id once and no rolled-back id; the subscriber saw each committed id. */
  async function verify(
    scenario: string,
    stream: string,
    table: string,
    written: { committed: string[]; rolledBack: string[]; failedTx: number },
    calls: Map<string, number>,
    extra: Record<string, unknown>,
    started: number,
  ) {
    const raw = await rawJetStream(nats.url);
    try {
      await waitUntil(async () => (await rowCount(pool, table)) === 0, `${scenario}: the outbox table drained`, 60_000);
      await waitUntil(() => written.committed.every((id) => calls.has(id)), `${scenario}: every committed row delivered`, 60_000);
      const stored = await streamMessages(raw.jsm, stream);
      const perId = new Map<string, number>();
      for (const m of stored) perId.set(m.msgId ?? '?', (perId.get(m.msgId ?? '?') ?? 0) + 1);
      const rolledBack = new Set(written.rolledBack);
      const figures = {
        committed: written.committed.length,
        rolledBack: written.rolledBack.length,
        failedWriterTx: written.failedTx,
        streamMessages: stored.length,
        lost: written.committed.filter((id) => !perId.has(id)).length,
        duplicatesInStream: [...perId.values()].filter((n) => n > 1).length,
        rolledBackPublished: stored.filter((m) => rolledBack.has(m.msgId!)).length,
        distinctDelivered: written.committed.filter((id) => calls.has(id)).length,
        handlerCalls: [...calls.values()].reduce((a, b) => a + b, 0),
        redeliveredIds: [...calls.values()].filter((n) => n > 1).length,
        seconds: Math.round((Date.now() - started) / 100) / 10,
        ...extra,
      };
      report(`outbox.${scenario}`, figures);
      expect({
        lost: figures.lost,
        duplicatesInStream: figures.duplicatesInStream,
        rolledBackPublished: figures.rolledBackPublished,
      }).toEqual({
        lost: 0,
        duplicatesInStream: 0,
        rolledBackPublished: 0,
      });
      expect(figures.streamMessages).toBe(written.committed.length);
      expect(figures.distinctDelivered).toBe(written.committed.length);
      expect(crashes.errors).toEqual([]);
    } finally {
      await raw.nc.close();
    }
  }

  it('relay killed between publish and delete, 5 times: the next relay republishes, JetStream drops the copies', async () => {
    const started = Date.now();
    const bus = await busFor('REL_KILL', 'rel.kill.>');
    await freshTable(pool, 'rel_kill');
    const calls = await subscriber(bus, 'rel.kill.>', 'rel-kill');
    const outbox = new EventBusOutbox(bus, 'rel_kill');
    // The kill: the batch was published, the process died before DELETE; PostgreSQL rolls the transaction back.
    class KilledBeforeDelete extends OutboxRelay {
      died = false;
      republished = 0;
      protected override async deleteRelayed(_client: PgPoolClientLike, rows: RelayedRow[]): Promise<void> {
        this.died = true;
        this.republished = rows.length;
        void this.stop();
        throw new Error('SIGKILL');
      }
    }
    const writing = write(outbox, 'rel.kill.x', 1000, 20);
    let kills = 0;
    let publishedThenKilled = 0;
    while (kills < 5) {
      const victim = new KilledBeforeDelete(pool as never, bus, settings('rel_kill', { batchSize: 50 }));
      victim.start();
      await waitUntil(() => victim.died, 'a relay killed after publishing', 30_000);
      await victim.stop();
      publishedThenKilled += victim.republished;
      kills++;
    }
    const relay = relayFor(pool, bus, 'rel_kill');
    relay.start();
    const written = await writing;
    try {
      await verify('relayKill', 'REL_KILL', 'rel_kill', written, calls, { kills, rowsPublishedThenKilled: publishedThenKilled }, started);
    } finally {
      await relay.stop();
    }
  });

  it('PostgreSQL restarted (immediate stop) while the relay works: it logs, retries, and nothing is lost or doubled', async () => {
    const started = Date.now();
    const bus = await busFor('REL_PG', 'rel.pg.>');
    await freshTable(pool, 'rel_pg');
    const calls = await subscriber(bus, 'rel.pg.>', 'rel-pg');
    const outbox = new EventBusOutbox(bus, 'rel_pg');
    const relayPool = newPool();
    const relay = relayFor(relayPool, bus, 'rel_pg', { retryBackoffMs: [100, 250, 500], batchSize: 50 });
    const first = await write(outbox, 'rel.pg.x', 500, 25);
    logs.clear();
    relay.start();
    // The crash lands while the relay is in the middle of the 500 rows, a batch in its hands.
    await waitUntil(() => relay.relayed >= 100, 'the relay under way');
    const relayedAtRestart = relay.relayed;
    await postgres.restart('immediate');
    const second = await write(outbox, 'rel.pg.x', 500, 25);
    const written = {
      committed: [...first.committed, ...second.committed],
      rolledBack: [...first.rolledBack, ...second.rolledBack],
      failedTx: first.failedTx + second.failedTx,
    };
    try {
      await verify(
        'postgresRestart',
        'REL_PG',
        'rel_pg',
        written,
        calls,
        { relayedBeforeRestart: relayedAtRestart, relayWarnings: logs.matching(/outbox relay/).length },
        started,
      );
      expect(logs.matching(/outbox relay/).length).toBeGreaterThan(0);
    } finally {
      await relay.stop();
      await relayPool.end();
    }
  });

  it('NATS down for 10 s while 1,000 rows are committed: the rows wait in the table and all go out once NATS is back', async () => {
    const started = Date.now();
    const bus = await busFor('REL_NATS', 'rel.nats.>');
    await freshTable(pool, 'rel_nats');
    const calls = await subscriber(bus, 'rel.nats.>', 'rel-nats');
    const outbox = new EventBusOutbox(bus, 'rel_nats');
    const relay = relayFor(pool, bus, 'rel_nats', { retryBackoffMs: [250, 1000] });
    relay.start();
    await relay.ready();
    await nats.stop('SIGKILL');
    const downAt = Date.now();
    // 1,000 rows over about 10 s: 50 transactions of 20 (and rolled-back ones between them).
    const written = await write(outbox, 'rel.nats.x', 1000, 20, 150);
    await sleep(Math.max(0, 10_000 - (Date.now() - downAt)));
    const rowsWhileDown = await rowCount(pool, 'rel_nats');
    const downSeconds = Math.round((Date.now() - downAt) / 100) / 10;
    await nats.start();
    try {
      await verify(
        'natsDown10s',
        'REL_NATS',
        'rel_nats',
        written,
        calls,
        { natsDownSeconds: downSeconds, rowsWaitingWhenNatsCameBack: rowsWhileDown },
        started,
      );
      expect(rowsWhileDown).toBe(1000);
    } finally {
      await relay.stop();
    }
  });

  it('two relays racing on one table, each on its own bus and pool: each row is published once', async () => {
    const started = Date.now();
    const bus = await busFor('REL_RACE', 'rel.race.>');
    await freshTable(pool, 'rel_race');
    const calls = await subscriber(bus, 'rel.race.>', 'rel-race');
    const outbox = new EventBusOutbox(bus, 'rel_race');
    const sends = new Map<string, number>();
    const counted = async () => {
      const { bus: own } = await buses.withRedis(nats.url, redis.url, 'rel-race:');
      const publish = own.publish.bind(own);
      own.publish = ((topic: string, payload: unknown, opts: { msgId: string }) => {
        sends.set(opts.msgId, (sends.get(opts.msgId) ?? 0) + 1);
        return publish(topic, payload, opts as never);
      }) as never;
      return own;
    };
    const pools = [newPool(), newPool()];
    const relays = [
      relayFor(pools[0], await counted(), 'rel_race', { batchSize: 20 }),
      relayFor(pools[1], await counted(), 'rel_race', { batchSize: 20 }),
    ];
    relays.forEach((r) => r.start());
    const written = await write(outbox, 'rel.race.x', 1000, 10);
    await waitUntil(() => relays[0].relayed + relays[1].relayed >= 1000, 'both relays done', 30_000);
    try {
      await verify(
        'twoRelays',
        'REL_RACE',
        'rel_race',
        written,
        calls,
        { relayA: relays[0].relayed, relayB: relays[1].relayed, publishedTwice: [...sends.values()].filter((n) => n > 1).length },
        started,
      );
      expect([...sends.values()].filter((n) => n > 1)).toEqual([]);
      expect(relays[0].relayed + relays[1].relayed).toBe(1000);
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
      await Promise.all(pools.map((p) => p.end()));
    }
  });
});
