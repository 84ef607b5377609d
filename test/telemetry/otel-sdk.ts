import { context, metrics, propagation, trace, SpanKind } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  AggregationTemporality,
  DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { InMemorySpanExporter, ReadableSpan, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';

/** A real OpenTelemetry SDK with in-memory exporters, registered globally (as an app would before NestFactory.create). */
export interface TestSdk {
  spans: InMemorySpanExporter;
  reader: PeriodicExportingMetricReader;
  /** Finished spans whose name is `name`. */
  named(name: string): ReadableSpan[];
  /** Data points of metric `name` whose attributes include `attrs`. */
  points(name: string, attrs?: Record<string, unknown>): Promise<Array<DataPoint<any>>>;
  shutdown(): Promise<void>;
}

export function registerSdk(): TestSdk {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] });
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(tracerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  return {
    spans,
    reader,
    named: (name) => spans.getFinishedSpans().filter((s) => s.name === name),
    points: async (name, attrs = {}) => {
      const { resourceMetrics } = await reader.collect();
      const out: Array<DataPoint<any>> = [];
      for (const sm of resourceMetrics.scopeMetrics)
        for (const m of sm.metrics)
          if (m.descriptor.name === name)
            for (const p of m.dataPoints as Array<DataPoint<any>>)
              if (Object.entries(attrs).every(([k, v]) => p.attributes[k] === v)) out.push(p);
      return out;
    },
    shutdown: async () => {
      await Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]);
      trace.disable();
      metrics.disable();
      propagation.disable();
      context.disable();
    },
  };
}

export { SpanKind };
