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
}

/** A message handler: plain or async. For a request, the return value is the reply. */
export type MessageHandler<T = any, R = unknown> = (payload: T, ctx: MessageContext) => R | Promise<R>;
