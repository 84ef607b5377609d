// Partitioned durables (`partitionBy`): messages with one key run one at a time, in the order this
// instance took them from the stream, and different keys run in parallel up to `maxConcurrent`.
// A failing message is retried here, in process, with the durable's backoff: a nak would let the
// next message of its key overtake it, so its key waits for it while the other keys go on.
import { Logger } from '@nestjs/common';
import { InvalidMessageError } from '../errors/event-bus.errors';
import { describeThrown, isNestException, statusOfThrown } from '../errors/thrown';
import { MessageContext, MessageHandler } from '../delivery/message-context';
import { backoffFor, DurableSettings } from './durable.options';

/** `partitionBy`: the key of a message, from its payload (decoded, claim-checked body recovered) and context. */
export type PartitionKeyOf<T = any> = (payload: T, ctx: MessageContext) => string;

/** Messages a partitioned durable takes per handler slot: room for the other keys while one waits. */
export const PARTITION_WINDOW_FACTOR = 8;
/** Most messages a partitioned durable holds at once (the server's default `max_ack_pending` is 1000). */
export const MAX_PARTITION_WINDOW = 512;

/** The key function threw or gave no string: the message goes to the dead letter as `invalid_message`. */
export class PartitionKeyError extends InvalidMessageError {}

/** What a partitioned handler run asks of its message besides an ack: `retryIn`'s delay, or to go back to the server (stopping). */
export interface PartitionAsks {
  ms?: number;
  stopped?: boolean;
}

/** A message's place in the arrival order; its key is known once its body is decoded. */
export interface PartitionTicket {
  readonly n: number;
  key?: string;
  wake?: () => void;
}

/**
 * The order of the messages taken: a message may run when no earlier message of its key is still
 * unsettled, and every earlier message's key is known (one still being decoded may be of its key).
 */
export class KeyedOrder {
  private next = 0;
  // In arrival order; the few hundred a window holds at most.
  private readonly live: PartitionTicket[] = [];
  private readonly queues = new Map<string, PartitionTicket[]>();

  arrive(): PartitionTicket {
    const t: PartitionTicket = { n: this.next++ };
    this.live.push(t);
    return t;
  }

  /** Resolves when `t`, of `key`, may run. */
  turn(t: PartitionTicket, key: string): Promise<void> | undefined {
    t.key = key;
    const queue = this.queues.get(key);
    if (queue) insertInOrder(queue, t);
    else this.queues.set(key, [t]);
    this.wakeReady(t);
    if (this.mayRun(t)) return undefined;
    return new Promise((resolve) => (t.wake = resolve));
  }

  /** `t` is settled (or never reached its key): the messages behind it may go. */
  leave(t: PartitionTicket): void {
    const at = this.live.indexOf(t);
    if (at >= 0) this.live.splice(at, 1);
    if (t.key !== undefined) {
      const queue = this.queues.get(t.key) as PartitionTicket[];
      queue.splice(queue.indexOf(t), 1);
      if (queue.length === 0) this.queues.delete(t.key);
    }
    this.wakeReady();
  }

  private mayRun(t: PartitionTicket): boolean {
    if (this.queues.get(t.key as string)?.[0] !== t) return false;
    for (const earlier of this.live) {
      if (earlier.n >= t.n) return true;
      if (earlier.key === undefined) return false;
    }
    return true;
  }

  private wakeReady(except?: PartitionTicket): void {
    for (const queue of this.queues.values()) {
      const head = queue[0];
      if (head !== except && head.wake && this.mayRun(head)) {
        const wake = head.wake;
        head.wake = undefined;
        wake();
      }
    }
  }
}

/** The keys, the handler slots and the in-process retries of one partitioned durable. */
export class Partitions {
  readonly order = new KeyedOrder();
  private running = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private stopping = false;
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly keyOf: PartitionKeyOf,
    private readonly maxConcurrent: number,
    private readonly settings: DurableSettings,
    private readonly logger: Logger,
  ) {}

  /** Messages taken at once: `maxConcurrent` × 8, at most 512. */
  static windowFor(maxConcurrent: number): number {
    return Math.min(MAX_PARTITION_WINDOW, Math.max(maxConcurrent, maxConcurrent * PARTITION_WINDOW_FACTOR));
  }

  /** Waiting messages give up their turn (`stopped`, handed back to the server); running handlers finish. */
  stop(): void {
    this.stopping = true;
    for (const wake of this.sleepers) wake();
    this.sleepers.clear();
  }

  /**
   * The handler one message is delivered to: waits for its key's turn, then runs `handler`, again
   * after each failure (or `retryIn`) with the backoff, until it resolves or its `maxDeliver`-th
   * delivery (counting from `firstAttempt`) failed, when it rejects with that failure. A refusal by
   * a pipe or guard (a Nest 4xx) is not retried. Stopping, it resolves with `retry.stopped` set.
   */
  handlerFor(ticket: PartitionTicket, firstAttempt: number, handler: MessageHandler, retry: PartitionAsks): MessageHandler {
    return async (payload, ctx) => {
      await this.order.turn(ticket, this.keyFor(payload, ctx));
      for (let attempt = firstAttempt; ; attempt++) {
        if (this.stopping) {
          retry.stopped = true;
          return;
        }
        // An in-process retry is a delivery to the handler: it sees the count go up as with a redelivery.
        if (attempt > firstAttempt && ctx.deliveryCount !== undefined) ctx.deliveryCount++;
        await this.slot();
        let failure: unknown;
        let failed = false;
        try {
          await handler(payload, ctx);
        } catch (err) {
          failed = true;
          failure = err;
        } finally {
          this.release();
        }
        if (!failed && retry.ms === undefined) return;
        if (failed && statusOfThrown(failure) < 500 && isNestException(failure)) throw failure;
        const delay = failed ? backoffFor(this.settings, attempt) : (retry.ms as number);
        if (!failed) failure = new Error(`retryIn(${delay}) asked on delivery ${attempt}, the last`);
        retry.ms = undefined;
        if (attempt >= this.settings.maxDeliver) throw failure;
        const why = failed ? `failed: ${describeThrown(failure)}` : `asked retryIn(${delay})`;
        this.logger.warn(
          `handler for "${ctx.subject}" (key "${ticket.key}") ${why} on delivery ${attempt} of ${this.settings.maxDeliver}; its key waits ${delay} ms`,
        );
        await this.sleep(delay);
      }
    };
  }

  private keyFor(payload: unknown, ctx: MessageContext): string {
    let key: unknown;
    try {
      key = this.keyOf(payload, ctx);
    } catch (err) {
      throw new PartitionKeyError(`partitionBy threw for "${ctx.subject}": ${describeThrown(err)}`, { cause: err });
    }
    if (typeof key === 'number' && Number.isFinite(key)) return String(key);
    if (typeof key !== 'string') throw new PartitionKeyError(`partitionBy gave ${typeof key} for "${ctx.subject}", not a string`);
    return key;
  }

  private slot(): Promise<void> | undefined {
    if (this.running < this.maxConcurrent) {
      this.running++;
      return undefined;
    }
    // The slot is handed over by release(), so `running` stays counted.
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  private release(): void {
    const next = this.slotWaiters.shift();
    if (next) next();
    else this.running--;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }
}

function insertInOrder(queue: PartitionTicket[], t: PartitionTicket): void {
  let i = queue.length;
  while (i > 0 && queue[i - 1].n > t.n) i--;
  queue.splice(i, 0, t);
}
