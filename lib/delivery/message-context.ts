import { InvalidOptionsError } from '../errors/event-bus.errors';
import type { MsgHdrs } from '../nats/bus-connection';
import { wholeNumber } from '../options/rules';

/**
 * What a handler learns about the message besides its payload.
 *
 * A class, not an interface, as Nest's own `NatsContext` is: a type in a decorated signature must
 * be a value under `isolatedModules` + `emitDecoratorMetadata` (what `nest new` generates), so
 * `ctx: MessageContext` on a `@Subscribe` method compiles with a plain `import`. Tests of a handler
 * can build one: `new MessageContext({ subject: 'edge.list.request', recovered: false })`.
 */
export class MessageContext {
  /** The subject the message arrived on. */
  subject: string;
  /** The reply inbox when the message is a request; the handler's return value is sent there. */
  reply?: string;
  /** NATS headers, when the publisher sent any. */
  headers?: MsgHdrs;
  /** True when the payload was recovered from message storage (it crossed NATS as an envelope). */
  recovered: boolean;
  /** The claim-check token, when `recovered`. */
  token?: string;
  /** Durable subscriptions: how many times this message has been delivered, counting from 1. */
  deliveryCount?: number;
  /** Durable subscriptions: the JetStream stream that keeps the message. */
  stream?: string;
  /** Durable subscriptions: the message's sequence number in `stream`. */
  seq?: number;
  // Set by a durable subscription only: where retryIn's request goes.
  readonly #retry: ((ms: number) => void) | undefined;

  constructor(init: MessageContextInit) {
    this.subject = init.subject;
    this.recovered = init.recovered;
    // Only the fields that apply, so a logged or compared context shows no empty keys.
    if (init.reply !== undefined) this.reply = init.reply;
    if (init.headers !== undefined) this.headers = init.headers;
    if (init.token !== undefined) this.token = init.token;
    if (init.deliveryCount !== undefined) this.deliveryCount = init.deliveryCount;
    if (init.stream !== undefined) this.stream = init.stream;
    if (init.seq !== undefined) this.seq = init.seq;
    this.#retry = init.onRetryIn;
  }

  /**
   * Durable subscriptions: once the handler resolves, nak the message with this delay (whole ms, >= 0)
   * instead of acking it. Not a failure (no backoff step, no error logged), but a delivery: JetStream
   * counts each one, so a message is handed to the handler at most `maxDeliver` times in all and then
   * dead-lettered. A handler that throws after calling it fails as usual. The last call wins.
   * Anywhere else it throws `InvalidOptionsError` (option `retryIn`): a core NATS message is not redelivered.
   */
  retryIn(ms: number): void {
    if (!this.#retry)
      throw new InvalidOptionsError(
        'retryIn',
        `applies to durable subscriptions only: a core NATS message on "${this.subject}" is not redelivered`,
      );
    wholeNumber('retryIn(ms)', ms, 0, 'milliseconds', MAX_NAK_DELAY_MS);
    this.#retry(ms);
  }
}

/** Longest `retryIn` delay, about 10 years: the nak delay travels in nanoseconds. */
const MAX_NAK_DELAY_MS = 10 * 365 * 24 * 3600 * 1000;

/** The fields of a `MessageContext`, as the bus (or a test) gives them to its constructor. */
export type MessageContextInit = Pick<
  MessageContext,
  'subject' | 'reply' | 'headers' | 'recovered' | 'token' | 'deliveryCount' | 'stream' | 'seq'
> & {
  /** Durable subscriptions: receives `retryIn`'s delay. Without it `retryIn` throws. */
  onRetryIn?: (ms: number) => void;
};

/** A message handler: plain or async. For a request, the return value is the reply. */
export type MessageHandler<T = any, R = unknown> = (payload: T, ctx: MessageContext) => R | Promise<R>;
