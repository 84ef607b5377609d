// JetStream through nats.js's own client (`@nats-io/jetstream`): streams, persisted publish and
// durable pull consumers, with nats.js errors turned into ours. Nothing else imports it.
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  StorageType,
  type Consumer,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamConfig,
} from '@nats-io/jetstream';
import { errors as natsErrors, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { InvalidOptionsError, NotConnectedError, NotPersistedError, type NotPersistedReason } from '../errors/event-bus.errors';
import { replicasRefusal, retryWhenTimedOut } from './nats-errors';

/** What the stream said when it stored a persisted publish. */
export interface PersistAck {
  /** The stream that stored it. */
  stream: string;
  /** Its sequence number in that stream. */
  seq: number;
  /** True when the stream had already stored a message with the same `msgId` within its duplicate window. */
  duplicate: boolean;
}

/** A stream the bus ensures at bootstrap (see `JetStreamOptions.streams`). */
export interface StreamSpec {
  name: string;
  subjects: string[];
  /** Seconds a message is kept. 0 keeps messages until the stream's other limits remove them. */
  maxAgeSeconds?: number;
  replicas?: number;
  storage?: 'file' | 'memory';
  /** Window within which a repeated `msgId` is recognised as a duplicate, in seconds. Default: the server's (2 min). */
  duplicateWindowSeconds?: number;
}

/** A durable pull consumer the bus ensures for a durable subscription. */
export interface DurableConsumerSpec {
  stream: string;
  durable: string;
  filterSubject: string;
  ackWaitMs: number;
  /** The bus's own retry settings (the server never gives up): recorded in the consumer's description to detect drift. */
  maxDeliver?: number;
  backoffMs?: readonly number[];
}

/** What ensuring a stream or consumer did, and each setting it changed (`name old → new`), for the log. */
export interface EnsureResult {
  outcome: 'created' | 'updated' | 'unchanged';
  changes: string[];
}

/** Whether settings that can lose messages or redeliver running ones may be changed (`jetstream.allowDestructiveUpdates`). */
export interface EnsureOptions {
  allowDestructiveUpdates?: boolean;
}

/** One message of a durable consumer, as the delivery path sees it. */
export interface DurableMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  /** 1 on first delivery. */
  readonly deliveryCount: number;
  readonly stream: string;
  readonly seq: number;
  ack(): void;
  /** Redeliver after `delayMs`. */
  nak(delayMs: number): void;
  /** Still being worked on: restart the ack wait. */
  working(): void;
  /** Never redeliver. (`reason` is for the caller's records; the server is not told it, see toDurableMessage.) */
  term(reason: string): void;
}

/** One pull request's messages as an async iterable, and a way to stop waiting for more. */
export interface DurableBatch extends AsyncIterable<DurableMessage> {
  stop(): void;
}

/** A durable pull consumer: messages are taken only when asked for, a batch at a time. */
export interface DurablePull {
  /** Ask for up to `max` messages; the batch ends when they came or the pull request expired (5 s). */
  fetch(max: number): Promise<DurableBatch>;
}

/** What a stream keeps, for deciding how long a claim-checked body must live. */
export interface StreamLimits {
  name: string;
  /** 0 when the stream has no age limit. */
  maxAgeSeconds: number;
}

const NS_PER_SECOND = 1_000_000_000;
/** How long one pull request lives; nats.js sends idle heartbeats at half of it and re-pulls after two are missed. */
const PULL_EXPIRES_MS = 5000;

/** JetStream on one NATS connection: stream and consumer management, persisted publish and pulls. */
export class JetStreamLink {
  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  /** Fails with `InvalidOptionsError` naming `jetstream` when the server (or account) has no JetStream. */
  static async open(nc: NatsConnection, apiTimeoutMs: number): Promise<JetStreamLink> {
    try {
      const jsm = await jetstreamManager(nc, { timeout: apiTimeoutMs });
      return new JetStreamLink(jetstream(nc, { timeout: apiTimeoutMs }), jsm);
    } catch (err) {
      // nats.js does not export its JetStreamNotEnabled class from the package root; its name is stable.
      if ((err as Error)?.name === 'JetStreamNotEnabled' || isApiError(err, JetStreamApiCodes.JetStreamNotEnabledForAccount)) {
        throw new InvalidOptionsError(
          'jetstream',
          'the NATS server has no JetStream for this account; start nats-server with -js (and -sd <dir>), or enable it in the account',
          { cause: err },
        );
      }
      throw asNotConnected('JetStream did not answer', err);
    }
  }

