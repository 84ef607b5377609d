// EventBus is the public facade: publish, rpcRequest, subscribe, addConsumer, connect, close, with
// their documentation. It is over 200 lines because of that documentation; the work is in
// consumer-pool.ts, subscriptions.ts and delivery/ (the send and receive cores).
import { Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { bodyCodecOf } from '../claim-check/body-codec';
import { Outbound } from '../delivery/outbound';
import { InvalidOptionsError, NotConnectedError, RpcTimeoutError } from '../errors/event-bus.errors';
import { RELEASE_TIMEOUT_MS } from '../options/defaults';
import { MAX_TIMER_MS, nonEmptyString, wholeNumber } from '../options/rules';
import { Durability } from '../durable/durability';
import { durableSettings } from '../durable/durable.options';
import type { PersistAck } from '../nats/jetstream';
import { checkQueue, checkTopic } from '../nats/subjects';
import { BusConnection, checkHeaderValue, ConnectionStatus, createHeaders, Msg, MsgHdrs } from '../nats/bus-connection';
import { withTimeout } from '../shared/deadline';
import { InFlight } from './in-flight';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from '../nats/bus-connection.options';
import { MessageStorageManager } from '../storage/message-storage-manager';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { HandlerDelivery } from '../delivery/handler-delivery';
import { ConsumerPool } from './consumer-pool';
import { Subscriptions, SubscriptionStats } from './subscriptions';
import { describeConnectError } from '../nats/connect-error';
import { RateLimitedLog } from '../delivery/rate-limited-log';
import {
  checkCallOptions,
  EVENT_BUS_DEFAULTS,
  PUBLISH_KEYS,
  RPC_REQUEST_KEYS,
  SUBSCRIBE_KEYS,
  validateCoreOptions,
  EventBusCoreOptions,
  PersistOptions,
  PublishOptions,
  RpcRequestOptions,
  SubscribeOptions,
} from './event-bus.options';
import { MessageHandler } from '../delivery/message-context';
import { BusTelemetry } from '../telemetry/bus-telemetry';
import { TraceTaggedLogger } from '../telemetry/trace-tagged-logger';
import { tracedStore } from '../telemetry/traced-store';

/** What `subscribe` returns. */
export interface EventBusSubscription {
  readonly subject: string;
  readonly queue?: string;
  /** The durable consumer's name, for a durable subscription. */
  readonly durable?: string;
  readonly consumer: string;
  /** Stop receiving, let in-flight handlers finish, then resolve. */
  unsubscribe(): Promise<void>;
}

export const DEFAULT_CONSUMER = 'default';

/**
 * One event bus per service: a producer connection for `publish`/`rpcRequest`, and named consumer
 * connections for subscriptions. Large bodies go through claim-check both ways.
 */
export class EventBus implements OnModuleInit, OnModuleDestroy {
  private readonly telemetry = new BusTelemetry();
  private readonly logger: Logger = new TraceTaggedLogger('EventBus', this.telemetry);
  private readonly badInputLog = new RateLimitedLog(this.logger);
  private readonly codec: ClaimCheckCodec;
  private readonly outbound: Outbound;
  private readonly producer: BusConnection;
  private readonly consumers: ConsumerPool;
  private readonly subscriptions = new Subscriptions(this.logger);
  private readonly checkedTopics = new Set<string>();
  private readonly inFlight = new InFlight();
  private readonly options: Required<Omit<EventBusCoreOptions, 'largeMessageThreshold' | 'recoverOnReceipt' | 'jetstream'>> &
    EventBusCoreOptions;
  private readonly durability: Durability;
  private connecting?: Promise<void>;
  private closing?: Promise<void>;

  constructor(
    options: EventBusCoreOptions,
    private readonly storage: MessageStorageManager | null = null,
  ) {
    validateCoreOptions(options);
    this.options = { ...EVENT_BUS_DEFAULTS, ...options };
    this.codec = new ClaimCheckCodec(tracedStore(storage, this.telemetry), options.largeMessageThreshold, bodyCodecOf(storage));
    this.outbound = new Outbound(this.codec);
    this.durability = new Durability(options.jetstream, this.outbound, this.logger);
    this.producer = new BusConnection('producer', { ...options.nats, name: this.connectionName() });
    this.consumers = new ConsumerPool(
      (name, own) => ({ ...this.options.nats, ...own, name: own.name ?? `${this.connectionName()}:${name}` }),
      (client) => this.checkThreshold(client),
      this.logger,
    );
  }

  /** Nest hook: connect before `@Subscribe` methods are subscribed at bootstrap. */
  onModuleInit(): Promise<void> {
    return this.connect();
  }

  /** Nest hook: `app.close()` or a shutdown signal closes the bus before Redis goes. */
  onModuleDestroy(): Promise<void> {
    return this.close();
  }

  /** Open the producer connection. Called by the module's lifecycle hooks; idempotent. */
  connect(): Promise<void> {
    if (this.closing) return Promise.reject(new NotConnectedError('EventBus is closed'));
    // Tracer and meter are taken now, not at import: an SDK registered before the app starts is used.
    this.telemetry.start(this.options.telemetry, () => this.subscriptionStats());
    this.connecting ??= this.producer
      .connect(this.options.firstConnectTimeoutMs)
      .then(
        () => this.checkThreshold(this.producer),
        (err) => {
          throw describeConnectError(err, this.options.nats);
        },
      )
      // With `jetstream` configured, JetStream must answer and its streams exist before subscribers bind.
      .then(() => this.durability.start(this.producer))
      // A store on NATS itself (the object store) opens its bucket on the producer connection.
      .then(() => this.storage?.attachConnection?.(this.producer));
    // A bad threshold fails bootstrap, and Nest then runs no destroy hook: release the connection here.
    this.connecting.catch(() => this.producer.drain(RELEASE_TIMEOUT_MS));
    return this.connecting;
  }

  /**
   * Register a consumer: a connection of its own for subscriptions that name it. `natsOptions`
   * are merged over the bus's NATS options. Connects now if the bus is connected.
   */
  async addConsumer(name: string, natsOptions: Partial<NatsConnectionOptions> = {}): Promise<void> {
    if (typeof name !== 'string' || !name) throw new InvalidOptionsError('consumer', 'must be a non-empty string');
    if (this.closing) throw new NotConnectedError('EventBus is closed');
    this.consumers.add(name, natsOptions);
    await this.consumers.get(name);
  }

  /**
   * Publish `payload` as JSON. Large bodies are stored first; if that fails, nothing is published.
   * With `{ persist: true }`, resolves once a JetStream stream stored it, with `{ stream, seq,
   * duplicate }`, or rejects with `NotPersistedError`.
   */
  publish(topic: string, payload: unknown, opts: PersistOptions): Promise<PersistAck>;
  publish(topic: string, payload: unknown, opts?: PublishOptions): Promise<void>;
  publish(topic: string, payload: unknown, opts?: PublishOptions | PersistOptions): Promise<void | PersistAck> {
    return this.telemetry.on
      ? this.telemetry.send(topic, 'publish', () => this.publishNow(topic, payload, opts))
      : this.publishNow(topic, payload, opts);
  }

  private publishNow(topic: string, payload: unknown, opts?: PublishOptions | PersistOptions): Promise<void | PersistAck> {
    try {
      if (opts !== undefined) checkCallOptions(opts, PUBLISH_KEYS);
      const producer = this.openProducer();
      this.checkPublishTopic(topic);
      // Everything that can be refused is checked before a large body is stored.
      const hdrs = this.telemetry.inject(opts?.headers ? createHeaders(opts.headers) : undefined);
      const body = this.codec.stringifyJson(payload, topic);
      const persist = persistOptions(opts);
      if (persist) {
        if (this.telemetry.on && this.outbound.fitsInline(body, producer.maxPayload, hdrs)) {
          this.telemetry.noteBodySize(Buffer.byteLength(body, 'utf8'));
        }
        return this.inFlight.publish(this.durability.publish(producer, topic, body, hdrs, persist.msgId));
      }
      const wire = this.telemetry.sized(this.outbound.plan(topic, body, producer.maxPayload, hdrs));
      if (wire instanceof Uint8Array) {
        producer.publish(topic, wire, hdrs);
        return Promise.resolve();
      }
      // A stream that captures the topic would keep the message longer than its body: warned once per topic.
      this.durability.noteStoredWithoutPersist(producer, topic, this.storageTtlSeconds());
      // close() waits for a publish whose body is being stored, so that it still goes out.
      return this.inFlight.publish(wire.then((envelope) => this.outbound.sendStored(envelope, (e) => producer.publish(topic, e, hdrs))));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Send one request and wait for its reply, recovering a stored reply. `timeout` covers all of it:
   * storing a large request, the round trip, and recovering a large reply. Fails with
   * `RpcTimeoutError`, `NoRespondersError`, `RemoteHandlerError`, `MessageStorageError`, or
   * `NotConnectedError` when the bus closes while it waits.
   */
  rpcRequest<T = unknown>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    return this.telemetry.on
      ? this.telemetry.send(topic, 'request', () => this.requestNow<T>(topic, payload, opts))
      : this.requestNow<T>(topic, payload, opts);
  }

  private requestNow<T>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    // No async frame on the small path: the request is sent at once and its reply parsed in one `.then`.
    try {
      const started = Date.now();
      if (opts !== undefined) checkCallOptions(opts, RPC_REQUEST_KEYS);
      const producer = this.openProducer();
      const timeout = opts?.timeout ?? this.options.rpcTimeoutMs;
      wholeNumber('timeout', timeout, 1, 'milliseconds', MAX_TIMER_MS);
      this.checkPublishTopic(topic);
      // Everything that can be refused is checked before a large body is stored.
      const hdrs = this.telemetry.inject(opts?.headers ? createHeaders(opts.headers) : undefined);
      const body = this.codec.stringifyJson(payload, topic);
      const wire = this.telemetry.sized(this.outbound.plan(topic, body, producer.maxPayload, hdrs));
      const replied =
        wire instanceof Uint8Array
          ? producer.request(topic, wire, timeout, hdrs).then((reply) => this.readReply<T>(topic, reply.data, timeout, started))
          : this.requestStored<T>(producer, topic, wire, timeout, started, hdrs);
      return this.inFlight.request(topic, replied);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A request whose body is being stored: the store, the round trip and the reply share one deadline. */
  private async requestStored<T>(
    producer: BusConnection,
    topic: string,
    stored: Promise<Uint8Array>,
    timeout: number,
    started: number,
    hdrs?: MsgHdrs,
  ): Promise<T> {
    const envelope = await withTimeout(stored, timeout, () => {
      // Stored after the requester gave up: nobody will read it.
      stored.then(
        (late) => this.outbound.discard(late),
        () => undefined,
      );
      return new RpcTimeoutError(topic, timeout);
    });
    // No responder, timed out or closed: nobody will read the request body, and sendStored deletes it.
    const reply: Msg = await this.outbound.sendStored(envelope, (e) => producer.request(topic, e, remainingMs(started, timeout), hdrs));
    return this.readReply<T>(topic, reply.data, timeout, started);
  }

  /**
   * Topics are checked once: a service publishes to a few topics many times, and the check
   * (a regex, a split) would otherwise run per message. The set is bounded.
   */
  private checkPublishTopic(topic: string): void {
    if (this.checkedTopics.has(topic)) return;
    checkTopic(topic, 'publish');
    if (this.checkedTopics.size >= 1024) this.checkedTopics.clear();
    this.checkedTopics.add(topic);
  }

  /** A reply's payload, recovered (within what is left of the request's timeout) when it came as an envelope. */
  private readReply<T>(topic: string, data: Uint8Array, timeout: number, started: number): T | Promise<T> {
    const decoded = this.codec.decode(`${topic} (reply)`, data);
    if (!decoded.envelope) return decoded.payload as T;
    // Not deleted after reading: a responder must not be able to make us delete another
    // message's body by answering with its envelope. Replies are stored with a short TTL instead.
    const recovered = this.codec.recover(`${topic} (reply)`, decoded.envelope) as Promise<T>;
    return withTimeout(recovered, remainingMs(started, timeout), () => new RpcTimeoutError(topic, timeout));
  }

  /**
   * Call `handler` for each message on `topic`. Stored messages are recovered first; for a
   * request, the handler's return value is the reply and a throw becomes `RemoteHandlerError`.
   */
  async subscribe<T = any>(topic: string, handler: MessageHandler<T>, options?: SubscribeOptions): Promise<EventBusSubscription> {
    checkCallOptions(options, SUBSCRIBE_KEYS);
    const opts = options ?? {};
    checkTopic(topic, 'subscribe');
    checkQueue(opts.queue, topic);
    if (typeof handler !== 'function') throw new InvalidOptionsError('handler', `must be a function (topic "${topic}")`);
    const durable = durableSettings(topic, opts);
    const consumerName = opts.consumer ?? DEFAULT_CONSUMER;
    const maxConcurrent = opts.maxConcurrent ?? this.options.maxConcurrentHandlers;
    wholeNumber('maxConcurrent', maxConcurrent);
    const maxHeldBytes = opts.maxHeldBytes ?? this.options.maxHeldBytes;
    wholeNumber('maxHeldBytes', maxHeldBytes, 1, 'bytes');
    await this.connect();
    const client = await this.consumers.get(consumerName);
    const limits = { maxConcurrent, maxPending: this.options.maxPendingMessages, maxHeldBytes };
    if (durable) {
      const sub = await this.durability.subscribe(client, this.deliveryFor(client), topic, handler as MessageHandler, durable, limits);
      const stopDurable = this.subscriptions.addDurable(sub, topic, consumerName, durable.durable, this.options.shutdownTimeoutMs);
      return { subject: topic, durable: durable.durable, consumer: consumerName, unsubscribe: stopDurable };
    }
    const stop = await this.subscriptions.start(
      client,
      this.deliveryFor(client),
      {
        topic,
        queue: opts.queue,
        consumer: consumerName,
        handler: handler as MessageHandler,
        limits,
        recoverOnReceipt: opts.recoverOnReceipt ?? this.recoverOnReceipt(),
      },
      this.options.shutdownTimeoutMs,
    );
    return { subject: topic, queue: opts.queue, consumer: consumerName, unsubscribe: stop };
  }

  /**
   * What each live subscription holds now (handlers running, messages waiting, bytes held against
   * its `maxHeldBytes` budget) and how many messages it has dropped or shed. For health checks and
   * metrics.
   */
  subscriptionStats(): SubscriptionStats[] {
    return this.subscriptions.stats();
  }

  /** The bus's NATS connections by name (`producer`, then `consumer:<name>`), read-only. For health checks. */
  connections(): ReadonlyMap<string, ConnectionStatus> {
    const all = new Map<string, ConnectionStatus>([['producer', this.producer]]);
    for (const [name, c] of this.consumers.clients()) all.set(`consumer:${name}`, c);
    return all;
  }

  /**
   * Bytes above which `publish`, `rpcRequest` and replies offload a body to storage: the
   * `largeMessageThreshold` option, or the server's max_payload (known once connected, 1 MiB
   * before) minus header room.
   */
  get offloadThreshold(): number {
    return this.codec.thresholdFor(this.producer.maxPayload);
  }

  /** Whether the bus uses JetStream: `jetstream` configured, or a durable subscription or persisted publish made. */
  get usesJetStream(): boolean {
    return this.durability.inUse;
  }

  /** Throws `NotConnectedError` when JetStream does not answer on the producer connection. For `/_health`. */
  async pingJetStream(): Promise<void> {
    await this.durability.ping(this.openProducer());
  }

  /** The storage the bus offloads to, or null. */
  get messageStorage(): MessageStorageManager | null {
    return this.storage;
  }

  /**
   * Stop receiving, let in-flight handlers finish (up to `shutdownTimeoutMs`), flush what was
   * published, and close every connection. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const deadline = this.options.shutdownTimeoutMs;
    await this.subscriptions.stopAll(deadline);
    await this.consumers.close(deadline);
    // A first connect still waiting for NATS stops trying.
    this.producer.cancelConnect();
    // Handlers have finished: what they and others published goes out; nobody will get a reply now.
    await this.inFlight.waitForPublishes(deadline);
    this.inFlight.failRequests();
    await this.connecting?.catch(() => undefined);
    await this.producer.drain(deadline);
    this.telemetry.stop();
  }

  private openProducer(): BusConnection {
    if (this.closing) throw new NotConnectedError('EventBus is closed');
    if (!this.connecting) throw new NotConnectedError('EventBus is not connected; call connect() first');
    return this.producer;
  }

  /** The delivery path of a subscription on `client`: replies go out on the connection the request came in on. */
  private deliveryFor(client: BusConnection): HandlerDelivery {
    return new HandlerDelivery(new ClaimCheckDelivery(this.codec, client, this.logger, this.telemetry), this.logger, this.badInputLog);
  }

  /** How long the storage keeps a body by default, when it says (the Redis and object stores do). */
  private storageTtlSeconds(): number | undefined {
    const ttl = (this.storage as { ttlSeconds?: unknown } | null)?.ttlSeconds;
    return typeof ttl === 'number' ? ttl : undefined;
  }

  /** The bus-wide default: on in legacy mode (bare-token keys, where Python peers may delete on read). */
  private recoverOnReceipt(): boolean {
    if (this.options.recoverOnReceipt !== undefined) return this.options.recoverOnReceipt;
    // The store says so (RedisStorageManager with keyPrefix '': the Python services' bare-token keys).
    return this.storage?.deletesOnRead === true;
  }

  private connectionName(): string {
    return this.options.nats.name ?? NATS_CONNECTION_DEFAULTS.name;
  }

  private checkThreshold(client: BusConnection): void {
    this.outbound.checkThreshold(this.options.largeMessageThreshold, client.maxPayload);
  }
}

/** The persist options of a publish, checked, or undefined for a plain publish. */
function persistOptions(opts: PublishOptions | PersistOptions | undefined): PersistOptions | undefined {
  const o = opts as { persist?: unknown; msgId?: unknown } | undefined;
  if (o?.persist === undefined || o.persist === false) {
    if (o?.msgId !== undefined) throw new InvalidOptionsError('msgId', 'applies to persisted publishes only; add persist: true');
    return undefined;
  }
  if (o.persist !== true) throw new InvalidOptionsError('persist', `must be true or false, got ${typeof o.persist}`);
  nonEmptyString('msgId', o.msgId);
  if (o.msgId !== undefined) checkMsgId(o.msgId as string);
  return o as PersistOptions;
}

/**
 * A `msgId` travels as the `Nats-Msg-Id` header: what a header value may not hold is refused, and
 * control characters too (an id is never meant to carry them), so two ids never arrive as one.
 */
function checkMsgId(id: string): void {
  checkHeaderValue('msgId', id);
  // eslint-disable-next-line no-control-regex -- control characters are what this looks for
  if (/[\u0000-\u001f\u007f]/.test(id)) throw new InvalidOptionsError('msgId', 'must not contain control characters');
}

/** What is left of `timeout` ms since `started`; at least 1 ms, so the last step still gets its try. */
function remainingMs(started: number, timeout: number): number {
  return Math.max(1, timeout - (Date.now() - started));
}
