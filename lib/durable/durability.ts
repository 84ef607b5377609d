// JetStream for one bus: streams ensured at bootstrap, persisted publishes, durable subscriptions.
// Keeping each durable's consumer there and pulling is in consumer-upkeep.ts.
import { Logger } from '@nestjs/common';
import { InvalidOptionsError, NotConnectedError, NotPersistedError } from '../errors/event-bus.errors';
import { HandlerDelivery } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { DispatchLimits } from '../delivery/bounded-dispatcher';
import { Outbound } from '../delivery/outbound';
import { BusConnection, MsgHdrs } from '../nats/bus-connection';
import { DurableConsumerSpec, JetStreamLink, mayHaveBeenStored, PersistAck, StreamLimits, StreamSpec } from '../nats/jetstream';
import { deepFreeze, DEFAULTS } from '../options/defaults';
import { ConsumerUpkeep } from './consumer-upkeep';
import { DeadLetters } from './dead-letters';
import { checkDueWithin, DueTime } from './delay';
import { DurableSubscription } from './durable-subscription';
import { DurableSettings, JetStreamOptions } from './durable.options';
import { openInbox } from './inbox';

/** Seconds a stored body outlives the stream's own limit, so a message read at the last moment still finds it. */
const BODY_MARGIN_SECONDS = 60;
/**
 * How long a stream's limits are trusted: another deployment may raise its age at any time, and
 * bodies stored with the old one would expire before their messages. One lookup a second per topic
 * is little beside storing a large body.
 */
const STREAM_LIMITS_MAX_AGE_MS = 1000;

/**
 * JetStream for one bus: the streams it ensures at bootstrap, persisted publishes (large bodies
 * stored for as long as their stream keeps the message), and durable subscriptions.
 */
export class Durability {
  private readonly links = new WeakMap<BusConnection, Promise<JetStreamLink>>();
  // Which stream keeps a topic's messages, for the TTL of stored bodies, and when that was read; a service publishes to few topics.
  private readonly limits = new Map<string, { at: number; found: Promise<StreamLimits | undefined> }>();
  private readonly options: ResolvedJetStreamOptions;
  /** `jetstream.apiTimeoutMs`, resolved. */
  readonly apiTimeoutMs: number;
  private readonly upkeep: ConsumerUpkeep;

  constructor(
    options: JetStreamOptions | undefined,
    private readonly outbound: Outbound,
    private readonly logger: Logger,
  ) {
    this.options = resolveJetStreamOptions(options);
    this.apiTimeoutMs = this.options.apiTimeoutMs;
    this.upkeep = new ConsumerUpkeep(this.options, logger);
  }

  /** At bootstrap, with `jetstream` configured: JetStream must answer, and the listed streams are ensured. */
  async start(producer: BusConnection): Promise<void> {
    if (!this.options.configured) return;
    const link = await this.linkFor(producer);
    for (const [i, spec] of this.options.streams.entries()) {
      if (this.outbound.hasStorage && !spec.maxAgeSeconds) {
        throw new InvalidOptionsError(
          `jetstream.streams[${i}].maxAgeSeconds`,
          `stream ${spec.name} would keep messages with no age limit, but stored bodies of large messages expire; set maxAgeSeconds`,
        );
      }
      const done = await link.ensureStream(spec, this.options);
      if (done.outcome === 'created') this.logger.log(`JetStream stream ${spec.name} created (${spec.subjects.join(', ')})`);
      if (done.outcome === 'updated') this.logger.log(`JetStream stream ${spec.name} updated: ${done.changes.join(', ')}`);
    }
  }

