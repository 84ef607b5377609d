import { FactoryProvider, Provider } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from '../storage/ioredis-types';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, storageManager, MAX_TIMER_MS, wholeNumber } from '../options/rules';
import { MESSAGE_STORAGE_MANAGER, MessageStorageManager } from '../storage/message-storage-manager';
import { ObjectStoreStorageManager } from '../storage/object-store-storage-manager';
import { REDIS_CLIENT_DEFAULTS, RedisStorageManager } from '../storage/redis-storage-manager';
import { BODY_CODEC_KEYS, withBodyCodec } from '../claim-check/body-codec';
import { EVENT_BUS_MODULE_OPTIONS } from './event-bus.module-definition';
import {
  EventBusModuleOptions,
  EventBusStorageOptions,
  ObjectStoreStorageModuleOptions,
  RedisStorageModuleOptions,
} from './event-bus-module.options';

/**
 * Name of the bus's Redis connection. The token is spelled as `@nestjs-modules/ioredis` spells
 * its own, so `@InjectRedis(EVENT_BUS_REDIS_CONNECTION)` from that package gives the same client;
 * the library itself no longer needs it (its Nest 11 terminus dependency nests a second Nest into
 * Nest 12 apps).
 */
export const EVENT_BUS_REDIS_CONNECTION = 'eventbus';
export const EVENT_BUS_REDIS = `${EVENT_BUS_REDIS_CONNECTION}_IORedisModuleConnectionToken`;

/** How the bus's ioredis client is made: one server, or a cluster. */
export type RedisConnectionOptions =
  | { type: 'single'; url?: string; options: RedisOptions }
  | { type: 'cluster'; nodes: ConstructorParameters<typeof Cluster>[0]; options: ClusterOptions };

/**
 * ioredis is loaded only when Redis storage is configured: with the object store or a store of your
 * own, it need not be installed.
 */
function loadIoredis(): typeof import('ioredis') {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('ioredis');
  } catch (err) {
    // Only ioredis itself missing gets the hint; a broken install of it fails as it is.
    if ((err as { code?: string }).code !== 'MODULE_NOT_FOUND' || !/'ioredis'/.test((err as Error).message)) throw err;
    throw new InvalidOptionsError(
      'storage.redis',
      'needs the ioredis package, which is not installed: run `npm install ioredis` (or use storage.objectStore, which needs no Redis)',
      { cause: err },
    );
  }
}

function createRedisConnection(o: RedisConnectionOptions): Redis | Cluster {
  const { Cluster, Redis } = loadIoredis();
  if (o.type === 'cluster') return new Cluster(o.nodes, o.options);
  return o.url ? new Redis(o.url, o.options) : new Redis(o.options);
}

function isObjectStoreStorage(storage: EventBusStorageOptions): storage is ObjectStoreStorageModuleOptions {
  return 'objectStore' in storage;
}

function isRedisStorage(storage: EventBusStorageOptions | undefined): storage is RedisStorageModuleOptions {
  return !!storage && typeof storage === 'object' && 'redis' in storage;
}