  /**
   * Create the stream when missing, update it when it differs; never delete. A change that shrinks
   * it (shorter age, fewer subjects or replicas, a shorter duplicate window) is refused with
   * `InvalidOptionsError` unless `allowDestructiveUpdates`: another deployment may share the stream.
   */
  async ensureStream(spec: StreamSpec, options: EnsureOptions = {}): Promise<EnsureResult> {
    const wanted: Partial<StreamConfig> = {
      subjects: spec.subjects,
      max_age: nanos((spec.maxAgeSeconds ?? 0) * 1000),
      num_replicas: spec.replicas ?? 1,
      storage: spec.storage === 'memory' ? StorageType.Memory : StorageType.File,
      ...(spec.duplicateWindowSeconds !== undefined ? { duplicate_window: nanos(spec.duplicateWindowSeconds * 1000) } : {}),
    };
    try {
      return await retryWhenTimedOut(() => this.reconcileStream(spec, wanted, options, true));
    } catch (err) {
      if (err instanceof InvalidOptionsError) throw err;
      if (err instanceof JetStreamApiError) {
        const replicas = replicasRefusal(err, `jetstream.streams (${spec.name}).replicas`, spec.replicas ?? 1);
        if (replicas) throw replicas;
        throw new InvalidOptionsError(`jetstream.streams (${spec.name})`, `the server refused the stream: ${err.message}`, { cause: err });
      }
      throw asNotConnected(`could not ensure stream ${spec.name}`, err);
    }
  }

  private async reconcileStream(
    spec: StreamSpec,
    wanted: Partial<StreamConfig>,
    options: EnsureOptions,
    mayRace: boolean,
  ): Promise<EnsureResult> {
    let current: StreamConfig;
    try {
      current = (await this.jsm.streams.info(spec.name)).config;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
      try {
        await this.jsm.streams.add({ name: spec.name, ...wanted });
        return { outcome: 'created', changes: [] };
      } catch (addErr) {
        // Instances of a service start together: another may have created it a moment ago. Compare with that.
        if (mayRace && addErr instanceof JetStreamApiError) return this.reconcileStream(spec, wanted, options, false);
        throw addErr;
      }
    }
    const drift = streamDrift(spec, current, wanted);
    if (drift.length === 0) return { outcome: 'unchanged', changes: [] };
    const shrinking = drift.filter((d) => d.destructive);
    if (shrinking.length > 0 && !options.allowDestructiveUpdates) {
      throw new InvalidOptionsError(
        `jetstream.streams (${spec.name}).${shrinking[0].option}`,
        `stream ${spec.name} exists with ${shrinking.map((d) => d.why).join('; ')}. Shrinking a stream that other deployments may share is refused; keep its current value (or more), or set jetstream.allowDestructiveUpdates: true to apply it`,
      );
    }
    const update = { ...current, ...wanted };
    // The server refuses a duplicate window longer than the age; one the spec does not set follows the age down.
    if (wanted.duplicate_window === undefined && update.max_age && update.duplicate_window > update.max_age) {
      update.duplicate_window = update.max_age;
    }
    // Storage type cannot change in place; the server says so, and we pass that on.
    await this.jsm.streams.update(spec.name, update);
    return { outcome: 'updated', changes: drift.map((d) => d.change) };
  }

