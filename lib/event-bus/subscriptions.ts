import { Logger } from '@nestjs/common';
import { BoundedDispatcher, DispatchLimits } from '../delivery/bounded-dispatcher';
import { Msg, BusConnection, Subscription } from '../nats/bus-connection';
import { settleWithin } from '../shared/deadline';
import { HandlerDelivery } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { DurableSubscription } from '../durable/durable-subscription';

/** A live subscription, core or durable: how to stop it, and its dispatcher (for stats). */
interface ActiveSubscription {
  dispatcher: BoundedDispatcher<unknown>;
  subject: string;
  queue?: string;
  durable?: string;
  consumer: string;
  /** A durable subscription's messages terminated without the dead letter that could not be published. */
  deadLettersFailed?: () => number;
  /** An idempotent durable's messages acked without calling the handler (id already handled). */
  duplicatesSkipped?: () => number;
  /** Stop receiving and wait (bounded) for handlers; false when they were still running at the deadline. */
  stop(timeoutMs: number): Promise<boolean>;
}

/** What one live subscription holds and has dropped, from `EventBus.subscriptionStats()`. */
export interface SubscriptionStats {
  subject: string;
  queue?: string;
  /** The durable consumer's name, for a durable subscription. */
  durable?: string;
  consumer: string;
  /** Handlers running now. */
  running: number;
  /** Messages waiting for a handler slot. */
  waiting: number;
  /** Bytes held now: bodies waiting, being recovered, and held by running handlers. */
  heldBytes: number;
  /** The byte budget (`maxHeldBytes`). */
  maxHeldBytes: number;
  /** Messages dropped because `maxPendingMessages` were waiting. */
  dropped: number;
  /** Messages shed because the byte budget was spent. */
  shed: number;
  /** Durable only: messages terminated without a dead letter, after publishing it failed `DEAD_LETTER_TRIES` times. */
  deadLettersFailed?: number;
  /** Idempotent durable only: messages acked without calling the handler, their id already handled to success. */
  duplicatesSkipped?: number;
}

/** What the bus needs to start one subscription. */
export interface SubscriptionSpec {
  topic: string;
  queue?: string;
  consumer: string;
  handler: MessageHandler;
  limits: DispatchLimits;
  /** Start recovering a stored body when its envelope arrives, not when a handler slot frees. */
  recoverOnReceipt: boolean;
}

/**
 * The bus's live subscriptions: each a NATS subscription feeding a bounded dispatcher that runs
 * the delivery path. Stopping one drains it, then waits (bounded) for its handlers to finish.
 */
export class Subscriptions {
  private readonly active = new Set<ActiveSubscription>();

  constructor(private readonly logger: Logger) {}

  /** Subscribe on `client`; resolves once the server knows of the interest. Returns the stopper. */
  async start(
    client: BusConnection,
    delivery: HandlerDelivery,
    spec: SubscriptionSpec,
    stopTimeoutMs: number,
  ): Promise<() => Promise<void>> {
    // On a subject without wildcards every message's subject is the topic; knowing it spares
    // nats.js decoding `msg.subject` from bytes for each message.
    const literalSubject = /[*>]/.test(spec.topic) ? undefined : spec.topic;
    const dispatcher = new BoundedDispatcher<Msg>(
      spec.topic,
      spec.limits,
      (msg) => msg.data.byteLength,
      delivery.claimCheck.telemetry.consuming(spec.topic, spec.queue, (msg, held) =>
        delivery.deliver(msg, spec.handler, { literalSubject, held, eager: spec.recoverOnReceipt }),
      ),
      this.logger,
      spec.recoverOnReceipt ? (msg, held) => delivery.prefetch(msg, held, literalSubject) : undefined,
    );
    const sub = client.subscribe(spec.topic, (msg) => dispatcher.push(msg), spec.queue);
    const entry: ActiveSubscription = {
      dispatcher: dispatcher as BoundedDispatcher<unknown>,
      subject: spec.topic,
      queue: spec.queue,
      consumer: spec.consumer,
      stop: (timeoutMs) => stopCore(sub, dispatcher, timeoutMs),
    };
    this.active.add(entry);
    // A publish right after `subscribe` resolves must not miss the subscription.
    await client.flush();
    return () => this.stop(entry, stopTimeoutMs);
  }

  /** Track a started durable subscription; returns its stopper. */
  addDurable(durable: DurableSubscription, topic: string, consumer: string, name: string, stopTimeoutMs: number): () => Promise<void> {
    const entry: ActiveSubscription = {
      dispatcher: durable.dispatcher as BoundedDispatcher<unknown>,
      subject: topic,
      durable: name,
      consumer,
      deadLettersFailed: () => durable.deadLettersFailed,
      ...(durable.idempotent ? { duplicatesSkipped: () => durable.duplicatesSkipped } : {}),
      stop: (timeoutMs) => durable.stop(timeoutMs),
    };
    this.active.add(entry);
    return () => this.stop(entry, stopTimeoutMs);
  }

  /** The dispatchers of the live subscriptions (their queue depths, for tests and diagnostics). */
  dispatchers(): Array<BoundedDispatcher<unknown>> {
    return [...this.active].map((s) => s.dispatcher);
  }

  /** What each live subscription holds and has dropped. */
  stats(): SubscriptionStats[] {
    return [...this.active].map(({ subject, queue, durable, consumer, dispatcher: d, deadLettersFailed, duplicatesSkipped }) => ({
      subject,
      ...(queue !== undefined ? { queue } : {}),
      ...(durable !== undefined ? { durable } : {}),
      consumer,
      running: d.inFlight,
      waiting: d.pending,
      heldBytes: d.heldBytes,
      maxHeldBytes: d.maxHeldBytes,
      dropped: d.droppedCount,
      shed: d.shedCount,
      ...(deadLettersFailed ? { deadLettersFailed: deadLettersFailed() } : {}),
      ...(duplicatesSkipped ? { duplicatesSkipped: duplicatesSkipped() } : {}),
    }));
  }

  /** Stop every subscription, each bounded by `timeoutMs`. */
  async stopAll(timeoutMs: number): Promise<void> {
    await Promise.all([...this.active].map((s) => this.stop(s, timeoutMs)));
  }

  private async stop(entry: ActiveSubscription, timeoutMs: number): Promise<void> {
    if (!this.active.delete(entry)) return;
    const idle = await entry.stop(timeoutMs);
    if (!idle) {
      this.logger.warn(
        `"${entry.subject}": ${entry.dispatcher.inFlight} handlers still running and ${entry.dispatcher.pending} messages waiting after ${timeoutMs} ms; closing anyway`,
      );
    }
  }
}

/** A core subscription stops: drain, then wait (bounded) for its handlers. */
async function stopCore(sub: Subscription, dispatcher: BoundedDispatcher<Msg>, timeoutMs: number): Promise<boolean> {
  // drain() unsubscribes and waits for messages already sent by the server to arrive;
  // while the server is unreachable it cannot finish, so it is bounded too.
  if (!sub.isClosed()) await settleWithin(sub.drain(), timeoutMs);
  if (!sub.isClosed()) sub.unsubscribe();
  return settleWithin(dispatcher.whenIdle(), timeoutMs);
}
