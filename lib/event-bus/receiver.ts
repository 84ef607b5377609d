// The receive side of one bus: `subscribe`, core NATS or durable, on a named consumer connection,
// each subscription checked in full before anything connects. EventBus documents it.
import { Logger } from '@nestjs/common';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { HandlerDelivery } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { RateLimitedLog } from '../delivery/rate-limited-log';
import { Durability } from '../durable/durability';
import { durableSettings } from '../durable/durable.options';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { BusConnection } from '../nats/bus-connection';
import { checkQueue, checkTopic } from '../nats/subjects';
import { renamed, wholeNumber } from '../options/rules';
import { BusTelemetry } from '../telemetry/bus-telemetry';
import { ConsumerPool } from './consumer-pool';
import { checkCallOptions, EventBusCoreOptions, SUBSCRIBE_KEYS, SubscribeOptions } from './event-bus.options';
import { Subscriptions, SubscriptionStats } from './subscriptions';

/** What `subscribe` returns. */
export interface EventBusSubscription {
  readonly subject: string;
  readonly queue?: string;
  /** The durable consumer's name, for a durable subscription. */
  readonly durable?: string;
  /** The named connection it is on. */
  readonly connection: string;
  /** @deprecated The same as `connection`. */
  readonly consumer: string;
  /** Stop receiving, let in-flight handlers finish, then resolve. */
  unsubscribe(): Promise<void>;
}

/** The connection a subscription that names none is on. */
export const DEFAULT_CONNECTION = 'default';
/** @deprecated Use `DEFAULT_CONNECTION`. */
export const DEFAULT_CONSUMER = DEFAULT_CONNECTION;

/** What the receive side uses of its bus. */
export interface ReceiverParts {
  codec: ClaimCheckCodec;
  durability: Durability;
  telemetry: BusTelemetry;
  logger: Logger;
  consumers: ConsumerPool;
  options: Required<Pick<EventBusCoreOptions, 'maxConcurrentHandlers' | 'maxHeldBytes' | 'maxPendingMessages' | 'shutdownTimeoutMs'>> &
    Pick<EventBusCoreOptions, 'recoverOnReceipt'>;
  /** The store deletes a body when it is read (see `MessageStorageManager.deletesOnRead`). */
  deletesOnRead: boolean;
  /** The bus's own connect (idempotent): subscribing connects it. */
  connect(): Promise<void>;
}

/** `subscribe` of one bus, and its live subscriptions. */
export class Receiver {
  private readonly subscriptions: Subscriptions;
  private readonly badInputLog: RateLimitedLog;
  private readonly options: ReceiverParts['options'];

  constructor(private readonly parts: ReceiverParts) {
    this.subscriptions = new Subscriptions(parts.logger);
    this.badInputLog = new RateLimitedLog(parts.logger);
    this.options = parts.options;
  }

  /** See `EventBus.subscribe`. */
  async subscribe<T>(topic: string, handler: MessageHandler<T>, options?: SubscribeOptions): Promise<EventBusSubscription> {
    checkCallOptions(options, SUBSCRIBE_KEYS);
    const opts = options ?? {};
    checkTopic(topic, 'subscribe');
    checkQueue(opts.queue, topic);
    if (typeof handler !== 'function') throw new InvalidOptionsError('handler', `must be a function (topic "${topic}")`);
    const durable = durableSettings(topic, opts);
    const consumerName = renamed<string>(opts, 'connection', 'consumer').value ?? DEFAULT_CONNECTION;
    const maxConcurrent = opts.maxConcurrent ?? this.options.maxConcurrentHandlers;
    wholeNumber('maxConcurrent', maxConcurrent);
    const maxHeldBytes = opts.maxHeldBytes ?? this.options.maxHeldBytes;
    wholeNumber('maxHeldBytes', maxHeldBytes, 1, 'bytes');
    await this.parts.connect();
    const client = await this.parts.consumers.get(consumerName);
    const limits = { maxConcurrent, maxPending: this.options.maxPendingMessages, maxHeldBytes };
    if (durable) {
      const sub = await this.parts.durability.subscribe(
        client,
        this.deliveryFor(client),
        topic,
        handler as MessageHandler,
        durable,
        limits,
      );
      const stopDurable = this.subscriptions.addDurable(sub, topic, consumerName, durable.durable, this.options.shutdownTimeoutMs);
      return { subject: topic, durable: durable.durable, connection: consumerName, consumer: consumerName, unsubscribe: stopDurable };
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
    return { subject: topic, queue: opts.queue, connection: consumerName, consumer: consumerName, unsubscribe: stop };
  }

  stats(): SubscriptionStats[] {
    return this.subscriptions.stats();
  }

  /** Stop every subscription, waiting (bounded) for its handlers. */
  stopAll(timeoutMs: number): Promise<void> {
    return this.subscriptions.stopAll(timeoutMs);
  }

  /** The delivery path of a subscription on `client`: replies go out on the connection the request came in on. */
  private deliveryFor(client: BusConnection): HandlerDelivery {
    return new HandlerDelivery(
      new ClaimCheckDelivery(this.parts.codec, client, this.parts.logger, this.parts.telemetry),
      this.parts.logger,
      this.badInputLog,
    );
  }

  /** The bus-wide default: on in legacy mode (bare-token keys, where Python peers may delete on read). */
  private recoverOnReceipt(): boolean {
    if (this.options.recoverOnReceipt !== undefined) return this.options.recoverOnReceipt;
    // The store says so (RedisStorageManager with keyPrefix '': the Python services' bare-token keys).
    return this.parts.deletesOnRead;
  }
}
