import { InvalidOptionsError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, nonEmptyString, MAX_TIMER_MS, renamed, wholeNumber } from '../options/rules';
import type { NatsConnectionOptions } from '../nats/bus-connection.options';
import { DurableSubscribeOptions, JetStreamOptions, validateJetStreamOptions } from '../durable/durable.options';

/** How the bus behaves, independent of where its storage comes from. */
export interface EventBusCoreOptions {
  /** NATS connection options; `servers` is required, the rest is defaulted (see `NATS_CONNECTION_DEFAULTS`). */
  nats: NatsConnectionOptions;
  /**
   * Bodies above this many bytes are stored and sent as a claim-check envelope.
   * Default: the server's max_payload minus 8 KiB for headers. Never above that.
   */
  largeMessageThresholdBytes?: number;
  /** @deprecated Use `largeMessageThresholdBytes` (the same option, its unit in the name). */
  largeMessageThreshold?: number;
  /** Default `rpcRequest` timeout in ms. Default 10000. */
  rpcTimeoutMs?: number;
  /** Handlers running at once, per subscription. Default 64. */
  maxConcurrentHandlers?: number;
  /**
   * Messages waiting for a free handler slot, per subscription. Past this, messages are dropped
   * and a slow-consumer line naming the subject is logged. Default 10000.
   */
  maxPendingMessages?: number;
  /**
   * Bytes one subscription may hold at once: bodies waiting for a handler slot, stored bodies
   * being recovered, and bodies held by running handlers (counted as received; a parsed payload
   * takes about as much again). Past this, messages are shed with a log line naming the subject,
   * and recoveries of stored bodies wait for room. A single body larger than the budget is still
   * delivered when it is the only one held. Default 64 MiB.
   */
  maxHeldBytes?: number;
  /**
   * Start recovering a stored body as soon as its envelope arrives, instead of when a handler slot
   * frees (within the byte budget, without waiting for room). For fleets with the Python services,
   * whose storage manager deletes a body when it reads it: a busy subscriber would otherwise find
   * it gone. Default: `true` when the storage's `keyPrefix` is `''` (the Python services' keys),
   * else `false`. Per `@Subscribe` also `recoverOnReceipt`.
   */
  recoverOnReceipt?: boolean;
  /**
   * How long the first connect to NATS keeps trying while the server refuses or does not answer,
   * in ms; bootstrap waits that long, then fails with `NotConnectedError`. Containers start in
   * no guaranteed order, and a service started a few seconds before NATS should come up, not die.
   * Credentials or TLS that the server refuses fail at once. `0` tries once. Default 30000.
   */
  firstConnectTimeoutMs?: number;
  /** On close, how long in-flight handlers may run before connections close anyway, in ms. Default 10000. */
  shutdownTimeoutMs?: number;
  /**
   * Durable delivery with JetStream: the streams to ensure at bootstrap (and JetStream must then
   * answer, or bootstrap fails). Durable subscriptions and persisted publishes work without it,
   * on streams that operations manage. Default: none.
   */
  jetstream?: JetStreamOptions;
  /**
   * Trace and count through `@opentelemetry/api` when the app has it installed and has registered
   * an SDK before the app starts (see docs/telemetry.md). `false` turns it off. Default `true`.
   */
  telemetry?: boolean;
}

export const EVENT_BUS_DEFAULTS = DEFAULTS.bus;

/** Options of one subscription. With `durable`, it is a JetStream durable consumer (at least once) instead of core NATS (at most once). */
export interface SubscribeOptions extends DurableSubscribeOptions {
  /** Queue group: each message goes to one member of the group. Default: none (every subscriber gets it). Not with `durable`. */
  queue?: string;
  /** Named connection to subscribe on (see `EventBus.addConnection`). Default `'default'`. Created on first use. */
  connection?: string;
  /** @deprecated Use `connection` (a named connection, not a JetStream consumer; see `durable` for those). */
  consumer?: string;
  /** Overrides `maxConcurrentHandlers` for this subscription. */
  maxConcurrent?: number;
  /** Overrides `maxHeldBytes` (the byte budget) for this subscription. */
  maxHeldBytes?: number;
  /** Overrides `recoverOnReceipt` for this subscription. */
  recoverOnReceipt?: boolean;
}

export interface PublishOptions {
  /** NATS headers to send along. */
  headers?: Record<string, string>;
}

/** `publish` options that make it wait until a JetStream stream has stored the message. */
export interface PersistOptions extends PublishOptions {
  /** Resolve only once a stream stored the message (`{ stream, seq, duplicate }`); `NotPersistedError` otherwise. */
  persist: true;
  /**
   * Deduplication id: a repeat within the stream's duplicate window is stored once (`duplicate: true`).
   * No control characters, no leading or trailing whitespace, no lone surrogates (`InvalidOptionsError`).
   */
  msgId?: string;
  /**
   * Deliver to durables no earlier than this many ms from now (whole ms, >= 0; the `Eventbus-Not-Before`
   * header, see docs/durable-delivery.md "Delays"). Not with `notBefore`. Core subscribers get it at once.
   */
  delayMs?: number;
  /** Deliver to durables no earlier than this time (a `Date` or epoch ms; a past time is due at once). Not with `delayMs`. */
  notBefore?: Date | number;
}

export interface RpcRequestOptions extends PublishOptions {
  /** Milliseconds to wait for the reply. Default `rpcTimeoutMs` (10000). */
  timeoutMs?: number;
  /** @deprecated Use `timeoutMs` (the same option, its unit in the name). */
  timeout?: number;
}

