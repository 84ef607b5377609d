import type { NatsOptions } from '@nestjs/microservices';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { bodyCodecOf } from '../claim-check/body-codec';
import { Outbound } from '../delivery/outbound';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { RELEASE_TIMEOUT_MS } from '../options/defaults';
import { renamed, storageManager, wholeNumber } from '../options/rules';
import { BusConnection } from '../nats/bus-connection';
import type { NatsConnectionOptions } from '../nats/bus-connection.options';
import { MessageStorageManager } from '../storage/message-storage-manager';
import { BusTelemetry } from '../telemetry/bus-telemetry';
import { tracedStore } from '../telemetry/traced-store';
import { DEFAULTS } from '../options/defaults';
import type { DispatchLimits } from '../delivery/bounded-dispatcher';

/** Everything `Transport.NATS` takes in `options`: `servers`, `queue`, `gracefulShutdown`, `headers`, … */
export type NestNatsOptions = NonNullable<NatsOptions['options']>;

/**
 * Options of `EventBusTransport` (server) and `EventBusClientProxy` (client): the options of
 * Nest's own NATS transport, plus the claim-check storage of `EventBusModule`.
 */
export interface EventBusTransportOptions {
  /**
   * What `Transport.NATS` takes in `options` (`servers`, `queue`, `headers`, `gracefulShutdown`,
   * `serializer`, …); the connection options go to nats.js v3 with the library's defaults
   * (`NATS_CONNECTION_DEFAULTS`). Default server: `DEFAULTS.transport.servers` (`nats://localhost:4222`, as Nest's).
   */
  nats?: NestNatsOptions;
  /**
   * Where packets too large for NATS go, e.g. a `RedisStorageManager` or (one process only) an
   * `InMemoryStorageManager`; inject `MESSAGE_STORAGE_MANAGER` to share `EventBusModule`'s.
   * Without one, a packet over the threshold fails with `PayloadTooLargeError`. The transport
   * does not close it: its owner does.
   */
  storage?: MessageStorageManager | null;
  /**
   * Serialized Nest packets above this many bytes are stored and sent as a claim-check envelope.
   * Default: the server's max_payload minus 8 KiB for headers. Never above that.
   */
  largeMessageThresholdBytes?: number;
  /** @deprecated Use `largeMessageThresholdBytes` (the same option, its unit in the name). */
  largeMessageThreshold?: number;
  /**
   * Trace and count through `@opentelemetry/api` when the app has it installed and registered an
   * SDK before the transport starts. `false` turns it off. Default `true`.
   */
  telemetry?: boolean;
  /**
   * Server side (`EventBusTransport`), per pattern: bytes of received packets and recovered stored
   * bodies held at once, from arrival until the handler finishes. Past it, a packet is shed (a
   * request is answered with an error at once) and a stored body waits for room before it is read.
   * Default 67108864 (64 MiB), as `maxHeldBytes` of `EventBusModule`.
   */
  maxHeldBytes?: number;
  /** Server side, per pattern: handlers running at once; more wait. Default 64. */
  maxConcurrentHandlers?: number;
  /** Server side, per pattern: packets waiting for a handler; past it they are dropped (a request gets an error). Default 10000. */
  maxPendingMessages?: number;
}

/** Options that are Nest's, not the connection's. */
const NEST_ONLY_KEYS = ['queue', 'gracefulShutdown', 'gracePeriod', 'serializer', 'deserializer', 'headers', 'debug'];

/** The transport's options checked once, with every default filled in and renamed options under their new name. */
export interface ResolvedTransportOptions {
  /** The `Transport.NATS` options as given. */
  readonly nest: Readonly<Record<string, any>>;
  /** The part of them that is a NATS connection's, with the default server (`DEFAULTS.transport.servers`). */
  readonly connection: NatsConnectionOptions;
  readonly storage: MessageStorageManager | null;
  /** `largeMessageThresholdBytes` (or its deprecated name), when given. */
  readonly thresholdBytes: number | undefined;
  /** Whether to trace and count (`telemetry`). */
  readonly telemetryOn: boolean;
  /** What the server side holds and runs at once, per pattern. */
  readonly limits: Readonly<DispatchLimits>;
}

