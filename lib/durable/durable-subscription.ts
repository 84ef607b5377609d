import { Logger } from '@nestjs/common';
import { BoundedDispatcher, DispatchLimits } from '../delivery/bounded-dispatcher';
import { HeldBytes } from '../delivery/byte-budget';
import { DeliveryOutcome, HandlerDelivery, InboundMessage } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { DurableMessage } from '../nats/jetstream';
import { settleWithin } from '../shared/deadline';
import { DeadLetters } from './dead-letters';
import { BatchGatherer, BatchHandler } from './batch';
import { msUntilDue } from './delay';
import { DeliveryCounts } from './delivery-counts';
import { DurableIntake, DurablePullSource } from './durable-intake';
import { backoffFor, DurableSettings } from './durable.options';
import { Inbox, InboxClaim } from './inbox';
import { PartitionAsks, PartitionKeyError, Partitions } from './partitions';

export type { DurablePullSource } from './durable-intake';

/** What one durable subscription needs besides its pull. */
export interface DurableSubscriptionSpec {
  topic: string;
  handler: MessageHandler;
  limits: DispatchLimits;
  settings: DurableSettings;
  /** With `idempotent`: the record of handled ids, checked before and written after the handler. */
  inbox?: Inbox;
}

/**
 * At-least-once delivery from a durable pull consumer. Messages are taken from the pull only when
 * a handler slot and the byte budget have room, so none is dropped or shed. A handler that
 * resolves acks its message; one that throws naks it with the next backoff delay, and after
 * `maxDeliver` deliveries the message goes to the dead letter. A body that can never be read goes
 * there at once; one whose storage is down is retried, up to `storageOutageMaxDeliveries`, then dead-lettered (`storage`).
 */
export class DurableSubscription {
  readonly dispatcher: BoundedDispatcher<DurableMessage>;
  private readonly running = new Set<DurableMessage>();
  private readonly counts = new DeliveryCounts();
  private readonly intake: DurableIntake;
  private duplicates = 0;
  private readonly literalSubject?: string;
  private ticker?: NodeJS.Timeout;
  // A batch handler: messages are delivered one by one into it, and it calls the method with several.
  private readonly gatherer?: BatchGatherer;
  private readonly handler: MessageHandler;
  // With partitionBy: the keys' order, the handler slots and the in-process retries.
  private readonly partitions?: Partitions;

  constructor(
    private readonly spec: DurableSubscriptionSpec,
    private readonly delivery: HandlerDelivery,
    private readonly deadLetters: DeadLetters,
    private readonly logger: Logger,
  ) {
    this.literalSubject = /[*>]/.test(spec.topic) ? undefined : spec.topic;
    const batch = spec.settings.batch;
    // With batch the method takes (payloads, contexts), checked by the options, not the type.
    if (batch) this.gatherer = new BatchGatherer(batch, spec.handler as unknown as BatchHandler);
    this.handler = this.gatherer?.single ?? spec.handler;
    const keyOf = spec.settings.partitionBy;
    if (keyOf) this.partitions = new Partitions(keyOf, spec.limits.maxConcurrent, spec.settings, logger);
    // One batch at a time: as many slots as a batch has, so a full one fills and the next waits for it.
    // Partitioned: more taken than run, so that other keys go on while one key waits.
    const taken = batch ? batch.size : keyOf ? Partitions.windowFor(spec.limits.maxConcurrent) : spec.limits.maxConcurrent;
    this.dispatcher = new BoundedDispatcher<DurableMessage>(
      spec.topic,
      { ...spec.limits, maxConcurrent: taken },
      (m) => m.data.byteLength,
      (m, held) => this.run(m, held),
      logger,
    );
    this.intake = new DurableIntake(this.dispatcher, keyOf ? taken : spec.limits.maxConcurrent);
  }

  /** Messages terminated without a dead letter, because publishing it kept failing. */
  get deadLettersFailed(): number {
    return this.deadLetters.failedCount;
  }

  /** Whether handled ids are recorded (`idempotent`). */
  get idempotent(): boolean {
    return this.spec.inbox !== undefined;
  }

  /** Idempotent only: messages acked without calling the handler, their id already handled. */
  get duplicatesSkipped(): number {
    return this.duplicates;
  }

  start(source: DurablePullSource): void {
    // A handler running longer than the ack wait keeps its message, and so does one taken but still
    // waiting for room in the byte budget: tell the server they are still being worked on.
    const every = Math.max(250, Math.floor(this.spec.settings.ackWaitMs / 3));
    this.ticker = setInterval(() => {
      this.running.forEach((m) => m.working());
      this.intake.waiting.forEach((m) => m.working());
    }, every);
    this.ticker.unref();
    this.intake.start(source);
  }

  /** Stop pulling, hand back what was taken but not started, let running handlers finish and settle (bounded). */
  async stop(timeoutMs: number): Promise<boolean> {
    this.intake.stop();
    // A partial batch is handled now rather than after its wait.
    this.gatherer?.flush();
    this.partitions?.stop();
    const idle = await settleWithin(this.dispatcher.whenIdle(), timeoutMs);
    clearInterval(this.ticker);
    await this.intake.stopped(100);
    return idle;
  }

