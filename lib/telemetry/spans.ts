// The bus's spans through @opentelemetry/api: the scope of one send or process operation, reachable
// from its context, how a failure is recorded on a span, and the claim-check child spans.
import type { Attributes, Context, Span, Tracer } from '@opentelemetry/api';
import { BusMetrics, destinationAttrs } from './bus-metrics';
import type { LossStats } from './loss-stats';
import type { Otel } from './otel-api';
import {
  ATTR_CLAIMCHECK_BYTES,
  ATTR_CLAIMCHECK_OPERATION,
  ATTR_DESTINATION,
  ATTR_ERROR_TYPE,
  ATTR_MESSAGING_SYSTEM,
  ATTR_OPERATION_NAME,
  ATTR_OPERATION_TYPE,
  errorTypeOf,
  INSTRUMENTATION_NAME,
  MESSAGING_SYSTEM,
} from './semconv';

export { INSTRUMENTATION_NAME } from './semconv';

/** Tracer, metrics and context key, taken once when the bus starts. */
export class Instrumentation {
  readonly scopeKey: symbol;
  readonly metrics: BusMetrics;

  constructor(
    readonly api: Otel,
    readonly tracer: Tracer,
    losses: (() => LossStats[]) | undefined,
  ) {
    this.scopeKey = api.createContextKey('nestjs-nats-eventbus operation');
    this.metrics = new BusMetrics(api.metrics.getMeter(INSTRUMENTATION_NAME), losses);
  }

  /** The operation whose context is active, if any. */
  currentScope(): OperationScope | undefined {
    return this.api.context.active().getValue(this.scopeKey) as OperationScope | undefined;
  }
}

/** One send or process operation: its span, and what its metrics need when it ends. */
export class OperationScope {
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

export function spanAttrs(destination: string, type: 'send' | 'process', name: string): Attributes {
  return {
    [ATTR_MESSAGING_SYSTEM]: MESSAGING_SYSTEM,
    [ATTR_DESTINATION]: destination,
    [ATTR_OPERATION_TYPE]: type,
    [ATTR_OPERATION_NAME]: name,
  };
}

/** The scope, reachable from its context (for `failed`, `sized` and claim-check). */
export function withScope(a: Instrumentation, scope: OperationScope): OperationScope {
  (scope as { ctx: Context }).ctx = scope.ctx.setValue(a.scopeKey, scope);
  return scope;
}

export function markFailed(scope: OperationScope, err: unknown): void {
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

/**
 * Run a claim-check store or recovery (`fn`) in a child span of the current operation, and count
 * it. `bytes` is known before a store; a recovery learns it from what `fn` returns.
 */
export function traceClaimCheck<T>(
  a: Instrumentation,
  operation: 'store' | 'recover',
  bytes: number | undefined,
  fn: () => Promise<T>,
  sizeOf: (value: T) => number,
): Promise<T> {
  const { api } = a;
  const scope = a.currentScope();
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
    a.metrics.claimChecked(operation, attrs, size);
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
