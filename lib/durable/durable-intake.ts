import { BoundedDispatcher } from '../delivery/bounded-dispatcher';
import { settleWithin } from '../shared/deadline';
import { DurableBatch, DurableMessage, DurablePull } from '../nats/jetstream';

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

/**
 * Pull on demand: ask for messages only when a handler slot is free, as many as there are free
 * slots, and keep a message that must still wait for room in the byte budget in progress. A pull
 * that fails (the consumer deleted, JetStream gone) goes to the source to be repaired, then
 * pulling resumes.
 */
export class DurableIntake {
  private stopping = false;
  private loop?: Promise<void>;
  private batch?: DurableBatch;
  private wake?: () => void;
  // Taken from the server, waiting for room in the byte budget; kept in progress by the ticker.
  private readonly taken: DurableMessage[] = [];
  private feeding?: Promise<void>;

  constructor(
    private readonly dispatcher: BoundedDispatcher<DurableMessage>,
    private readonly maxConcurrent: number,
  ) {}

  /** Messages taken but not yet started (the ticker tells the server they are being worked on). */
  get waiting(): readonly DurableMessage[] {
    return this.taken;
  }

  start(source: DurablePullSource): void {
    this.loop = this.take(source);
  }

  /** Stop pulling and hand back what was taken but not started. */
  stop(): void {
    this.stopping = true;
    this.batch?.stop();
    this.wake?.();
    // Taken but not started: another instance may have them at once, not after the ack wait.
    for (const m of this.taken.splice(0)) m.nak(0);
  }

  /** The pulling loop's end, waited for at most `timeoutMs`. */
  async stopped(timeoutMs: number): Promise<void> {
    await settleWithin(this.loop ?? Promise.resolve(), timeoutMs);
  }

  private async take(source: DurablePullSource): Promise<void> {
    let pull: DurablePull | undefined;
    while (!this.stopping) {
      const slot = this.dispatcher.whenRoomFor(0);
      if (slot) await slot;
      if (this.stopping) break;
      try {
        pull ??= await source.open();
        const batch = await pull.fetch(Math.max(1, this.maxConcurrent - this.dispatcher.inFlight));
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
}
