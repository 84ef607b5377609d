// The public API of nestjs-nats-eventbus. Nothing else is exported.
export * from './errors/event-bus.errors';
export { EventBus, EventBusSubscription, DEFAULT_CONNECTION, DEFAULT_CONSUMER } from './event-bus/event-bus';
export { SubscriptionStats } from './event-bus/subscriptions';
export {
  EventBusCoreOptions,
  EVENT_BUS_DEFAULTS,
  PersistOptions,
  PublishOptions,
  RpcRequestOptions,
  SubscribeOptions,
} from './event-bus/event-bus.options';
export { MessageContext, MessageContextInit, MessageHandler } from './delivery/message-context';
export { JetStreamOptions, DurableSubscribeOptions, IdempotentOptions } from './durable/durable.options';
export { PersistAck, StreamSpec } from './nats/jetstream';
export { DEAD_REASON_HEADER } from './durable/dead-letters';
export {
  DeadLetters,
  DeadLetter,
  DeadLetterEntry,
  DeadLetterFilter,
  ReplayResult,
  REPLAYED_FROM_HEADER,
} from './durable/dead-letter-store';
export { StoredMessageEnvelope, isValidToken } from './claim-check/envelope';
export {
  withBodyCodec,
  BodyCodecOptions,
  BodyEncryptionOptions,
  BodyCompression,
  EncryptionKeys,
  EncryptionKeyProvider,
  ZSTD_AVAILABLE,
} from './claim-check/body-codec';
export { NatsConnectionOptions, NATS_CONNECTION_DEFAULTS } from './nats/bus-connection.options';
export { ConnectionStatus, ConnectionState } from './nats/bus-connection';
export { MessageStorageManager, MESSAGE_STORAGE_MANAGER, StoreHints, StoreConnection } from './storage/message-storage-manager';
export { RedisStorageManager, RedisStorageOptions, REDIS_STORAGE_DEFAULTS, REDIS_CLIENT_DEFAULTS } from './storage/redis-storage-manager';
export { InMemoryStorageManager, InMemoryStorageOptions } from './storage/in-memory-storage-manager';
export {
  ObjectStoreStorageManager,
  ObjectStoreStorageOptions,
  OBJECT_STORE_STORAGE_DEFAULTS,
} from './storage/object-store-storage-manager';
export { EventBusModule } from './module/event-bus.module';
export { EVENT_BUS_MODULE_OPTIONS } from './module/event-bus.module-definition';
export {
  EventBusModuleOptions,
  EventBusStorageOptions,
  RedisStorageModuleOptions,
  ObjectStoreStorageModuleOptions,
  RedisSingleConnection,
  RedisClusterConnection,
  CustomStorageOptions,
  EventBusHealthOptions,
} from './module/event-bus-module.options';
export { EVENT_BUS_REDIS, EVENT_BUS_REDIS_CONNECTION } from './module/storage.providers';
export { Subscribe, SubscribeMetadata } from './discovery/subscribe.decorator';
export { HEALTH_DEFAULTS } from './health/health.controller';
export { EventBusServiceOptions } from './services/service.options';
export { AsyncApiRouteOptions, AsyncApiSend } from './asyncapi/asyncapi.options';
export { buildAsyncApiDocument, AsyncApiSources } from './asyncapi/asyncapi-document';
export { discoverSubscribers, DiscoveredSubscriber } from './asyncapi/subscriber-catalog';
// The @nestjs/microservices transport is at 'nestjs-nats-eventbus/microservices', so this entry
// does not require @nestjs/microservices.
