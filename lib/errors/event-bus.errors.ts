/** Stable error codes. Match on `err.code`, not on messages. */
export const EventBusErrorCode = {
  RpcTimeout: 'RPC_TIMEOUT',
  NoResponders: 'NO_RESPONDERS',
  RemoteHandler: 'REMOTE_HANDLER_ERROR',
  MessageStorage: 'MESSAGE_STORAGE_ERROR',
  StoredMessageNotFound: 'STORED_MESSAGE_NOT_FOUND',
  InvalidMessage: 'INVALID_MESSAGE',
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
  InvalidOptions: 'INVALID_OPTIONS',
  NotConnected: 'NOT_CONNECTED',
  InvalidSubject: 'INVALID_SUBJECT',
  NotPersisted: 'NOT_PERSISTED',
  StoredBodyAuthentication: 'STORED_BODY_AUTHENTICATION_FAILED',
  UnknownEncryptionKey: 'UNKNOWN_ENCRYPTION_KEY',
  DeadLetterNotFound: 'DEAD_LETTER_NOT_FOUND',
} as const;
export type EventBusErrorCode = (typeof EventBusErrorCode)[keyof typeof EventBusErrorCode];

/** Base class of every error this library throws on purpose. */
export abstract class EventBusError extends Error {
  abstract readonly code: EventBusErrorCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** No reply arrived within `timeout` ms. The request was sent once and never re-sent. */
export class RpcTimeoutError extends EventBusError {
  readonly code = EventBusErrorCode.RpcTimeout;
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on "${subject}" within ${timeoutMs} ms`, options);
  }
}

/** The server knew of no subscriber for the request subject (answered at once). */
export class NoRespondersError extends EventBusError {
  readonly code = EventBusErrorCode.NoResponders;
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on "${subject}"`, options);
  }
}

/** The remote handler threw; `remoteMessage` and `remoteCode` come from the NATS service-error headers. */
export class RemoteHandlerError extends EventBusError {
  readonly code = EventBusErrorCode.RemoteHandler;
  constructor(
    readonly subject: string,
    readonly remoteMessage: string,
    readonly remoteCode: number,
  ) {
    super(`remote handler for "${subject}" failed (${remoteCode}): ${remoteMessage}`);
  }
}

/** Storing or recovering a claim-checked message failed (storage down, slow or refusing). */
export class MessageStorageError extends EventBusError {
  // Typed as the union so that the body codec's subclasses below can carry codes of their own.
  readonly code: EventBusErrorCode = EventBusErrorCode.MessageStorage;
}

/**
 * The stored body is there but damaged (its size or digest differs from what was written): reading
 * it again will not help. Still a `MessageStorageError`; a durable subscription dead-letters it at
 * once with the reason `corrupt`. A custom store may throw it too.
 */
export class StoredMessageCorruptError extends MessageStorageError {}

/**
 * An encrypted stored body failed AES-256-GCM authentication: a byte changed, the body was cut
 * short, it belongs to another message (swapped), or it was not encrypted where
 * `storage.encryption.requireEncryption` asks for it. Nothing of it is delivered; a durable
 * subscription dead-letters it with the reason `corrupt`.
 */
export class StoredBodyAuthenticationError extends StoredMessageCorruptError {
  override readonly code = EventBusErrorCode.StoredBodyAuthentication;
  constructor(
    readonly token: string,
    /** What did not hold, without any of the body. */
    readonly problem: string,
  ) {
    super(`stored body ${token} was rejected: ${problem}`);
  }
}

/**
 * A stored body names an encryption key id that none of `storage.encryption.keys` has (a removed
 * key, or a publisher ahead of this service's keys), also after asking the key provider again.
 */
export class UnknownEncryptionKeyError extends StoredMessageCorruptError {
  override readonly code = EventBusErrorCode.UnknownEncryptionKey;
  constructor(
    readonly keyId: string,
    readonly token: string,
    reason = 'which is not among storage.encryption.keys',
  ) {
    super(`stored body ${token} is encrypted with key "${keyId}", ${reason}`);
  }
}

/** The envelope's token is unknown to the storage: never stored, or expired by TTL. */
export class StoredMessageNotFoundError extends EventBusError {
  readonly code = EventBusErrorCode.StoredMessageNotFound;
  constructor(readonly token: string) {
    super(`stored message "${token}" not found (unknown or expired)`);
  }
}

/** A body that is not UTF-8 JSON, a payload that cannot be encoded as JSON, or a malformed envelope. */
export class InvalidMessageError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidMessage;
}

/**
 * The encoded body is over the threshold and no storage is configured to take it, or the headers
 * alone leave no room under the server's max_payload for a body or an envelope.
 */
export class PayloadTooLargeError extends EventBusError {
  readonly code = EventBusErrorCode.PayloadTooLarge;
  constructor(
    readonly subject: string,
    /** Bytes that did not fit (NaN when nats.js refused without saying). */
    readonly size: number,
    readonly limit: number,
    reason = 'and no message storage is configured',
    options?: { cause?: unknown },
  ) {
    super(
      Number.isFinite(size)
        ? `payload for "${subject}" is ${size} bytes, over the ${limit}-byte limit, ${reason}`
        : `payload for "${subject}" is too large: ${reason}`,
      options,
    );
  }
}

/** A configuration value is wrong. The message names the option. */
export class InvalidOptionsError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidOptions;
  constructor(
    readonly option: string,
    /** What is wrong with it, without the option's name. */
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`invalid EventBus option "${option}": ${problem}`, options);
  }
}

/** The bus is not connected yet, or is closing/closed. */
export class NotConnectedError extends EventBusError {
  readonly code = EventBusErrorCode.NotConnected;
}

/**
 * A topic or queue name that NATS would not accept as given (whitespace or control characters, an
 * empty token, a wildcard where publishing allows none, too long). Checked before anything reaches
 * the wire, so the connection and every other subscription keep working.
 */
export class InvalidSubjectError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidSubject;
  constructor(
    /** `topic` or `queue`. */
    readonly kind: 'topic' | 'queue',
    readonly value: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`invalid ${kind} ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)}: ${problem}`, options);
  }
}

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
