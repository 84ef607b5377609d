// The receive core's terms: what comes in, how it is delivered, and what a failure means for a retry.
import type { MsgHdrs } from '../nats/bus-connection';
import type { HeldBytes } from './byte-budget';
import type { MessageContext } from './message-context';
import {
  InvalidMessageError,
  MessageStorageError,
  StoredMessageCorruptError,
  StoredMessageNotFoundError,
} from '../errors/event-bus.errors';
import { isForgedToken } from '../claim-check/envelope';

/**
 * Why a message was not handled. Durable subscriptions ack, retry or dead-letter by it; core
 * subscriptions have nothing to settle and ignore it.
 * - `handler`: the handler (or a pipe, guard or interceptor) threw;
 * - `unavailable`: the storage could not give the body back now; a retry may succeed;
 * - `poison`: the message can never succeed (not JSON, a forged or unknown token, a damaged body).
 */
export interface DeliveryFailure {
  kind: 'handler' | 'unavailable' | 'poison';
  /** Short reason, as the dead letter's `Eventbus-Dead-Reason` header says it. */
  reason: string;
  error: unknown;
}

/** `undefined` when the handler ran and resolved (and any reply was sent). */
export type DeliveryOutcome = DeliveryFailure | undefined;

/** What a durable subscription adds to the handler's `MessageContext`. */
export type DurableContext = Pick<MessageContext, 'deliveryCount' | 'stream' | 'seq'>;

/**
 * A received message, as the receive core needs it: a core NATS message is one as it is, and a
 * durable one gives its subject, body and headers (it has no requester to reply to).
 */
export interface InboundMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: MsgHdrs;
  /** The requester's inbox; absent (or empty) for an event. */
  readonly reply?: string;
}

/**
 * Watches one handler's deliveries (a service endpoint's stats). Set on the handler function under
 * `DELIVERY_OBSERVER`, so a bus without observed handlers pays one property read per message.
 */
export interface DeliveryObserver {
  /** A delivery began (before recovery, so a claim-checked message's fetch is in its time). */
  started(): bigint;
  /** It ended: `failure` is undefined when the handler resolved. */
  settled(started: bigint, failure: DeliveryFailure | undefined): void;
}

export const DELIVERY_OBSERVER = Symbol('nestjs-nats-eventbus:delivery-observer');

/** How one message is delivered. */
export interface DeliverOptions {
  /** The subscription's topic when it has no wildcard: the subject the handler and the logs see. */
  literalSubject?: string;
  /** The message's share of its subscription's byte budget. */
  held?: HeldBytes;
  /** Recovery on receipt is on: a stored body of unknown size is reckoned at the threshold (see `prefetch`). */
  eager?: boolean;
  /** What a durable subscription adds to the context. */
  durable?: DurableContext;
}

/** What a failure to decode or recover a message means for a retry. */
export function failureOf(err: unknown): DeliveryFailure {
  if (err instanceof StoredMessageNotFoundError) return { kind: 'poison', reason: 'not_found', error: err };
  // Present but damaged: a retry reads the same bytes.
  if (err instanceof StoredMessageCorruptError) return { kind: 'poison', reason: 'corrupt', error: err };
  if (err instanceof InvalidMessageError)
    return { kind: 'poison', reason: isForgedToken(err) ? 'forbidden' : 'invalid_message', error: err };
  if (err instanceof MessageStorageError) return { kind: 'unavailable', reason: 'storage_unavailable', error: err };
  // A custom store's own error class: it may be passing; retrying is the safe side.
  return { kind: 'unavailable', reason: 'recover_failed', error: err };
}
