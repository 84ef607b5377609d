import { StoredMessageEnvelope } from '../claim-check/envelope';
import type { StoreHints } from '../claim-check/store-hints';
import type { StoreConnection } from '../nats/store-connection';

// Stores import the hints from here, next to the class they implement.
export type { StoreHints } from '../claim-check/store-hints';
export type { StoreConnection } from '../nats/store-connection';

/** Injection token of the storage that takes bodies too large for NATS. */
export const MESSAGE_STORAGE_MANAGER = Symbol.for('nestjs-nats-eventbus:MESSAGE_STORAGE_MANAGER');

/**
 * Stores message bodies too large for NATS and gives them back by envelope.
 * Subclass it to use another store. Implementations must:
 * - store the bytes exactly and return an envelope whose token is a UUID (use `crypto.randomUUID()`);
 * - reject with `MessageStorageError` when the store fails, and with
 *   `StoredMessageNotFoundError` when the token is unknown or expired;
 * - never read anything for a token that fails `isValidToken`.
 */
export abstract class MessageStorageManager {
  abstract storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope>;
  abstract recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array>;

  /**
   * Store a JSON body given as text; the stored value is its UTF-8 bytes, exactly what
   * `storeMessage(Buffer.from(json))` stores. The bus calls this for large bodies so that a store
   * that takes text (Redis) skips an encode and a copy of the whole body. Default: `storeMessage`.
   */
  storeJson(json: string, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    return this.storeMessage(Buffer.from(json, 'utf8'), hints);
  }

  /** Remove a stored message early. Used for replies, which have one reader. Default: let the TTL do it. */
  async deleteMessage(_envelope: StoredMessageEnvelope): Promise<void> {}

  /** Throws when the store cannot serve requests. Used by `/_health`. Default: always up. */
  async ping(): Promise<void> {}

  /**
   * Optional: a store that keeps bodies on NATS itself (`ObjectStoreStorageManager`) is handed the
   * connection of the bus or transport it serves once that is open; bootstrap waits for it.
   */
  attachConnection?(connection: StoreConnection): Promise<void>;

  /**
   * Optional: make the store ready (connect a client). The `@nestjs/microservices` transport calls
   * it before it opens its NATS connection and fails to start when it rejects; `RedisStorageManager`
   * waits there for Redis. The module opens the Redis store it creates itself.
   */
  open?(): Promise<void>;

  // `declare`: no field is emitted, so a subclass's own property is the only one.
  /**
   * Set it to true when a body may be gone once someone read it (the Python services' bare-token
   * Redis keys, which they delete on read). The bus then recovers each body as soon as the message
   * arrives (`recoverOnReceipt` defaults to true). Absent means false.
   */
  declare readonly deletesOnRead?: boolean;

  /**
   * Set it to true when the store keeps a body under `hints.token` when it is given (a valid
   * token). An encrypted body is then bound to its token, so one swapped for another message's
   * body is rejected; and a body that is not bound is refused. Absent means false.
   */
  declare readonly honoursTokenHint?: boolean;
}
