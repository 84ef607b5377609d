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

  /** Create the stream when missing, update it when it differs; never delete. Returns what it did. */
  async ensureStream(spec: StreamSpec): Promise<'created' | 'updated' | 'unchanged'> {
    const wanted: Partial<StreamConfig> = {
      subjects: spec.subjects,
      max_age: nanos((spec.maxAgeSeconds ?? 0) * 1000),
      num_replicas: spec.replicas ?? 1,
      storage: spec.storage === 'memory' ? StorageType.Memory : StorageType.File,
      ...(spec.duplicateWindowSeconds !== undefined ? { duplicate_window: nanos(spec.duplicateWindowSeconds * 1000) } : {}),
    };
    try {
      return await retryWhenTimedOut(() => this.reconcileStream(spec, wanted, true));
    } catch (err) {
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
    mayRace: boolean,
  ): Promise<'created' | 'updated' | 'unchanged'> {
    let current: StreamConfig;
    try {
      current = (await this.jsm.streams.info(spec.name)).config;
    } catch (err) {
      if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw err;
      try {
        await this.jsm.streams.add({ name: spec.name, ...wanted });
        return 'created';
      } catch (addErr) {
        // Instances of a service start together: another may have created it a moment ago. Compare with that.
        if (mayRace && addErr instanceof JetStreamApiError) return this.reconcileStream(spec, wanted, false);
        throw addErr;
      }
    }
    const differs =
      [...current.subjects].sort().join(' ') !== [...spec.subjects].sort().join(' ') ||
      current.max_age !== wanted.max_age ||
      current.num_replicas !== wanted.num_replicas ||
      current.storage !== wanted.storage ||
      (wanted.duplicate_window !== undefined && current.duplicate_window !== wanted.duplicate_window);
    if (!differs) return 'unchanged';
    // Storage type cannot change in place; the server says so, and we pass that on.
    await this.jsm.streams.update(spec.name, { ...current, ...wanted });
    return 'updated';
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

  /** Create the durable pull consumer when missing, update its ack wait when it differs. Says whether it had to create it. */
  async ensureConsumer(spec: DurableConsumerSpec): Promise<'created' | 'existed'> {
    try {
      return await retryWhenTimedOut(() => this.reconcileConsumer(spec, true));
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

  private async reconcileConsumer(spec: DurableConsumerSpec, mayRace: boolean): Promise<'created' | 'existed'> {
    const ackWait = nanos(spec.ackWaitMs);
    let current;
    try {
      current = await this.jsm.consumers.info(spec.stream, spec.durable);
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
        });
        return 'created';
      } catch (addErr) {
        // Another instance sharing the durable may have created it a moment ago. Compare with that.
        if (mayRace && addErr instanceof JetStreamApiError) return this.reconcileConsumer(spec, false);
        throw addErr;
      }
    }
    if (current.config.filter_subject !== spec.filterSubject) {
      throw new InvalidOptionsError(
        'durable',
        `"${spec.durable}" on stream ${spec.stream} already filters "${current.config.filter_subject ?? '>'}", not "${spec.filterSubject}"; give each durable topic its own durable name`,
      );
    }
    if (current.config.ack_wait !== ackWait) await this.jsm.consumers.update(spec.stream, spec.durable, { ack_wait: ackWait });
    return 'existed';
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

/** A persisted publish whose ack did not come may still have been stored; one that a stream refused, or none answered, was not. */
export function mayHaveBeenStored(err: unknown): boolean {
  if (err instanceof NotPersistedError) return err.reason === 'timeout' || (err.reason === 'other' && !apiErrorIn(err.cause));
  return true;
}

/** No-responders, as nats.js reports it: bare, inside a RequestError, or wrapped as `JetStreamNotEnabled`. */
function isNoResponders(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof natsErrors.NoRespondersError || (e instanceof natsErrors.RequestError && e.isNoResponders())) return true;
  }
  return false;
}

/** The server's own refusal, possibly wrapped by nats.js (10039 comes inside `JetStreamNotEnabled`). */
function apiErrorIn(err: unknown): JetStreamApiError | undefined {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof JetStreamApiError) return e;
  }
  return undefined;
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
