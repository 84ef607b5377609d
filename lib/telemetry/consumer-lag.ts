// Lag gauges per durable: eventbus.consumer.pending, .ack_pending and .redelivered, read from the
// consumer's info (nats-server 2.9 has it) at most once per interval, whatever the export period.
import type { BatchObservableCallback, Meter, ObservableGauge } from '@opentelemetry/api';
import type { NatsConnection } from '@nats-io/transport-node';
import { StreamMessages, type ConsumerCounts } from '../nats/stream-messages';
import { DEFAULTS } from '../options/defaults';
import { destinationAttrs } from './bus-metrics';
import { loadOtelApi, sdkRegistered } from './otel-api';
import { METRIC_CONSUMER_ACK_PENDING, METRIC_CONSUMER_PENDING, METRIC_CONSUMER_REDELIVERED } from './consumer-lag.names';
import { INSTRUMENTATION_NAME } from './spans';

/** One durable subscription whose consumer is observed. */
export interface LagTarget {
  topic: string;
  durable: string;
}

export interface ConsumerLagSource {
  /** The durables to observe now. */
  targets(): LagTarget[];
  /** Their counts; undefined when the consumer is gone (nothing is observed for it then). */
  read(target: LagTarget): Promise<ConsumerCounts | undefined>;
  /** Least time between two reads of the consumers, in ms. */
  intervalMs: number;
}

/** The three gauges of one bus. Inert without an SDK; `stop()` removes the callback. */
export class ConsumerLag {
  private last?: { at: number; readings: Array<[LagTarget, ConsumerCounts]> };
  private reading?: Promise<Array<[LagTarget, ConsumerCounts]>>;
  private readonly callback: BatchObservableCallback;

  private constructor(
    private readonly meter: Meter,
    private readonly gauges: [ObservableGauge, ObservableGauge, ObservableGauge],
    private readonly source: ConsumerLagSource,
  ) {
    const [pending, ackPending, redelivered] = gauges;
    this.callback = async (result) => {
      for (const [t, c] of await this.readings()) {
        // The durable is the consumer group, as in the other metrics' messaging.consumer.group.name.
        const attrs = destinationAttrs(t.topic, t.durable);
        result.observe(pending, c.pending, attrs);
        result.observe(ackPending, c.ackPending, attrs);
        result.observe(redelivered, c.redelivered, attrs);
      }
    };
    meter.addBatchObservableCallback(this.callback, gauges);
  }

  /** Undefined when telemetry is off, `@opentelemetry/api` is not installed or no meter provider is registered. */
  static start(enabled: boolean, source: ConsumerLagSource): ConsumerLag | undefined {
    if (!enabled) return undefined;
    const api = loadOtelApi();
    if (!api || !sdkRegistered(api).metrics) return undefined;
    const meter = api.metrics.getMeter(INSTRUMENTATION_NAME);
    const gauge = (name: string, description: string) => meter.createObservableGauge(name, { unit: '{message}', description });
    return new ConsumerLag(
      meter,
      [
        gauge(METRIC_CONSUMER_PENDING, 'Messages in the stream not yet delivered to the durable consumer'),
        gauge(METRIC_CONSUMER_ACK_PENDING, 'Messages delivered to the durable consumer and not yet acked'),
        gauge(METRIC_CONSUMER_REDELIVERED, 'Messages delivered to the durable consumer more than once and not yet acked'),
      ],
      source,
    );
  }

  stop(): void {
    this.meter.removeBatchObservableCallback(this.callback, this.gauges);
  }

  /** The last readings when younger than the interval, else fresh ones (one read at a time). */
  private readings(): Promise<Array<[LagTarget, ConsumerCounts]>> {
    if (this.last && Date.now() - this.last.at < this.source.intervalMs) return Promise.resolve(this.last.readings);
    this.reading ??= this.readAll().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async readAll(): Promise<Array<[LagTarget, ConsumerCounts]>> {
    // Instances of a durable within this bus share one consumer: read it once.
    const unique = new Map<string, LagTarget>();
    for (const t of this.source.targets()) unique.set(`${t.topic}\u0000${t.durable}`, t);
    const read = await Promise.all([...unique.values()].map(async (t) => [t, await this.source.read(t).catch(() => undefined)] as const));
    // A consumer that could not be read (server away) is left out rather than reported as 0.
    const readings = read.filter((r): r is [LagTarget, ConsumerCounts] => r[1] !== undefined);
    this.last = { at: Date.now(), readings };
    return readings;
  }
}

/**
 * The durables of `stats()` (a bus's subscriptions), read on the connection `connection()` gives:
 * the stream capturing each topic is looked up once, then its consumer's info per interval.
 */
export function durableLagSource(
  connection: () => NatsConnection,
  stats: () => ReadonlyArray<{ subject: string; durable?: string }>,
  intervalMs: number,
  apiTimeoutMs: number,
): ConsumerLagSource {
  let open: { nc: NatsConnection; messages: Promise<StreamMessages> } | undefined;
  const streams = new Map<string, string>();
  return {
    intervalMs,
    targets: () => stats().flatMap((s) => (s.durable === undefined ? [] : [{ topic: s.subject, durable: s.durable }])),
    async read(t) {
      const nc = connection();
      if (open?.nc !== nc) open = { nc, messages: StreamMessages.open(nc, apiTimeoutMs) };
      const messages = await open.messages.catch((err: unknown) => {
        open = undefined;
        throw err;
      });
      const stream = streams.get(t.topic) ?? (await messages.streamFor(t.topic));
      if (stream === undefined) return undefined;
      streams.set(t.topic, stream);
      const counts = await messages.consumerCounts(stream, t.durable);
      // Gone (deleted, or the stream re-created under another name): look the stream up again next time.
      if (!counts) streams.delete(t.topic);
      return counts;
    },
  };
}

/** The lag gauges of a bus's durables, with `jetstream`'s interval and API timeout or their defaults. */
export function startConsumerLag(
  enabled: boolean,
  jetstream: { consumerLagIntervalMs?: number; apiTimeoutMs?: number } | undefined,
  connection: () => NatsConnection,
  stats: () => ReadonlyArray<{ subject: string; durable?: string }>,
): ConsumerLag | undefined {
  return ConsumerLag.start(
    enabled,
    durableLagSource(
      connection,
      stats,
      jetstream?.consumerLagIntervalMs ?? DEFAULTS.consumerLag.intervalMs,
      jetstream?.apiTimeoutMs ?? DEFAULTS.jetstream.apiTimeoutMs,
    ),
  );
}
