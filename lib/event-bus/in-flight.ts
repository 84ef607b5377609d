import { NotConnectedError } from '../errors/event-bus.errors';
import { settleWithin } from '../shared/deadline';

/**
 * What `close()` must not leave behind: large publishes still being stored (it waits for them, so
 * they go out before the connection drains), and requests still waiting for a reply (it fails them
 * with `NotConnectedError` at once, rather than letting them run into `RpcTimeoutError`).
 */
export class InFlight {
  private readonly publishes = new Set<Promise<unknown>>();
  private readonly requests = new Map<(err: Error) => void, string>();

  /** `op`, counted until it settles. */
  publish<T>(op: Promise<T>): Promise<T> {
    this.publishes.add(op);
    const forget = () => this.publishes.delete(op);
    op.then(forget, forget);
    return op;
  }

  /** `op`, or a `NotConnectedError` as soon as `failRequests` runs. */
  request<T>(topic: string, op: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.requests.set(reject, topic);
      op.then(
        (value) => {
          this.requests.delete(reject);
          resolve(value);
        },
        (err) => {
          this.requests.delete(reject);
          reject(err);
        },
      );
    });
  }

  /** Wait (at most `ms`) for the publishes started so far. */
  async waitForPublishes(ms: number): Promise<void> {
    if (this.publishes.size) await settleWithin(Promise.allSettled([...this.publishes]), ms);
  }

  /** Fail every request still waiting. */
  failRequests(): void {
    for (const [reject, topic] of this.requests) {
      reject(new NotConnectedError(`EventBus closed while the request to "${topic}" was waiting for its reply`));
    }
    this.requests.clear();
  }
}
