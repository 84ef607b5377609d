// `OTEL=1 npm run sample`: each service registers the OpenTelemetry SDK before NestFactory.create
// (the bus takes its tracer and meter when it connects). Spans go to stdout as JSON lines (a
// console exporter of the sample's own, so that every stdout line stays one JSON object) through a
// batch processor; metrics are served for Prometheus on http://HOST:9464+n/metrics.
import { context, metrics, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, ReadableSpan, SpanExporter, TracerProvider } from '@opentelemetry/sdk-trace';
import { envInt } from './config';

/** Each service's Prometheus port is 9464 + its place here (OTEL_METRICS_PORT overrides). */
const METRICS_PORT_OFFSET: Record<string, number> = { 'sites-monitor': 0, 'velocloud-bridge': 1, notifier: 2 };
const SPAN_KINDS = ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];

/** One JSON log line per finished span, in the services' log format (`hop: "span"`). */
class JsonLineSpanExporter implements SpanExporter {
  constructor(private readonly service: string) {}

  export(spans: ReadableSpan[], done: (result: { code: ExportResultCode }) => void): void {
    for (const s of spans) {
      const [sec, ns] = s.duration;
      const line = {
        time: new Date().toISOString(),
        service: this.service,
        level: 'log',
        context: 'otel',
        hop: 'span',
        msg: s.name,
        kind: SPAN_KINDS[s.kind],
        trace_id: s.spanContext().traceId,
        span_id: s.spanContext().spanId,
        parent_span_id: s.parentSpanContext?.spanId,
        start_ms: s.startTime[0] * 1e3 + s.startTime[1] / 1e6,
        duration_ms: Math.round((sec * 1e3 + ns / 1e6) * 100) / 100,
        ...(s.status.code === 2 ? { status: 'ERROR', error: s.status.message } : {}),
        attributes: s.attributes,
      };
      process.stdout.write(JSON.stringify(line) + '\n');
    }
    done({ code: ExportResultCode.SUCCESS });
  }

  async shutdown(): Promise<void> {}
}

/** Registers the SDK when OTEL=1; returns the metrics port, or undefined when telemetry is off. */
export function startTelemetry(service: string): number | undefined {
  if (process.env.OTEL !== '1') return undefined;
  const resource = resourceFromAttributes({ 'service.name': service });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(
    new TracerProvider({
      resource,
      // Short delay: a span is on stdout within half a second, and little is lost on shutdown.
      spanProcessors: [new BatchSpanProcessor({ exporter: new JsonLineSpanExporter(service), scheduledDelayMillis: 500 })],
    }),
  );
  const port = envInt('OTEL_METRICS_PORT', 9464 + (METRICS_PORT_OFFSET[service] ?? 0), 0);
  metrics.setGlobalMeterProvider(new MeterProvider({ resource, readers: [new PrometheusExporter({ port, host: process.env.HOST })] }));
  return port;
}
