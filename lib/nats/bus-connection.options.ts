import type { NodeConnectionOptions } from '@nats-io/transport-node';
import { DEFAULTS } from '../options/defaults';

/**
 * Options of one NATS connection. Everything nats.js v3's `connect()` (`@nats-io/transport-node`) accepts may be given; only
 * `servers` is needed. Defaults (see `NATS_CONNECTION_DEFAULTS`):
 * - `name`: `'nestjs-nats-eventbus'` (suffixed with the consumer name for consumer connections);
 * - `maxReconnectAttempts: -1`: reconnect forever;
 * - `reconnectTimeWait: 1000` ms with `reconnectJitter: 500` ms: backoff between attempts;
 * - `timeout: 10000` ms to establish the first connection;
 * - `pingInterval: 30000` ms, `maxPingOut: 3`: a dead server is noticed in about 90 s;
 * - `noAsyncTraces: true`: nats.js would otherwise build two `Error`s (stack captures) per request
 *   to say where a failed request started; our typed errors name the subject instead.
 */
export type NatsConnectionOptions = NodeConnectionOptions;

export const NATS_CONNECTION_DEFAULTS = DEFAULTS.nats satisfies NodeConnectionOptions;

/** Connection options with the library's defaults filled in; a key given as `undefined` keeps its default. */
export type ResolvedConnectionOptions = NatsConnectionOptions & { reconnectTimeWait: number; reconnectJitter: number };

export function resolveConnectionOptions(options: NatsConnectionOptions): ResolvedConnectionOptions {
  const given = Object.fromEntries(Object.entries(options ?? {}).filter(([, v]) => v !== undefined));
  return { ...NATS_CONNECTION_DEFAULTS, ...given } as ResolvedConnectionOptions;
}