  /**
   * Publish and wait until a stream stored it. A large body is stored first, kept as long as the
   * stream keeps the message; if the stream then refuses the envelope, the body is deleted.
   */
  async publish(
    producer: BusConnection,
    topic: string,
    body: string | Uint8Array,
    hdrs: MsgHdrs | undefined,
    msgId: string | undefined,
    due?: DueTime,
  ): Promise<PersistAck> {
    const link = await this.linkFor(producer).catch((err: unknown) => {
      // A call, not a bootstrap: the caller gets the publish's own error, with the server's answer as cause.
      if (err instanceof InvalidOptionsError && err.option === 'jetstream') {
        throw new NotPersistedError(topic, 'jetstream_disabled', 'the server has no JetStream for this account', { cause: err });
      }
      throw err;
    });
    if (due) checkDueWithin(await this.streamFor(link, topic), due);
    if (this.outbound.fitsInline(body, producer.maxPayload, hdrs)) {
      const bytes = this.outbound.plan(topic, body, producer.maxPayload, hdrs) as Uint8Array;
      return link.publish(topic, bytes, hdrs, msgId, this.apiTimeoutMs);
    }
    // Without storage a large body is refused at once (PayloadTooLargeError), before any stream lookup.
    this.outbound.checkSendable(topic, body, producer.maxPayload, hdrs);
    const stream = await this.streamFor(link, topic);
    if (!stream) throw new NotPersistedError(topic, 'no_stream', 'no stream captures the subject (nothing was stored)');
    if (!stream.maxAgeSeconds) {
      throw new NotPersistedError(
        topic,
        'no_age_limit',
        `stream ${stream.name} has no age limit, and a stored body would expire before its message`,
      );
    }
    const envelope = await this.outbound.plan(topic, body, producer.maxPayload, hdrs, {
      minTtlSeconds: stream.maxAgeSeconds + BODY_MARGIN_SECONDS,
    });
    let ack: PersistAck;
    try {
      ack = await link.publish(topic, envelope, hdrs, msgId, this.apiTimeoutMs);
    } catch (err) {
      // The stream may have changed (deleted, re-created, other limits): look it up afresh next time.
      this.limits.delete(topic);
      // An ack that did not come may still have been stored: then the body is needed; the TTL removes it otherwise.
      if (!mayHaveBeenStored(err)) this.outbound.discard(envelope);
      throw err;
    }
    // The stream kept the first copy, whose envelope names its own body: this one is not needed.
    if (ack.duplicate) this.outbound.discard(envelope);
    return ack;
  }

  /**
   * A large body published without `persist` to `topic` was stored with the storage's own TTL. When
   * a stream captures the topic it keeps the message longer than that, and a durable reading it
   * late finds no body (a `not_found` dead letter): warn once per topic, naming the stream. Only on
   * a bus that uses JetStream, so that a core-only bus makes no JetStream calls.
   */
  noteStoredWithoutPersist(producer: BusConnection, topic: string, storageTtlSeconds: number | undefined): void {
    if (!this.inUse || this.warnedTopics.has(topic)) return;
    if (this.warnedTopics.size >= 1024) this.warnedTopics.clear();
    this.warnedTopics.add(topic);
    this.linkFor(producer)
      .then((link) => this.streamFor(link, topic))
      .then((stream) => {
        if (!stream) return;
        const ttl = storageTtlSeconds === undefined ? 'the storage TTL' : `${storageTtlSeconds} s`;
        const age = stream.maxAgeSeconds ? `${stream.maxAgeSeconds} s` : 'with no age limit';
        if (stream.maxAgeSeconds && storageTtlSeconds !== undefined && stream.maxAgeSeconds <= storageTtlSeconds) return;
        this.logger.warn(
          `a large message on "${topic}" was published without persist: true, so its stored body lives ${ttl}, but stream ${stream.name} keeps the message ${age}: a durable reading it later finds no body. Publish it with persist: true (said once per topic)`,
        );
      })
      // Not knowing is no reason to warn; the next publish to the topic does not ask again.
      .catch(() => undefined);
  }

  // Topics already checked by `noteStoredWithoutPersist`.
  private readonly warnedTopics = new Set<string>();

