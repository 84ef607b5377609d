import { Logger, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import {
  EventBusError,
  InvalidMessageError,
  InvalidOptionsError,
  MessageStorageError,
  NotConnectedError,
  StoredMessageNotFoundError,
} from '../errors/event-bus.errors';
import { createHeaders, Msg, NatsClient, Subscription } from '../nats/nats-client';
import { settleWithin } from '../nats/settle-within';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from '../nats/nats-client.options';
import { MessageStorageManager } from '../storage/message-storage-manager';
import { BoundedDispatcher } from '../delivery/bounded-dispatcher';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { HandlerDelivery } from './handler-delivery';
import { RateLimitedLog } from '../delivery/rate-limited-log';
import {
  EVENT_BUS_DEFAULTS,
  EventBusCoreOptions,
  PublishOptions,
  RpcRequestOptions,
  SubscribeOptions,
} from './event-bus.options';
import { MessageContext, MessageHandler } from './message-context';

/** What `subscribe` returns. */
export interface EventBusSubscription {
  readonly subject: string;
  readonly queue?: string;
  readonly consumer: string;
  /** Stop receiving, let in-flight handlers finish, then resolve. */
  unsubscribe(): Promise<void>;
}

export const DEFAULT_CONSUMER = 'default';

interface ActiveSubscription {
  sub: Subscription;
  dispatcher: BoundedDispatcher<Msg>;
  subject: string;
}

/**
 * One event bus per service: a producer connection for `publish`/`rpcRequest`, and named consumer
 * connections for subscriptions. Large bodies go through claim-check both ways.
 */
export class EventBus implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('EventBus');
  private readonly badInputLog = new RateLimitedLog(this.logger);
  private readonly codec: ClaimCheckCodec;
  private readonly producer: NatsClient;
  private readonly consumers = new Map<string, NatsClient>();
  private readonly consumerOptions = new Map<string, NatsConnectionOptions>();
  private readonly subscriptions = new Set<ActiveSubscription>();
  private readonly options: Required<Omit<EventBusCoreOptions, 'largeMessageThreshold'>> & EventBusCoreOptions;
  private connecting?: Promise<void>;
  private closing?: Promise<void>;

  constructor(
    options: EventBusCoreOptions,
    private readonly storage: MessageStorageManager | null = null,
  ) {
    validateCoreOptions(options);
    this.options = { ...EVENT_BUS_DEFAULTS, ...options };
    this.codec = new ClaimCheckCodec(storage, options.largeMessageThreshold);
    this.producer = new NatsClient('producer', { ...options.nats, name: this.connectionName() });
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
    this.connecting ??= this.producer.connect().then(
      () => this.checkThreshold(this.producer),
      (err) => {
        throw describeConnectError(err, this.options.nats);
      },
    );
    // A bad threshold fails bootstrap, and Nest then runs no destroy hook: release the connection here.
    this.connecting.catch(() => this.producer.drain(1000));
    return this.connecting;
  }

  /**
   * Register a consumer: a connection of its own for subscriptions that name it. `natsOptions`
   * are merged over the bus's NATS options. Connects now if the bus is connected.
   */
  async addConsumer(name: string, natsOptions: Partial<NatsConnectionOptions> = {}): Promise<void> {
    if (typeof name !== 'string' || !name) throw new InvalidOptionsError('consumer', 'must be a non-empty string');
    if (this.consumers.has(name)) return;
    this.consumerOptions.set(name, natsOptions);
    await this.consumerClient(name);
  }

  /** Publish `payload` as JSON. Large bodies are stored first; if that fails, nothing is published. */
  publish(topic: string, payload: unknown, opts?: PublishOptions): Promise<void> {
    try {
      const producer = this.openProducer();
      const body = this.codec.encodeJson(payload, topic);
      const wire = this.codec.toWire(topic, body, producer.maxPayload);
      const hdrs = opts?.headers ? createHeaders(opts.headers) : undefined;
      if (wire instanceof Uint8Array) {
        producer.publish(topic, wire, hdrs);
        return Promise.resolve();
      }
      return wire.then((envelope) => producer.publish(topic, envelope, hdrs));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Send one request and wait for its reply, recovering a stored reply. Fails with
   * `RpcTimeoutError`, `NoRespondersError`, `RemoteHandlerError` or `MessageStorageError`.
   */
  rpcRequest<T = unknown>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    // No async frame: a small request is sent at once and its reply is parsed in one `.then`.
    try {
      const producer = this.openProducer();
      const timeout = opts?.timeout ?? this.options.rpcTimeoutMs;
      if (!(timeout > 0)) throw new InvalidOptionsError('timeout', 'must be a positive number of milliseconds');
      const body = this.codec.encodeJson(payload, topic);
      const wire = this.codec.toWire(topic, body, producer.maxPayload);
      const hdrs = opts?.headers ? createHeaders(opts.headers) : undefined;
      const send = (data: Uint8Array) => producer.request(topic, data, timeout, hdrs);
      const replied = wire instanceof Uint8Array ? send(wire) : wire.then(send);
      return replied.then((reply) => this.readReply<T>(topic, reply.data));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** A reply's payload, recovered when it came as an envelope. */
  private readReply<T>(topic: string, data: Uint8Array): T | Promise<T> {
    const decoded = this.codec.decode(`${topic} (reply)`, data);
    if (!decoded.envelope) return decoded.payload as T;
    const envelope = decoded.envelope;
    return this.codec.recover(`${topic} (reply)`, envelope).then((recovered) => {
      // A reply has exactly one reader, so it need not wait for its TTL.
      this.codec.discard(envelope);
      return recovered as T;
    });
  }

  /**
   * Call `handler` for each message on `topic`. Stored messages are recovered first; for a
   * request, the handler's return value is the reply and a throw becomes `RemoteHandlerError`.
   */
  async subscribe<T = any>(topic: string, handler: MessageHandler<T>, opts: SubscribeOptions = {}): Promise<EventBusSubscription> {
    if (typeof topic !== 'string' || !topic) throw new InvalidOptionsError('topic', 'must be a non-empty string');
    if (typeof handler !== 'function') throw new InvalidOptionsError('handler', `must be a function (topic "${topic}")`);
    const consumerName = opts.consumer ?? DEFAULT_CONSUMER;
    const maxConcurrent = opts.maxConcurrent ?? this.options.maxConcurrentHandlers;
    if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1)
      throw new InvalidOptionsError('maxConcurrent', `must be a whole number >= 1 (topic "${topic}")`);
    await this.connect();
    const client = await this.consumerClient(consumerName);
    // On a subject without wildcards every message's subject is the topic; knowing it spares
    // nats.js decoding `msg.subject` from bytes for each message.
    const literalSubject = /[*>]/.test(topic) ? undefined : topic;
    const delivery = this.deliveryFor(client);
    const dispatcher = new BoundedDispatcher<Msg>(
      topic,
      maxConcurrent,
      this.options.maxPendingMessages,
      (msg) => delivery.deliver(msg, handler as MessageHandler, literalSubject),
      this.logger,
    );
    const sub = client.subscribe(topic, (msg) => dispatcher.push(msg), opts.queue);
    const active: ActiveSubscription = { sub, dispatcher, subject: topic };
    this.subscriptions.add(active);
    // Resolve only once the server knows of the interest, so a publish right after cannot miss it.
    await client.flush();
    return {
      subject: topic,
      queue: opts.queue,
      consumer: consumerName,
      unsubscribe: () => this.stopSubscription(active, this.options.shutdownTimeoutMs),
    };
  }

  /** The live NATS connections by name (`producer`, then each consumer). For health checks. */
  connections(): ReadonlyMap<string, NatsClient> {
    const all = new Map<string, NatsClient>([['producer', this.producer]]);
    for (const [name, c] of this.consumers) all.set(`consumer:${name}`, c);
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
    await Promise.all([...this.subscriptions].map((s) => this.stopSubscription(s, deadline)));
    await Promise.all([...this.consumers.values()].map((c) => c.drain(deadline)));
    await this.connecting?.catch(() => undefined);
    await this.producer.drain(deadline);
  }

  private async stopSubscription(active: ActiveSubscription, timeoutMs: number): Promise<void> {
    if (!this.subscriptions.delete(active)) return;
    // drain() unsubscribes and waits for messages already sent by the server to arrive;
    // while the server is unreachable it cannot finish, so it is bounded too.
    if (!active.sub.isClosed()) await settleWithin(active.sub.drain(), timeoutMs);
    if (!active.sub.isClosed()) active.sub.unsubscribe();
    const idle = await settleWithin(active.dispatcher.whenIdle(), timeoutMs);
    if (!idle) {
      this.logger.warn(
        `"${active.subject}": ${active.dispatcher.inFlight} handlers still running and ${active.dispatcher.pending} messages waiting after ${timeoutMs} ms; closing anyway`,
      );
    }
  }

  private openProducer(): NatsClient {
    if (this.closing) throw new NotConnectedError('EventBus is closed');
    if (!this.connecting) throw new NotConnectedError('EventBus is not connected; call connect() first');
    return this.producer;
  }

  private consumerClient(name: string): Promise<NatsClient> {
    let client = this.consumers.get(name);
    if (!client) {
      const own = this.consumerOptions.get(name) ?? {};
      client = new NatsClient(`consumer:${name}`, {
        ...this.options.nats,
        ...own,
        name: own.name ?? `${this.connectionName()}:${name}`,
      });
      this.consumers.set(name, client);
      const c = client;
      const ready = c.connect().then(() => {
        this.checkThreshold(c);
        return c;
      });
      this.consumerReady.set(name, ready);
      ready.catch(() => {
        this.consumers.delete(name);
        this.consumerReady.delete(name);
      });
      return ready;
    }
    return this.consumerReady.get(name)!;
  }

  private readonly consumerReady = new Map<string, Promise<NatsClient>>();
  private readonly deliveries = new Map<NatsClient, HandlerDelivery>();

  /** Each consumer connection replies on itself, so it gets its own delivery path. */
  private deliveryFor(client: NatsClient): HandlerDelivery {
    let d = this.deliveries.get(client);
    if (!d) {
      d = new HandlerDelivery(new ClaimCheckDelivery(this.codec, client, this.logger), this.logger, this.badInputLog);
      this.deliveries.set(client, d);
    }
    return d;
  }

  private connectionName(): string {
    return this.options.nats.name ?? NATS_CONNECTION_DEFAULTS.name;
  }

  private checkThreshold(client: NatsClient): void {
    const t = this.options.largeMessageThreshold;
    if (t !== undefined && t > this.codec.thresholdFor(client.maxPayload)) {
      throw new InvalidOptionsError(
        'largeMessageThreshold',
        `${t} bytes is above what the server accepts (max_payload ${client.maxPayload} minus header room = ${this.codec.thresholdFor(client.maxPayload)})`,
      );
    }
  }
}

/** Name what failed without echoing credentials that a server URL may carry. */
function describeConnectError(err: unknown, nats: NatsConnectionOptions): Error {
  if (!(err instanceof Error)) return new Error(`could not connect to NATS: ${String(err)}`);
  const servers = ([] as string[]).concat((nats.servers as string | string[] | undefined) ?? []);
  let message = err.message;
  for (const secret of [nats.pass, nats.token, nats.user].filter((x): x is string => typeof x === 'string' && x.length > 0)) {
    message = message.split(secret).join('***');
  }
  message = message.replace(/(\w+:\/\/)[^@\s/]*@/g, '$1***@');
  const wrapped = new Error(`could not connect to NATS (${servers.length} server(s) configured, see option "nats"): ${message}`, { cause: err });
  (wrapped as Error & { code?: string }).code = (err as Error & { code?: string }).code;
  return wrapped;
}


function validateCoreOptions(options: EventBusCoreOptions): void {
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('options', 'must be an object');
  const nats = options.nats;
  if (!nats || typeof nats !== 'object') throw new InvalidOptionsError('nats', 'is required, e.g. { servers: ["nats://127.0.0.1:4222"] }');
  const servers = nats.servers;
  if (servers === undefined || (Array.isArray(servers) ? servers.length === 0 : typeof servers !== 'string' || !servers))
    throw new InvalidOptionsError('nats.servers', 'must be a URL or a non-empty array of URLs');
  const positiveInt = (name: keyof EventBusCoreOptions) => {
    const v = options[name];
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < 1))
      throw new InvalidOptionsError(name, `must be a whole number >= 1, got ${String(v)}`);
  };
  positiveInt('largeMessageThreshold');
  positiveInt('rpcTimeoutMs');
  positiveInt('maxConcurrentHandlers');
  positiveInt('maxPendingMessages');
  positiveInt('shutdownTimeoutMs');
}
