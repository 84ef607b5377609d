import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { Pool } from 'pg';
import { EventBus } from '../../lib';
import { EventBusOutbox, OutboxRelay, outboxSchemaSql } from '../../lib/outbox';
import type { ResolvedOutboxOptions } from '../../lib/outbox/outbox.options';
import { OUTBOX_DEFAULTS } from '../../lib/outbox';
import type { PgPoolLike } from '../../lib/outbox';

/** What a stream holds, read back message by message (no consumer: what JetStream stored, duplicates dropped). */
export interface StoredMessage {
  seq: number;
  subject: string;
  msgId: string | undefined;
  data: Buffer;
}

export async function streamMessages(jsm: JetStreamManager, stream: string): Promise<StoredMessage[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredMessage[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (!m) continue;
    out.push({ seq, subject: m.subject, msgId: m.header?.get('Nats-Msg-Id') || undefined, data: Buffer.from(m.data) });
  }
  return out;
}

export async function streamCount(jsm: JetStreamManager, stream: string): Promise<number> {
  return (await jsm.streams.info(stream)).state.messages;
}

export async function rawJetStream(natsUrl: string): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connect({ servers: natsUrl });
  return { nc, jsm: await jetstreamManager(nc) };
}

/** A table of its own per test: the relays of one test never see another's rows. */
export async function freshTable(pool: Pool, table: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS ${table}`);
  await pool.query(outboxSchemaSql(table));
}

export function settings(table: string, over: Partial<ResolvedOutboxOptions> = {}): ResolvedOutboxOptions {
  return {
    table,
    pollIntervalMs: OUTBOX_DEFAULTS.pollIntervalMs,
    batchSize: OUTBOX_DEFAULTS.batchSize,
    retryBackoffMs: [50, 200, 500],
    relay: true,
    ensureSchema: false,
    ...over,
  };
}

export function relayFor(pool: Pool, bus: EventBus, table: string, over: Partial<ResolvedOutboxOptions> = {}): OutboxRelay {
  return new OutboxRelay(pool as unknown as PgPoolLike, bus, settings(table, over));
}

/** Writes `count` rows in one committed transaction; returns their msgIds. */
export async function commitRows(pool: Pool, outbox: EventBusOutbox, topic: string, count: number, from = 0): Promise<string[]> {
  const client = await pool.connect();
  const ids: string[] = [];
  try {
    await client.query('BEGIN');
    for (let i = from; i < from + count; i++) ids.push((await outbox.publish(client, topic, { i })).msgId);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  return ids;
}

/** Writes `count` rows and rolls the transaction back; returns the ids that must never be published. */
export async function rolledBackRows(pool: Pool, outbox: EventBusOutbox, topic: string, count: number): Promise<string[]> {
  const client = await pool.connect();
  const ids: string[] = [];
  try {
    await client.query('BEGIN');
    for (let i = 0; i < count; i++) ids.push((await outbox.publish(client, topic, { rolledBack: i })).msgId);
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  return ids;
}

export async function rowCount(pool: Pool, table: string): Promise<number> {
  return Number((await pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n);
}
