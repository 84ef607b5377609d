import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from './ioredis-types';
import { isValidToken, StoredMessageEnvelope } from '../claim-check/envelope';
import { InvalidMessageError, InvalidOptionsError, MessageStorageError, StoredMessageNotFoundError } from '../errors/event-bus.errors';
import { MessageStorageManager, StoreHints } from './message-storage-manager';
import { withTimeout } from '../shared/deadline';
import { closeRedis, describe, waitUntilReady } from './redis-connection';
import { DEFAULTS, deepFreeze } from '../options/defaults';
import { string, MAX_TIMER_MS, wholeNumber } from '../options/rules';

export interface RedisStorageOptions {
  /** Seconds a stored message lives in Redis (`SET ... EX`). Default 300. */
  ttlSeconds?: number;
  /** Prefix of every key. Default `'eventbus:'`; `''` gives the bare-token keys of the Python services. */
  keyPrefix?: string;
  /** Give up on one SET/GET after this many ms, so a slow Redis cannot stall a subscription. Default 5000. */
  operationTimeoutMs?: number;
  /** Seconds a stored *reply* lives (it has one reader, who reads it within its timeout). Default 60, at most `ttlSeconds`. */
  replyTtlSeconds?: number;
  /**
   * With `keyPrefix: ''` only: keep a second copy of each stored message under
   * `eventbus:shadow:{<token>}`, a key the Python services do not know, with the same TTL, and read
   * it when the bare-token key is gone (a Python subscriber deletes what it reads). Costs a second
   * copy of each large body in Redis. Default: `true` with `keyPrefix: ''`, else `false`.
   */
  legacyShadowCopy?: boolean;
}

export const REDIS_STORAGE_DEFAULTS = deepFreeze({
  ttlSeconds: DEFAULTS.storage.ttlSeconds,
  keyPrefix: DEFAULTS.storage.keyPrefix,
  operationTimeoutMs: DEFAULTS.storage.operationTimeoutMs,
} as const);

/** ioredis options the bus uses for the connection it creates (see `DEFAULTS.redisClient`). */
export const REDIS_CLIENT_DEFAULTS = DEFAULTS.redisClient;

/** The key `ping()` writes (under the prefix): no token has this shape, so no envelope can name it. */
const HEALTH_PROBE_KEY = 'eventbus-health-probe';
const HEALTH_PROBE_TTL_MS = 60_000;
/**
 * Where legacy mode keeps its second copy: a name the Python services never GET or DEL. The token
 * in braces is the Redis Cluster hash tag, so the copy lives in the bare-token key's slot (COPY and
 * MULTI need one slot). Only ever built from a token that passed `isValidToken`.
 */
const shadowKey = (prefix: string, token: string) => `${prefix}eventbus:shadow:{${token}}`;

/**
 * Claim-check storage on Redis: `SET prefix+token body EX ttl`, recovered with `GET`.
 * Messages are not deleted on recovery, so every subscriber of a fan-out can read them;
 * they expire by TTL. Only keys under the prefix with a valid token shape are ever read.
 */
export class RedisStorageManager extends MessageStorageManager {
  readonly ttlSeconds: number;
  readonly keyPrefix: string;
  readonly operationTimeoutMs: number;
  readonly replyTtlSeconds: number;
  readonly legacyShadowCopy: boolean;
  // Bare-token keys are the Python services', which delete what they read: recover on receipt.
  readonly deletesOnRead: boolean;
  // Keeps a body under the token the bus proposes, so the body codec can bind encrypted bodies to it.
  readonly honoursTokenHint = true;
  // Redis before 6.2 has no COPY: the copy is then sent as a second SET.
  private copyUnsupported = false;