  /** The stream that captures `subject`, or undefined when none does. */
  async streamFor(subject: string): Promise<StreamLimits | undefined> {
    try {
      const name = await this.jsm.streams.find(subject);
      const info = await this.jsm.streams.info(name);
      return { name, maxAgeSeconds: Math.ceil(info.config.max_age / NS_PER_SECOND) };
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.StreamNotFound) || /no stream matches subject/i.test((err as Error)?.message ?? ''))
        return undefined;
      throw asNotConnected(`could not look up the stream for "${subject}"`, err);
    }
  }

  /** Resolves once a stream stored the message; `NotPersistedError` when none took it or the ack did not come. */
  async publish(
    subject: string,
    data: Uint8Array,
    headers: MsgHdrs | undefined,
    msgId: string | undefined,
    timeoutMs: number,
  ): Promise<PersistAck> {
    try {
      const ack = await this.js.publish(subject, data, { headers, msgID: msgId, timeout: timeoutMs });
      return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      const [reason, detail] = await this.refusal(subject, err, timeoutMs);
      throw new NotPersistedError(subject, reason, detail, { cause: err });
    }
  }

  /**
   * Why a persisted publish failed, from what the server answered. nats.js 3.4 reports a publish
   * that nobody answered as `JetStreamNotEnabled` ("jetstream is not enabled"), whatever the cause:
   * the server's no-responders status is underneath, and one look-up then tells a missing stream,
   * JetStream off, and a stream that exists but is between leaders apart.
   */
  private async refusal(subject: string, err: unknown, timeoutMs: number): Promise<[NotPersistedReason, string]> {
    if (isNoResponders(err)) return this.whyUnanswered(subject);
    const api = apiErrorIn(err);
    if (api) return [apiRefusal(api), api.message];
    if (err instanceof natsErrors.TimeoutError) return ['timeout', `the stream did not acknowledge within ${timeoutMs} ms`];
    if (err instanceof natsErrors.ClosedConnectionError || err instanceof natsErrors.DrainingConnectionError) {
      return ['closed', 'the connection closed before the stream answered'];
    }
    return ['other', (err as Error)?.message ?? String(err)];
  }

  private async whyUnanswered(subject: string): Promise<[NotPersistedReason, string]> {
    try {
      const name = await this.jsm.streams.find(subject);
      return ['unavailable', `stream ${name} captures the subject but did not answer (no leader yet?)`];
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.StreamNotFound) || /no stream matches subject/i.test((err as Error)?.message ?? '')) {
        return ['no_stream', 'no stream captures the subject'];
      }
      if (isNoResponders(err) || isApiError(apiErrorIn(err), JetStreamApiCodes.JetStreamNotEnabledForAccount)) {
        return ['jetstream_disabled', 'the server has no JetStream for this account'];
      }
      return [
        'unavailable',
        `nobody answered, and JetStream could not say which stream captures the subject: ${(err as Error)?.message ?? String(err)}`,
      ];
    }
  }

  /**
   * Create the durable pull consumer when missing. One that exists with other settings (ack wait,
   * filter, the bus's maxDeliver and backoff) is refused with `InvalidOptionsError` unless
   * `allowDestructiveUpdates`: instances sharing it still run with the old ones.
   */
  async ensureConsumer(spec: DurableConsumerSpec, options: EnsureOptions = {}): Promise<EnsureResult> {
    try {
      return await retryWhenTimedOut(() => this.reconcileConsumer(spec, options, true));
    } catch (err) {
      if (err instanceof InvalidOptionsError) throw err;
      if (err instanceof JetStreamApiError) {
        throw new InvalidOptionsError('durable', `the server refused consumer "${spec.durable}" on ${spec.stream}: ${err.message}`, {
          cause: err,
        });
      }
      throw asNotConnected(`could not ensure consumer ${spec.durable} on ${spec.stream}`, err);
    }
  }

  private async reconcileConsumer(spec: DurableConsumerSpec, options: EnsureOptions, mayRace: boolean): Promise<EnsureResult> {
    const ackWait = nanos(spec.ackWaitMs);
    const description = retryDescription(spec);
    let current: ConsumerConfig;
    try {
      current = (await this.jsm.consumers.info(spec.stream, spec.durable)).config;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err;
      try {
        await this.jsm.consumers.add(spec.stream, {
          durable_name: spec.durable,
          filter_subject: spec.filterSubject,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: ackWait,
          // Retries and the dead letter are the bus's (it counts deliveries): the server never gives up on a message.
          max_deliver: -1,
          ...(description !== undefined ? { description } : {}),
        });
        return { outcome: 'created', changes: [] };
      } catch (addErr) {
        // Another instance sharing the durable may have created it a moment ago. Compare with that.
        if (mayRace && addErr instanceof JetStreamApiError) return this.reconcileConsumer(spec, options, false);
        throw addErr;
      }
    }
    const drift = consumerDrift(spec, current, ackWait, description);
    if (drift.length === 0) return { outcome: 'unchanged', changes: [] };
    const live = drift.filter((d) => d.destructive);
    if (live.length > 0 && !options.allowDestructiveUpdates) {
      const [first] = live;
      const advice =
        first.option === 'filter'
          ? 'give each durable topic its own durable name'
          : `subscribe with the same ${live.map((d) => d.option).join(' and ')}, or under a durable name of its own`;
      throw new InvalidOptionsError(
        first.option === 'filter' ? 'durable' : first.option,
        `durable "${spec.durable}" on stream ${spec.stream} already exists with ${live.map((d) => d.why).join('; ')}. Instances sharing it would run with settings they did not ask for (a shorter ack wait redelivers messages whose handlers still run); ${advice}, or set jetstream.allowDestructiveUpdates: true to change it`,
      );
    }
    // An operator's own description is left as it is.
    const ours = description !== undefined && (!current.description || RETRY_DESCRIPTION.test(current.description));
    await this.jsm.consumers.update(spec.stream, spec.durable, {
      ack_wait: ackWait,
      filter_subject: spec.filterSubject,
      ...(ours ? { description } : {}),
    });
    return { outcome: 'updated', changes: drift.map((d) => d.change) };
  }

  /**
   * Pull from a durable on demand. Unlike nats.js's `consume()`, which pulls again as soon as its
   * messages arrive, however many still wait to be handled, a message is asked for only when the
   * caller has room for it, so none waits unseen while its ack wait runs.
   */
  async pull(stream: string, durable: string): Promise<DurablePull> {
    let consumer: Consumer;
    try {
      consumer = await this.js.consumers.get(stream, durable);
    } catch (err) {
      throw asNotConnected(`could not pull from ${stream}/${durable}`, err);
    }
    return {
      fetch: async (max) => {
        let messages: ConsumerMessages;
        try {
          // Pull requests expire every 5 s (heartbeat 2.5 s): when the consumer's leader dies, the
          // next one goes out within about 5 s, not the 30–45 s of the 30 s default.
          messages = await consumer.fetch({ max_messages: max, expires: PULL_EXPIRES_MS });
        } catch (err) {
          throw asNotConnected(`could not pull from ${stream}/${durable}`, err);
        }
        return {
          stop: () => messages.stop(),
          [Symbol.asyncIterator]: async function* () {
            for await (const m of messages) yield toDurableMessage(m);
          },
        };
      },
    };
  }

  /** Throws when JetStream does not answer (for `/_health`). */
  async ping(): Promise<void> {
    try {
      await this.jsm.getAccountInfo();
    } catch (err) {
      throw asNotConnected('JetStream did not answer', err);
    }
  }
}