/**
 * The keys each call takes. Anything else, a typo or a name a later version may add
 * (`partitions`), is refused rather than ignored: a caller relying
 * on it would otherwise get the plain behaviour without a word.
 */
export const SUBSCRIBE_KEYS = [
  'queue',
  'connection',
  'consumer',
  'maxConcurrent',
  'maxHeldBytes',
  'recoverOnReceipt',
  'durable',
  'maxDeliver',
  'backoffMs',
  'ackWaitMs',
  'deadLetter',
  'idempotent',
  'storageOutageMaxDeliveries',
  'batch',
  'partitionBy',
] as const satisfies ReadonlyArray<keyof SubscribeOptions>;
export const PUBLISH_KEYS = ['headers', 'persist', 'msgId', 'delayMs', 'notBefore'] as const satisfies ReadonlyArray<keyof PersistOptions>;
export const RPC_REQUEST_KEYS = ['headers', 'timeoutMs', 'timeout'] as const satisfies ReadonlyArray<keyof RpcRequestOptions>;

/** A call's options object: absent, or an object with only `known` keys; else `InvalidOptionsError`. */
export function checkCallOptions(value: unknown, known: readonly string[]): void {
  if (value === undefined || value === null) return;
  if (typeof value !== 'object' || Array.isArray(value)) throw new InvalidOptionsError('options', `must be an object, got ${typeof value}`);
  knownKeys('', value, known);
}

/** Every key of `EventBusCoreOptions`; `storage` and `health` are the module's. */
const CORE_KEYS = [
  'nats',
  'largeMessageThresholdBytes',
  'largeMessageThreshold',
  'rpcTimeoutMs',
  'maxConcurrentHandlers',
  'maxPendingMessages',
  'maxHeldBytes',
  'recoverOnReceipt',
  'firstConnectTimeoutMs',
  'shutdownTimeoutMs',
  'jetstream',
  'telemetry',
  'storage',
  'health',
] as const;

/** Checks the bus's options; a bad one is an `InvalidOptionsError` naming it. Unknown keys are refused. */
export function validateCoreOptions(options: EventBusCoreOptions): void {
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('options', 'must be an object');
  knownKeys('', options, CORE_KEYS);
  const nats = options.nats;
  if (!nats || typeof nats !== 'object') throw new InvalidOptionsError('nats', 'is required, e.g. { servers: ["nats://127.0.0.1:4222"] }');
  const servers = nats.servers;
  if (servers === undefined || (Array.isArray(servers) ? servers.length === 0 : typeof servers !== 'string' || !servers))
    throw new InvalidOptionsError('nats.servers', 'must be a URL or a non-empty array of URLs');
  const threshold = renamed<number>(options, 'largeMessageThresholdBytes', 'largeMessageThreshold');
  wholeNumber(threshold.option, threshold.value, 1, 'bytes');
  wholeNumber('rpcTimeoutMs', options.rpcTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
  wholeNumber('maxConcurrentHandlers', options.maxConcurrentHandlers);
  wholeNumber('maxPendingMessages', options.maxPendingMessages);
  wholeNumber('maxHeldBytes', options.maxHeldBytes, 1, 'bytes');
  wholeNumber('shutdownTimeoutMs', options.shutdownTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
  wholeNumber('firstConnectTimeoutMs', options.firstConnectTimeoutMs, 0, 'milliseconds', MAX_TIMER_MS);
  nonEmptyString('nats.name', nats.name);
  // The nats.js options the library sets defaults for: a wrong type would reach nats.js unchecked.
  for (const key of ['reconnectTimeWait', 'reconnectJitter', 'timeout', 'pingInterval'] as const) {
    wholeNumber(`nats.${key}`, nats[key], 0, 'milliseconds', MAX_TIMER_MS);
  }
  wholeNumber('nats.maxPingOut', nats.maxPingOut, 1);
  wholeNumber('nats.maxReconnectAttempts', nats.maxReconnectAttempts, -1);
  validateJetStreamOptions(options.jetstream);
  for (const key of ['recoverOnReceipt', 'telemetry'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean')
      throw new InvalidOptionsError(key, `must be true or false, got ${typeof options[key]}`);
  }
}

/** The bus's options checked, with every default filled in and each renamed option under its new name. */
export type ResolvedBusOptions = Readonly<
  Required<Omit<EventBusCoreOptions, 'largeMessageThreshold' | 'largeMessageThresholdBytes' | 'recoverOnReceipt' | 'jetstream'>> &
    Pick<EventBusCoreOptions, 'largeMessageThresholdBytes' | 'recoverOnReceipt' | 'jetstream'>
>;

/** Checks the bus's options (see `validateCoreOptions`) and resolves them once; a key given as `undefined` keeps its default. */
export function resolveBusOptions(options: EventBusCoreOptions): ResolvedBusOptions {
  validateCoreOptions(options);
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as EventBusCoreOptions & {
    storage?: unknown;
    health?: unknown;
  };
  // The module's own keys, and the deprecated name, are not the bus's.
  const { storage: _storage, health: _health, largeMessageThreshold: _old, ...core } = given;
  const threshold = renamed<number>(options, 'largeMessageThresholdBytes', 'largeMessageThreshold').value;
  return Object.freeze({ ...EVENT_BUS_DEFAULTS, ...core, largeMessageThresholdBytes: threshold });
}
