import { randomUUID } from 'node:crypto';
import { isValidToken, StoredMessageEnvelope } from '../claim-check/envelope';
import { InvalidMessageError, InvalidOptionsError, MessageStorageError, StoredMessageNotFoundError } from '../errors/event-bus.errors';
import { BUCKET_NAME, ObjectStoreBucket, ObjectStoreBucketConfig } from '../nats/object-store-bucket';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, MAX_TIMER_MS, wholeNumber } from '../options/rules';
import { MessageStorageManager, StoreConnection, StoreHints } from './message-storage-manager';

export interface ObjectStoreStorageOptions {
  /** Name of the JetStream object store bucket (stream `OBJ_<bucket>`). Default `'eventbus'`. */
  bucket?: string;
  /** Seconds a stored body lives: the bucket's `max_age`. Default 300. */
  ttlSeconds?: number;
  /** Copies of each body in a JetStream cluster (the stream's RAFT replicas), 1 to 5. Default 1. */
  replicas?: number;
  /** `'file'` (survives a server restart) or `'memory'`. Default `'file'`. */
  storage?: 'file' | 'memory';
  /** Bytes the bucket may hold, -1 for no limit; a body that would pass it fails with `MessageStorageError`. Default -1. */
  maxBytes?: number;
  /** Time allowed for one JetStream call or chunk ack, and between two chunks of a read, in ms. Default 5000. */
  operationTimeoutMs?: number;
}

export const OBJECT_STORE_STORAGE_DEFAULTS = DEFAULTS.objectStore;

// JetStream refuses stream names over 255 characters (API error 10052), and the bucket's stream is "OBJ_" + bucket.
const MAX_BUCKET_NAME_LENGTH = 255 - 'OBJ_'.length;

const OPTION_KEYS = ['bucket', 'ttlSeconds', 'replicas', 'storage', 'maxBytes', 'operationTimeoutMs'] as const;

/** Largest chunk: a JetStream message each; never above the server's max_payload. */
const MAX_CHUNK_BYTES = 1024 * 1024;

/**
 * Claim-check storage in a JetStream object store bucket, over the NATS connection of the bus (or
 * transport) that uses it: no second system to run. The bucket is created, or brought to these
 * options, when that connection opens. A body is stored under a fresh UUID token in chunks, with
 * its SHA-256 digest written after the last chunk; a read checks the digest, so a body cut short
 * (a server restart mid-write) is never returned as whole. Bodies expire with the bucket's TTL;
 * replies too (an object store has one TTL per bucket), and a body that must live longer (a
 * persisted message's, `minTtlSeconds`) is refused with `MessageStorageError`.
 */
export class ObjectStoreStorageManager extends MessageStorageManager {
  readonly bucketName: string;
  readonly ttlSeconds: number;
  readonly replicas: number;
  readonly storageType: 'file' | 'memory';
  readonly maxBytes: number;
  readonly operationTimeoutMs: number;
  // Keeps a body under the token the bus proposes, so the body codec can bind encrypted bodies to it.
  readonly honoursTokenHint = true;
  private readonly buckets = new Map<StoreConnection, Promise<ObjectStoreBucket>>();

