import { InvalidOptionsError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, MAX_TIMER_MS, nonEmptyString, wholeNumber } from '../options/rules';
import { checkTopic, subjectMatches } from '../nats/subjects';
import type { StreamSpec } from '../nats/jetstream';
import type { BatchSettings } from './batch';
import type { PartitionKeyOf } from './partitions';

/** `jetstream` in the bus options: the streams the bus ensures, and how long it waits on JetStream. */
export interface JetStreamOptions {
  /**
   * Streams ensured at bootstrap: created when missing, updated when they differ (shrinking them
   * only with `allowDestructiveUpdates`), never deleted.
   * Omit to bind durable topics to streams that operations manage. With message storage
   * configured, each stream needs `maxAgeSeconds`: stored bodies must live as long as its messages.
   */
  streams?: StreamSpec[];
  /** How long a persisted publish waits for the stream's acknowledgement, and JetStream API calls for an answer, in ms. Default 5000. */
  apiTimeoutMs?: number;
  /**
   * Let bootstrap shrink a stream (shorter `maxAgeSeconds` or `duplicateWindowSeconds`, fewer
   * subjects or replicas) and change an existing durable consumer's `ackWaitMs`, `maxDeliver`,
   * `backoffMs` or filter. Default false: such a difference fails bootstrap with
   * `InvalidOptionsError` saying what differs, since other deployments may share the stream or
   * consumer (a shorter age deletes their backlog, a shorter ack wait redelivers messages whose
   * handlers still run). Growing a stream's limits is always allowed; every change made is logged.
   */
  allowDestructiveUpdates?: boolean;
  /**
   * Default true: the bus creates and updates its streams and durable consumers. `false` binds to
   * streams and consumers made elsewhere (Terraform, the `nats` CLI) without any create or update
   * call, so the NATS user needs no stream-admin rights: a stream of `streams` or a durable's
   * consumer that does not exist fails bootstrap with `InvalidOptionsError` naming it, and a
   * consumer deleted later is not re-created (`/_health` reports JetStream down).
   */
  manage?: boolean;
  /**
   * Least time between two reads of each durable's consumer info for the lag gauges
   * (`eventbus.consumer.pending`, `.ack_pending`, `.redelivered`), in ms; a metric export in
   * between reports the last reading. Default 15000. Only with an OpenTelemetry meter provider.
   */
  consumerLagIntervalMs?: number;
}

/** The durable half of `SubscribeOptions`. */
export interface DurableSubscribeOptions {
  /** Durable consumer name: instances with one name share the messages, each name gets every message. */
  durable?: string;
  /** Deliveries before the message goes to `deadLetter` (or is dropped with a log line). Default 5. */
  maxDeliver?: number;
  /** Delay before each redelivery after a failure, in ms; the last step repeats. Default [1000, 5000, 30000]. */
  backoffMs?: number[];
  /**
   * How long the server waits for an ack before redelivering, in ms. A handler that runs longer keeps
   * its message by telling the server it is still working. Default 30000.
   */
  ackWaitMs?: number;
  /** Subject that failed messages are published to, with the header `Eventbus-Dead-Reason`. Default: none (logged and dropped). */
  deadLetter?: string;
  /**
   * Handle each message id once: a message whose id was already handled to success within the
   * window is acked without calling the handler. The id is the publisher's `msgId` (`Nats-Msg-Id`),
   * else the stream sequence. Records live in a JetStream KV bucket whose age limit is the window.
   * `true` uses the default window (600 s). Default false. See README "Handled once".
   */
  idempotent?: boolean | IdempotentOptions;
  /**
   * Deliveries whose stored body could not be recovered because the storage failed
   * (`MessageStorageError`, a store down) before the message is dead-lettered with reason
   * `storage`. They do not count against `maxDeliver`. Counted by this instance. Default 20.
   */
  storageOutageMaxDeliveries?: number;
  /**
   * Hand the method up to `size` messages at once (1 to 1000), or what arrived within `maxWaitMs` of
   * the batch's first message: it is called as `(payloads: T[], contexts: MessageContext[])`. All of
   * them are acked when it resolves and all retried (backoff, `maxDeliver`, dead letter per message)
   * when it throws. One batch at a time per instance (`maxConcurrent` is `size`). Default: none.
   */
  batch?: { size: number; maxWaitMs: number };
  /**
   * Run messages with the same key one at a time, in the order this instance took them from the
   * stream, and different keys in parallel up to `maxConcurrent`. A failing message is retried in
   * process with `backoffMs`, blocking only its key, until it succeeds or is dead-lettered after
   * `maxDeliver` deliveries. Order holds within an instance: see docs/durable-delivery.md
   * "Ordered keys" for several instances. Not with `batch`. Default: none (no order).
   */
  partitionBy?: PartitionKeyOf;
}

