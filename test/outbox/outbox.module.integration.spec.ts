import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Pool } from 'pg';
import { EventBus, EventBusModule } from '../../lib';
import { EventBusOutbox, EventBusOutboxModule, OutboxRelay } from '../../lib/outbox';
import { OUTBOX_POOL } from '../../lib/outbox/event-bus-outbox.module';
import { NatsServer } from '../harness/local-servers';
import { PostgresServer, PostgresHandle } from '../harness/postgres-server';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { waitUntil } from '../harness/wait';
import { rawJetStream, rowCount, streamMessages } from './outbox-fixture';

// EventBusOutboxModule in a Nest app: injection from a feature module, the relay's lifecycle, and
// the module's own pool. Real PostgreSQL and nats-server.
describe('EventBusOutboxModule in a Nest app', () => {
  let nats: NatsServer;
  let postgres: PostgresHandle;
  let pool: Pool;
  let logs: LogCapture;

  beforeAll(async () => {
    [nats, postgres] = await Promise.all([NatsServer.start(), PostgresServer.start()]);
    pool = new Pool({ connectionString: postgres.url });
    logs = captureLogs();
  });
  afterAll(async () => {
    logs?.restore();
    await pool?.end();
    await Promise.all([nats?.dispose(), postgres?.dispose()]);
  });

  @Injectable()
  class Orders {
    constructor(private readonly outbox: EventBusOutbox) {}

    /** The app's own write and its event, one transaction. */
    async place(id: string, fail = false): Promise<void> {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY)');
        await client.query('INSERT INTO orders (id) VALUES ($1)', [id]);
        await this.outbox.publish(client, 'mod.orders.placed', { id }, { msgId: `order:${id}` });
        if (fail) throw new Error('payment declined');
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw err;
      } finally {
        client.release();
      }
    }
  }

  @Module({ providers: [Orders] })
  class OrdersModule {}

  const busModule = () =>
    EventBusModule.forRoot({
      nats: { servers: nats.url },
      health: { enabled: false },
      jetstream: { streams: [{ name: 'MOD_ORDERS', subjects: ['mod.orders.>'] }] },
    });

  it('imported before EventBusModule: a feature module injects EventBusOutbox, committed events arrive, and on close the relay stops before the bus closes', async () => {
    const moduleRef = await Test.createTestingModule({
      // The outbox first on purpose: the relay must still stop before the bus closes.
      imports: [
        EventBusOutboxModule.forRoot({ connectionString: postgres.url, ensureSchema: true, table: 'mod_outbox' }),
        busModule(),
        OrdersModule,
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const raw = await rawJetStream(nats.url);
    try {
      const orders = app.get(Orders);
      await orders.place('o-1');
      await expect(orders.place('o-2', true)).rejects.toThrow('payment declined');
      await orders.place('o-3');
      await waitUntil(async () => (await streamMessages(raw.jsm, 'MOD_ORDERS')).length === 2, 'two events in the stream');
      const stored = await streamMessages(raw.jsm, 'MOD_ORDERS');
      expect(stored.map((m) => [m.msgId, m.data.toString()])).toEqual([
        ['order:o-1', '{"id":"o-1"}'],
        ['order:o-3', '{"id":"o-3"}'],
      ]);

      const order: string[] = [];
      const relay = app.get(OutboxRelay);
      const bus = app.get(EventBus);
      const stop = relay.stop.bind(relay);
      relay.stop = async () => {
        await stop();
        order.push('relay stopped');
      };
      const close = bus.close.bind(bus);
      bus.close = () => {
        order.push('bus closing');
        return close();
      };
      const held = app.get<{ pool: { ended?: boolean } }>(OUTBOX_POOL);
      await app.close();
      expect(order).toEqual(['relay stopped', 'bus closing']);
      // The pool the module made is ended with the app.
      expect(held.pool.ended).toBe(true);
    } finally {
      await raw.nc.close();
      await app.close();
    }
  });

  it('forRootAsync with relay: false writes rows and leaves them; the app pool is left open', async () => {
    await pool.query('DROP TABLE IF EXISTS mod_async_outbox');
    const moduleRef = await Test.createTestingModule({
      imports: [
        busModule(),
        EventBusOutboxModule.forRootAsync({
          useFactory: async () => ({ pool: pool as never, table: 'mod_async_outbox', relay: false, ensureSchema: true }),
        }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const client = await pool.connect();
    await client.query('BEGIN');
    await app.get(EventBusOutbox).publish(client, 'mod.orders.async', { n: 1 });
    await client.query('COMMIT');
    client.release();
    await app.close();
    expect(await rowCount(pool, 'mod_async_outbox')).toBe(1);
    // Still usable: the module did not end a pool it was given.
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });

  it('without the table (no migration, no ensureSchema) bootstrap succeeds and the relay logs what is missing', async () => {
    logs.clear();
    const moduleRef = await Test.createTestingModule({
      imports: [
        busModule(),
        EventBusOutboxModule.forRoot({ connectionString: postgres.url, table: 'never_migrated', retryBackoffMs: [50] }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication();
    app.useLogger(logs);
    await app.init();
    try {
      await waitUntil(() => logs.matching(/outbox relay/).length > 0, 'a relay log line');
      expect(logs.matching(/outbox relay/)[0]).toMatch(
        /relation "never_migrated" does not exist; the rows stay in never_migrated, retrying in 50 ms/,
      );
    } finally {
      await app.close();
    }
  });
});
