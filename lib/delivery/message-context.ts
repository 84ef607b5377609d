import type { MsgHdrs } from '../nats/bus-connection';

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
  }
}

/** The fields of a `MessageContext`, as the bus (or a test) gives them to its constructor. */
export type MessageContextInit = Pick<
  MessageContext,
  'subject' | 'reply' | 'headers' | 'recovered' | 'token' | 'deliveryCount' | 'stream' | 'seq'
>;

/** A message handler: plain or async. For a request, the return value is the reply. */
export type MessageHandler<T = any, R = unknown> = (payload: T, ctx: MessageContext) => R | Promise<R>;
