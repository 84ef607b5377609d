// The send side of one bus: `publish` (plain, claim-checked or persisted) and `rpcRequest` on the
// producer connection, each checked in full before a large body is stored. EventBus documents them.
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { Outbound } from '../delivery/outbound';
import { dueTime, withDueHeader } from '../durable/delay';
import { Durability } from '../durable/durability';
import { InvalidOptionsError, RpcTimeoutError } from '../errors/event-bus.errors';
import type { PersistAck } from '../nats/jetstream';
import { BusConnection, checkHeaderValue, createHeaders, Msg, MsgHdrs } from '../nats/bus-connection';
import { checkTopic } from '../nats/subjects';
import { MAX_TIMER_MS, nonEmptyString, renamed, wholeNumber } from '../options/rules';
import { withTimeout } from '../shared/deadline';
import { BusTelemetry } from '../telemetry/bus-telemetry';
import { checkCallOptions, PersistOptions, PUBLISH_KEYS, PublishOptions, RPC_REQUEST_KEYS, RpcRequestOptions } from './event-bus.options';
import { InFlight } from './in-flight';
import type { MessageStorageManager } from '../storage/message-storage-manager';

/** What the send side uses of its bus. */
export interface SenderParts {
  codec: ClaimCheckCodec;
  outbound: Outbound;
  durability: Durability;
  inFlight: InFlight;
  telemetry: BusTelemetry;
  /** The default `rpcRequest` timeout. */
  rpcTimeoutMs: number;
  /** The producer connection, or `NotConnectedError` when the bus is not connected or closed. */
  openProducer(): BusConnection;
  /** The store large bodies go to, or null. */
  storage: MessageStorageManager | null;
}

/** `publish` and `rpcRequest` of one bus. */
export class Sender {
  private readonly checkedTopics = new Set<string>();
  private readonly codec: ClaimCheckCodec;
  private readonly outbound: Outbound;
  private readonly telemetry: BusTelemetry;
  private readonly inFlight: InFlight;

  constructor(private readonly parts: SenderParts) {
    ({ codec: this.codec, outbound: this.outbound, telemetry: this.telemetry, inFlight: this.inFlight } = parts);
  }

  /** See `EventBus.publish`. */
  publish(topic: string, payload: unknown, opts?: PublishOptions | PersistOptions): Promise<void | PersistAck> {
    return this.telemetry.on
      ? this.telemetry.send(topic, 'publish', () => this.publishNow(topic, payload, opts))
      : this.publishNow(topic, payload, opts);
  }

  /** See `EventBus.rpcRequest`. */
  request<T>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    return this.telemetry.on
      ? this.telemetry.send(topic, 'request', () => this.requestNow<T>(topic, payload, opts))
      : this.requestNow<T>(topic, payload, opts);
  }

  private publishNow(topic: string, payload: unknown, opts?: PublishOptions | PersistOptions): Promise<void | PersistAck> {
    try {
      if (opts !== undefined) checkCallOptions(opts, PUBLISH_KEYS);
      const producer = this.parts.openProducer();
      this.checkPublishTopic(topic);
      // Everything that can be refused is checked before a large body is stored.
      const hdrs = this.telemetry.inject(opts?.headers ? createHeaders(opts.headers) : undefined);
      const body = this.codec.stringifyJson(payload, topic);
      const persist = persistOptions(opts);
      if (persist) {
        if (this.telemetry.on && this.outbound.fitsInline(body, producer.maxPayload, hdrs)) {
          this.telemetry.noteBodySize(Buffer.byteLength(body, 'utf8'));
        }
        const at = dueTime(persist);
        const sent = at === undefined ? hdrs : withDueHeader(hdrs, at);
        const due =
          at === undefined ? undefined : { at, option: persist.delayMs !== undefined ? ('delayMs' as const) : ('notBefore' as const) };
        return this.inFlight.publish(this.parts.durability.publish(producer, topic, body, sent, persist.msgId, due));
      }
      const wire = this.telemetry.sized(this.outbound.plan(topic, body, producer.maxPayload, hdrs));
      if (wire instanceof Uint8Array) {
        producer.publish(topic, wire, hdrs);
        return PUBLISHED;
      }
      // A stream that captures the topic would keep the message longer than its body: warned once per topic.
      this.parts.durability.noteStoredWithoutPersist(producer, topic, this.storageTtlSeconds());
      // close() waits for a publish whose body is being stored, so that it still goes out.
      return this.inFlight.publish(wire.then((envelope) => this.outbound.sendStored(envelope, (e) => producer.publish(topic, e, hdrs))));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private requestNow<T>(topic: string, payload: unknown, opts?: RpcRequestOptions): Promise<T> {
    // No async frame on the small path: the request is sent at once and its reply parsed in one `.then`.
    try {
      const started = Date.now();
      if (opts !== undefined) checkCallOptions(opts, RPC_REQUEST_KEYS);
      const producer = this.parts.openProducer();
      const given = renamed<number>(opts, 'timeoutMs', 'timeout');
      const timeout = given.value ?? this.parts.rpcTimeoutMs;
      wholeNumber(given.option, timeout, 1, 'milliseconds', MAX_TIMER_MS);
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

  /** How long the storage keeps a body by default, when it says (the Redis and object stores do). */
  private storageTtlSeconds(): number | undefined {
    const ttl = (this.parts.storage as { ttlSeconds?: unknown } | null)?.ttlSeconds;
    return typeof ttl === 'number' ? ttl : undefined;
  }
}

/** What a plain publish that went out at once resolves with: one promise for all, none allocated per message. */
const PUBLISHED: Promise<void> = Promise.resolve();

/** The persist options of a publish, checked, or undefined for a plain publish. */
function persistOptions(opts: PublishOptions | PersistOptions | undefined): PersistOptions | undefined {
  const o = opts as { persist?: unknown; msgId?: unknown } | undefined;
  if (o?.persist === undefined || o.persist === false) {
    if (o?.msgId !== undefined) throw new InvalidOptionsError('msgId', 'applies to persisted publishes only; add persist: true');
    // delayMs / notBefore without persist: refused there, a core publish cannot wait.
    dueTime(o);
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