function toDurableMessage(m: JsMsg): DurableMessage {
  const info = m.info;
  return {
    subject: m.subject,
    data: m.data,
    headers: m.headers,
    deliveryCount: info.deliveryCount,
    stream: info.stream,
    seq: info.streamSequence,
    ack: () => m.ack(),
    nak: (delayMs) => m.nak(delayMs),
    working: () => m.working(),
    // A bare +TERM: nats-server 2.9 (Debian's 2.9.10) does not recognise "+TERM <reason>" and keeps the message
    // pending, so it came back each ack wait. The reason travels in the dead letter's headers and the log.
    term: () => m.term(),
  };
}

/** One setting that differs between what a stream or consumer has and what is asked for. */
interface Drift {
  /** The option that asks for it. */
  option: string;
  /** `name old → new`, for the log. */
  change: string;
  /** What exists and what was asked, for a refusal. */
  why: string;
  /** Whether applying it can lose messages, or redeliver ones still being handled. */
  destructive: boolean;
}

const seconds = (ns: number | undefined) => (ns ? `${Math.round(ns / NS_PER_SECOND)} s` : 'no limit');

/** How `wanted` differs from the stream's `current` config; growing a limit is not destructive, shrinking one is. */
function streamDrift(spec: StreamSpec, current: StreamConfig, wanted: Partial<StreamConfig>): Drift[] {
  const drift: Drift[] = [];
  const had = [...current.subjects].sort();
  const want = [...spec.subjects].sort();
  if (had.join(' ') !== want.join(' ')) {
    const removed = had.filter((s) => !want.includes(s));
    drift.push({
      option: 'subjects',
      change: `subjects [${had.join(', ')}] → [${want.join(', ')}]`,
      why: `subjects [${had.join(', ')}], and this one lists [${want.join(', ')}] (removing ${removed.join(', ')}: their publishes would no longer be stored)`,
      destructive: removed.length > 0,
    });
  }
  const [oldAge, newAge] = [current.max_age ?? 0, wanted.max_age ?? 0];
  if (oldAge !== newAge) {
    drift.push({
      option: 'maxAgeSeconds',
      change: `max_age ${seconds(oldAge)} → ${seconds(newAge)}`,
      why: `max age ${seconds(oldAge)}, and this one asks for ${seconds(newAge)} (messages older than that would be deleted at once)`,
      destructive: newAge !== 0 && (oldAge === 0 || newAge < oldAge),
    });
  }
  if (current.num_replicas !== wanted.num_replicas) {
    drift.push({
      option: 'replicas',
      change: `replicas ${current.num_replicas} → ${wanted.num_replicas}`,
      why: `${current.num_replicas} replicas, and this one asks for ${wanted.num_replicas} (fewer copies survive fewer lost servers)`,
      destructive: (wanted.num_replicas ?? 1) < current.num_replicas,
    });
  }
  if (current.storage !== wanted.storage) {
    // The server refuses it in place; not ours to judge, its answer is passed on.
    drift.push({ option: 'storage', change: `storage ${current.storage} → ${wanted.storage}`, why: '', destructive: false });
  }
  if (wanted.duplicate_window !== undefined && current.duplicate_window !== wanted.duplicate_window) {
    drift.push({
      option: 'duplicateWindowSeconds',
      change: `duplicate_window ${seconds(current.duplicate_window)} → ${seconds(wanted.duplicate_window)}`,
      why: `a duplicate window of ${seconds(current.duplicate_window)}, and this one asks for ${seconds(wanted.duplicate_window)} (a repeated msgId would be stored twice)`,
      destructive: wanted.duplicate_window < current.duplicate_window,
    });
  }
  return drift;
}

