import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { isValidToken, StoredMessageEnvelope } from '../claim-check/envelope';
import {
  InvalidMessageError,
  InvalidOptionsError,
  MessageStorageError,
  StoredMessageNotFoundError,
} from '../errors/event-bus.errors';
import { MessageStorageManager } from './message-storage-manager';

export interface RedisStorageOptions {
  /** Seconds a stored message lives in Redis (`SET ... EX`). Default 300. */
  ttlSeconds?: number;
  /** Prefix of every key. Default `'eventbus:'`; `''` gives the bare-token keys of the Python services. */
  keyPrefix?: string;
  /** Give up on one SET/GET after this many ms, so a slow Redis cannot stall a subscription. Default 5000. */
  operationTimeoutMs?: number;
}

export const REDIS_STORAGE_DEFAULTS = { ttlSeconds: 300, keyPrefix: 'eventbus:', operationTimeoutMs: 5000 } as const;

/**
 * ioredis options the bus uses for the connection it creates. With the offline queue off, a
 * publish while Redis is down fails at once with `MessageStorageError` instead of waiting.
 * ioredis still reconnects by itself.
 */
export const REDIS_CLIENT_DEFAULTS = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 10_000,
  lazyConnect: true,
} as const;

/**
 * Claim-check storage on Redis: `SET prefix+token body EX ttl`, recovered with `GET`.
 * Messages are not deleted on recovery, so every subscriber of a fan-out can read them;
 * they expire by TTL. Only keys under the prefix with a valid token shape are ever read.
 */
export class RedisStorageManager extends MessageStorageManager {
  readonly ttlSeconds: number;
  readonly keyPrefix: string;
  readonly operationTimeoutMs: number;

  constructor(
    readonly client: Redis | Cluster,
    options: RedisStorageOptions = {},
  ) {
    super();
    this.ttlSeconds = options.ttlSeconds ?? REDIS_STORAGE_DEFAULTS.ttlSeconds;
    this.keyPrefix = options.keyPrefix ?? REDIS_STORAGE_DEFAULTS.keyPrefix;
    this.operationTimeoutMs = options.operationTimeoutMs ?? REDIS_STORAGE_DEFAULTS.operationTimeoutMs;
    if (!Number.isInteger(this.ttlSeconds) || this.ttlSeconds < 1)
      throw new InvalidOptionsError('storage.ttlSeconds', `must be a whole number of seconds >= 1, got ${String(options.ttlSeconds)}`);
    if (typeof this.keyPrefix !== 'string' || /[\s*?[\]]/.test(this.keyPrefix))
      throw new InvalidOptionsError('storage.keyPrefix', 'must be a string without spaces or glob characters (* ? [ ])');
    if (!(this.operationTimeoutMs > 0))
      throw new InvalidOptionsError('storage.operationTimeoutMs', 'must be a positive number of milliseconds');
  }

  /** Wait until the client is ready. Rejects with `MessageStorageError` after `timeoutMs`. */
  async connect(timeoutMs = 10_000): Promise<void> {
    const client = this.client as Redis;
    if (client.status === 'ready') return;
    if (client.status === 'wait') {
      client.connect().catch(() => undefined);
    }
    await new Promise<void>((resolve, reject) => {
      let lastError = '';
      const done = (err?: Error) => {
        clearTimeout(timer);
        client.off('ready', onReady);
        client.off('end', onEnd);
        client.off('error', onError);
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      const onEnd = () => done(new MessageStorageError('Redis connection was closed before it was ready'));
      // Refused credentials do not get better by retrying: fail at once, naming the option, never the secret.
      const onError = (err: unknown) => {
        lastError = describe(err);
        if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(lastError)) {
          done(new MessageStorageError(`Redis refused the credentials (check storage.redis username/password): ${lastError}`));
        }
      };
      const timer = setTimeout(
        () =>
          done(
            new MessageStorageError(
              `Redis did not become ready within ${timeoutMs} ms (check storage.redis)${lastError ? `: ${lastError}` : ''}`,
            ),
          ),
        timeoutMs,
      );
      client.on('ready', onReady);
      client.on('end', onEnd);
      client.on('error', onError);
      if (client.status === 'ready') done();
    });
  }

  /** Close the Redis connection. Only call it when this manager owns the client. */
  async disconnect(): Promise<void> {
    const client = this.client as Redis;
    if (client.status === 'end') return;
    try {
      await client.quit();
    } catch {
      client.disconnect();
    }
  }

  async storeMessage(body: Uint8Array): Promise<StoredMessageEnvelope> {
    const token = randomUUID();
    const value = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    try {
      await this.withTimeout(this.client.set(this.keyPrefix + token, value, 'EX', this.ttlSeconds), 'SET');
    } catch (err) {
      throw new MessageStorageError(`could not store message in Redis: ${describe(err)}`, { cause: err });
    }
    return { token, is_stored: true };
  }

  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    // The shape check is what confines reads to our own keys: no separators, wildcards or paths.
    if (!isValidToken(envelope.token)) throw new InvalidMessageError('envelope token has an unknown shape');
    let body: Buffer | null;
    try {
      body = await this.withTimeout(this.client.getBuffer(this.keyPrefix + envelope.token), 'GET');
    } catch (err) {
      throw new MessageStorageError(`could not recover message ${envelope.token} from Redis: ${describe(err)}`, { cause: err });
    }
    if (body === null) throw new StoredMessageNotFoundError(envelope.token);
    return body;
  }

  async deleteMessage(envelope: StoredMessageEnvelope): Promise<void> {
    if (!isValidToken(envelope.token)) return;
    try {
      await this.withTimeout(this.client.del(this.keyPrefix + envelope.token), 'DEL');
    } catch {
      // Best effort: the TTL removes it anyway.
    }
  }

  async ping(): Promise<void> {
    try {
      await this.withTimeout(this.client.ping(), 'PING');
    } catch (err) {
      throw new MessageStorageError(`Redis is not answering: ${describe(err)}`, { cause: err });
    }
  }

  private withTimeout<T>(op: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${this.operationTimeoutMs} ms`)), this.operationTimeoutMs);
    });
    return Promise.race([op, timeout]).finally(() => clearTimeout(timer));
  }
}

// Never echo connection strings: ioredis messages can carry host:port, which is fine, but not URLs.
function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\b(rediss?):\/\/[^\s]*/g, '$1://***');
}
