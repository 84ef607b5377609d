// The real EventBusModule (bus, discovery, enhancers, storage, /_health) on an in-process broker:
// only the server under nats.js is replaced, so a test exercises the code production runs.
import { DynamicModule, Provider } from '@nestjs/common';
import type { TestingModuleBuilder } from '@nestjs/testing';
import { EventBusModule } from '../module/event-bus.module';
import { EVENT_BUS_MODULE_OPTIONS } from '../module/event-bus.module-definition';
import type { EventBusHealthOptions, EventBusModuleOptions, EventBusStorageOptions } from '../module/event-bus-module.options';
import { InMemoryStorageManager } from '../storage/in-memory-storage-manager';
import { InProcessBroker } from './in-process-broker';
import { InProcessJetStream } from './in-process-jetstream';
import { IN_PROCESS_BROKER, OWNED_BROKER, TestEventBus } from './test-event-bus';
import { renamed } from '../options/rules';

/** Options of `EventBusTestingModule.forRoot()`: the real module's, less what needs a server. */
export interface EventBusTestingOptions extends Omit<EventBusModuleOptions, 'nats' | 'storage' | 'firstConnectTimeoutMs'> {
  /** Where large bodies go. Default an `InMemoryStorageManager`; `null` for none (a large body is then `PayloadTooLargeError`). */
  storage?: EventBusStorageOptions | null;
  health?: EventBusHealthOptions;
  /** The broker's `max_payload`, in bytes. Default 1 MiB, as a default nats-server, so claim-check starts where it does in production. */
  maxPayloadBytes?: number;
  /** @deprecated Use `maxPayloadBytes` (the same option, its unit in the name). */
  maxPayload?: number;
  /** A broker to share between apps (services talking to each other in one test). Default: one per app. */
  broker?: InProcessBroker;
}

/**
 * Replaces `EventBusModule` in a test: same `EventBus`, no socket.
 *
 * ```ts
 * Test.createTestingModule({ imports: [AppModule] }).overrideModule(Bus).useModule(EventBusTestingModule.forRoot())
 * ```
 */
export class EventBusTestingModule {
  static forRoot(options: EventBusTestingOptions = {}): DynamicModule {
    const { maxPayloadBytes, maxPayload, broker, storage, health, ...core } = options;
    // Checked now: giving both names with different values fails forRoot, not the first test.
    const payload = renamed<number>({ maxPayloadBytes, maxPayload }, 'maxPayloadBytes', 'maxPayload').value;
    const moduleOptions: EventBusModuleOptions = {
      ...core,
      nats: { servers: 'nats://in-process.nats.invalid' },
      storage: storage === null ? undefined : (storage ?? { useFactory: () => new InMemoryStorageManager() }),
    };
    // The real module's forRoot checks the options and adds /_health as in production.
    const real = EventBusModule.forRoot({ ...moduleOptions, health });
    const providers: Provider[] = [
      {
        provide: IN_PROCESS_BROKER,
        useFactory: () => {
          const b = broker ?? new InProcessBroker({ maxPayloadBytes: payload });
          InProcessJetStream.attach(b);
          return b;
        },
      },
      {
        provide: EVENT_BUS_MODULE_OPTIONS,
        inject: [IN_PROCESS_BROKER],
        useFactory: (b: InProcessBroker): EventBusModuleOptions => ({ ...moduleOptions, nats: { servers: b.url } }),
      },
      { provide: OWNED_BROKER, useValue: !broker },
      TestEventBus,
    ];
    return { ...real, providers, exports: [TestEventBus, IN_PROCESS_BROKER] };
  }

  /**
   * The same without keeping the module in a constant: finds the `EventBusModule` that `root`
   * imports (at any depth) and overrides it on `builder`.
   */
  static override(builder: TestingModuleBuilder, root: unknown, options?: EventBusTestingOptions): TestingModuleBuilder {
    const found = findBusModule(root, new Set());
    if (!found)
      throw new Error('EventBusTestingModule.override: no EventBusModule.forRoot()/forRootAsync() is imported by the given module');
    return builder.overrideModule(found).useModule(EventBusTestingModule.forRoot(options));
  }
}

function findBusModule(candidate: unknown, seen: Set<unknown>): DynamicModule | undefined {
  if (!candidate || seen.has(candidate)) return undefined;
  seen.add(candidate);
  const dynamic = candidate as DynamicModule;
  if (typeof candidate === 'object' && dynamic.module === EventBusModule) return dynamic;
  const type = typeof candidate === 'object' ? dynamic.module : candidate;
  const imports = [
    ...((typeof candidate === 'object' ? dynamic.imports : undefined) ?? []),
    ...((type && (Reflect.getMetadata('imports', type as object) as unknown[])) ?? []),
  ];
  for (const i of imports) {
    const found = findBusModule(i, seen);
    if (found) return found;
  }
  return undefined;
}
