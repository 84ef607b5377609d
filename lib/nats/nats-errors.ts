import { errors } from '@nats-io/transport-node';
import {
  EventBusError,
  InvalidOptionsError,
  InvalidSubjectError,
  NoRespondersError,
  NotConnectedError,
  PayloadTooLargeError,
  RpcTimeoutError,
} from '../errors/event-bus.errors';

/**
 * The library's error for one that nats.js threw or rejected with, the original kept as `cause`:
 * users match on our classes and codes only, whatever nats.js version is underneath.
 */
export function toBusError(err: unknown, subject: string, timeoutMs?: number): EventBusError {
  if (err instanceof EventBusError) return err;
  const cause = { cause: err };
  if (err instanceof errors.NoRespondersError || (err instanceof errors.RequestError && err.isNoResponders()))
    return new NoRespondersError(subject, cause);
  if (err instanceof errors.TimeoutError && timeoutMs !== undefined) return new RpcTimeoutError(subject, timeoutMs, cause);
  if (err instanceof errors.InvalidSubjectError) return new InvalidSubjectError('topic', subject, 'refused by the NATS client', cause);
  const message = err instanceof Error ? err.message : String(err);
  // The only payload check nats.js makes: body and headers together over the server's max_payload.
  if (err instanceof errors.InvalidArgumentError && /payload/.test(message))
    return new PayloadTooLargeError(subject, NaN, NaN, `refused by the NATS client (${message})`, cause);
  if (err instanceof errors.InvalidArgumentError)
    return new InvalidOptionsError('headers', `refused by the NATS client: ${message}`, cause);
  // Closed, draining, disconnected, refused by the server: the connection cannot carry it.
  return new NotConnectedError(`NATS could not carry the message on "${subject}": ${message}`, cause);
}

/** How many times a bootstrap create (stream, bucket) is tried when the server does not answer in time. */
export const CREATE_ATTEMPTS = 3;

/**
 * `op`, tried again when nats.js times out waiting for the answer. A replicated stream's first
 * create waits for its RAFT group to elect a leader, which on a new or busy cluster can outlast one
 * API timeout; the create was usually applied, and the next try finds what the first one made.
 * Any other failure, and the last timeout, reach the caller unchanged.
 */
export async function retryWhenTimedOut<T>(op: () => Promise<T>, attempts = CREATE_ATTEMPTS): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (attempt >= attempts || !(err instanceof errors.TimeoutError)) throw err;
    }
  }
}

// JetStream's "replicas > 1 not supported in non-clustered mode" (and "insufficient resources" on
// a cluster smaller than the replica count).
const REPLICAS_REFUSED = new Set([10074, 10023]);

/**
 * For a create that JetStream refused because it cannot place `replicas` copies: what to change,
 * naming the option. Undefined for any other refusal.
 */
export function replicasRefusal(err: unknown, option: string, replicas: number): InvalidOptionsError | undefined {
  const apiError = (err as { apiError?: () => { err_code?: number; description?: string } }).apiError?.();
  if (!apiError?.err_code || !REPLICAS_REFUSED.has(apiError.err_code)) return undefined;
  return new InvalidOptionsError(
    option,
    `is ${replicas}, which the server cannot place (JetStream ${apiError.err_code}: ${apiError.description}); a single nats-server keeps 1 replica, so use 1 there and 3 only on a cluster of 3 or more`,
    { cause: err },
  );
}