/** `idempotent: { … }` of a durable subscription. */
export interface IdempotentOptions {
  /** How long a handled id is remembered, in whole seconds (≥ 1). Default 600. */
  windowSeconds?: number;
}

/** A durable subscription's settings, defaults applied and checked. */
export interface DurableSettings {
  durable: string;
  maxDeliver: number;
  backoffMs: readonly number[];
  ackWaitMs: number;
  deadLetter?: string;
  storageOutageMaxDeliveries: number;
  /** Set when the subscription is idempotent: how long a handled id is remembered. */
  idempotent?: { windowSeconds: number };
  /** Set for a batch handler. */
  batch?: BatchSettings;
  /** Set for a partitioned durable: the key of each message. */
  partitionBy?: PartitionKeyOf;
}

/** Most messages in one batch: a batch is held in memory and kept in progress as one. */
export const MAX_BATCH_SIZE = 1000;

const STREAM_KEYS = ['name', 'subjects', 'maxAgeSeconds', 'replicas', 'storage', 'duplicateWindowSeconds'] as const;

/** Checks `jetstream`; a bad value is an `InvalidOptionsError` naming it. */
export function validateJetStreamOptions(options: JetStreamOptions | undefined): void {
  if (options === undefined) return;
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('jetstream', 'must be an object');
  knownKeys('jetstream', options, ['streams', 'apiTimeoutMs', 'allowDestructiveUpdates', 'manage', 'consumerLagIntervalMs']);
  const lag = options.consumerLagIntervalMs;
  if (lag !== undefined && (typeof lag !== 'number' || !Number.isSafeInteger(lag) || lag < 100)) {
    throw new InvalidOptionsError('jetstream.consumerLagIntervalMs', `must be a whole number of ms, at least 100, got ${String(lag)}`);
  }
  if (options.manage !== undefined && typeof options.manage !== 'boolean') {
    throw new InvalidOptionsError('jetstream.manage', `must be true or false, got ${String(options.manage)}`);
  }
  if (options.allowDestructiveUpdates !== undefined && typeof options.allowDestructiveUpdates !== 'boolean') {
    throw new InvalidOptionsError(
      'jetstream.allowDestructiveUpdates',
      `must be true or false, got ${String(options.allowDestructiveUpdates)}`,
    );
  }
  wholeNumber('jetstream.apiTimeoutMs', options.apiTimeoutMs, 1, 'milliseconds', MAX_TIMER_MS);
  if (options.streams === undefined) return;
  if (!Array.isArray(options.streams)) throw new InvalidOptionsError('jetstream.streams', 'must be an array of { name, subjects, … }');
  options.streams.forEach((spec, i) => {
    const at = `jetstream.streams[${i}]`;
    if (!spec || typeof spec !== 'object') throw new InvalidOptionsError(at, 'must be an object');
    knownKeys(at, spec, STREAM_KEYS);
    if (typeof spec.name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(spec.name)) {
      throw new InvalidOptionsError(`${at}.name`, 'must be 1 to 64 letters, digits, "-" or "_"');
    }
    if (!Array.isArray(spec.subjects) || spec.subjects.length === 0)
      throw new InvalidOptionsError(`${at}.subjects`, 'must list at least one subject');
    spec.subjects.forEach((s) => checkTopic(s, 'subscribe'));
    wholeNumber(`${at}.maxAgeSeconds`, spec.maxAgeSeconds, 0, 'seconds');
    wholeNumber(`${at}.replicas`, spec.replicas, 1, '', 5);
    wholeNumber(`${at}.duplicateWindowSeconds`, spec.duplicateWindowSeconds, 1, 'seconds');
    if (spec.storage !== undefined && spec.storage !== 'file' && spec.storage !== 'memory') {
      throw new InvalidOptionsError(`${at}.storage`, `must be 'file' or 'memory', got ${String(spec.storage)}`);
    }
  });
}