/** What both sides build from their options, once: the resolved options, the codec and the telemetry. */
export interface TransportSetup extends ResolvedTransportOptions {
  readonly codec: ClaimCheckCodec;
  /** Started when the side connects (`listen` / `connect`). */
  readonly telemetry: BusTelemetry;
}

/** Checks the options of `who` (an `InvalidOptionsError` naming the option) and resolves them. */
export function resolveTransportOptions(options: EventBusTransportOptions | undefined, who: string): ResolvedTransportOptions {
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('options', `${who} needs { nats, storage }`);
  const { storage, nats } = options;
  const threshold = renamed<number>(options, 'largeMessageThresholdBytes', 'largeMessageThreshold');
  if (nats !== undefined && (nats === null || typeof nats !== 'object'))
    throw new InvalidOptionsError('nats', `${who}: must be the options object of Transport.NATS`);
  if (storage != null) storageManager('storage', storage);
  wholeNumber(threshold.option, threshold.value, 1, 'bytes');
  if (options.telemetry !== undefined && typeof options.telemetry !== 'boolean')
    throw new InvalidOptionsError('telemetry', `${who}: must be true or false, got ${typeof options.telemetry}`);
  wholeNumber('maxHeldBytes', options.maxHeldBytes, 1, 'bytes');
  wholeNumber('maxConcurrentHandlers', options.maxConcurrentHandlers, 1);
  wholeNumber('maxPendingMessages', options.maxPendingMessages, 0);
  const nest = { ...(nats ?? {}) } as Record<string, any>;
  const connection: Record<string, any> = { servers: DEFAULTS.transport.servers };
  for (const [k, v] of Object.entries(nest)) if (!NEST_ONLY_KEYS.includes(k)) connection[k] = v;
  // Shallow: `nest` holds the app's own serializer and deserializer objects.
  return Object.freeze({
    nest: Object.freeze(nest),
    connection: connection as NatsConnectionOptions,
    storage: storage ?? null,
    thresholdBytes: threshold.value,
    telemetryOn: options.telemetry ?? DEFAULTS.bus.telemetry,
    limits: Object.freeze({
      maxHeldBytes: options.maxHeldBytes ?? DEFAULTS.bus.maxHeldBytes,
      maxConcurrent: options.maxConcurrentHandlers ?? DEFAULTS.bus.maxConcurrentHandlers,
      maxPending: options.maxPendingMessages ?? DEFAULTS.bus.maxPendingMessages,
    }),
  });
}

/** Resolves the options and builds the claim-check codec both sides share. */
export function transportSetup(options: EventBusTransportOptions | undefined, who: string): TransportSetup {
  const resolved = resolveTransportOptions(options, who);
  const telemetry = new BusTelemetry();
  const codec = new ClaimCheckCodec(tracedStore(resolved.storage, telemetry), resolved.thresholdBytes, bodyCodecOf(resolved.storage));
  return Object.freeze({ ...resolved, codec, telemetry });
}

/**
 * Connects storage (a lazily connecting Redis) and a NATS connection of the transport's own;
 * rejects, leaving nothing open, when the threshold is above what the server accepts.
 */
export async function openTransportClient(setup: TransportSetup, label: string): Promise<BusConnection> {
  // Tracer and meter are taken now, not at import: an SDK registered before the app starts is used.
  setup.telemetry.start(setup.telemetryOn);
  // A store that must connect first (Redis) says so with open().
  await setup.storage?.open?.();
  const client = new BusConnection(label, setup.connection);
  await client.connect();
  try {
    new Outbound(setup.codec).checkThreshold(setup.thresholdBytes, client.maxPayload);
  } catch (err) {
    await client.drain(RELEASE_TIMEOUT_MS);
    throw err;
  }
  try {
    // A store on NATS itself (the object store) opens its bucket on this connection.
    await setup.storage?.attachConnection?.(client);
  } catch (err) {
    await client.drain(RELEASE_TIMEOUT_MS);
    throw err;
  }
  return client;
}

/** Nest's error packet body (`{ status: 'error', message }`), as its RPC exception filter writes it. */
export function rpcError(message: string): { status: 'error'; message: string } {
  return { status: 'error', message };
}
