import { StoredMessageEnvelope } from '../claim-check/envelope';
import type { BusConnection } from '../nats/bus-connection';

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
/** What the bus tells a store about a body it stores. */
export interface StoreHints {
  /**
   * The body is a reply to one requester, which reads it within its request timeout. Stores keep
   * replies for a short TTL (Redis: `replyTtlSeconds`, default 60 s) and the requester does not
   * delete them: a responder must not be able to make it delete another message's body.
   */
  reply?: boolean;
  /**
   * Keep the body at least this many seconds: it belongs to a message a JetStream stream keeps that
   * long (`publish(…, { persist: true })`). A store whose expiry is shorter takes the longer one;
   * a store that cannot keep it that long must reject with `MessageStorageError`.
   */
  minTtlSeconds?: number;
}

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
  attachConnection?(connection: BusConnection): Promise<void>;
}