  constructor(
    readonly client: Redis | Cluster,
    options: RedisStorageOptions = {},
  ) {
    super();
    this.ttlSeconds = options.ttlSeconds ?? REDIS_STORAGE_DEFAULTS.ttlSeconds;
    this.keyPrefix = options.keyPrefix ?? REDIS_STORAGE_DEFAULTS.keyPrefix;
    this.operationTimeoutMs = options.operationTimeoutMs ?? REDIS_STORAGE_DEFAULTS.operationTimeoutMs;
    this.replyTtlSeconds = Math.min(options.replyTtlSeconds ?? DEFAULTS.storage.replyTtlSeconds, this.ttlSeconds);
    wholeNumber('storage.ttlSeconds', this.ttlSeconds, 1, 'seconds');
    wholeNumber('storage.replyTtlSeconds', options.replyTtlSeconds, 1, 'seconds');
    string('storage.keyPrefix', this.keyPrefix);
    if (/[\s*?[\]]/.test(this.keyPrefix))
      throw new InvalidOptionsError('storage.keyPrefix', 'must be a string without spaces or glob characters (* ? [ ])');
    wholeNumber('storage.operationTimeoutMs', this.operationTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
    if (options.legacyShadowCopy !== undefined && typeof options.legacyShadowCopy !== 'boolean') {
      throw new InvalidOptionsError('storage.legacyShadowCopy', `must be true or false, got ${typeof options.legacyShadowCopy}`);
    }
    if (options.legacyShadowCopy && this.keyPrefix !== '') {
      throw new InvalidOptionsError(
        'storage.legacyShadowCopy',
        `applies to keyPrefix '' only (the Python services' bare-token keys); with keyPrefix ${JSON.stringify(this.keyPrefix)} no Python service reads or deletes the bodies`,
      );
    }
    this.legacyShadowCopy = options.legacyShadowCopy ?? this.keyPrefix === '';
    this.deletesOnRead = this.keyPrefix === '';
  }

  /** What the transport calls before use: `connect()` with its default timeout. */
  open(): Promise<void> {
    return this.connect();
  }

  /** Wait until the client is ready. Rejects with `MessageStorageError` after `timeoutMs`. */
  async connect(timeoutMs: number = DEFAULTS.storage.connectTimeoutMs): Promise<void> {
    return waitUntilReady(this.client as Redis, timeoutMs);
  }

  /** Close the Redis connection. Only call it when this manager owns the client. */
  async disconnect(): Promise<void> {
    return closeRedis(this.client as Redis);
  }

  async storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    return this.set(Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength), hints);
  }

  /** Text goes to Redis as text: ioredis writes it to the socket as UTF-8, with no Buffer copy of the body. */
  async storeJson(json: string, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    return this.set(json, hints);
  }

  private async set(value: Buffer | string, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    const token = isValidToken(hints?.token) ? hints.token : randomUUID();
    const ttl = hints?.reply ? this.replyTtlSeconds : Math.max(this.ttlSeconds, hints?.minTtlSeconds ?? 0);
    try {
      // A reply has one reader, our own requester, which no Python service races.
      if (this.legacyShadowCopy && !hints?.reply) await this.timed(this.setWithShadow(token, value, ttl), 'SET');
      else await this.timed(this.client.set(this.keyPrefix + token, value, 'EX', ttl), 'SET');
    } catch (err) {
      throw new MessageStorageError(`could not store message in Redis: ${describe(err)}`, { cause: err });
    }
    return { token, is_stored: true };
  }

  /**
   * The body and its shadow in one transaction, so that no Python reader can delete the body
   * before the copy exists. COPY copies server-side (the body crosses the network once) and keeps
   * the TTL.
   */
  private async setWithShadow(token: string, value: Buffer | string, ttl: number): Promise<void> {
    const key = this.keyPrefix + token;
    const shadow = shadowKey(this.keyPrefix, token);
    if (!this.copyUnsupported) {
      try {
        return await execOrThrow(this.client.multi().set(key, value, 'EX', ttl).copy(key, shadow));
      } catch (err) {
        // The whole transaction was refused (EXECABORT), so nothing was written: send the copy as a second SET.
        if (!/unknown command/i.test((err as Error)?.message ?? '')) throw err;
        this.copyUnsupported = true;
      }
    }
    await execOrThrow(this.client.multi().set(key, value, 'EX', ttl).set(shadow, value, 'EX', ttl));
  }

  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    // The shape check is what confines reads to our own keys: no separators, wildcards or paths.
    if (!isValidToken(envelope.token)) throw new InvalidMessageError('envelope token has an unknown shape');
    let body: Buffer | null;
    try {
      body = await this.timed(this.client.getBuffer(this.keyPrefix + envelope.token), 'GET');
      // A Python subscriber deletes the bare-token key on its first read; this library's copy is still there.
      if (body === null && this.legacyShadowCopy) {
        body = await this.timed(this.client.getBuffer(shadowKey(this.keyPrefix, envelope.token)), 'GET');
      }
    } catch (err) {
      throw new MessageStorageError(`could not recover message ${envelope.token} from Redis: ${describe(err)}`, { cause: err });
    }
    if (body === null) throw new StoredMessageNotFoundError(envelope.token);
    return body;
  }

  async deleteMessage(envelope: StoredMessageEnvelope): Promise<void> {
    if (!isValidToken(envelope.token)) return;
    try {
      const keys = [this.keyPrefix + envelope.token];
      if (this.legacyShadowCopy) keys.push(shadowKey(this.keyPrefix, envelope.token));
      // One DEL: the shadow's hash tag puts both keys in one Redis Cluster slot.
      await this.timed(this.client.del(...keys), 'DEL');
    } catch {
      // Best effort: the TTL removes it anyway.
    }
  }

  /**
   * Throws unless Redis takes a write: a PING is answered by a Redis that refuses every SET
   * (maxmemory with noeviction: OOM; min-replicas-to-write: NOREPLICAS; a failed snapshot: MISCONF;
   * a replica: READONLY), so one tiny key under the prefix is written, with a short expiry.
   */
  async ping(): Promise<void> {
    try {
      await this.timed(this.client.set(this.keyPrefix + HEALTH_PROBE_KEY, '1', 'PX', HEALTH_PROBE_TTL_MS), 'SET');
    } catch (err) {
      const refused = /^(OOM|NOREPLICAS|MISCONF|READONLY)\b/.test((err as Error)?.message ?? '');
      throw new MessageStorageError(`Redis ${refused ? 'refuses writes' : 'is not answering'}: ${describe(err)}`, { cause: err });
    }
  }

  private timed<T>(op: Promise<T>, what: string): Promise<T> {
    return withTimeout(op, this.operationTimeoutMs, () => new Error(`${what} timed out after ${this.operationTimeoutMs} ms`));
  }
}

/** Run a MULTI; a command that failed inside it fails the whole (EXEC reports errors per command). */
async function execOrThrow(multi: { exec(): Promise<Array<[Error | null, unknown]> | null> }): Promise<void> {
  const failed = (await multi.exec())?.find(([err]) => err)?.[0];
  if (failed) throw failed;
}