/** A subscription's durable settings, or undefined when it is not durable. */
export function durableSettings(topic: string, opts: DurableSubscribeOptions & { queue?: string }): DurableSettings | undefined {
  const durableOnly = ['maxDeliver', 'backoffMs', 'ackWaitMs', 'deadLetter', 'storageOutageMaxDeliveries', 'batch', 'partitionBy'] as const;
  if (opts.durable === undefined) {
    // Only a durable redelivers and acks; a core subscription has nothing to deduplicate against.
    if (opts.idempotent !== undefined && opts.idempotent !== false)
      throw new InvalidOptionsError('idempotent', `applies to durable subscriptions only; add durable: '<name>' (topic "${topic}")`);
    const stray = durableOnly.find((k) => opts[k] !== undefined);
    if (stray) throw new InvalidOptionsError(stray, `applies to durable subscriptions only; add durable: '<name>' (topic "${topic}")`);
    return undefined;
  }
  nonEmptyString('durable', opts.durable);
  // A consumer name becomes a token of JetStream API subjects.
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(opts.durable))
    throw new InvalidOptionsError('durable', `must be 1 to 64 letters, digits, "-" or "_", got ${JSON.stringify(opts.durable)}`);
  if (opts.queue !== undefined) {
    throw new InvalidOptionsError(
      'queue',
      `cannot be combined with durable (topic "${topic}"): instances with one durable name already share the messages`,
    );
  }
  const d = DEFAULTS.durable;
  const settings: DurableSettings = {
    durable: opts.durable,
    maxDeliver: opts.maxDeliver ?? d.maxDeliver,
    backoffMs: opts.backoffMs ?? d.backoffMs,
    ackWaitMs: opts.ackWaitMs ?? d.ackWaitMs,
    deadLetter: opts.deadLetter,
    storageOutageMaxDeliveries: opts.storageOutageMaxDeliveries ?? d.storageOutageMaxDeliveries,
  };
  const idempotent = idempotentSettings(opts.idempotent);
  if (idempotent) settings.idempotent = idempotent;
  const batch = batchSettings(opts.batch);
  if (batch) settings.batch = batch;
  if (opts.partitionBy !== undefined) {
    if (typeof opts.partitionBy !== 'function')
      throw new InvalidOptionsError('partitionBy', `must be a function (payload, ctx) => string, got ${typeof opts.partitionBy}`);
    // A batch is handled as one call: there is no per-key order inside it to keep.
    if (batch) throw new InvalidOptionsError('partitionBy', `cannot be combined with batch (topic "${topic}")`);
    settings.partitionBy = opts.partitionBy;
  }
  wholeNumber('maxDeliver', settings.maxDeliver, 1);
  wholeNumber('storageOutageMaxDeliveries', settings.storageOutageMaxDeliveries, 1);
  wholeNumber('ackWaitMs', settings.ackWaitMs, 1000, 'milliseconds', MAX_TIMER_MS);
  if (!Array.isArray(settings.backoffMs) || settings.backoffMs.length === 0)
    throw new InvalidOptionsError('backoffMs', 'must list at least one delay in ms');
  settings.backoffMs.forEach((ms, i) => wholeNumber(`backoffMs[${i}]`, ms, 0, 'milliseconds', MAX_TIMER_MS));
  if (settings.deadLetter !== undefined) {
    checkTopic(settings.deadLetter, 'publish');
    if (subjectMatches(topic, settings.deadLetter)) {
      throw new InvalidOptionsError(
        'deadLetter',
        `"${settings.deadLetter}" is within "${topic}": dead letters would come back to the same durable`,
      );
    }
  }
  return settings;
}

/** `idempotent` checked: undefined when off, else the window; a bad value is an `InvalidOptionsError`. */
export function idempotentSettings(value: DurableSubscribeOptions['idempotent']): { windowSeconds: number } | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return { windowSeconds: DEFAULTS.idempotent.windowSeconds };
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new InvalidOptionsError('idempotent', `must be true, false or { windowSeconds }, got ${JSON.stringify(value)}`);
  knownKeys('idempotent', value, ['windowSeconds']);
  const windowSeconds = value.windowSeconds ?? DEFAULTS.idempotent.windowSeconds;
  // A year at most: the bucket's age limit travels in nanoseconds.
  wholeNumber('idempotent.windowSeconds', windowSeconds, 1, 'seconds', 31_536_000);
  return { windowSeconds };
}

/** `batch` checked: undefined when not given; both keys required (a partial batch's wait is the caller's call). */
export function batchSettings(value: DurableSubscribeOptions['batch']): BatchSettings | undefined {
  if (value === undefined) return undefined;
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new InvalidOptionsError('batch', `must be { size, maxWaitMs }, got ${JSON.stringify(value)}`);
  knownKeys('batch', value, ['size', 'maxWaitMs']);
  if (value.size === undefined) throw new InvalidOptionsError('batch.size', `is required (1 to ${MAX_BATCH_SIZE})`);
  if (value.maxWaitMs === undefined) throw new InvalidOptionsError('batch.maxWaitMs', 'is required (ms a partial batch waits)');
  wholeNumber('batch.size', value.size, 1, '', MAX_BATCH_SIZE);
  wholeNumber('batch.maxWaitMs', value.maxWaitMs, 1, 'milliseconds', MAX_TIMER_MS);
  return { size: value.size, maxWaitMs: value.maxWaitMs };
}

/** The delay before redelivery after the `deliveryCount`-th delivery failed. */
export function backoffFor(settings: DurableSettings, deliveryCount: number): number {
  const steps = settings.backoffMs;
  return steps[Math.min(Math.max(deliveryCount, 1), steps.length) - 1];
}

export { subjectMatches } from '../nats/subjects';