  private async run(m: DurableMessage, held: HeldBytes): Promise<void> {
    this.running.add(m);
    // Its place in its key's order, taken before anything awaits.
    const ticket = this.partitions?.order.arrive();
    try {
      // Its dead letter failed to go out before: the handler already had its deliveries, try the dead letter again.
      const unsent = this.deadLetters.unsent(m);
      if (unsent) return await this.deadLetter(m, unsent.reason, unsent.error);
      const wait = msUntilDue(m.headers);
      if (wait > 0) return this.notDue(m, wait);
      // Delivered again after its last handler run (its settling outlasted the ack wait on a busy
      // process): the handler never runs more than maxDeliver times; the dead letter's own id dedupes it.
      if (this.counts.attempts(m) > this.spec.settings.maxDeliver) {
        return await this.deadLetter(m, 'max_deliver', new Error(`delivered again (${m.deliveryCount}) after its last handler run`));
      }
      let claim: InboxClaim | undefined;
      if (this.spec.inbox) {
        const verdict = await this.spec.inbox.check(m).catch((err: unknown) => err as Error);
        // The inbox unreachable: the handler must not run; retried with backoff like a storage outage.
        if (verdict instanceof Error) return this.notRun(m, verdict.message);
        if (verdict.kind === 'done') {
          this.duplicates++;
          this.counts.forget(m);
          return m.ack();
        }
        // Another delivery of the id runs now (a redelivery race): come back when its lease ends.
        if (verdict.kind === 'busy') return this.notRun(m, undefined, verdict.retryInMs);
        claim = verdict.claim;
      }
      // No reply: the message's own reply subject is its ack subject, not a requester.
      const msg: InboundMessage = { subject: m.subject, data: m.data, headers: m.headers };
      const asked: PartitionAsks = {};
      // onRetryIn is a MessageContextInit key beyond DurableContext: the context is built from this object's keys.
      const durable = { deliveryCount: m.deliveryCount, stream: m.stream, seq: m.seq, onRetryIn: (ms: number) => (asked.ms = ms) };
      const handler = ticket ? this.partitions!.handlerFor(ticket, this.counts.attempts(m), this.handler, asked) : this.handler;
      // Inside a process span whose parent is the trace the publisher's headers carry.
      let outcome: DeliveryOutcome;
      try {
        outcome = await this.delivery.claimCheck.telemetry.process(msg, m.subject, this.spec.settings.durable, () =>
          this.delivery.deliver(msg, handler, { literalSubject: this.literalSubject, held, durable }),
        );
      } catch (err) {
        // Delivery itself failed (not the handler): give the id back; the server redelivers.
        await claim?.released();
        throw err;
      }
      // The record is written after the handler succeeded and before the ack.
      // A retry asked for is not a handled message: its id is given back, not recorded.
      const retry = !outcome && (asked.ms !== undefined || asked.stopped === true);
      if (claim) await (outcome || retry ? claim.released() : claim.succeeded());
      // Partitioned and stopping: handed back at once, for another instance.
      if (retry) return m.nak(asked.stopped ? 0 : (asked.ms as number));
      // Partitioned: its retries were made in process, so a failure now is its last.
      if (ticket && outcome?.kind === 'handler')
        return await this.deadLetter(m, outcome.error instanceof PartitionKeyError ? 'invalid_message' : 'max_deliver', outcome.error);
      await this.settle(m, outcome);
    } catch (err) {
      // Settling failed (a connection gone): the server redelivers after the ack wait.
      this.logger.error(`could not settle message ${m.stream}#${m.seq} on "${m.subject}": ${(err as Error).message}`);
    } finally {
      if (ticket) this.partitions!.order.leave(ticket);
      this.running.delete(m);
    }
  }

  /** Delivered before its due time: back to the server until then, the handler not run. */
  private notDue(m: DurableMessage, waitMs: number): void {
    this.counts.countEarly(m);
    m.nak(Math.ceil(waitMs));
  }

  /** A delivery that did not reach the handler: nak'ed with backoff (sooner when `delayMs` is less), not counted against maxDeliver. */
  private notRun(m: DurableMessage, why: string | undefined, delayMs?: number): void {
    const failures = this.counts.countNotReached(m);
    // Once per outage, not per message: the outage's own count says when it began.
    if (why !== undefined && failures === 1)
      this.logger.warn(`durable "${this.spec.settings.durable}" on "${m.subject}": ${why}; handler not run, retrying`);
    const backoff = backoffFor(this.spec.settings, failures);
    m.nak(delayMs === undefined ? backoff : Math.min(delayMs, backoff));
  }

  private async settle(m: DurableMessage, outcome: DeliveryOutcome): Promise<void> {
    if (!outcome) {
      this.counts.forget(m);
      return m.ack();
    }
    const settings = this.spec.settings;
    if (outcome.kind === 'unavailable') {
      const failures = this.counts.countNotReached(m);
      // Bounded: an outage this long is not a blip; the dead letter keeps the envelope for a replay.
      if (failures >= settings.storageOutageMaxDeliveries) return this.deadLetter(m, 'storage', outcome.error);
      // The backoff follows the outage's own count, so a long one is retried at the slowest step.
      return m.nak(backoffFor(settings, failures));
    }
    const attempts = this.counts.attempts(m);
    if (outcome.kind === 'handler' && attempts < settings.maxDeliver) return m.nak(backoffFor(settings, attempts));
    await this.deadLetter(m, outcome.kind === 'handler' ? 'max_deliver' : outcome.reason, outcome.error);
  }

  private async deadLetter(m: DurableMessage, reason: string, error: unknown): Promise<void> {
    this.counts.forget(m);
    if (await this.deadLetters.send(m, reason, error)) m.term(reason);
    else m.nak(backoffFor(this.spec.settings, m.deliveryCount));
  }
}
