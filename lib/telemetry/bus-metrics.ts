// The bus's metrics through @opentelemetry/api: counters and histograms of sends, processing and
// claim-check, and the losses (dropped, shed, …) observed from the subscriptions' own counts.
import type { Attributes, Counter, Histogram, Meter, ObservableCounter, ObservableResult } from '@opentelemetry/api';
import {
  ATTR_CLAIMCHECK_OPERATION,
  ATTR_CONSUMER_GROUP,
  ATTR_DESTINATION,
  ATTR_MESSAGING_SYSTEM,
  MESSAGING_SYSTEM,
  METRIC_CLAIMCHECK_BYTES,
  METRIC_CLAIMCHECK_RECOVERED,
  METRIC_CLAIMCHECK_STORED,
  METRIC_CONSUMED,
  METRIC_DEAD_LETTERS_FAILED,
  METRIC_DROPPED,
  METRIC_DUPLICATES_SKIPPED,
  METRIC_OPERATION_DURATION,
  METRIC_PROCESS_DURATION,
  METRIC_SENT,
  METRIC_SHED,
} from './semconv';

import type { LossStats } from './loss-stats';

// Seconds, as the messaging conventions advise for both duration histograms.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

type LossKind = 'dropped' | 'shed' | 'deadLettersFailed' | 'duplicatesSkipped';

/** The instruments of one bus, made once when it starts. */
export class BusMetrics {
  private readonly sent: Counter;
  private readonly consumed: Counter;
  private readonly processDuration: Histogram;
  private readonly operationDuration: Histogram;
  private readonly stored: Counter;
  private readonly recovered: Counter;
  private readonly bytes: Counter;
  private readonly dropped: ObservableCounter;
  private readonly shed: ObservableCounter;
  private readonly deadLettersFailed: ObservableCounter;
  private readonly duplicatesSkipped: ObservableCounter;
  private readonly observe: (result: ObservableResult, kind: LossKind) => void;
  private readonly onDropped = (r: ObservableResult) => this.observe(r, 'dropped');
  private readonly onShed = (r: ObservableResult) => this.observe(r, 'shed');
  private readonly onDeadLettersFailed = (r: ObservableResult) => this.observe(r, 'deadLettersFailed');
  private readonly onDuplicatesSkipped = (r: ObservableResult) => this.observe(r, 'duplicatesSkipped');

  constructor(meter: Meter, losses: (() => LossStats[]) | undefined) {
    const duration = { unit: 's', advice: { explicitBucketBoundaries: DURATION_BUCKETS } };
    this.sent = meter.createCounter(METRIC_SENT, { unit: '{message}', description: 'Messages the bus sent (publish, request)' });
    this.consumed = meter.createCounter(METRIC_CONSUMED, { unit: '{message}', description: 'Messages handed to a handler' });
    this.processDuration = meter.createHistogram(METRIC_PROCESS_DURATION, { ...duration, description: 'Time to process a message' });
    this.operationDuration = meter.createHistogram(METRIC_OPERATION_DURATION, {
      ...duration,
      description: 'Time of a publish or of a request until its reply',
    });
    this.stored = meter.createCounter(METRIC_CLAIMCHECK_STORED, { unit: '{message}', description: 'Bodies offloaded to storage' });
    this.recovered = meter.createCounter(METRIC_CLAIMCHECK_RECOVERED, { unit: '{message}', description: 'Bodies recovered from storage' });
    this.bytes = meter.createCounter(METRIC_CLAIMCHECK_BYTES, { unit: 'By', description: 'Bytes stored and recovered by claim-check' });
    this.dropped = meter.createObservableCounter(METRIC_DROPPED, { unit: '{message}', description: 'Messages dropped: too many waiting' });
    this.shed = meter.createObservableCounter(METRIC_SHED, { unit: '{message}', description: 'Messages shed: byte budget spent' });
    this.deadLettersFailed = meter.createObservableCounter(METRIC_DEAD_LETTERS_FAILED, {
      unit: '{message}',
      description: 'Durable messages terminated without a dead letter: publishing it kept failing',
    });
    this.duplicatesSkipped = meter.createObservableCounter(METRIC_DUPLICATES_SKIPPED, {
      unit: '{message}',
      description: 'Idempotent durable messages acked without calling the handler: their id was already handled',
    });
    this.observe = (result, kind) => {
      // Several subscriptions may share a subject and queue: one sum per attribute set.
      const sums = new Map<string, { attrs: Attributes; value: number }>();
      for (const s of losses?.() ?? []) {
        const key = `${s.subject}\u0000${s.queue ?? ''}`;
        const entry = sums.get(key) ?? { attrs: destinationAttrs(s.subject, s.queue), value: 0 };
        entry.value += s[kind] ?? 0;
        sums.set(key, entry);
      }
      for (const { attrs, value } of sums.values()) result.observe(value, attrs);
    };
    if (losses) {
      this.dropped.addCallback(this.onDropped);
      this.shed.addCallback(this.onShed);
      this.deadLettersFailed.addCallback(this.onDeadLettersFailed);
      this.duplicatesSkipped.addCallback(this.onDuplicatesSkipped);
    }
  }

  release(): void {
    this.dropped.removeCallback(this.onDropped);
    this.shed.removeCallback(this.onShed);
    this.deadLettersFailed.removeCallback(this.onDeadLettersFailed);
    this.duplicatesSkipped.removeCallback(this.onDuplicatesSkipped);
  }

  /** A send or process operation ended: count it and record how long it took. */
  ended(operation: 'publish' | 'request' | 'process', attrs: Attributes, seconds: number): void {
    if (operation === 'process') {
      this.consumed.add(1, attrs);
      this.processDuration.record(seconds, attrs);
    } else {
      this.sent.add(1, attrs);
      this.operationDuration.record(seconds, attrs);
    }
  }

  /** A body stored or recovered by claim-check. */
  claimChecked(operation: 'store' | 'recover', attrs: Attributes, size: number): void {
    (operation === 'store' ? this.stored : this.recovered).add(1, attrs);
    this.bytes.add(size, { ...attrs, [ATTR_CLAIMCHECK_OPERATION]: operation });
  }
}

export function destinationAttrs(destination: string, queue?: string): Attributes {
  const attrs: Attributes = { [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM, [ATTR_DESTINATION]: destination };
  if (queue !== undefined) attrs[ATTR_CONSUMER_GROUP] = queue;
  return attrs;
}
