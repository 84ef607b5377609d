import type { MsgHdrs } from '../nats/bus-connection';

/** What a handler learns about the message besides its payload. */
export interface MessageContext {
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
}

/** A message handler: plain or async. For a request, the return value is the reply. */
export type MessageHandler<T = any, R = unknown> = (payload: T, ctx: MessageContext) => R | Promise<R>;
