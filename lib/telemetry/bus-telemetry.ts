// Tracing and metrics of one bus (or one microservices transport side) through @opentelemetry/api.
// Over 200 lines: the send and process scopes, the claim-check child spans and the instruments
// share one state; the store wrapper and the logger are in files of their own.
import type { Attributes, Context, Counter, Histogram, ObservableCounter, ObservableResult, Span, Tracer } from '@opentelemetry/api';
import { createHeaders, Msg, MsgHdrs } from '../nats/bus-connection';
import { isPromise, MaybePromise } from '../shared/maybe-async';
import { loadOtelApi, Otel, sdkRegistered } from './otel-api';
import { HEADER_GETTER, HEADER_SETTER } from './nats-carrier';
import {
  ATTR_BODY_SIZE,
  ATTR_CLAIMCHECK_BYTES,
  ATTR_CLAIMCHECK_OPERATION,
  ATTR_CONSUMER_GROUP,
  ATTR_DESTINATION,
  ATTR_ERROR_TYPE,
  ATTR_MESSAGING_SYSTEM,
  ATTR_OPERATION_NAME,
  ATTR_OPERATION_TYPE,
  errorTypeOf,
  MESSAGING_SYSTEM,
  METRIC_CLAIMCHECK_BYTES,
  METRIC_CLAIMCHECK_RECOVERED,
  METRIC_CLAIMCHECK_STORED,
  METRIC_CONSUMED,
  METRIC_DROPPED,
  METRIC_OPERATION_DURATION,
  METRIC_PROCESS_DURATION,
  METRIC_SENT,
  METRIC_SHED,
  METRIC_DEAD_LETTERS_FAILED,
  METRIC_DUPLICATES_SKIPPED,
} from './semconv';

/** What a `process` span reads of a received message: its body size, its headers' trace context, whether it is a request. */
export interface ProcessedMessage {
  readonly data: Uint8Array;
  readonly headers?: MsgHdrs;
  readonly reply?: string;
}
/** The instrumentation scope name of the library's tracer and meter. */
export const INSTRUMENTATION_NAME = 'nestjs-nats-eventbus';

/** `publish` is a PRODUCER `send` span; `request` a CLIENT one. */
export type SendKind = 'publish' | 'request';

/** One subscription's losses, as `EventBus.subscriptionStats()` reports them. */
export interface LossStats {
  subject: string;
  queue?: string;
  dropped: number;
  shed: number;
  deadLettersFailed?: number;
  duplicatesSkipped?: number;
}

