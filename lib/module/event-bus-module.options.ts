import type { InjectionToken, OptionalFactoryDependency, Type } from '@nestjs/common';
import type { ClusterNode, ClusterOptions, RedisOptions } from '../storage/ioredis-types';
import type { EventBusCoreOptions } from '../event-bus/event-bus.options';
import type { RedisStorageOptions } from '../storage/redis-storage-manager';
import type { MessageStorageManager } from '../storage/message-storage-manager';
import type { ObjectStoreStorageOptions } from '../storage/object-store-storage-manager';
import type { BodyCodecOptions } from '../claim-check/body-codec';
import type { EventBusServiceOptions } from '../services/service.options';
import type { AsyncApiRouteOptions } from '../asyncapi/asyncapi.options';

/** One Redis server: a URL (`redis://` or `rediss://`), ioredis options, or both. */
export interface RedisSingleConnection {
  url?: string;
  /** ioredis options, merged over `REDIS_CLIENT_DEFAULTS`. */
  options?: RedisOptions;
}

/** Redis Cluster through ioredis's `Cluster`. */
export interface RedisClusterConnection {
  cluster: { nodes: ClusterNode[]; options?: ClusterOptions };
}

/** Build a `RedisStorageManager` on an ioredis connection the module owns. */
export interface RedisStorageModuleOptions extends RedisStorageOptions {
  redis: RedisSingleConnection | RedisClusterConnection;
  /** Wait this long at bootstrap for Redis to be ready, in ms. Default 10000. */
  connectTimeoutMs?: number;
}

/** Build an `ObjectStoreStorageManager`: large bodies in a JetStream object store bucket, over the bus's own NATS connection. */
export interface ObjectStoreStorageModuleOptions {
  objectStore: ObjectStoreStorageOptions;
}

/** Replace the storage with your own `MessageStorageManager`. */
export type CustomStorageOptions =
  | { useClass: Type<MessageStorageManager> }
  | { useExisting: InjectionToken }
  | {
      useFactory: (...args: any[]) => MessageStorageManager | Promise<MessageStorageManager>;
      inject?: Array<InjectionToken | OptionalFactoryDependency>;
    };

/** Each form also takes the body codec's `encryption`, `compression` and `allReadersUseThisLibrary` (docs/storage.md). */
export type EventBusStorageOptions = (RedisStorageModuleOptions | ObjectStoreStorageModuleOptions | CustomStorageOptions) &
  BodyCodecOptions;

/** Options of `EventBusModule.forRoot()` / the factory of `forRootAsync()`. */
export interface EventBusModuleOptions extends EventBusCoreOptions {
  /**
   * Where large messages go. Default: none, and a body over the threshold fails with
   * `PayloadTooLargeError`. `{ redis, ttlSeconds, keyPrefix }` builds a `RedisStorageManager`;
   * `{ objectStore: { bucket, ttlSeconds, replicas } }` an `ObjectStoreStorageManager` (no Redis).
   */
  storage?: EventBusStorageOptions;
}

/** Options of the `/_health` endpoint. Given beside the other options (also in `forRootAsync`). */
export interface EventBusHealthOptions {
  /** Serve the endpoint. Default true. */
  enabled?: boolean;
  /** Route path. Default `'_health'`. */
  path?: string;
  /** Time allowed for the NATS round trip and Redis PING, in ms. Default 2000. */
  timeoutMs?: number;
}

export interface EventBusModuleExtras {
  health?: EventBusHealthOptions;
  /** Run the `@Subscribe` handlers as one NATS service (`$SRV.PING/INFO/STATS`). Default: none. See docs/services.md. */
  service?: EventBusServiceOptions;
  /** Serve the app's AsyncAPI 3.0 document at `path`. Default: not served. See docs/services.md. */
  asyncapi?: AsyncApiRouteOptions;
}
