// Errors of the claim-check storage: the stored body is unreachable, missing, damaged or unreadable.
import { EventBusError, EventBusErrorCode } from './event-bus-error';

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
