import { Logger } from '@nestjs/common';
import { ByteBudget, HeldBytes } from './byte-budget';

/** The limits of one subscription. */
export interface DispatchLimits {
  maxConcurrent: number;
  /** Messages waiting for a slot; past this, messages are dropped (slow consumer). */
  maxPending: number;
  /** Bytes held at once (waiting, being recovered, held by running handlers); past this, messages are shed. */
  maxHeldBytes: number;
}

/**
 * Runs at most `maxConcurrent` deliveries of one subscription at a time and queues up to
 * `maxPending` more, within a byte budget (`maxHeldBytes`). Past either bound, messages are
 * dropped and counted, with one log line a second naming the subject, so a flood cannot exhaust
 * memory.
 */
export class BoundedDispatcher<M> {
  private active = 0;
  private readonly queue: Array<M | undefined> = [];
  // Each queued message's share of the budget, in step with `queue`.
  private readonly queuedHeld: Array<HeldBytes | undefined> = [];
  private head = 0;
  private idleWaiters: Array<() => void> = [];
  private dropped = 0;
  private shed = 0;
  // One clock per kind of line, so that a flood of one does not hide the other.
  private readonly loggedAt = { slow: 0, shed: 0 };
  private readonly budget: ByteBudget;

  constructor(
    private readonly subject: string,
    private readonly limits: DispatchLimits,
    /** Bytes a message holds on arrival (its body as received). */
    private readonly sizeOf: (item: M) => number,
    /** Runs one delivery; what it returns (or resolves with) is not the dispatcher's business. */
    private readonly run: (item: M, held: HeldBytes) => unknown,
    private readonly logger: Logger,
    /** Called for a message that must wait for a slot, e.g. to start recovering its body now. */
    private readonly onQueued?: (item: M, held: HeldBytes) => void,
    /** Called for a message dropped or shed, e.g. to answer a request at once rather than let it time out. */
    private readonly onRefused?: (item: M, why: string) => void,
  ) {
    this.budget = new ByteBudget(limits.maxHeldBytes);
  }

  get inFlight(): number {
    return this.active;
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  /** Messages dropped because `maxPending` were waiting. */
  get droppedCount(): number {
    return this.dropped;
  }

  /** Messages shed because the byte budget was spent. */
  get shedCount(): number {
    return this.shed;
  }

  get maxHeldBytes(): number {
    return this.limits.maxHeldBytes;
  }

  /** Bytes held now: bodies waiting, being recovered, and held by running handlers. */
  get heldBytes(): number {
    return this.budget.used;
  }

  push(item: M): void {
    const free = this.active < this.limits.maxConcurrent;
    if (!free && this.pending >= this.limits.maxPending) {
      this.dropped++;
      this.warn('slow', `slow consumer on "${this.subject}": ${this.pending} messages waiting, ${this.dropped} dropped so far`);
      this.onRefused?.(item, `${this.pending} messages already waiting`);
      return;
    }
    const bytes = this.sizeOf(item);
    if (!this.budget.tryTake(bytes)) {
      this.shed++;
      this.warn(
        'shed',
        `"${this.subject}" is over its byte budget: ${this.budget.used} of ${this.limits.maxHeldBytes} bytes held; a ${bytes}-byte message shed, ${this.shed} so far`,
      );
      this.onRefused?.(item, `over its byte budget of ${this.limits.maxHeldBytes} bytes`);
      return;
    }
    const held = new HeldBytes(this.budget, bytes);
    if (free) {
      this.start(item, held);
      return;
    }
    this.queue.push(item);
    this.queuedHeld.push(held);
    this.onQueued?.(item, held);
  }

  /**
   * Resolves when a message of `bytes` would start at once: a handler slot is free, nothing waits,
   * and the bytes fit the budget. A source that can hold messages back (a JetStream pull) waits
   * for this instead of having messages dropped or shed.
   */
  whenRoomFor(bytes: number): Promise<void> | undefined {
    if (this.hasRoomFor(bytes)) return undefined;
    return new Promise((resolve) => {
      this.roomWaiter = { bytes, resolve };
    });
  }

  private roomWaiter?: { bytes: number; resolve: () => void };

  /** Whether a message of `bytes` would start at once (see `whenRoomFor`). */
  hasRoomFor(bytes: number): boolean {
    return this.active < this.limits.maxConcurrent && this.pending === 0 && this.budget.fits(bytes);
  }

  /** Resolves when nothing is running or queued. */
  whenIdle(): Promise<void> {
    if (this.active === 0 && this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // One line a second is enough to name the problem without flooding the log.
  private warn(kind: 'slow' | 'shed', line: string): void {
    const now = Date.now();
    if (now - this.loggedAt[kind] <= 1000) return;
    this.loggedAt[kind] = now;
    this.logger.warn(line);
  }

  private start(item: M, held: HeldBytes): void {
    this.active++;
    let result: unknown;
    try {
      result = this.run(item, held);
    } catch {
      // `run` reports its own failures; a throw here must not stop the queue.
      result = undefined;
    }
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      const done = () => this.finish(held);
      (result as Promise<unknown>).then(done, done);
    } else {
      this.finish(held);
    }
  }

  private draining = false;

  private finish(held: HeldBytes): void {
    this.active--;
    held.release();
    // Synchronous handlers finish inside start(); only the outermost call pulls from the queue,
    // so a long queue of sync handlers does not grow the stack.
    if (!this.draining) {
      this.draining = true;
      try {
        while (this.active < this.limits.maxConcurrent && this.pending > 0) {
          const next = this.queue[this.head] as M;
          const held = this.queuedHeld[this.head] as HeldBytes;
          this.queue[this.head] = undefined;
          this.queuedHeld[this.head++] = undefined;
          if (this.head > 1024 && this.head * 2 > this.queue.length) {
            this.queue.splice(0, this.head);
            this.queuedHeld.splice(0, this.head);
            this.head = 0;
          }
          this.start(next, held);
        }
        if (this.pending === 0 && this.head > 0) {
          this.queue.length = 0;
          this.queuedHeld.length = 0;
          this.head = 0;
        }
      } finally {
        this.draining = false;
      }
    }
    if (this.roomWaiter && this.hasRoomFor(this.roomWaiter.bytes)) {
      const waiter = this.roomWaiter;
      this.roomWaiter = undefined;
      waiter.resolve();
    }
    if (this.active === 0 && this.pending === 0 && this.idleWaiters.length) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