const RETRY_DESCRIPTION = /^nestjs-nats-eventbus maxDeliver=(\d+) backoffMs=([\d,]+)$/;

/** The bus's retry settings as the consumer's description (nats-server 2.9 has no consumer metadata). */
function retryDescription(spec: DurableConsumerSpec): string | undefined {
  if (spec.maxDeliver === undefined || spec.backoffMs === undefined) return undefined;
  return `nestjs-nats-eventbus maxDeliver=${spec.maxDeliver} backoffMs=${spec.backoffMs.join(',')}`;
}

/** How the consumer's `current` config differs from `spec`; any change to a consumer in use is destructive. */
function consumerDrift(spec: DurableConsumerSpec, current: ConsumerConfig, ackWait: number, description: string | undefined): Drift[] {
  const drift: Drift[] = [];
  const filter = current.filter_subject ?? '>';
  if (filter !== spec.filterSubject) {
    drift.push({
      option: 'filter',
      change: `filter ${filter} → ${spec.filterSubject}`,
      why: `filter "${filter}", not "${spec.filterSubject}"`,
      destructive: true,
    });
  }
  if (current.ack_wait !== ackWait) {
    const ms = (ns: number | undefined) => Math.round((ns ?? 0) / 1_000_000);
    drift.push({
      option: 'ackWaitMs',
      change: `ackWaitMs ${ms(current.ack_wait)} → ${spec.ackWaitMs}`,
      why: `ackWaitMs ${ms(current.ack_wait)}, and this subscription asks for ${spec.ackWaitMs}`,
      destructive: true,
    });
  }
  if (description === undefined || current.description === description) return drift;
  const recorded = RETRY_DESCRIPTION.exec(current.description ?? '');
  if (!recorded) {
    // Created before the settings were recorded (or described by an operator): record ours only where nothing is written.
    if (!current.description) drift.push({ option: 'description', change: `recorded ${description}`, why: '', destructive: false });
    return drift;
  }
  const [, maxDeliver, backoffMs] = recorded;
  if (Number(maxDeliver) !== spec.maxDeliver) {
    drift.push({
      option: 'maxDeliver',
      change: `maxDeliver ${maxDeliver} → ${spec.maxDeliver}`,
      why: `maxDeliver ${maxDeliver}, and this subscription asks for ${spec.maxDeliver}`,
      destructive: true,
    });
  }
  if (backoffMs !== spec.backoffMs!.join(',')) {
    drift.push({
      option: 'backoffMs',
      change: `backoffMs [${backoffMs}] → [${spec.backoffMs!.join(',')}]`,
      why: `backoffMs [${backoffMs}], and this subscription asks for [${spec.backoffMs!.join(',')}]`,
      destructive: true,
    });
  }
  return drift;
}

