// Trace context through the outbox: the writer's trace travels in the row's headers, and the relay
// publishes inside it, so that the publish span and the consumer's span join the trace of the
// request that wrote the row, not one the relay starts on its own.
import { loadOtelApi } from '../telemetry/otel-api';

/** The active trace's headers (`traceparent`, `tracestate`); undefined without OpenTelemetry or an active span. */
export function traceHeaders(): Record<string, string> | undefined {
  const api = loadOtelApi();
  if (!api) return undefined;
  const ctx = api.context.active();
  const span = api.trace.getSpan(ctx);
  if (!span || !api.trace.isSpanContextValid(span.spanContext())) return undefined;
  const out: Record<string, string> = {};
  api.propagation.inject(ctx, out);
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Runs `send` inside the trace that `headers` carry, when OpenTelemetry is there; else just runs it. */
export function withinTrace<T>(headers: Record<string, string> | undefined, send: () => T): T {
  const api = headers && loadOtelApi();
  if (!api) return send();
  return api.context.with(api.propagation.extract(api.ROOT_CONTEXT, headers), send);
}
