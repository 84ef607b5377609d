// EventBus, the public facade, with its documentation. The work is in sender.ts (publish, rpcRequest),
// receiver.ts (subscribe), consumer-pool.ts, subscriptions.ts and delivery/ (the send and receive cores).
import { Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { bodyCodecOf } from '../claim-check/body-codec';
import { Outbound } from '../delivery/outbound';
import { NotConnectedError } from '../errors/event-bus.errors';
import { RELEASE_TIMEOUT_MS } from '../options/defaults';
import { Durability } from '../durable/durability';
import { DeadLetters } from '../durable/dead-letter-store';
import { ConsumerLag, startConsumerLag } from '../telemetry/consumer-lag';
import type { PersistAck } from '../nats/jetstream';
import { BusConnection, ConnectionStatus } from '../nats/bus-connection';
import { InFlight } from './in-flight';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from '../nats/bus-connection.options';
import { MessageStorageManager } from '../storage/message-storage-manager';
import { ConsumerPool } from './consumer-pool';
import { Sender } from './sender';
import { DEFAULT_CONNECTION, DEFAULT_CONSUMER, EventBusSubscription, Receiver } from './receiver';
import { SubscriptionStats } from './subscriptions';
import { describeConnectError } from '../nats/connect-error';
import {
  EventBusCoreOptions,
  resolveBusOptions,
  ResolvedBusOptions,
  PersistOptions,
  PublishOptions,
  RpcRequestOptions,
  SubscribeOptions,
} from './event-bus.options';
import { MessageHandler } from '../delivery/message-context';
import { BusTelemetry } from '../telemetry/bus-telemetry';
import { TraceTaggedLogger } from '../telemetry/trace-tagged-logger';
import { tracedStore } from '../telemetry/traced-store';

export { DEFAULT_CONNECTION, DEFAULT_CONSUMER, type EventBusSubscription };

/**
 * One event bus per service: a producer connection for `publish`/`rpcRequest`, and named
 * connections (`addConnection`) for subscriptions. Large bodies go through claim-check both ways.
 */
export class EventBus implements OnModuleInit, OnModuleDestroy {
  private readonly telemetry = new BusTelemetry();
  private readonly logger: Logger = new TraceTaggedLogger('EventBus', this.telemetry);
  private readonly codec: ClaimCheckCodec;
  private readonly outbound: Outbound;
  private readonly producer: BusConnection;
  private readonly consumers: ConsumerPool;
  private readonly inFlight = new InFlight();
  private readonly options: ResolvedBusOptions;
  private readonly durability: Durability;
  private readonly sender: Sender;
  private readonly receiver: Receiver;
  private connecting?: Promise<void>;
  private closing?: Promise<void>;
  private dead?: DeadLetters;
  // The lag gauges of its durables; undefined without a meter provider.
  private lag?: ConsumerLag;

  constructor(
    options: EventBusCoreOptions,
    private readonly storage: MessageStorageManager | null = null,
  ) {
    this.options = resolveBusOptions(options);
    this.codec = new ClaimCheckCodec(tracedStore(storage, this.telemetry), this.options.largeMessageThresholdBytes, bodyCodecOf(storage));
    this.outbound = new Outbound(this.codec);
    this.durability = new Durability(options.jetstream, this.outbound, this.logger);
    const name = this.options.nats.name ?? NATS_CONNECTION_DEFAULTS.name;
    this.producer = new BusConnection('producer', { ...this.options.nats, name });
    // What the send and receive sides both use.
    const shared = { codec: this.codec, durability: this.durability, telemetry: this.telemetry };
    this.sender = new Sender({
      ...shared,
      outbound: this.outbound,
      inFlight: this.inFlight,
      rpcTimeoutMs: this.options.rpcTimeoutMs,
      openProducer: () => this.openProducer(),
      storage,
    });
    this.consumers = new ConsumerPool(this.options.nats, name, (client) => this.checkThreshold(client), this.logger);
    this.receiver = new Receiver({
      ...shared,
      logger: this.logger,
      consumers: this.consumers,
      options: this.options,
      deletesOnRead: storage?.deletesOnRead === true,
      connect: () => this.connect(),
    });
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
    const stats = () => this.subscriptionStats();
    this.telemetry.start(this.options.telemetry, stats);
    this.lag ??= startConsumerLag(this.options.telemetry, this.options.jetstream, () => this.producer.connection, stats);
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

  /** A named connection (`natsOptions` over the bus's) for the subscriptions that name it (`{ connection }`); connects now. */
  async addConnection(name: string, natsOptions: Partial<NatsConnectionOptions> = {}): Promise<void> {
    if (this.closing) throw new NotConnectedError('EventBus is closed');
    await this.consumers.add(name, natsOptions);
  }

  /** @deprecated Use `addConnection` (a named connection, not a JetStream consumer). */
  addConsumer(name: string, natsOptions?: Partial<NatsConnectionOptions>): Promise<void> {
    return this.addConnection(name, natsOptions);
  }

  /**
   * Publish `payload` as JSON. Large bodies are stored first; if that fails, nothing is published.
   * With `{ persist: true }`, resolves once a JetStream stream stored it, with `{ stream, seq,
   * duplicate }`, or rejects with `NotPersistedError`.
   */
  publish(topic: string, payload: unknown, opts: PersistOptions): Promise<PersistAck>;
  publish(topic: string, payload: unknown, opts?: PublishOptions): Promise<void>;
  publish(topic: string, payload: unknown, opts?: PublishOptions | PersistOptions): Promise<void | PersistAck> {
    return this.sender.publish(topic, payload, opts);
  }

  /**
   * Send one request and wait for its reply, recovering a stored reply. `timeoutMs` covers all of it:
   * storing a large request, the round trip, and recovering a large reply. Fails with
   * `RpcTimeoutError`, `NoRespondersError`, `RemoteHandlerError`, `MessageStorageError`, or
   * `NotConnectedError` when the bus closes while it waits.
   */
  rpcRequest<T = unknown>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    return this.sender.request<T>(topic, payload, opts);
  }

  /**
   * Call `handler` for each message on `topic`. Stored messages are recovered first; for a
   * request, the handler's return value is the reply and a throw becomes `RemoteHandlerError`.
   */
  async subscribe<T = any>(topic: string, handler: MessageHandler<T>, options?: SubscribeOptions): Promise<EventBusSubscription> {
    return this.receiver.subscribe(topic, handler, options);
  }

  /**
   * What each live subscription holds now (handlers running, messages waiting, bytes held against its
   * `maxHeldBytes` budget) and how many messages it has dropped or shed. For health checks and metrics.
   */
  subscriptionStats(): SubscriptionStats[] {
    return this.receiver.stats();
  }

  /** The bus's NATS connections by name (`producer`, then `consumer:<name>`), read-only. For health checks. */
  connections(): ReadonlyMap<string, ConnectionStatus> {
    const all = new Map<string, ConnectionStatus>([['producer', this.producer]]);
    for (const [name, c] of this.consumers.clients()) all.set(`consumer:${name}`, c);
    return all;
  }

  /**
   * Bytes above which `publish`, `rpcRequest` and replies offload a body to storage: the
   * `largeMessageThresholdBytes` option, or the server's max_payload (known once connected, 1 MiB
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

  /** Dead letters as data (list, get, replay, purge) on the producer connection; see `DeadLetters`. */
  get deadLetters(): DeadLetters {
    this.dead ??= new DeadLetters({
      connection: () => this.openProducer(),
      codec: this.codec,
      publish: (subject, body, headers, msgId) => this.durability.publish(this.openProducer(), subject, body, headers, msgId),
      apiTimeoutMs: this.durability.apiTimeoutMs,
    });
    return this.dead;
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
    await this.receiver.stopAll(deadline);
    await this.consumers.close(deadline);
    // A first connect still waiting for NATS stops trying.
    this.producer.cancelConnect();
    // Handlers have finished: what they and others published goes out; nobody will get a reply now.
    await this.inFlight.waitForPublishes(deadline);
    this.inFlight.failRequests();
    await this.connecting?.catch(() => undefined);
    await this.producer.drain(deadline);
    this.telemetry.stop();
    this.lag?.stop();
  }

  private openProducer(): BusConnection {
    if (this.closing) throw new NotConnectedError('EventBus is closed');
    if (!this.connecting) throw new NotConnectedError('EventBus is not connected; call connect() first');
    return this.producer;
  }

  private checkThreshold(client: BusConnection): void {
    this.outbound.checkThreshold(this.options.largeMessageThresholdBytes, client.maxPayload);
  }
}
