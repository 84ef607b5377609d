import { randomUUID } from 'node:crypto';
import { InvalidMessageError, InvalidOptionsError, PayloadTooLargeError } from '../errors/event-bus.errors';
import type { EventBus } from '../event-bus/event-bus';
import { checkHeaderValue, createHeaders } from '../nats/bus-connection';
import { checkTopic } from '../nats/subjects';
import { knownKeys } from '../options/rules';
import { notifyChannel, quotedTable } from './outbox-schema';
import { traceHeaders } from './outbox-trace';
import type { OutboxTransaction } from './pg-types';

/** `publish(tx, topic, payload, options)`. */
export interface OutboxPublishOptions {
  /** The message's `Nats-Msg-Id` (JetStream dedupe). Default: the row's `id`, a UUID. */
  msgId?: string;
  /**
   * NATS headers to publish with, as `publish(…, { headers })` takes them. The active OpenTelemetry
   * trace context (`traceparent`, `tracestate`) is added, so the relay publishes within the writer's trace.
   */
  headers?: Record<string, string>;
}

/** What `publish` wrote. */
export interface OutboxRow {
  /** The row's `id`. */
  id: string;
  /** The `Nats-Msg-Id` the relay will publish it with: `msgId` when given, else `id`. */
  msgId: string;
}

/**
 * Writes events into the outbox table in the caller's transaction; the relay publishes them once
 * the transaction commits. Everything the bus would refuse is refused here, in the transaction,
 * not later at relay time.
 */
export class EventBusOutbox {
  private readonly insertSql: string;
  private readonly channel: string;

  constructor(
    private readonly bus: EventBus,
    table: string,
  ) {
    this.channel = notifyChannel(table);
    // One statement: the row, and a NOTIFY that PostgreSQL delivers when (and only if) the transaction commits.
    this.insertSql =
      `WITH written AS (INSERT INTO ${quotedTable(table)} (id, topic, payload, msg_id, headers) VALUES ($1, $2, $3::json, $4, $5::json) RETURNING id) ` +
      `SELECT pg_notify($6, '') FROM written`;
  }

  /**
   * Write one event in `tx`: a `pg` client inside BEGIN, a TypeORM QueryRunner or EntityManager, or
   * anything with `query(text, values)`. Published as a persisted message once `tx` commits; never
   * if it rolls back. Throws `InvalidSubjectError`, `InvalidMessageError`, `InvalidOptionsError` or
   * `PayloadTooLargeError` before anything is written.
   */
  async publish(tx: OutboxTransaction, topic: string, payload: unknown, options?: OutboxPublishOptions): Promise<OutboxRow> {
    if (!tx || typeof (tx as { query?: unknown }).query !== 'function') {
      throw new InvalidOptionsError(
        'tx',
        'must be a transaction with query(text, values): a pg client inside BEGIN, a TypeORM QueryRunner or EntityManager',
      );
    }
    checkTopic(topic, 'publish');
    const msgId = checkOptions(options);
    // Checked as publish checks them, here in the transaction rather than at relay time.
    if (options?.headers !== undefined) createHeaders(options.headers);
    const headers = { ...options?.headers, ...traceHeaders() };
    const json = encode(payload, topic);
    // Without storage the relay could never send a body over the threshold: refuse it now, in the transaction.
    const size = Buffer.byteLength(json, 'utf8');
    if (!this.bus.messageStorage && size > this.bus.offloadThreshold) {
      throw new PayloadTooLargeError(topic, size, this.bus.offloadThreshold);
    }
    const id = randomUUID();
    const headerJson = Object.keys(headers).length > 0 ? JSON.stringify(headers) : null;
    await tx.query(this.insertSql, [id, topic, json, msgId ?? null, headerJson, this.channel]);
    return { id, msgId: msgId ?? id };
  }
}

function checkOptions(options: OutboxPublishOptions | undefined): string | undefined {
  if (options === undefined) return undefined;
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('options', 'must be an object');
  knownKeys('', options, ['msgId', 'headers']);
  const msgId = options.msgId;
  if (msgId === undefined) return undefined;
  if (typeof msgId !== 'string' || !msgId) throw new InvalidOptionsError('msgId', 'must be a non-empty string');
  // The same rules as publish(…, { persist: true, msgId }): it travels as the Nats-Msg-Id header.
  checkHeaderValue('msgId', msgId);
  // eslint-disable-next-line no-control-regex -- control characters are what this looks for
  if (/[\u0000-\u001f\u007f]/.test(msgId)) throw new InvalidOptionsError('msgId', 'must not contain control characters');
  return msgId;
}

/** The JSON text the bus would publish, refused the way the bus refuses it. */
function encode(payload: unknown, topic: string): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (err) {
    throw new InvalidMessageError(`payload for "${topic}" cannot be encoded as JSON: ${(err as Error).message}`, { cause: err });
  }
  if (json === undefined) throw new InvalidMessageError(`payload for "${topic}" cannot be encoded as JSON (got ${typeof payload})`);
  return json;
}
