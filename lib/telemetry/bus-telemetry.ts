// Tracing and metrics of one bus (or one microservices transport side) through @opentelemetry/api:
// the facade its callers use. Spans are made in spans.ts, metrics recorded in bus-metrics.ts; the
// store wrapper and the logger are in files of their own.
import { createHeaders, Msg, MsgHdrs } from '../nats/bus-connection';
import { isPromise, MaybePromise } from '../shared/maybe-async';
import { destinationAttrs } from './bus-metrics';
import type { LossStats } from './loss-stats';
import { loadOtelApi, sdkRegistered } from './otel-api';
import { HEADER_GETTER, HEADER_SETTER } from './nats-carrier';
import { ATTR_BODY_SIZE, ATTR_CONSUMER_GROUP, ATTR_ERROR_TYPE, ATTR_OPERATION_NAME } from './semconv';
import { INSTRUMENTATION_NAME } from './semconv';
import { Instrumentation, markFailed, OperationScope, spanAttrs, traceClaimCheck, withScope } from './spans';

export type { LossStats } from './loss-stats';
export { INSTRUMENTATION_NAME } from './semconv';

/** What a `process` span reads of a received message: its body size, its headers' trace context, whether it is a request. */
export interface ProcessedMessage {
  readonly data: Uint8Array;
  readonly headers?: MsgHdrs;
  readonly reply?: string;
}

/** `publish` is a PRODUCER `send` span; `request` a CLIENT one. */
export type SendKind = 'publish' | 'request';

/**
 * One send or process operation, opaque to callers. (No OpenTelemetry type may reach this file's
 * public declarations: an app without the package type-checks the library's .d.ts too.)
 */
export interface TelemetryScope {
  readonly destination: string;
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
    this.active?.metrics.release();
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
    a.metrics.ended(scope.operation, attrs, (performance.now() - scope.started) / 1000);
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
    return this.active ? traceClaimCheck(this.active, operation, bytes, fn, sizeOf) : fn();
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
    return this.active!.currentScope();
  }
}
