// The bus's requests and their replies: one wildcard subscription on an inbox of this connection
// and a Map from reply token to the request waiting for it. nats.js's own request() muxes the same
// way, but per request it also builds a deferred, a timeout promise, a Promise.race and, once the
// reply is in, a RequestError('cancelled') nobody sees (a stack capture): together a third of the
// requester's CPU. What nats.js's mux does besides is done here too: the no-responders status, a
// refused publish or inbox subscription, the connection closing. Errors are the ones nats.js gave,
// mapped by toBusError as before. Replies carrying the service-error headers fail here as well.
import { createInbox, errors, Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
import { throwIfServiceError } from './headers';
import { toBusError } from './nats-errors';

interface Waiting {
  subject: string;
  timeoutMs: number;
  resolve(reply: Msg): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export class ReplyMux {
  /** `_INBOX.<nuid>.` (or the connection's `inboxPrefix`): a reply goes to this plus its request's token. */
  private readonly inbox: string;
  private readonly waiting = new Map<string, Waiting>();
  private sub?: Subscription;
  /** Tokens are never reused, so a late reply cannot be taken for a newer request's. */
  private seq = 0;

  constructor(
    private readonly nc: NatsConnection,
    inboxPrefix?: string,
  ) {
    this.inbox = `${createInbox(inboxPrefix)}.`;
  }

  /** How many requests are waiting for their reply. */
  get size(): number {
    return this.waiting.size;
  }

  /**
   * Publish `data` to `subject` and wait (`timeoutMs` at most) for one reply; a reply with the NATS
   * service-error headers fails with `RemoteHandlerError`.
   */
  request(subject: string, data: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Msg> {
    // As nats.js's request(): none once the connection drains (a plain publish still could).
    if (this.nc.isDraining()) return Promise.reject(toBusError(new errors.DrainingConnectionError(), subject, timeoutMs));
    const token = (this.seq++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(token, new errors.TimeoutError()), timeoutMs);
      this.waiting.set(token, { subject, timeoutMs, resolve, reject, timer });
      try {
        this.sub ??= this.listen();
        this.nc.publish(subject, data, { reply: this.inbox + token, headers });
      } catch (err) {
        this.fail(token, err);
      }
    });
  }

  /** The server refused a publish (a permission violation): the oldest request to that subject fails. */
  publishRefused(err: InstanceType<typeof errors.PermissionViolationError>): void {
    if (err.operation !== 'publish') return;
    for (const [token, w] of this.waiting) {
      if (w.subject === err.subject) return this.fail(token, new errors.RequestError(err.message, { cause: err }));
    }
  }

  private listen(): Subscription {
    const sub = this.nc.subscribe(`${this.inbox}*`, {
      callback: (err, msg) => {
        if (err) return this.inboxRefused(sub, err);
        const token = msg.subject.substring(this.inbox.length);
        const w = this.waiting.get(token);
        // A reply after its request timed out, or a second one: nobody waits for it.
        if (w === undefined) return;
        if (msg.data.length === 0 && msg.headers?.code === 503) {
          const none = new errors.NoRespondersError(w.subject);
          return this.fail(token, new errors.RequestError(none.message, { cause: none }));
        }
        this.waiting.delete(token);
        clearTimeout(w.timer);
        try {
          w.resolve(throwIfServiceError(w.subject, msg));
        } catch (remote) {
          w.reject(remote as Error);
        }
      },
    });
    // Closed with the connection (closed or drained): no reply can come any more.
    const closed = () => {
      if (this.sub !== sub) return;
      this.sub = undefined;
      this.failAll(new errors.RequestError('connection closed'));
    };
    sub.closed.then(closed, closed);
    return sub;
  }

  /** The server refused the inbox subscription: every waiting request fails, and the next one subscribes again. */
  private inboxRefused(sub: Subscription, err: Error): void {
    if (this.sub === sub) this.sub = undefined;
    this.failAll(new errors.RequestError(err.message, { cause: err }));
  }

  private failAll(err: Error): void {
    for (const token of [...this.waiting.keys()]) this.fail(token, err);
  }

  private fail(token: string, err: unknown): void {
    const w = this.waiting.get(token);
    if (w === undefined) return;
    this.waiting.delete(token);
    clearTimeout(w.timer);
    w.reject(toBusError(err, w.subject, w.timeoutMs));
  }
}
