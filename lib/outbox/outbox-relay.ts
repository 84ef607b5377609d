import { Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import type { EventBus } from '../event-bus/event-bus';
import type { ResolvedOutboxOptions } from './outbox.options';
import { describe, OutboxListener } from './outbox-listener';
import { notifyChannel, quotedTable } from './outbox-schema';
import { withinTrace } from './outbox-trace';
import type { PgPoolClientLike, PgPoolLike } from './pg-types';

/** One outbox row as the relay reads it (json as text, so it stays byte for byte). */
export interface RelayedRow {
  /** bigint: pg gives it as a string. */
  seq: string;
  id: string;
  topic: string;
  payload: string;
  msg_id: string | null;
  /** The headers `publish(tx, …)` kept (json as text), or null. */
  headers: string | null;
}

/**
 * Publishes committed outbox rows as persisted messages (`msgId` = the row's id) and deletes them,
 * one batch a transaction: `SELECT … FOR UPDATE SKIP LOCKED` lets the relays of several instances
 * share the table without sending a row twice. Wakes on NOTIFY, polls when none comes. While NATS
 * or PostgreSQL fail, the rows stay and the batch is retried with backoff.
 */
export class OutboxRelay implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger('EventBusOutbox');
  private readonly selectSql: string;
  private readonly deleteSql: string;
  private stopped = false;
  private woken = false;
  private wakeSleeper?: () => void;
  private loop?: Promise<void>;
  private readonly listener: OutboxListener;
  private failures = 0;
  private firstPass?: Promise<void>;
  private firstPassDone?: () => void;
  /** Rows published and deleted by this relay. */
  relayed = 0;
  /** Times a NOTIFY woke this relay. */
  notified = 0;

  constructor(
    private readonly pool: PgPoolLike,
    private readonly bus: EventBus,
    private readonly options: ResolvedOutboxOptions,
  ) {
    const table = quotedTable(options.table);
    this.selectSql =
      // ORDER BY the bigint column: an alias `seq::text AS seq` would sort '10' before '2'.
      `SELECT seq, id::text AS id, topic, payload::text AS payload, msg_id, headers::text AS headers FROM ${table} ` +
      `ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`;
    this.deleteSql = `DELETE FROM ${table} WHERE seq = ANY($1::bigint[])`;
    this.listener = new OutboxListener(pool, notifyChannel(options.table), options, this.logger, (fromServer) => {
      if (fromServer) this.notified++;
      this.wake();
    });
  }

  /** Nest hook: after every module's init, so the bus is connected. */
  onApplicationBootstrap(): void {
    if (this.options.relay) this.start();
  }

  /** Nest hook: the relay's module is not global, so this runs before the (global) bus closes. */
  onModuleDestroy(): Promise<void> {
    return this.stop();
  }

  start(): void {
    if (this.loop || this.stopped) return;
    this.firstPass = new Promise((resolve) => (this.firstPassDone = resolve));
    void this.listener.listen();
    this.loop = this.run();
  }

  /** Resolves once the relay listens for NOTIFY and has made its first pass over the table. */
  async ready(): Promise<void> {
    await this.firstPass;
    while (!this.listener.listening && !this.stopped) await new Promise((r) => setTimeout(r, 20));
  }

  /** Finish the batch in flight (its rows are published and deleted, or stay), then stop. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.listener.halt();
    this.wakeSleeper?.();
    await this.loop;
    this.listener.close();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let full: boolean;
      try {
        full = await this.relayBatch();
        if (this.failures > 0) this.logger.log(`outbox relay: ${this.options.table} relays again after ${this.failures} failed attempts`);
        this.failures = 0;
      } catch (err) {
        this.failures++;
        const steps = this.options.retryBackoffMs;
        const delay = steps[Math.min(this.failures, steps.length) - 1];
        // First failure and then every tenth: an outage of minutes must not flood the log.
        if (this.failures === 1 || this.failures % 10 === 0) {
          this.logger.warn(
            `outbox relay: ${describe(err)}; the rows stay in ${this.options.table}, retrying in ${delay} ms (attempt ${this.failures})`,
          );
        }
        this.firstPassDone?.();
        await this.sleep(delay, false);
        continue;
      }
      this.firstPassDone?.();
      if (!full) await this.sleep(this.options.pollIntervalMs, true);
    }
    this.firstPassDone?.();
  }

  /** One transaction: lock a batch, publish it in order, delete what was published. True when the batch was full. */
  private async relayBatch(): Promise<boolean> {
    // A NOTIFY from here on may be for a commit the SELECT below does not see: it must cause another pass.
    this.woken = false;
    const client = await this.pool.connect();
    // pg emits a lost connection on a checked-out client as an 'error' event, which unheard would
    // crash the process; heard, the pending query rejects and the batch is retried.
    const onError = () => undefined;
    client.on('error', onError);
    let published: { count: number; error?: unknown } = { count: 0 };
    let rows: RelayedRow[];
    try {
      await client.query('BEGIN');
      rows = (await client.query<RelayedRow>(this.selectSql, [this.options.batchSize])).rows;
      if (rows.length > 0) published = await this.publishInOrder(rows);
      if (published.count > 0) await this.deleteRelayed(client, rows.slice(0, published.count));
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      // A PostgreSQL error may have broken the connection: do not hand it back to the pool.
      client.removeListener('error', onError);
      client.release(true);
      throw err;
    }
    client.removeListener('error', onError);
    client.release();
    this.relayed += published.count;
    if (published.error !== undefined) throw published.error;
    return rows.length === this.options.batchSize;
  }

  /**
   * Publishes `rows` in seq order. Small ones go out back to back without waiting for each ack:
   * they take the same path to one connection, and the server stores them in the order they
   * arrive. A claim-checked one waits for the acks before it and holds back those after it, since
   * storing its body first would let later rows overtake it. Stops sending at the first failure.
   * Returns how many rows from the start were acked.
   */
  private async publishInOrder(rows: RelayedRow[]): Promise<{ count: number; error?: unknown }> {
    const threshold = this.bus.offloadThreshold;
    const sent: Array<Promise<unknown>> = [];
    let failed = false;
    for (const row of rows) {
      if (failed || (this.stopped && sent.length > 0)) break;
      const large = Buffer.byteLength(row.payload, 'utf8') > threshold;
      if (large) await Promise.allSettled(sent);
      if (failed) break;
      const ack = this.publishRow(row).catch((err: unknown) => {
        failed = true;
        throw err;
      });
      sent.push(ack);
      if (large) await ack.catch(() => undefined);
    }
    const settled = await Promise.allSettled(sent);
    let count = 0;
    while (count < settled.length && settled[count].status === 'fulfilled') count++;
    const first = settled[count];
    return { count, error: first?.status === 'rejected' ? first.reason : undefined };
  }

  private async publishRow(row: RelayedRow): Promise<void> {
    try {
      const headers = row.headers === null ? undefined : (JSON.parse(row.headers) as Record<string, string>);
      const msgId = row.msg_id ?? row.id;
      // Within the writer's trace: the publish span is its child, and the headers carry it on.
      await withinTrace(headers, () => this.bus.publish(row.topic, JSON.parse(row.payload), { persist: true, msgId, headers }));
    } catch (err) {
      throw new OutboxRelayError(row, err);
    }
  }

  /** Deletes the published rows, in the batch's transaction. Protected: the fault tests make it fail. */
  protected async deleteRelayed(client: PgPoolClientLike, rows: RelayedRow[]): Promise<void> {
    await client.query(this.deleteSql, [rows.map((r) => r.seq)]);
  }

  private wake(): void {
    this.woken = true;
    this.wakeSleeper?.();
  }

  /** Waits `ms`; a NOTIFY ends a `wakeable` wait (a backoff is not cut short), stop() ends any. */
  private sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.stopped || (wakeable && this.woken)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeSleeper = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeSleeper = () => {
        if (wakeable || this.stopped) done();
      };
    });
  }
}

/** A row the relay could not publish; it stays in the table and is retried. */
export class OutboxRelayError extends Error {
  constructor(
    readonly row: Pick<RelayedRow, 'id' | 'topic'>,
    cause: unknown,
  ) {
    super(`publishing outbox row ${row.id} to "${row.topic}" failed: ${describe(cause)}`, { cause });
    this.name = 'OutboxRelayError';
  }
}
