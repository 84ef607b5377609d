// The relay's LISTEN connection: one pooled client held for NOTIFY, listened again after a backoff when lost.
import type { Logger } from '@nestjs/common';
import type { ResolvedOutboxOptions } from './outbox.options';
import type { PgPoolClientLike, PgPoolLike } from './pg-types';

/**
 * Holds a client LISTENing on the outbox's channel and calls `onNotify` for each NOTIFY on it (and
 * once each time it starts listening, for the rows committed while nobody listened). Without it
 * the relay still polls.
 */
export class OutboxListener {
  private client?: PgPoolClientLike;
  private attempts = 0;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly pool: PgPoolLike,
    private readonly channel: string,
    private readonly options: Pick<ResolvedOutboxOptions, 'retryBackoffMs' | 'pollIntervalMs'>,
    private readonly logger: Logger,
    private readonly onNotify: (fromServer: boolean) => void,
  ) {}

  /** Whether a client LISTENs now. */
  get listening(): boolean {
    return this.client !== undefined;
  }

  /** No more attempts from here on; the client held is released by `close()`. */
  halt(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  close(): void {
    this.halt();
    const client = this.client;
    this.client = undefined;
    // Destroyed, not returned: a pool client left LISTENing would wake nobody.
    client?.release(true);
  }

  async listen(): Promise<void> {
    if (this.stopped) return;
    let client: PgPoolClientLike | undefined;
    try {
      client = await this.pool.connect();
      const own = client;
      own.on('notification', (msg) => {
        if (msg.channel === this.channel) this.onNotify(true);
      });
      // A checked-out pg client with no 'error' listener would crash the process when PostgreSQL goes away.
      own.on('error', (err) => this.lost(own, err));
      own.on('end', () => this.lost(own));
      await own.query(`LISTEN "${this.channel}"`);
      if (this.stopped) {
        own.release(true);
        return;
      }
      this.client = own;
      if (this.attempts > 0) this.logger.log(`outbox relay: listening on ${this.channel} again`);
      this.attempts = 0;
      // Rows committed while nobody listened are found by the pass this starts.
      this.onNotify(false);
    } catch (err) {
      client?.release(true);
      this.retry(err);
    }
  }

  private lost(client: PgPoolClientLike, err?: Error): void {
    if (this.client !== client) return;
    this.client = undefined;
    client.release(true);
    this.retry(err ?? new Error('connection ended'));
  }

  /** Without LISTEN the relay still polls; it listens again after a backoff. */
  private retry(err: unknown): void {
    if (this.stopped) return;
    this.attempts++;
    const steps = this.options.retryBackoffMs;
    const delay = steps[Math.min(this.attempts, steps.length) - 1];
    if (this.attempts === 1) {
      this.logger.warn(
        `outbox relay: LISTEN ${this.channel} failed: ${describe(err)}; polling every ${this.options.pollIntervalMs} ms meanwhile`,
      );
    }
    this.timer = setTimeout(() => void this.listen(), delay);
  }
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