/** A persisted publish whose ack did not come may still have been stored; one that a stream refused, or none answered, was not. */
export function mayHaveBeenStored(err: unknown): boolean {
  if (err instanceof NotPersistedError) return err.reason === 'timeout' || (err.reason === 'other' && !apiErrorIn(err.cause));
  return true;
}

/** `err` or the first of its causes that `match` accepts: nats.js wraps what the server said (a few levels at most). */
function inCauses(err: unknown, match: (e: unknown) => boolean): unknown {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) if (match(e)) return e;
  return undefined;
}

/** No-responders, as nats.js reports it: bare, inside a RequestError, or wrapped as `JetStreamNotEnabled`. */
function isNoResponders(err: unknown): boolean {
  return !!inCauses(err, (e) => e instanceof natsErrors.NoRespondersError || (e instanceof natsErrors.RequestError && e.isNoResponders()));
}

/** The server's own refusal, possibly wrapped by nats.js (10039 comes inside `JetStreamNotEnabled`). */
function apiErrorIn(err: unknown): JetStreamApiError | undefined {
  return inCauses(err, (e) => e instanceof JetStreamApiError) as JetStreamApiError | undefined;
}

/** Server error codes of a refused publish (nats-server errors.json), by what they mean to the caller. */
function apiRefusal(err: JetStreamApiError): NotPersistedReason {
  switch (err.code) {
    case JetStreamApiCodes.StreamNotFound:
      return 'no_stream';
    case JetStreamApiCodes.JetStreamNotEnabledForAccount:
      return 'jetstream_disabled';
    // JSStreamMessageExceedsMaximumErr, JSStreamHeaderExceedsMaximumErr.
    case 10054:
    case 10097:
      return 'message_too_large';
    case JetStreamApiCodes.StreamWrongLastSequence:
    case JetStreamApiCodes.StreamWrongLastSequenceUnknown:
      return 'wrong_last_sequence';
    // JSStreamWrongLastMsgIDErrF.
    case 10070:
      return 'wrong_last_msg_id';
    // JSStreamNotMatchErr ("expected stream does not match").
    case 10060:
      return 'wrong_stream';
  }
  // JSStreamStoreFailedF carries the store's own text: the limits of a stream that discards new messages.
  if (/maximum messages/i.test(err.message)) return 'max_messages';
  if (/maximum bytes/i.test(err.message)) return 'max_bytes';
  // 503: insufficient resources, no cluster leader, a store that failed for a moment.
  return err.status === 503 ? 'unavailable' : 'other';
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

function asNotConnected(what: string, err: unknown): NotConnectedError {
  return new NotConnectedError(`${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
