import { Logger } from '@nestjs/common';
import { EventBusOutbox, OutboxTransaction } from 'nestjs-nats-eventbus/outbox';
import type { Pool } from 'pg';

/** The monitor's own table: one row per alert it decided to send, written with its notifications. */
export const ALERT_DECISIONS_SQL = `CREATE TABLE IF NOT EXISTS sample_alert_decisions (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  edge_id    text        NOT NULL,
  cycle      integer     NOT NULL,
  slack_request_id text  NOT NULL,
  email_request_id text,
  decided_at timestamptz NOT NULL DEFAULT now()
)`;

export interface AlertDecision {
  edge_id: string;
  cycle: number;
  /** The notifications decided on: their topic and payload; each payload's request_id is its msgId. */
  notifications: Array<{ topic: string; payload: { request_id: string } }>;
}

/**
 * Writes an alert decision and its notifications in one PostgreSQL transaction: the decision row
 * and the outbox rows commit together or not at all, and the outbox's relay publishes the
 * notifications only once they committed. A monitor that dies between its decision and the
 * publish loses nothing; a decision that rolled back sends nothing.
 */
export class AlertDecisions {
  private readonly logger = new Logger('AlertDecisions');

  constructor(
    private readonly pool: Pool,
    private readonly outbox: EventBusOutbox,
  ) {}

  /** The monitor's table; the outbox's own comes from `ensureSchema` (a sample has no migrations). */
  async ensureTable(): Promise<void> {
    await this.pool.query(ALERT_DECISIONS_SQL);
  }

  /** Resolves with each notification's outbox row id once the transaction committed. */
  async record(decision: AlertDecision): Promise<string[]> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const [slack, email] = decision.notifications;
      await client.query(
        'INSERT INTO sample_alert_decisions (edge_id, cycle, slack_request_id, email_request_id) VALUES ($1, $2, $3, $4)',
        [decision.edge_id, decision.cycle, slack.payload.request_id, email?.payload.request_id ?? null],
      );
      const ids: string[] = [];
      for (const n of decision.notifications) {
        const row = await this.outbox.publish(client as OutboxTransaction, n.topic, n.payload, { msgId: n.payload.request_id });
        ids.push(row.id);
      }
      await client.query('COMMIT');
      return ids;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => this.logger.warn(`ROLLBACK failed: ${e.message}`));
      throw err;
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
