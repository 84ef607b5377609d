import { ConfigurableModuleBuilder, DynamicModule, Inject, Logger, Module, OnApplicationShutdown, Provider } from '@nestjs/common';
import { EventBus } from '../event-bus/event-bus';
import { EventBusOutbox } from './event-bus-outbox';
import { loadPg } from './load-pg';
import { EventBusOutboxOptions, ResolvedOutboxOptions, resolveOutboxOptions } from './outbox.options';
import { outboxSchemaSql } from './outbox-schema';
import { OutboxRelay } from './outbox-relay';
import type { PgPoolLike } from './pg-types';

export const {
  ConfigurableModuleClass: EventBusOutboxConfigurableModule,
  MODULE_OPTIONS_TOKEN: EVENT_BUS_OUTBOX_OPTIONS,
  OPTIONS_TYPE: EVENT_BUS_OUTBOX_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: EVENT_BUS_OUTBOX_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<EventBusOutboxOptions>({ moduleName: 'EventBusOutbox' })
  .setClassMethodName('forRoot')
  .setExtras({}, (definition) => ({ ...definition, global: true }))
  .build();

/** The checked options with defaults. */
export const OUTBOX_SETTINGS = Symbol('EVENT_BUS_OUTBOX_SETTINGS');
/** The pool the relay reads through, and whether the module made it (and so ends it). */
export const OUTBOX_POOL = Symbol('EVENT_BUS_OUTBOX_POOL');

interface OutboxPool {
  pool: PgPoolLike;
  owned: boolean;
}

const settingsProvider: Provider = {
  provide: OUTBOX_SETTINGS,
  inject: [EVENT_BUS_OUTBOX_OPTIONS],
  useFactory: (options: EventBusOutboxOptions) => resolveOutboxOptions(options),
};

const poolProvider: Provider = {
  provide: OUTBOX_POOL,
  inject: [EVENT_BUS_OUTBOX_OPTIONS, OUTBOX_SETTINGS],
  useFactory: async (options: EventBusOutboxOptions, settings: ResolvedOutboxOptions): Promise<OutboxPool> => {
    let held: OutboxPool;
    if (options.pool) {
      held = { pool: options.pool, owned: false };
    } else {
      const { Pool } = loadPg();
      // A few connections: one LISTENs, one relays a batch; connect timeout so a dead host is an error, not a hang.
      const pool = new Pool({ connectionString: options.connectionString!, max: 4, connectionTimeoutMillis: 10_000 });
      const logger = new Logger('EventBusOutbox');
      // An idle pg client that loses its server emits 'error' on the pool; unheard, it would crash the process.
      pool.on?.('error', (err) => logger.warn(`PostgreSQL connection error: ${err.message}`));
      held = { pool, owned: true };
    }
    if (settings.ensureSchema) {
      const client = await held.pool.connect();
      try {
        await client.query(outboxSchemaSql(settings.table));
      } finally {
        client.release();
      }
    }
    return held;
  },
};

/**
 * Not global, on purpose: Nest destroys non-global modules before global ones, so the relay
 * stops before `EventBusModule` closes the bus, whatever order the app imports them in.
 */
@Module({
  providers: [
    {
      provide: OutboxRelay,
      inject: [OUTBOX_POOL, EventBus, OUTBOX_SETTINGS],
      useFactory: (held: OutboxPool, bus: EventBus, settings: ResolvedOutboxOptions) => new OutboxRelay(held.pool, bus, settings),
    },
  ],
  exports: [OutboxRelay],
})
class OutboxRelayModule {}

/**
 * The transactional outbox on PostgreSQL. Global; import it once, next to `EventBusModule`:
 * `EventBusOutboxModule.forRoot({ connectionString })` or `forRootAsync({ inject, useFactory })`.
 * Inject `EventBusOutbox` to write events in your transactions.
 */
@Module({
  providers: [
    settingsProvider,
    poolProvider,
    {
      provide: EventBusOutbox,
      inject: [EventBus, OUTBOX_SETTINGS],
      useFactory: (bus: EventBus, settings: ResolvedOutboxOptions) => new EventBusOutbox(bus, settings.table),
    },
  ],
  exports: [EventBusOutbox, OUTBOX_SETTINGS, OUTBOX_POOL],
})
export class EventBusOutboxModule extends EventBusOutboxConfigurableModule implements OnApplicationShutdown {
  constructor(@Inject(OUTBOX_POOL) private readonly held: OutboxPool) {
    super();
  }

  static forRoot(options: typeof EVENT_BUS_OUTBOX_OPTIONS_TYPE): DynamicModule {
    // Checked now as well, so a wrong option fails where the module is declared.
    resolveOutboxOptions(options);
    return withRelay(super.forRoot(options));
  }

  static forRootAsync(options: typeof EVENT_BUS_OUTBOX_ASYNC_OPTIONS_TYPE): DynamicModule {
    return withRelay(super.forRootAsync(options));
  }

  private poolEnded = false;

  /**
   * After the relay stopped (onModuleDestroy): end the pool the module made; an app's own pool
   * stays open. Once only: Nest 11 runs the hook again on a second app.close(), and pg throws then.
   */
  async onApplicationShutdown(): Promise<void> {
    if (!this.held.owned || this.poolEnded) return;
    this.poolEnded = true;
    await this.held.pool.end();
  }
}

function withRelay(definition: DynamicModule): DynamicModule {
  return { ...definition, imports: [...(definition.imports ?? []), OutboxRelayModule] };
}
