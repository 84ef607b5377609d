// JetStream administration at bootstrap: the streams and durable consumers the bus needs are
// created when missing and updated when they drifted, never deleted.
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  JetStreamApiCodes,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { consumerDrift, RETRY_DESCRIPTION, retryDescription, streamDrift } from './jetstream-drift';
import { asNotConnected, isApiError } from './jetstream-errors';
import { replicasRefusal, retryWhenTimedOut } from './nats-errors';

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
  /** False (`jetstream.manage`): only look; a missing stream or consumer is an `InvalidOptionsError` naming it. */
  manage?: boolean;
}

/** Ensures streams and durable consumers through one JetStream manager. */
export class JetStreamAdmin {
  constructor(private readonly jsm: JetStreamManager) {}

  /**
   * Create the stream when missing, update it when it differs; never delete. A change that shrinks
   * it (shorter age, fewer subjects or replicas, a shorter duplicate window) is refused with
   * `InvalidOptionsError` unless `allowDestructiveUpdates`: another deployment may share the stream.
   */
  async ensureStream(spec: StreamSpec, options: EnsureOptions = {}): Promise<EnsureResult> {
    const wanted: Partial<StreamConfig> = {
      subjects: spec.subjects,
      max_age: nanos((spec.maxAgeSeconds ?? DEFAULTS.stream.maxAgeSeconds) * 1000),
      num_replicas: spec.replicas ?? DEFAULTS.stream.replicas,
      storage: spec.storage === 'memory' ? StorageType.Memory : StorageType.File,
      ...(spec.duplicateWindowSeconds !== undefined ? { duplicate_window: nanos(spec.duplicateWindowSeconds * 1000) } : {}),
    };
    try {
      return await retryWhenTimedOut(() => this.reconcileStream(spec, wanted, options, true));
    } catch (err) {
      if (err instanceof InvalidOptionsError) throw err;
      if (err instanceof JetStreamApiError) {
        const replicas = replicasRefusal(err, `jetstream.streams (${spec.name}).replicas`, spec.replicas ?? DEFAULTS.stream.replicas);
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
      if (options.manage === false) {
        throw new InvalidOptionsError(
          `jetstream.streams (${spec.name})`,
          `stream ${spec.name} does not exist, and with jetstream.manage: false the bus does not create it; create it where your streams are managed`,
        );
      }
      try {
        await this.jsm.streams.add({ name: spec.name, ...wanted });
        return { outcome: 'created', changes: [] };
      } catch (addErr) {
        // Instances of a service start together: another may have created it a moment ago. Compare with that.
        if (mayRace && addErr instanceof JetStreamApiError) return this.reconcileStream(spec, wanted, options, false);
        throw addErr;
      }
    }
    // Managed elsewhere: what exists is what is used.
    if (options.manage === false) return { outcome: 'unchanged', changes: [] };
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
      if (options.manage === false) {
        throw new InvalidOptionsError(
          'durable',
          `consumer "${spec.durable}" does not exist on stream ${spec.stream}, and with jetstream.manage: false the bus does not create it; create it (a pull consumer filtered on "${spec.filterSubject}", explicit ack) where your consumers are managed`,
        );
      }
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
    if (options.manage === false) {
      // Its ack wait and limits are the operator's; only a filter that lets other topics in is refused.
      const filters = current.filter_subjects ?? (current.filter_subject ? [current.filter_subject] : []);
      if (filters.length !== 1 || filters[0] !== spec.filterSubject) {
        throw new InvalidOptionsError(
          'durable',
          `consumer "${spec.durable}" on stream ${spec.stream} filters ${filters.length ? filters.map((f) => `"${f}"`).join(', ') : 'nothing (the whole stream)'}, not "${spec.filterSubject}"; with jetstream.manage: false the bus does not change it`,
        );
      }
      return { outcome: 'unchanged', changes: [] };
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
}
