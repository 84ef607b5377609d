import { randomUUID } from 'node:crypto';
import { isValidToken, StoredMessageEnvelope } from '../claim-check/envelope';
import { InvalidMessageError, StoredMessageNotFoundError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { MessageStorageManager, StoreHints } from './message-storage-manager';

export interface InMemoryStorageOptions {
  /** Seconds a stored message lives. Default 300. */
  ttlSeconds?: number;
}

/**
 * Keeps stored messages in this process's memory. Only a publisher and subscriber in the same
 * process can use it: meant for tests and single-process tools, never for a fleet.
 */
export class InMemoryStorageManager extends MessageStorageManager {
  // Keeps a body under the token the bus proposes, so the body codec can bind encrypted bodies to it.
  readonly honoursTokenHint = true;
  private readonly entries = new Map<string, { body: Uint8Array; expiresAt: number }>();
  private readonly ttlMs: number;

  constructor(options: InMemoryStorageOptions = {}) {
    super();
    this.ttlMs = (options.ttlSeconds ?? DEFAULTS.storage.ttlSeconds) * 1000;
  }

  async storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    this.evictExpired();
    const token = isValidToken(hints?.token) ? hints.token : randomUUID();
    const ttlMs = hints?.reply
      ? Math.min(this.ttlMs, DEFAULTS.storage.replyTtlSeconds * 1000)
      : Math.max(this.ttlMs, (hints?.minTtlSeconds ?? 0) * 1000);
    this.entries.set(token, { body: Uint8Array.from(body), expiresAt: Date.now() + ttlMs });
    return { token, is_stored: true };
  }

  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    if (!isValidToken(envelope.token)) throw new InvalidMessageError('envelope token has an unknown shape');
    const entry = this.entries.get(envelope.token);
    if (!entry || entry.expiresAt <= Date.now()) throw new StoredMessageNotFoundError(envelope.token);
    return entry.body;
  }

  async deleteMessage(envelope: StoredMessageEnvelope): Promise<void> {
    this.entries.delete(envelope.token);
  }

  /** Number of live entries; for tests. */
  get size(): number {
    this.evictExpired();
    return this.entries.size;
  }

  private evictExpired(): void {
    const now = Date.now();
    for (const [token, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(token);
  }
}
