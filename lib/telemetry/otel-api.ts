import type * as OtelApi from '@opentelemetry/api';

/** The `@opentelemetry/api` module, as its types describe it. */
export type Otel = typeof OtelApi;

/**
 * `@opentelemetry/api` when the app has it installed, else undefined. It is an optional peer:
 * required when the bus starts, never at import, so an app without it loads the library unchanged
 * and an SDK registered before `NestFactory.create` is the one used.
 */
export function loadOtelApi(): Otel | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- an optional peer, loaded on demand
    return require('@opentelemetry/api') as Otel;
  } catch {
    return undefined;
  }
}

/**
 * Whether an SDK is registered: the API's global providers are still its no-op ones otherwise.
 * A fresh ProxyTracerProvider's delegate is the API's own no-op provider, which is how it is known.
 */
export function sdkRegistered(api: Otel): { tracing: boolean; metrics: boolean } {
  const provider = api.trace.getTracerProvider() as { getDelegate?: () => unknown };
  const noopTracing = new api.ProxyTracerProvider().getDelegate();
  const tracing = typeof provider.getDelegate === 'function' ? provider.getDelegate() !== noopTracing : true;
  const metrics = api.metrics.getMeterProvider().constructor?.name !== 'NoopMeterProvider';
  return { tracing, metrics };
}
