// Batch handlers: single deliveries gathered into one handler call. Each message still goes through
// the normal delivery (decode, claim-check recovery, telemetry) and is settled by its own outcome,
// which is the batch's: all acked when the handler resolves, all retried when it throws.
import { MessageContext, MessageHandler } from '../delivery/message-context';

/** `batch` of a durable subscription, checked. */
export interface BatchSettings {
  /** Most messages in one call. */
  size: number;
  /** How long the first message of a batch waits for the others, in ms; then the batch goes as it is. */
  maxWaitMs: number;
}

/** A batch handler: the payloads and their contexts, in stream order (`payloads[i]` goes with `contexts[i]`). */
export type BatchHandler<T = any> = (payloads: T[], contexts: MessageContext[]) => unknown;

interface Waiting {
  payload: unknown;
  ctx: MessageContext;
  done: (err?: unknown) => void;
}

/** Gathers delivered messages and calls the batch handler with up to `size` of them, or what came within `maxWaitMs`. */
export class BatchGatherer {
  private waiting: Waiting[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly settings: BatchSettings,
    private readonly handler: BatchHandler,
  ) {}

  /** The per-message handler given to delivery: settles when the batch it joined has been handled. */
  readonly single: MessageHandler = (payload, ctx) =>
    new Promise<void>((resolve, reject) => {
      this.waiting.push({ payload, ctx, done: (err) => (err === undefined ? resolve() : reject(err)) });
      if (this.waiting.length >= this.settings.size) this.flush();
      else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.settings.maxWaitMs);
    });

  /** Call the handler with what is waiting now (also on shutdown, so that no message waits past it). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    // In stream order: a claim-checked body is recovered later than a small one that followed it.
    const batch = this.waiting.splice(0).sort((a, b) => (a.ctx.seq ?? 0) - (b.ctx.seq ?? 0));
    if (batch.length === 0) return;
    let result: unknown;
    try {
      result = this.handler(
        batch.map((w) => w.payload),
        batch.map((w) => w.ctx),
      );
    } catch (err) {
      result = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    Promise.resolve(result).then(
      () => batch.forEach((w) => w.done()),
      (err: unknown) => batch.forEach((w) => w.done(err ?? new Error('batch handler rejected'))),
    );
  }
}