  constructor(options: ObjectStoreStorageOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new InvalidOptionsError('storage.objectStore', 'must be an object');
    knownKeys('storage.objectStore', options, OPTION_KEYS);
    const d = OBJECT_STORE_STORAGE_DEFAULTS;
    this.bucketName = options.bucket ?? d.bucket;
    this.ttlSeconds = options.ttlSeconds ?? d.ttlSeconds;
    this.replicas = options.replicas ?? d.replicas;
    this.storageType = options.storage ?? d.storage;
    this.maxBytes = options.maxBytes ?? d.maxBytes;
    this.operationTimeoutMs = options.operationTimeoutMs ?? d.operationTimeoutMs;
    if (typeof this.bucketName !== 'string' || !BUCKET_NAME.test(this.bucketName))
      throw new InvalidOptionsError('storage.objectStore.bucket', 'must be a non-empty string of letters, digits, "-" and "_"');
    if (this.bucketName.length > MAX_BUCKET_NAME_LENGTH) {
      throw new InvalidOptionsError(
        'storage.objectStore.bucket',
        `must be at most ${MAX_BUCKET_NAME_LENGTH} characters, got ${this.bucketName.length} (its stream is named "OBJ_<bucket>", and JetStream allows 255)`,
      );
    }
    wholeNumber('storage.objectStore.ttlSeconds', this.ttlSeconds, 1, 'seconds');
    wholeNumber('storage.objectStore.replicas', this.replicas, 1, '', 5);
    if (this.storageType !== 'file' && this.storageType !== 'memory')
      throw new InvalidOptionsError('storage.objectStore.storage', `must be 'file' or 'memory', got ${String(this.storageType)}`);
    if (this.maxBytes !== -1) wholeNumber('storage.objectStore.maxBytes', this.maxBytes, 1, 'bytes (or -1 for no limit)');
    wholeNumber('storage.objectStore.operationTimeoutMs', this.operationTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
  }

  /**
   * Use `connection` for the bucket: creates or updates it. The `EventBus` and the transport call
   * this once their connection is open; while several are attached, the first still open serves.
   * Rejects with `MessageStorageError` (no JetStream, no leader) or `InvalidOptionsError`.
   */
  attachConnection(connection: StoreConnection): Promise<void> {
    let opening = this.buckets.get(connection);
    if (!opening) {
      const config: ObjectStoreBucketConfig = {
        bucket: this.bucketName,
        ttlSeconds: this.ttlSeconds,
        replicas: this.replicas,
        storage: this.storageType,
        maxBytes: this.maxBytes,
        operationTimeoutMs: this.operationTimeoutMs,
        chunkBytes: Math.min(MAX_CHUNK_BYTES, connection.maxPayload),
      };
      const attempt = ObjectStoreBucket.open(connection, config);
      opening = attempt;
      this.buckets.set(connection, attempt);
      attempt.catch(() => {
        if (this.buckets.get(connection) === attempt) this.buckets.delete(connection);
      });
    }
    return opening.then(() => undefined);
  }

  async storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    // One TTL per bucket: a body that must outlive it (a persisted message's) cannot be kept.
    if (hints?.minTtlSeconds !== undefined && hints.minTtlSeconds > this.ttlSeconds) {
      throw new MessageStorageError(
        `object store bucket "${this.bucketName}" keeps bodies ${this.ttlSeconds} s, but this one must live ${hints.minTtlSeconds} s (its stream's maxAgeSeconds and a margin); raise storage.objectStore.ttlSeconds`,
      );
    }
    const bucket = await this.bucket();
    const token = isValidToken(hints?.token) ? hints.token : randomUUID();
    await bucket.put(token, body, Date.now());
    return { token, is_stored: true };
  }

  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    // Object names are our tokens only: the shape check keeps reads to what a bus stored.
    if (!isValidToken(envelope.token)) throw new InvalidMessageError('envelope token has an unknown shape');
    const body = await (await this.bucket()).get(envelope.token);
    if (body === null) throw new StoredMessageNotFoundError(envelope.token);
    return body;
  }

  async deleteMessage(envelope: StoredMessageEnvelope): Promise<void> {
    if (!isValidToken(envelope.token)) return;
    try {
      await (await this.bucket()).delete(envelope.token);
    } catch {
      // Best effort: the TTL removes it anyway.
    }
  }

  /** Throws `MessageStorageError` unless the bucket answers. Used by `/_health`. */
  async ping(): Promise<void> {
    await (await this.bucket()).ping();
  }

  /** The bucket on the first attached connection that is still open. */
  private bucket(): Promise<ObjectStoreBucket> {
    for (const [connection, bucket] of this.buckets) {
      if (connection.state !== 'closed') return bucket;
      this.buckets.delete(connection);
    }
    return Promise.reject(
      new MessageStorageError(
        `object store bucket "${this.bucketName}" has no open NATS connection: ObjectStoreStorageManager uses the connection of the EventBus or transport it is given to (connect it first)`,
      ),
    );
  }
}
