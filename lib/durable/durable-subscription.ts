import { Logger } from '@nestjs/common';
import { BoundedDispatcher, DispatchLimits } from '../delivery/bounded-dispatcher';
import { HeldBytes } from '../delivery/byte-budget';
import { DeliveryOutcome, HandlerDelivery, InboundMessage } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { DurableBatch, DurableMessage, DurablePull } from '../nats/jetstream';
import { settleWithin } from '../shared/deadline';
import { DeadLetters } from './dead-letters';
import { BatchGatherer, BatchHandler } from './batch';
import { msUntilDue } from './delay';
import { backoffFor, DurableSettings } from './durable.options';
import { Inbox, InboxClaim } from './inbox';

/** Pause between tries while a durable cannot pull. */
const PULL_RETRY_MS = 1000;

/** Where a durable subscription gets its pull, and who hears how pulling goes. */
export interface DurablePullSource {
  /** A pull on the durable consumer. */
  open(): Promise<DurablePull>;
  /** A pull failed: find out why, re-create the consumer when it is gone (or report that it cannot be). */
  failed(err: unknown): Promise<void>;
  /** A pull worked (after failures: the durable is healthy again). */
  pulled(): void;
}

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
  // Deliveries per message that did not reach the handler (storage or the inbox down, its id busy
  // elsewhere): they do not count against maxDeliver.
  private readonly storageFailures = new Map<string, number>();
  // Deliveries of a delayed message before it was due (`Eventbus-Not-Before`): nak'ed with the time
  // left, never handed to the handler, not counted against maxDeliver. Oldest forgotten past the bound.
  private readonly early = new Map<string, number>();
  private duplicates = 0;
  private readonly literalSubject?: string;
  private stopping = false;
  private ticker?: NodeJS.Timeout;
  private loop?: Promise<void>;
  // A batch handler: messages are delivered one by one into it, and it calls the method with several.
  private readonly gatherer?: BatchGatherer;
  private readonly handler: MessageHandler;

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
    this.dispatcher = new BoundedDispatcher<DurableMessage>(
      spec.topic,
      // One batch at a time: as many slots as a batch has, so a full one fills and the next waits for it.
      batch ? { ...spec.limits, maxConcurrent: batch.size } : spec.limits,
      (m) => m.data.byteLength,
      (m, held) => this.run(m, held),
      logger,
    );
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
      this.taken.forEach((m) => m.working());
    }, every);
    this.ticker.unref();
    this.loop = this.take(source);
  }

  /** Stop pulling, hand back what was taken but not started, let running handlers finish and settle (bounded). */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopping = true;
    this.batch?.stop();
    this.wake?.();
    // Taken but not started: another instance may have them at once, not after the ack wait.
    for (const m of this.taken.splice(0)) m.nak(0);
    // A partial batch is handled now rather than after its wait.
    this.gatherer?.flush();
    const idle = await settleWithin(this.dispatcher.whenIdle(), timeoutMs);
    clearInterval(this.ticker);
    await settleWithin(this.loop ?? Promise.resolve(), 100);
    return idle;
  }

  /**
   * Ask for messages only when a handler slot is free, as many as there are free slots; a message
   * that must still wait for room in the byte budget is kept in progress. A pull that fails (the
   * consumer deleted, JetStream gone) goes to the source to be repaired, then pulling resumes.
   */
  private async take(source: DurablePullSource): Promise<void> {
    let pull: DurablePull | undefined;
    while (!this.stopping) {
      const slot = this.dispatcher.whenRoomFor(0);
      if (slot) await slot;
      if (this.stopping) break;
      try {
        pull ??= await source.open();
        const batch = await pull.fetch(Math.max(1, this.spec.limits.maxConcurrent - this.dispatcher.inFlight));
        this.batch = batch;
        if (this.stopping) batch.stop();
        let pulled = false;
        for await (const m of batch) {
          // A message came: the durable works (again), without waiting for the batch to end.
          if (!pulled) source.pulled();
          pulled = true;
          this.hold(m);
        }
        await this.feeding;
        if (!pulled) source.pulled();
      } catch (err) {
        if (this.stopping) break;
        pull = undefined;
        await source.failed(err);
        // One try a second while it stays broken, not a busy loop.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, PULL_RETRY_MS);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      } finally {
        this.batch = undefined;
      }
    }
  }

  private batch?: DurableBatch;
  private wake?: () => void;
  // Taken from the server, waiting for room in the byte budget; kept in progress by the ticker.
  private readonly taken: DurableMessage[] = [];
  private feeding?: Promise<void>;

  /** Start `m` now, or keep it in progress until the byte budget has room. */
  private hold(m: DurableMessage): void {
    // Taken after shutdown began: another instance may have it at once.
    if (this.stopping) return m.nak(0);
    if (this.taken.length === 0 && this.dispatcher.hasRoomFor(m.data.byteLength)) return this.dispatcher.push(m);
    this.taken.push(m);
    this.feeding ??= this.feed().finally(() => (this.feeding = undefined));
  }

  private async feed(): Promise<void> {
    while (this.taken.length && !this.stopping) {
      const room = this.dispatcher.whenRoomFor(this.taken[0].data.byteLength);
      if (room) await room;
      const m = this.taken.shift();
      if (!m) return;
      if (this.stopping) m.nak(0);
      else this.dispatcher.push(m);
    }
  }

  private async run(m: DurableMessage, held: HeldBytes): Promise<void> {
    this.running.add(m);
    try {
      // Its dead letter failed to go out before: the handler already had its deliveries, try the dead letter again.
      const unsent = this.deadLetters.unsent(m);
      if (unsent) return await this.deadLetter(m, unsent.reason, unsent.error);
      const wait = msUntilDue(m.headers);
      if (wait > 0) return this.notDue(m, wait);
      // Delivered again after its last handler run (its settling outlasted the ack wait on a busy
      // process): the handler never runs more than maxDeliver times; the dead letter's own id dedupes it.
      if (this.attempts(m) > this.spec.settings.maxDeliver) {
        return await this.deadLetter(m, 'max_deliver', new Error(`delivered again (${m.deliveryCount}) after its last handler run`));
      }
      let claim: InboxClaim | undefined;
      if (this.spec.inbox) {
        const verdict = await this.spec.inbox.check(m).catch((err: unknown) => err as Error);
        // The inbox unreachable: the handler must not run; retried with backoff like a storage outage.
        if (verdict instanceof Error) return this.notRun(m, verdict.message);
        if (verdict.kind === 'done') {
          this.duplicates++;
          this.storageFailures.delete(`${m.stream}:${m.seq}`);
          this.early.delete(`${m.stream}:${m.seq}`);
          return m.ack();
        }
        // Another delivery of the id runs now (a redelivery race): come back when its lease ends.
        if (verdict.kind === 'busy') return this.notRun(m, undefined, verdict.retryInMs);
        claim = verdict.claim;
      }
      // No reply: the message's own reply subject is its ack subject, not a requester.
      const msg: InboundMessage = { subject: m.subject, data: m.data, headers: m.headers };
      let retryInMs: number | undefined;
      // onRetryIn is a MessageContextInit key beyond DurableContext: the context is built from this object's keys.
      const durable = { deliveryCount: m.deliveryCount, stream: m.stream, seq: m.seq, onRetryIn: (ms: number) => (retryInMs = ms) };
      // Inside a process span whose parent is the trace the publisher's headers carry.
      let outcome: DeliveryOutcome;
      try {
        outcome = await this.delivery.claimCheck.telemetry.process(msg, m.subject, this.spec.settings.durable, () =>
          this.delivery.deliver(msg, this.handler, { literalSubject: this.literalSubject, held, durable }),
        );
      } catch (err) {
        // Delivery itself failed (not the handler): give the id back; the server redelivers.
        await claim?.released();
        throw err;
      }
      // The record is written after the handler succeeded and before the ack.
      // A retry asked for is not a handled message: its id is given back, not recorded.
      const retry = !outcome && retryInMs !== undefined;
      if (claim) await (outcome || retry ? claim.released() : claim.succeeded());
      if (retry) return m.nak(retryInMs as number);
      await this.settle(m, outcome);
    } catch (err) {
      // Settling failed (a connection gone): the server redelivers after the ack wait.
      this.logger.error(`could not settle message ${m.stream}#${m.seq} on "${m.subject}": ${(err as Error).message}`);
    } finally {
      this.running.delete(m);
    }
  }

  /** Deliveries that reached the handler (or could have): not those the storage failed, nor those before the message was due. */
  private attempts(m: DurableMessage): number {
    const key = `${m.stream}:${m.seq}`;
    return m.deliveryCount - (this.storageFailures.get(key) ?? 0) - (this.early.get(key) ?? 0);
  }

  /** Delivered before its due time: back to the server until then, the handler not run. */
  private notDue(m: DurableMessage, waitMs: number): void {
    const key = `${m.stream}:${m.seq}`;
    const count = (this.early.get(key) ?? 0) + 1;
    this.early.delete(key);
    // Bounded: past 100,000 delayed messages the oldest count is forgotten (that message may then get one handler run fewer).
    if (this.early.size >= 100_000) this.early.delete(this.early.keys().next().value as string);
    this.early.set(key, count);
    m.nak(Math.ceil(waitMs));
  }

  /** A delivery that did not reach the handler: nak'ed with backoff (sooner when `delayMs` is less), not counted against maxDeliver. */
  private notRun(m: DurableMessage, why: string | undefined, delayMs?: number): void {
    const key = `${m.stream}:${m.seq}`;
    const failures = (this.storageFailures.get(key) ?? 0) + 1;
    if (this.storageFailures.size >= 10_000) this.storageFailures.clear();
    this.storageFailures.set(key, failures);
    // Once per outage, not per message: the outage's own count says when it began.
    if (why !== undefined && failures === 1)
      this.logger.warn(`durable "${this.spec.settings.durable}" on "${m.subject}": ${why}; handler not run, retrying`);
    const backoff = backoffFor(this.spec.settings, failures);
    m.nak(delayMs === undefined ? backoff : Math.min(delayMs, backoff));
  }

  private async settle(m: DurableMessage, outcome: DeliveryOutcome): Promise<void> {
    const key = `${m.stream}:${m.seq}`;
    if (!outcome) {
      this.storageFailures.delete(key);
      this.early.delete(key);
      return m.ack();
    }
    const settings = this.spec.settings;
    if (outcome.kind === 'unavailable') {
      const failures = (this.storageFailures.get(key) ?? 0) + 1;
      // Bounded: a long outage over many messages must not grow the map without end.
      if (this.storageFailures.size >= 10_000) this.storageFailures.clear();
      this.storageFailures.set(key, failures);
      // Bounded: an outage this long is not a blip; the dead letter keeps the envelope for a replay.
      if (failures >= settings.storageOutageMaxDeliveries) {
        this.storageFailures.delete(key);
        return this.deadLetter(m, 'storage', outcome.error);
      }
      // The backoff follows the outage's own count, so a long one is retried at the slowest step.
      return m.nak(backoffFor(settings, failures));
    }
    const attempts = this.attempts(m);
    if (outcome.kind === 'handler' && attempts < settings.maxDeliver) return m.nak(backoffFor(settings, attempts));
    this.storageFailures.delete(key);
    await this.deadLetter(m, outcome.kind === 'handler' ? 'max_deliver' : outcome.reason, outcome.error);
  }

  private async deadLetter(m: DurableMessage, reason: string, error: unknown): Promise<void> {
    this.early.delete(`${m.stream}:${m.seq}`);
    if (await this.deadLetters.send(m, reason, error)) m.term(reason);
    else m.nak(backoffFor(this.spec.settings, m.deliveryCount));
  }
}