// Seconds, as the messaging conventions advise for both duration histograms.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/**
 * One send or process operation, opaque to callers. (No OpenTelemetry type may reach this file's
 * public declarations: an app without the package type-checks the library's .d.ts too.)
 */
export interface TelemetryScope {
  readonly destination: string;
}

/** One send or process operation: its span, and what its metrics need when it ends. */
class OperationScope implements TelemetryScope {
  bodySize = -1;
  errorType?: string;
  readonly started = performance.now();

  constructor(
    readonly span: Span,
    readonly ctx: Context,
    readonly operation: 'publish' | 'request' | 'process',
    readonly destination: string,
    readonly queue: string | undefined,
  ) {}
}

/** Tracer, meter instruments and context key, taken once when the bus starts. */
class Instrumentation {
  readonly scopeKey: symbol;
  readonly sent: Counter;
  readonly consumed: Counter;
  readonly processDuration: Histogram;
  readonly operationDuration: Histogram;
  readonly stored: Counter;
  readonly recovered: Counter;
  readonly bytes: Counter;
  readonly dropped: ObservableCounter;
  readonly shed: ObservableCounter;
  readonly deadLettersFailed: ObservableCounter;
  readonly duplicatesSkipped: ObservableCounter;
  private readonly observe: (result: ObservableResult, kind: 'dropped' | 'shed' | 'deadLettersFailed' | 'duplicatesSkipped') => void;
  private readonly onDropped = (r: ObservableResult) => this.observe(r, 'dropped');
  private readonly onShed = (r: ObservableResult) => this.observe(r, 'shed');
  private readonly onDeadLettersFailed = (r: ObservableResult) => this.observe(r, 'deadLettersFailed');
  private readonly onDuplicatesSkipped = (r: ObservableResult) => this.observe(r, 'duplicatesSkipped');

  constructor(
    readonly api: Otel,
    readonly tracer: Tracer,
    losses: (() => LossStats[]) | undefined,
  ) {
    this.scopeKey = api.createContextKey('nestjs-nats-eventbus operation');
    const meter = api.metrics.getMeter(INSTRUMENTATION_NAME);
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
}

function destinationAttrs(destination: string, queue?: string): Attributes {
  const attrs: Attributes = { [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM, [ATTR_DESTINATION]: destination };
  if (queue !== undefined) attrs[ATTR_CONSUMER_GROUP] = queue;
  return attrs;
}

/**
 * The bus's telemetry. Inert until `start`, and after it too when telemetry is off, the API is not
 * installed, or no SDK is registered: then every method passes straight through, allocating
 * nothing, which is what keeps a bus without an SDK as fast as one without telemetry.
 */
export class BusTelemetry {
  private active?: Instrumentation;
  private started = false;

  /** True when an SDK is registered and telemetry is on: spans and metrics are being made. */
  get on(): boolean {
    return this.active !== undefined;
  }

  /** Take the tracer and meter (once). `losses` feeds the dropped/shed counters. */
  start(enabled: boolean, losses?: () => LossStats[]): void {
    if (this.started) return;
    this.started = true;
    if (!enabled) return;
    const api = loadOtelApi();
    if (!api) return;
    const sdk = sdkRegistered(api);
    if (!sdk.tracing && !sdk.metrics) return;
    this.active = new Instrumentation(api, api.trace.getTracer(INSTRUMENTATION_NAME), losses);
  }

  /** Stop observing the subscriptions (the bus closed). */
  stop(): void {
    this.active?.release();
  }

  /**
   * Run `fn` (a publish or a request) inside a `send` span, which ends when its promise settles.
   * Only call when `on`; callers choose, so that the off path makes no closure.
   */
  send<T>(topic: string, kind: SendKind, fn: () => Promise<T>): Promise<T> {
    const scope = this.begin(topic, kind);
    if (!scope) return fn();
    return this.runIn(scope as OperationScope, fn) as Promise<T>;
  }

  /** A `send` scope for callers that end it themselves (the microservices client). */
  begin(topic: string, kind: SendKind): TelemetryScope | undefined {
    const a = this.active;
    if (!a) return undefined;
    const { api } = a;
    const parent = api.context.active();
    const span = a.tracer.startSpan(
      `send ${topic}`,
      { kind: kind === 'publish' ? api.SpanKind.PRODUCER : api.SpanKind.CLIENT, attributes: spanAttrs(topic, 'send', kind) },
      parent,
    );
    const scope = new OperationScope(span, api.trace.setSpan(parent, span), kind, topic, undefined);
    return withScope(a, scope);
  }

  /** Run `fn` in `scope`'s context (so headers and claim-check see it), or as is without one. */
  within<T>(scope: TelemetryScope | undefined, fn: () => T): T {
    return scope && this.active ? this.active.api.context.with((scope as OperationScope).ctx, fn) : fn();
  }

  /** End a scope: the span's status and size, its metrics. */
  end(operation: TelemetryScope | undefined, err?: unknown): void {
    const a = this.active;
    if (!a || !operation) return;
    const scope = operation as OperationScope;
    if (err !== undefined) markFailed(scope, err);
    const span = scope.span;
    if (span.isRecording() && scope.bodySize >= 0) span.setAttribute(ATTR_BODY_SIZE, scope.bodySize);
    span.end();
    const attrs = destinationAttrs(scope.destination, scope.queue);
    attrs[ATTR_OPERATION_NAME] = scope.operation;
    if (scope.errorType) attrs[ATTR_ERROR_TYPE] = scope.errorType;
    const seconds = (performance.now() - scope.started) / 1000;
    if (scope.operation === 'process') {
      a.consumed.add(1, attrs);
      a.processDuration.record(seconds, attrs);
    } else {
      a.sent.add(1, attrs);
      a.operationDuration.record(seconds, attrs);
    }
  }

  /**
   * The headers to send, with `traceparent`/`tracestate` of the current span added (created when
   * there were none). Unchanged when telemetry is off or no span is active.
   */
  inject(headers: MsgHdrs | undefined): MsgHdrs | undefined {
    const a = this.active;
    if (!a) return headers;
    const ctx = a.api.context.active();
    const span = a.api.trace.getSpan(ctx);
    // A string compare, not isSpanContextValid's regexes: this runs for every message sent.
    if (!span || span.spanContext().traceId === a.api.INVALID_TRACEID) return headers;
    const out = headers ?? createHeaders();
    a.api.propagation.inject(ctx, out, HEADER_SETTER);
    return out;
  }

  /** Note the size of an inline body on the current scope; returns `wire` unchanged. */
  sized<W>(wire: W): W {
    if (this.active && wire instanceof Uint8Array) this.noteBodySize(wire.byteLength);
    return wire;
  }

  /** Note the size of an inline body on the current scope (for a path that sends it itself). */
  noteBodySize(bytes: number): void {
    const scope = this.active && this.currentScope();
    if (scope) scope.bodySize = bytes;
  }

  /**
   * A subscription's delivery function, traced: each message is processed inside a `process` span
   * whose parent is the trace context its headers carry. `run` itself when telemetry is off.
   */
  consuming<H, R>(
    topic: string,
    queue: string | undefined,
    run: (msg: Msg, held: H) => MaybePromise<R>,
  ): (msg: Msg, held: H) => MaybePromise<R> {
    if (!this.active) return run;
    const literal = /[*>]/.test(topic) ? undefined : topic;
    return (msg, held) => this.process(msg, literal ?? msg.subject, queue, () => run(msg, held));
  }

  /** Run `fn` for `msg` inside a `process` span (CONSUMER for an event, SERVER for a request). */
  process<R>(msg: ProcessedMessage, subject: string, queue: string | undefined, fn: () => MaybePromise<R>): MaybePromise<R> {
    const a = this.active;
    if (!a) return fn();
    const { api } = a;
    const parent = msg.headers ? api.propagation.extract(api.ROOT_CONTEXT, msg.headers, HEADER_GETTER) : api.ROOT_CONTEXT;
    const attributes = spanAttrs(subject, 'process', 'process');
    if (queue !== undefined) attributes[ATTR_CONSUMER_GROUP] = queue;
    const kind = msg.reply ? api.SpanKind.SERVER : api.SpanKind.CONSUMER;
    const span = a.tracer.startSpan(`process ${subject}`, { kind, attributes }, parent);
    const scope = withScope(a, new OperationScope(span, api.trace.setSpan(parent, span), 'process', subject, queue));
    scope.bodySize = msg.data.byteLength;
    return this.runIn(scope, fn);
  }

  /** Run `fn` in `scope`'s context and end the scope when it returns or settles, failed if it threw or rejected. */
  private runIn<R>(scope: OperationScope, fn: () => MaybePromise<R>): MaybePromise<R> {
    let result: MaybePromise<R>;
    try {
      result = this.active!.api.context.with(scope.ctx, fn);
    } catch (err) {
      this.end(scope, err);
      throw err;
    }
    if (!isPromise(result)) {
      this.end(scope);
      return result;
    }
    return result.then(
      (value) => {
        this.end(scope);
        return value;
      },
      (err) => {
        this.end(scope, err);
        throw err;
      },
    );
  }

  /** Mark the current operation failed (a handler threw, a body could not be stored or recovered). */
  failed(err: unknown): void {
    if (!this.active) return;
    const scope = this.currentScope();
    if (scope && !scope.errorType) markFailed(scope, err);
  }

  /**
   * Run a claim-check store or recovery (`fn`) in a child span of the current operation, and count
   * it. `bytes` is known before a store; a recovery learns it from what `fn` returns.
   */
  claimCheck<T>(operation: 'store' | 'recover', bytes: number | undefined, fn: () => Promise<T>, sizeOf: (value: T) => number): Promise<T> {
    const a = this.active;
    if (!a) return fn();
    const { api } = a;
    const scope = this.currentScope();
    const parent = api.context.active();
    const parentSpan = api.trace.getSpan(parent);
    // No orphan spans: a recovery started ahead of its handler (recoverOnReceipt) is only counted.
    const span = parentSpan?.isRecording()
      ? a.tracer.startSpan(
          `claim-check ${operation}${scope ? ` ${scope.destination}` : ''}`,
          { kind: api.SpanKind.INTERNAL, attributes: { [ATTR_CLAIMCHECK_OPERATION]: operation } },
          parent,
        )
      : undefined;
    // The message's own body: stored by its sender, recovered by its handler (not a reply's body).
    const ownBody = scope !== undefined && (operation === 'store') === (scope.operation !== 'process');
    const done = (size: number) => {
      if (ownBody) scope.bodySize = size;
      span?.setAttribute(ATTR_CLAIMCHECK_BYTES, size);
      span?.end();
      const attrs: Attributes = scope ? destinationAttrs(scope.destination, scope.queue) : { [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM };
      (operation === 'store' ? a.stored : a.recovered).add(1, attrs);
      a.bytes.add(size, { ...attrs, [ATTR_CLAIMCHECK_OPERATION]: operation });
    };
    const fail = (err: unknown) => {
      if (span) {
        recordError(span, err);
        span.end();
      }
      if (scope && !scope.errorType) markFailed(scope, err);
    };
    let pending: Promise<T>;
    try {
      pending = span ? api.context.with(api.trace.setSpan(parent, span), fn) : fn();
    } catch (err) {
      fail(err);
      throw err;
    }
    return pending.then(
      (value) => {
        done(bytes ?? sizeOf(value));
        return value;
      },
      (err) => {
        fail(err);
        throw err;
      },
    );
  }

  /** The trace id of the active span, for log lines; undefined when none. */
  traceId(): string | undefined {
    const a = this.active;
    if (!a) return undefined;
    const span = a.api.trace.getSpan(a.api.context.active());
    if (!span) return undefined;
    const traceId = span.spanContext().traceId;
    return traceId === a.api.INVALID_TRACEID ? undefined : traceId;
  }

  private currentScope(): OperationScope | undefined {
    const a = this.active!;
    return a.api.context.active().getValue(a.scopeKey) as OperationScope | undefined;
  }
}

function spanAttrs(destination: string, type: 'send' | 'process', name: string): Attributes {
  return {
    [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM,
    [ATTR_DESTINATION]: destination,
    [ATTR_OPERATION_TYPE]: type,
    [ATTR_OPERATION_NAME]: name,
  };
}

/** The scope, reachable from its context (for `failed`, `sized` and claim-check). */
function withScope(a: Instrumentation, scope: OperationScope): OperationScope {
  (scope as { ctx: Context }).ctx = scope.ctx.setValue(a.scopeKey, scope);
  return scope;
}

function markFailed(scope: OperationScope, err: unknown): void {
  scope.errorType = errorTypeOf(err);
  if (scope.span.isRecording()) {
    scope.span.setAttribute(ATTR_ERROR_TYPE, scope.errorType);
    recordErrorOn(scope.span, err);
  }
}

function recordError(span: Span, err: unknown): void {
  span.setAttribute(ATTR_ERROR_TYPE, errorTypeOf(err));
  recordErrorOn(span, err);
}

// SpanStatusCode.ERROR: a const enum's value, so the API need not be at hand here.
const STATUS_ERROR = 2;

/** Status ERROR with the exception recorded; whatever was thrown, this never throws. */
function recordErrorOn(span: Span, err: unknown): void {
  try {
    const message = err instanceof Error ? err.message : String(err);
    span.recordException(err instanceof Error ? err : message);
    span.setStatus({ code: STATUS_ERROR, message });
  } catch {
    span.setStatus({ code: STATUS_ERROR });
  }
}