  /** Start a durable subscription on `client`: bind to the stream that captures the topic, ensure the consumer, pull. */
  async subscribe(
    client: BusConnection,
    delivery: HandlerDelivery,
    topic: string,
    handler: MessageHandler,
    settings: DurableSettings,
    limits: DispatchLimits,
  ): Promise<DurableSubscription> {
    const link = await this.linkFor(client);
    const stream = await link.streamFor(topic);
    if (!stream) {
      throw new InvalidOptionsError(
        'durable',
        `no JetStream stream captures "${topic}" (durable "${settings.durable}"); list one in jetstream.streams or create it`,
      );
    }
    const consumer: DurableConsumerSpec = {
      stream: stream.name,
      durable: settings.durable,
      filterSubject: topic,
      ackWaitMs: settings.ackWaitMs,
      maxDeliver: settings.maxDeliver,
      backoffMs: settings.backoffMs,
    };
    await this.upkeep.ensure(link, consumer);
    const deadLetterStream = settings.deadLetter ? await link.streamFor(settings.deadLetter) : undefined;
    const deadLetters = new DeadLetters(
      client,
      link,
      { subject: settings.deadLetter, durable: settings.durable, streamMaxAgeSeconds: deadLetterStream?.maxAgeSeconds },
      this.outbound,
      this.apiTimeoutMs,
      this.logger,
    );
    // Idempotent: the bucket is opened (created when missing) now, so a server that cannot keep it fails the subscribe.
    const inbox = await openInbox(client.connection, settings, this.apiTimeoutMs, this.logger);
    const subscription = new DurableSubscription({ topic, handler, limits, settings, inbox }, delivery, deadLetters, this.logger);
    const first = await link.pull(stream.name, settings.durable);
    subscription.start(this.upkeep.pullSource(link, consumer, topic, first));
    return subscription;
  }

  /** Throws when JetStream does not answer on `client`, or a durable cannot pull (for `/_health`). */
  async ping(client: BusConnection): Promise<void> {
    await (await this.linkFor(client)).ping();
    const broken = this.upkeep.firstBroken;
    if (broken) throw new NotConnectedError(`durable ${broken} cannot pull`);
  }

  /** Whether the bus uses JetStream: configured, or opened by a durable subscription or a persisted publish. */
  get inUse(): boolean {
    return this.options.configured || this.used;
  }

  private used = false;

  private linkFor(client: BusConnection): Promise<JetStreamLink> {
    let link = this.links.get(client);
    if (!link) {
      this.used = true;
      link = JetStreamLink.open(client.connection, this.apiTimeoutMs);
      // A failure is not kept: JetStream may be enabled later, or the server back.
      link.catch(() => this.links.delete(client));
      this.links.set(client, link);
    }
    return link;
  }

  private streamFor(link: JetStreamLink, topic: string): Promise<StreamLimits | undefined> {
    const cached = this.limits.get(topic);
    if (cached && Date.now() - cached.at < STREAM_LIMITS_MAX_AGE_MS) return cached.found;
    if (this.limits.size >= 1024) this.limits.clear();
    const entry = { at: Date.now(), found: link.streamFor(topic) };
    const forget = () => this.limits.get(topic) === entry && this.limits.delete(topic);
    entry.found.then((s) => s ?? forget(), forget);
    this.limits.set(topic, entry);
    return entry.found;
  }
}

/** `jetstream` with its defaults filled in, read once. */
export interface ResolvedJetStreamOptions {
  /** Whether `jetstream` was given: then JetStream must answer at bootstrap. */
  readonly configured: boolean;
  readonly streams: readonly StreamSpec[];
  readonly apiTimeoutMs: number;
  readonly allowDestructiveUpdates: boolean;
  /** False: bind to existing streams and consumers, never create or update them. */
  readonly manage: boolean;
}

export function resolveJetStreamOptions(options: JetStreamOptions | undefined): ResolvedJetStreamOptions {
  return deepFreeze({
    configured: options !== undefined,
    // Copies: freezing must not reach the caller's own objects.
    streams: (options?.streams ?? []).map((spec) => ({ ...spec, subjects: [...spec.subjects] })),
    apiTimeoutMs: options?.apiTimeoutMs ?? DEFAULTS.jetstream.apiTimeoutMs,
    allowDestructiveUpdates: options?.allowDestructiveUpdates ?? DEFAULTS.jetstream.allowDestructiveUpdates,
    manage: options?.manage ?? DEFAULTS.jetstream.manage,
  });
}
