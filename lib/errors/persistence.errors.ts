// Errors of JetStream persistence: a publish no stream stored, a dead letter that is not there.
import { EventBusError, EventBusErrorCode } from './event-bus-error';

/**
 * Why a persisted publish was not stored, as the server (or the lack of an answer) said:
 * - `no_stream`: no stream captures the subject (none was ever made, or it was deleted).
 * - `jetstream_disabled`: the server or account has no JetStream.
 * - `no_age_limit`: a large body for a stream that keeps messages with no age limit (its stored body would expire first).
 * - `max_messages` / `max_bytes`: the stream is full and discards new messages (per subject too).
 * - `message_too_large`: over the stream's `max_msg_size`, or headers over 64 KiB.
 * - `wrong_last_sequence` / `wrong_last_msg_id` / `wrong_stream`: a `Nats-Expected-*` header did not hold.
 * - `unavailable`: the stream exists but did not answer (a leader election, a cluster short of resources).
 * - `timeout`: no acknowledgement within `jetstream.apiTimeoutMs`; the stream may have stored it.
 * - `closed`: the connection closed before the stream answered.
 * - `other`: any other refusal; `cause` holds the server's answer.
 */
export type NotPersistedReason =
  | 'no_stream'
  | 'jetstream_disabled'
  | 'no_age_limit'
  | 'max_messages'
  | 'max_bytes'
  | 'message_too_large'
  | 'wrong_last_sequence'
  | 'wrong_last_msg_id'
  | 'wrong_stream'
  | 'unavailable'
  | 'timeout'
  | 'closed'
  | 'other';

/**
 * Reasons for which the same publish, unchanged, may succeed later without anyone changing the
 * server: retry these (with the same `msgId`, so a stream that did store it reports a duplicate).
 * `max_messages`/`max_bytes` free up only as the stream's messages expire or are consumed.
 */
export const RETRYABLE_NOT_PERSISTED_REASONS: readonly NotPersistedReason[] = Object.freeze([
  'unavailable',
  'timeout',
  'max_messages',
  'max_bytes',
]);

/**
 * A `publish(…, { persist: true })` that no stream stored. `reason` says why, as a stable string;
 * `retryable` whether the same publish may succeed later (see `RETRYABLE_NOT_PERSISTED_REASONS`).
 * Retry with the same `msgId`: a stream that did store it recognises the repeat as a duplicate.
 */
export class NotPersistedError extends EventBusError {
  readonly code = EventBusErrorCode.NotPersisted;
  readonly retryable: boolean;
  constructor(
    readonly subject: string,
    readonly reason: NotPersistedReason,
    /** What happened, in words (the server's own text where it gave one). */
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`message on "${subject}" was not persisted (${reason}): ${detail}`, options);
    this.retryable = RETRYABLE_NOT_PERSISTED_REASONS.includes(reason);
  }
}

/**
 * No dead letter has this id: never one (a malformed id says so), or purged, or aged out of its
 * dead-letter stream. `id` is `<stream>:<sequence>` (see `DeadLetters`).
 */
export class DeadLetterNotFoundError extends EventBusError {
  readonly code = EventBusErrorCode.DeadLetterNotFound;
  constructor(
    readonly id: string,
    why = 'no such dead letter (purged, aged out, or never one)',
  ) {
    super(`dead letter "${id}": ${why}`);
  }
}
