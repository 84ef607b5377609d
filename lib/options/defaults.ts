/** Freezes an object and everything in it, so that no caller can change a default at run time. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

/**
 * Every default of the library, in one object. The options tables of the README and docs/options.md
 * are checked against it (test/options/defaults.spec.ts); the named exports below are its parts,
 * under the names users know.
 */
export const DEFAULTS = deepFreeze({
  /** `EventBusModule` / `EventBus` options. */
  bus: {
    rpcTimeoutMs: 10_000,
    maxConcurrentHandlers: 64,
    maxPendingMessages: 10_000,
    maxHeldBytes: 64 * 1024 * 1024,
    shutdownTimeoutMs: 10_000,
    firstConnectTimeoutMs: 30_000,
    /** Traces and metrics through @opentelemetry/api, when installed and an SDK is registered. */
    telemetry: true,
  },
  /** Each NATS connection (nats.js v3 `connect()` options the library sets). */
  nats: {
    name: 'nestjs-nats-eventbus',
    maxReconnectAttempts: -1,
    reconnect: true,
    reconnectTimeWait: 1000,
    reconnectJitter: 500,
    timeout: 10_000,
    pingInterval: 30_000,
    maxPingOut: 3,
    noAsyncTraces: true,
  },
  /** `storage` with Redis. */
  storage: {
    ttlSeconds: 300,
    keyPrefix: 'eventbus:',
    operationTimeoutMs: 5000,
    connectTimeoutMs: 10_000,
    replyTtlSeconds: 60,
  },
  /** `storage: { objectStore }`: the JetStream object store bucket that keeps large bodies. */
  objectStore: {
    bucket: 'eventbus',
    ttlSeconds: 300,
    replicas: 1,
    storage: 'file',
    maxBytes: -1,
    operationTimeoutMs: 5000,
  },
  /**
   * ioredis options of the connection the bus creates. With the offline queue off, a publish
   * while Redis is down fails at once with `MessageStorageError` instead of waiting; ioredis
   * still reconnects by itself.
   */
  redisClient: {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 10_000,
    lazyConnect: true,
  },
  /** `jetstream` (durable delivery). */
  jetstream: {
    apiTimeoutMs: 5000,
    /** Shrinking a shared stream or changing a consumer in use is refused at bootstrap unless allowed. */
    allowDestructiveUpdates: false,
    /** Create and update streams and consumers; `false` only binds to existing ones. */
    manage: true,
  },
  /** Each entry of `jetstream.streams` that leaves these out. */
  stream: {
    /** Copies in a JetStream cluster; 1 suits a single nats-server. */
    replicas: 1,
    /** 0: no age limit, the stream's other limits remove messages. */
    maxAgeSeconds: 0,
  },
  /** `@Subscribe(topic, { durable, … })` and `subscribe(…, { durable, … })`. */
  durable: {
    maxDeliver: 5,
    /** Delay before each redelivery after a failure; the last step repeats. */
    backoffMs: [1000, 5000, 30_000],
    ackWaitMs: 30_000,
    /**
     * Deliveries whose stored body could not be recovered (storage down) before the message is
     * dead-lettered with reason `storage`. With the default backoff that is about 9 minutes of
     * outage; a Redis back within seconds costs a few deliveries and no dead letter.
     */
    storageOutageMaxDeliveries: 20,
  },
  /** `@Subscribe(topic, { durable, idempotent })`: the inbox of handled message ids (README "Handled once"). */
  idempotent: {
    /**
     * How long a handled id is remembered (the KV bucket's age limit). Above the stream's 2-minute
     * duplicate window, so a republish the stream no longer dedupes is still caught, with room for
     * redeliveries after a lost ack (the 30 s ack wait) and a restart.
     */
    windowSeconds: 600,
    /** A running handler's claim on its id; renewed every third of it, taken over this long after a crash. */
    leaseMs: 15_000,
    /** KV bucket name: `<prefix>-<windowSeconds>s`, one bucket per window. */
    bucketPrefix: 'eventbus-inbox',
  },
  /** `bus.deadLetters` / `DeadLetters` and the `dlq` CLI. */
  deadLetters: {
    /** Entries `list()` returns when no `limit` is given. */
    listLimit: 100,
  },
  /** Consumer lag gauges (`eventbus.consumer.pending`, `.ack_pending`, `.redelivered`). */
  consumerLag: {
    /** Least time between two reads of one durable's consumer info; a metric export in between reuses the last. */
    intervalMs: 15_000,
  },
  /** `storage: { …, encryption, compression }`: the body codec. */
  bodyCodec: {
    /** A compressed body is kept only when it is at least this fraction smaller; else it is stored as it is. */
    minCompressionSaving: 0.1,
    /** `encryption.keyProviderIntervalMs`: least time between two calls of a key provider for one key id, or by `/_health`. */
    keyProviderIntervalMs: 10_000,
  },
  /** `EventBusTransport` / `EventBusClientProxy`: what Nest's own NATS transport does when not told. */
  transport: {
    servers: 'nats://localhost:4222',
    /** `gracefulShutdown`'s wait after unsubscribing, when `gracePeriod` is not given (Nest's own). */
    gracePeriodMs: 10_000,
    /** The error a request gets when no `@MessagePattern` matches (the stock transport's text). */
    noHandlerMessage: 'There is no matching message handler defined in the remote service.',
  },
  /** `/_health`. */
  health: {
    enabled: true,
    path: '_health',
    timeoutMs: 2000,
  },
  /** `EventBusOutboxModule.forRoot(…)` (`nestjs-nats-eventbus/outbox`). */
  outbox: {
    table: 'eventbus_outbox',
    /** NOTIFY wakes the relay at once; polling only catches what a lost notification missed. */
    pollIntervalMs: 2000,
    batchSize: 100,
    /** Delay before each retry while NATS or PostgreSQL fail; the last step repeats. */
    retryBackoffMs: [250, 1000, 5000],
    relay: true,
    /** The library never creates its table unless asked. */
    ensureSchema: false,
  },
} as const);

/** A bounded wait for shutdown steps with no option of their own (release after a failed start). */
export const RELEASE_TIMEOUT_MS = 1000;

/** 1 MiB: a default nats-server's `max_payload`, assumed until a connection has said otherwise in its INFO. */
export const SERVER_MAX_PAYLOAD_BYTES = 1024 * 1024;