/** Map our options onto an ioredis client's, with the bus's client defaults. */
export function toRedisModuleOptions(storage: RedisStorageModuleOptions): RedisConnectionOptions {
  const redis = storage.redis;
  if (!redis || typeof redis !== 'object')
    throw new InvalidOptionsError('storage.redis', 'must be { url, options } or { cluster: { nodes } }');
  if ('cluster' in redis) {
    const nodes = redis.cluster?.nodes;
    if (!Array.isArray(nodes) || nodes.length === 0)
      throw new InvalidOptionsError('storage.redis.cluster.nodes', 'must list at least one node');
    return {
      type: 'cluster',
      nodes,
      options: {
        enableOfflineQueue: REDIS_CLIENT_DEFAULTS.enableOfflineQueue,
        lazyConnect: true,
        ...redis.cluster.options,
        redisOptions: { maxRetriesPerRequest: REDIS_CLIENT_DEFAULTS.maxRetriesPerRequest, ...redis.cluster.options?.redisOptions },
      },
    };
  }
  if (redis.url !== undefined && (typeof redis.url !== 'string' || !/^rediss?:\/\//.test(redis.url))) {
    throw new InvalidOptionsError('storage.redis.url', 'must start with redis:// or rediss://');
  }
  if (redis.url === undefined && !redis.options) {
    throw new InvalidOptionsError('storage.redis', 'needs a url or ioredis options');
  }
  return { type: 'single', url: redis.url, options: { ...REDIS_CLIENT_DEFAULTS, ...redis.options } };
}

/** The Redis client the bus owns, or null when storage is not Redis. */
export const redisConnectionProvider: FactoryProvider = {
  provide: EVENT_BUS_REDIS,
  inject: [EVENT_BUS_MODULE_OPTIONS],
  useFactory: (options: EventBusModuleOptions): Redis | Cluster | null =>
    isRedisStorage(options.storage) ? createRedisConnection(toRedisModuleOptions(options.storage)) : null,
};

export const storageProvider: Provider = {
  provide: MESSAGE_STORAGE_MANAGER,
  inject: [EVENT_BUS_MODULE_OPTIONS, ModuleRef, EVENT_BUS_REDIS],
  useFactory: async (
    options: EventBusModuleOptions,
    moduleRef: ModuleRef,
    redis: Redis | Cluster | null,
  ): Promise<MessageStorageManager | null> => {
    const storage = options.storage;
    if (storage === undefined || storage === null) return null;
    if (typeof storage !== 'object') throw new InvalidOptionsError('storage', 'must be an object');
    if (isRedisStorage(storage)) {
      knownKeys('storage', storage, [
        'redis',
        'ttlSeconds',
        'keyPrefix',
        'operationTimeoutMs',
        'replyTtlSeconds',
        'connectTimeoutMs',
        'legacyShadowCopy',
        ...BODY_CODEC_KEYS,
      ]);
      let manager: RedisStorageManager;
      try {
        // The shadow copy is for Python readers, which a body codec rules out.
        const codec = !!storage.encryption || !!storage.compression;
        const legacyShadowCopy = storage.legacyShadowCopy ?? (codec ? false : undefined);
        manager = new RedisStorageManager(redis!, { ...storage, legacyShadowCopy });
        wholeNumber('storage.connectTimeoutMs', storage.connectTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
        await withBodyCodec(manager, storage);
        await manager.connect(storage.connectTimeoutMs ?? DEFAULTS.storage.connectTimeoutMs);
      } catch (err) {
        // Bootstrap fails, so no shutdown hook will close this client: stop its reconnecting here.
        redis!.disconnect();
        throw err;
      }
      return manager;
    }
    if (isObjectStoreStorage(storage)) {
      knownKeys('storage', storage, ['objectStore', ...BODY_CODEC_KEYS]);
      const objectStore = storage.objectStore ?? {};
      if (typeof objectStore !== 'object') throw new InvalidOptionsError('storage.objectStore', 'must be an object');
      // The bucket is created when the bus's producer connection opens (EventBus.connect).
      return withBodyCodec(new ObjectStoreStorageManager(objectStore), storage);
    }
    // A custom form with a stray key; an object of no known form gets the message below instead.
    if ('useClass' in storage || 'useExisting' in storage || 'useFactory' in storage) {
      knownKeys('storage', storage, ['useClass', 'useExisting', 'useFactory', 'inject', ...BODY_CODEC_KEYS]);
    }
    if ('useClass' in storage) {
      if (typeof storage.useClass !== 'function') throw new InvalidOptionsError('storage.useClass', 'must be a class');
      return withBodyCodec(checked('storage.useClass', await moduleRef.create(storage.useClass)), storage);
    }
    if ('useExisting' in storage) {
      return withBodyCodec(checked('storage.useExisting', moduleRef.get(storage.useExisting, { strict: false })), storage);
    }
    if ('useFactory' in storage) {
      if (typeof storage.useFactory !== 'function') throw new InvalidOptionsError('storage.useFactory', 'must be a function');
      const deps = (storage.inject ?? []).map((dep) => {
        const token = typeof dep === 'object' && dep !== null && 'token' in dep ? dep.token : dep;
        const optional = typeof dep === 'object' && dep !== null && 'optional' in dep && dep.optional;
        try {
          return moduleRef.get(token as never, { strict: false });
        } catch (err) {
          if (optional) return undefined;
          throw err;
        }
      });
      return withBodyCodec(checked('storage.useFactory', await storage.useFactory(...deps)), storage);
    }
    throw new InvalidOptionsError('storage', 'must have one of: redis, objectStore, useClass, useExisting, useFactory');
  },
};

function checked(option: string, value: unknown): MessageStorageManager {
  return storageManager<MessageStorageManager>(option, value);
}
