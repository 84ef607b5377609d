import { DynamicModule, Inject, Logger, Module, OnApplicationShutdown, Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { TerminusModule } from '@nestjs/terminus';
import type { Cluster, Redis } from '../storage/ioredis-types';
import { SubscribeMetadataAccessor } from '../discovery/subscribe-metadata.accessor';
import { SubscribersLoader } from '../discovery/subscribers.loader';
import { knownKeys, string, MAX_TIMER_MS, wholeNumber } from '../options/rules';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { EventBus } from '../event-bus/event-bus';
import { DeadLetters } from '../durable/dead-letter-store';
import { createHealthController, HEALTH_DEFAULTS } from '../health/health.controller';
import { NatsHealthIndicator } from '../health/nats.health-indicator';
import { StorageHealthIndicator } from '../health/storage.health-indicator';
import { JetStreamHealthIndicator } from '../health/jetstream.health-indicator';
import { MESSAGE_STORAGE_MANAGER, MessageStorageManager } from '../storage/message-storage-manager';
import {
  EVENT_BUS_ASYNC_OPTIONS_TYPE,
  EVENT_BUS_MODULE_OPTIONS,
  EVENT_BUS_OPTIONS_TYPE,
  EventBusConfigurableModule,
} from './event-bus.module-definition';
import { EventBusHealthOptions, EventBusModuleOptions } from './event-bus-module.options';
import { EVENT_BUS_REDIS, redisConnectionProvider, storageProvider } from './storage.providers';
import { withService } from '../services/service.module-part';
import { withAsyncApi } from '../asyncapi/asyncapi.module-part';

const eventBusProvider: Provider = {
  provide: EventBus,
  inject: [EVENT_BUS_MODULE_OPTIONS, MESSAGE_STORAGE_MANAGER],
  useFactory: (options: EventBusModuleOptions, storage: MessageStorageManager | null) => {
    const { storage: _storageOptions, ...core } = options;
    return new EventBus(core, storage);
  },
};

// `DeadLetters` is the bus's own: injected, it works on the bus's connection and storage.
const deadLettersProvider: Provider = { provide: DeadLetters, inject: [EventBus], useFactory: (bus: EventBus) => bus.deadLetters };

/**
 * The event bus for a Nest app. Global: import it once, in the root module.
 *
 * `EventBusModule.forRoot({ nats, storage, ... })` or
 * `EventBusModule.forRootAsync({ imports, inject, useFactory, health })`.
 */
@Module({
  imports: [DiscoveryModule, TerminusModule],
  providers: [
    redisConnectionProvider,
    storageProvider,
    eventBusProvider,
    deadLettersProvider,
    SubscribeMetadataAccessor,
    SubscribersLoader,
    NatsHealthIndicator,
    StorageHealthIndicator,
    JetStreamHealthIndicator,
  ],
  exports: [EventBus, DeadLetters, MESSAGE_STORAGE_MANAGER, EVENT_BUS_REDIS],
})
export class EventBusModule extends EventBusConfigurableModule implements OnApplicationShutdown {
  constructor(@Inject(EVENT_BUS_REDIS) private readonly redis: Redis | Cluster | null) {
    super();
    // Without an 'error' listener, ioredis prints "[ioredis] Unhandled error event" with a stack
    // to stderr on every failed reconnect while Redis is down. Log once per outage instead.
    if (redis) {
      const logger = new Logger('EventBus:redis');
      let down = false;
      redis.on('error', (err: Error) => {
        if (down) return;
        down = true;
        logger.warn(`Redis connection error: ${err?.message ?? String(err)}; reconnecting`);
      });
      redis.on('ready', () => {
        if (down) logger.log('Redis connection is ready again');
        down = false;
      });
    }
  }

  static forRoot(options: typeof EVENT_BUS_OPTIONS_TYPE): DynamicModule {
    return withAsyncApi(
      withService(withHealth(super.forRoot(options), options.health), options.service),
      options.asyncapi,
      EVENT_BUS_MODULE_OPTIONS,
    );
  }

  static forRootAsync(options: typeof EVENT_BUS_ASYNC_OPTIONS_TYPE): DynamicModule {
    return withAsyncApi(
      withService(withHealth(super.forRootAsync(options), options.health), options.service),
      options.asyncapi,
      EVENT_BUS_MODULE_OPTIONS,
    );
  }

  /** Runs after every handler finished and the bus closed (`onModuleDestroy`). */
  async onApplicationShutdown(): Promise<void> {
    if (!this.redis || this.redis.status === 'end') return;
    // A client that never connected (storage overridden in a test) must not connect just to quit.
    if (this.redis.status === 'wait') {
      this.redis.disconnect();
      return;
    }
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
      return;
    }
    // quit() leaves the connections of ioredis's Sentinel `failoverDetector` open (they would keep
    // the process alive); disconnect() on the ended client closes them.
    if (!(this.redis as Cluster).isCluster) this.redis.disconnect();
  }
}

function withHealth(definition: DynamicModule, health: EventBusHealthOptions | undefined): DynamicModule {
  const h = health ?? {};
  if (typeof h !== 'object') throw new InvalidOptionsError('health', 'must be an object');
  knownKeys('health', h, ['enabled', 'path', 'timeoutMs']);
  if (h.enabled !== undefined && typeof h.enabled !== 'boolean') throw new InvalidOptionsError('health.enabled', 'must be true or false');
  if (h.enabled === false) return definition;
  const path = h.path ?? HEALTH_DEFAULTS.path;
  string('health.path', path);
  const timeoutMs = h.timeoutMs ?? HEALTH_DEFAULTS.timeoutMs;
  wholeNumber('health.timeoutMs', timeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
  return { ...definition, controllers: [...(definition.controllers ?? []), createHealthController(path, timeoutMs)] };
}
