import { MaybePromise } from '../shared/maybe-async';

/**
 * The bytes one subscription may hold at once: bodies waiting for a handler slot, stored bodies
 * being recovered, and bodies held by running handlers. A count of messages alone does not bound
 * memory: 600 waiting 1 MB messages are 600 MB.
 */
export class ByteBudget {
  private usedBytes = 0;
  /** Stored bodies recovered or being recovered now. One is always allowed, so delivery never stalls. */
  private stored = 0;
  /**
   * What a stored body of unknown size is reckoned at until it arrives, learnt from those that
   * did. Until one has, recoveries go one at a time: a first guess could be far too small.
   */
  private estimate = 0;
  private waiters: Array<{ atLeast: number; grant: () => void }> = [];

  constructor(readonly limit: number) {}

  get used(): number {
    return this.usedBytes;
  }

  /** Whether `bytes` fit now, or nothing else is held (a body larger than the budget still goes, alone). */
  fits(bytes: number): boolean {
    return this.usedBytes + bytes <= this.limit || this.usedBytes === 0;
  }

  /** Count `bytes` now if they fit (see `fits`). */
  tryTake(bytes: number): boolean {
    if (!this.fits(bytes)) return false;
    this.usedBytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.usedBytes -= bytes;
    if (this.waiters.length) this.wake();
  }

  /**
   * Room for a stored body whose size is not known yet; resolves with the bytes reserved. Waits
   * (the subscription slows) while the budget is full, unless no other stored body is held.
   * `atLeast` is what a body is reckoned at before any size is learnt (recovery on receipt passes
   * the offload threshold, a lower bound of every stored body, rather than fetch one at a time).
   */
  reserveStored(atLeast = 0): MaybePromise<number> {
    if (this.canReserve(atLeast)) return this.grant(atLeast);
    return new Promise<number>((resolve) => this.waiters.push({ atLeast, grant: () => resolve(this.grant(atLeast)) }));
  }

  /** The stored body arrived with `actual` bytes: count those instead of the reservation. */
  storedArrived(reserved: number, actual: number): void {
    this.usedBytes += actual - reserved;
    // Lean towards the largest recent body, so a burst of large ones is not under-reckoned.
    this.estimate = Math.max(actual, Math.round(this.estimate * 0.75 + actual * 0.25));
    // Smaller than reckoned, or the first size learnt: others may go now.
    if (this.waiters.length) this.wake();
  }

  /** A stored body (or its reservation) of `bytes` is let go. */
  releaseStored(bytes: number): void {
    this.stored--;
    this.give(bytes);
  }

  private reckoned(atLeast: number): number {
    return Math.max(this.estimate, atLeast);
  }

  private canReserve(atLeast: number): boolean {
    const bytes = this.reckoned(atLeast);
    return this.stored === 0 || (bytes > 0 && this.usedBytes + bytes <= this.limit);
  }

  private grant(atLeast: number): number {
    const bytes = this.reckoned(atLeast);
    this.stored++;
    this.usedBytes += bytes;
    return bytes;
  }

  private wake(): void {
    while (this.waiters.length && this.canReserve(this.waiters[0].atLeast)) this.waiters.shift()!.grant();
  }
}

/** One message's share of its subscription's budget, from arrival until its handler finishes. */
export class HeldBytes {
  /** Bytes of a stored body (or its reservation), counted apart from the message's own bytes. */
  private storedBytes = -1;

  constructor(
    private readonly budget: ByteBudget,
    readonly wireBytes: number,
  ) {}

  /** A stored body already being recovered (recovery on receipt), for the delivery to use. */
  prefetched?: Promise<Uint8Array>;

  /** Wait for room to recover a stored body (reckoned at `atLeast` bytes until sizes are learnt). */
  reserveStored(atLeast = 0): MaybePromise<void> {
    const reserved = this.budget.reserveStored(atLeast);
    if (typeof reserved === 'number') {
      this.storedBytes = reserved;
      return;
    }
    return reserved.then((n) => {
      this.storedBytes = n;
    });
  }

  storedArrived(actual: number): void {
    if (this.storedBytes < 0) return;
    this.budget.storedArrived(this.storedBytes, actual);
    this.storedBytes = actual;
  }

  release(): void {
    this.budget.give(this.wireBytes);
    if (this.storedBytes >= 0) this.budget.releaseStored(this.storedBytes);
    this.storedBytes = -1;
  }
}
