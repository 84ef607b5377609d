import { Logger } from '@nestjs/common';

/**
 * Runs at most `maxConcurrent` deliveries of one subscription at a time and queues up to
 * `maxPending` more. Past that, messages are dropped with a slow-consumer log line naming the
 * subject, so a flood cannot exhaust memory.
 */
export class BoundedDispatcher<M> {
  private active = 0;
  private readonly queue: M[] = [];
  private head = 0;
  private idleWaiters: Array<() => void> = [];
  private dropped = 0;
  private slowLoggedAt = 0;

  constructor(
    private readonly subject: string,
    private readonly maxConcurrent: number,
    private readonly maxPending: number,
    private readonly run: (item: M) => void | Promise<void>,
    private readonly logger: Logger,
  ) {}

  get inFlight(): number {
    return this.active;
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  get droppedCount(): number {
    return this.dropped;
  }

  push(item: M): void {
    if (this.active < this.maxConcurrent) {
      this.start(item);
      return;
    }
    if (this.pending >= this.maxPending) {
      this.dropped++;
      const now = Date.now();
      // One line a second is enough to name the problem without flooding the log.
      if (now - this.slowLoggedAt > 1000) {
        this.slowLoggedAt = now;
        this.logger.warn(`slow consumer on "${this.subject}": ${this.pending} messages waiting, ${this.dropped} dropped so far`);
      }
      return;
    }
    this.queue.push(item);
  }

  /** Resolves when nothing is running or queued. */
  whenIdle(): Promise<void> {
    if (this.active === 0 && this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private start(item: M): void {
    this.active++;
    let result: void | Promise<void>;
    try {
      result = this.run(item);
    } catch {
      // `run` reports its own failures; a throw here must not stop the queue.
      result = undefined;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(this.finish, this.finish);
    } else {
      this.finish();
    }
  }

  private draining = false;

  private readonly finish = (): void => {
    this.active--;
    // Synchronous handlers finish inside start(); only the outermost call pulls from the queue,
    // so a long queue of sync handlers does not grow the stack.
    if (!this.draining) {
      this.draining = true;
      try {
        while (this.active < this.maxConcurrent && this.pending > 0) {
          const next = this.queue[this.head];
          this.queue[this.head++] = undefined as unknown as M;
          if (this.head > 1024 && this.head * 2 > this.queue.length) {
            this.queue.splice(0, this.head);
            this.head = 0;
          }
          this.start(next);
        }
        if (this.pending === 0 && this.head > 0) {
          this.queue.length = 0;
          this.head = 0;
        }
      } finally {
        this.draining = false;
      }
    }
    if (this.active === 0 && this.pending === 0 && this.idleWaiters.length) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  };
}
