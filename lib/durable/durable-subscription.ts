import { Logger } from '@nestjs/common';
import { BoundedDispatcher, DispatchLimits } from '../delivery/bounded-dispatcher';
import { HeldBytes } from '../delivery/byte-budget';
import { DeliveryOutcome, HandlerDelivery } from '../event-bus/handler-delivery';
import { MessageHandler } from '../event-bus/message-context';
import { Msg } from '../nats/bus-connection';
import { DurableMessage, DurablePull } from '../nats/jetstream';
import { settleWithin } from '../shared/deadline';
import { DeadLetters } from './dead-letters';
import { backoffFor, DurableSettings } from './durable.options';

/** What one durable subscription needs besides its pull. */
export interface DurableSubscriptionSpec {
  topic: string;
  handler: MessageHandler;
  limits: DispatchLimits;
  settings: DurableSettings;
}

/**
 * At-least-once delivery from a durable pull consumer. Messages are taken from the pull only when
 * a handler slot and the byte budget have room, so none is dropped or shed. A handler that
 * resolves acks its message; one that throws naks it with the next backoff delay, and after
 * `maxDeliver` deliveries the message goes to the dead letter. A body that can never be read goes
 * there at once; one whose storage is down is retried until the storage is back.
 */
export class DurableSubscription {
  readonly dispatcher: BoundedDispatcher<DurableMessage>;
  private readonly running = new Set<DurableMessage>();
  // Deliveries per message that failed because storage was down: they do not count against maxDeliver.
  private readonly storageFailures = new Map<string, number>();
  private readonly literalSubject?: string;
  private stopping = false;
  private ticker?: NodeJS.Timeout;
  private loop?: Promise<void>;

  constructor(
    private readonly spec: DurableSubscriptionSpec,
    private readonly delivery: HandlerDelivery,
    private readonly deadLetters: DeadLetters,
    private readonly logger: Logger,
  ) {
    this.literalSubject = /[*>]/.test(spec.topic) ? undefined : spec.topic;
    this.dispatcher = new BoundedDispatcher<DurableMessage>(
      spec.topic,
      spec.limits,
      (m) => m.data.byteLength,
      (m, held) => this.run(m, held),
      logger,
    );
  }

  /** Messages terminated without a dead letter, because publishing it kept failing. */
  get deadLettersFailed(): number {
    return this.deadLetters.failedCount;
  }

  start(pull: DurablePull): void {
    // A handler running longer than the ack wait keeps its message: tell the server it is still being worked on.
    const every = Math.max(250, Math.floor(this.spec.settings.ackWaitMs / 3));
    this.ticker = setInterval(() => this.running.forEach((m) => m.working()), every);
    this.ticker.unref();
    this.loop = this.take(pull);
    this.pull = pull;
  }

  private pull?: DurablePull;

  /** Stop pulling, let running handlers finish and settle their messages (bounded). */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopping = true;
    // Stopping the pull waits for the messages already taken to be handed back, which waits for a
    // free slot: both run within the one deadline.
    const [, idle] = await Promise.all([
      this.pull ? settleWithin(this.pull.stop(), timeoutMs) : true,
      settleWithin(this.dispatcher.whenIdle(), timeoutMs),
    ]);
    clearInterval(this.ticker);
    await settleWithin(this.loop ?? Promise.resolve(), 100);
    return idle;
  }

  private async take(pull: DurablePull): Promise<void> {
    try {
      for await (const m of pull) {
        if (!this.stopping) {
          const room = this.dispatcher.whenRoomFor(m.data.byteLength);
          if (room) await room;
        }
        // Taken after shutdown began: another instance may have it at once.
        if (this.stopping) m.nak(0);
        else this.dispatcher.push(m);
      }
    } catch (err) {
      if (!this.stopping)
        this.logger.error(`durable "${this.spec.settings.durable}" on "${this.spec.topic}" stopped pulling: ${(err as Error).message}`);
    }
  }

  private async run(m: DurableMessage, held: HeldBytes): Promise<void> {
    this.running.add(m);
    try {
      // Its dead letter failed to go out before: the handler already had its deliveries, try the dead letter again.
      const unsent = this.deadLetters.unsent(m);
      if (unsent) return await this.deadLetter(m, unsent.reason, unsent.error);
      // No reply inbox: the message's own reply subject is its ack subject, not a requester.
      const msg = { subject: m.subject, data: m.data, headers: m.headers, reply: '' } as unknown as Msg;
      // Inside a process span whose parent is the trace the publisher's headers carry.
      const outcome = await this.delivery.claimCheck.telemetry.process(msg, m.subject, this.spec.settings.durable, () =>
        this.delivery.deliver(msg, this.spec.handler, this.literalSubject, held, false, {
          deliveryCount: m.deliveryCount,
          stream: m.stream,
          seq: m.seq,
        }),
      );
      await this.settle(m, outcome);
    } catch (err) {
      // Settling failed (a connection gone): the server redelivers after the ack wait.
      this.logger.error(`could not settle message ${m.stream}#${m.seq} on "${m.subject}": ${(err as Error).message}`);
    } finally {
      this.running.delete(m);
    }
  }

  private async settle(m: DurableMessage, outcome: DeliveryOutcome): Promise<void> {
    const key = `${m.stream}:${m.seq}`;
    const storageFailures = this.storageFailures.get(key) ?? 0;
    if (!outcome) {
      this.storageFailures.delete(key);
      return m.ack();
    }
    const settings = this.spec.settings;
    if (outcome.kind === 'unavailable') {
      // Bounded: a long outage over many messages must not grow the map without end.
      if (this.storageFailures.size >= 10_000) this.storageFailures.clear();
      this.storageFailures.set(key, storageFailures + 1);
      // The backoff follows the outage's own count, so a long one is retried at the slowest step.
      return m.nak(backoffFor(settings, storageFailures + 1));
    }
    // Deliveries that reached the handler (or could have): those the storage failed are not counted.
    const attempts = m.deliveryCount - storageFailures;
    if (outcome.kind === 'handler' && attempts < settings.maxDeliver) return m.nak(backoffFor(settings, attempts));
    this.storageFailures.delete(key);
    await this.deadLetter(m, outcome.kind === 'handler' ? 'max_deliver' : outcome.reason, outcome.error);
  }

  private async deadLetter(m: DurableMessage, reason: string, error: unknown): Promise<void> {
    if (await this.deadLetters.send(m, reason, error)) m.term(reason);
    else m.nak(backoffFor(this.spec.settings, m.deliveryCount));
  }
}
