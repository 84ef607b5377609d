import { InvalidOptionsError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, MAX_TIMER_MS, wholeNumber } from '../options/rules';
import { checkTableName } from './outbox-schema';
import type { PgPoolLike } from './pg-types';

/** `EventBusOutboxModule.forRoot(…)`. Give `connectionString` or `pool`, not both. */
export interface EventBusOutboxOptions {
  /** A PostgreSQL URL; the module creates (and at shutdown ends) a `pg` Pool of its own. */
  connectionString?: string;
  /** A `pg` Pool the app already has; the module uses it and leaves it open at shutdown. */
  pool?: PgPoolLike;
  /** The outbox table, `name` or `schema.name` (lower case). Default `'eventbus_outbox'`. */
  table?: string;
  /** The relay looks for rows this often when no NOTIFY woke it, in ms. Default 2000. */
  pollIntervalMs?: number;
  /** Rows one relay locks, publishes and deletes per transaction. Default 100. */
  batchSize?: number;
  /** Delays between retries while NATS or PostgreSQL fail, in ms; the last step repeats. Default [250, 1000, 5000]. */
  retryBackoffMs?: number[];
  /** Run a relay in this instance. Default true; false for an instance that only writes rows. */
  relay?: boolean;
  /** Run `OUTBOX_SCHEMA_SQL` (CREATE TABLE IF NOT EXISTS) at bootstrap. Default false: the table comes from your migration. */
  ensureSchema?: boolean;
}

export const OUTBOX_OPTION_KEYS = [
  'connectionString',
  'pool',
  'table',
  'pollIntervalMs',
  'batchSize',
  'retryBackoffMs',
  'relay',
  'ensureSchema',
] as const;

/** The outbox's defaults (`DEFAULTS.outbox`), deep-frozen. */
export const OUTBOX_DEFAULTS = DEFAULTS.outbox;

export interface ResolvedOutboxOptions {
  table: string;
  pollIntervalMs: number;
  batchSize: number;
  retryBackoffMs: readonly number[];
  relay: boolean;
  ensureSchema: boolean;
}

/** Checks the options (typed errors naming the option) and fills in the defaults. */
export function resolveOutboxOptions(options: EventBusOutboxOptions): ResolvedOutboxOptions {
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('outbox', 'must be an object');
  knownKeys('outbox', options, OUTBOX_OPTION_KEYS);
  const hasUrl = options.connectionString !== undefined;
  const hasPool = options.pool !== undefined;
  if (hasUrl === hasPool) throw new InvalidOptionsError('outbox', 'give exactly one of connectionString and pool');
  if (hasUrl && (typeof options.connectionString !== 'string' || !options.connectionString)) {
    throw new InvalidOptionsError('outbox.connectionString', 'must be a non-empty string (postgres://…)');
  }
  if (hasPool && (typeof options.pool !== 'object' || typeof options.pool?.connect !== 'function')) {
    throw new InvalidOptionsError('outbox.pool', 'must be a pg Pool (an object with connect())');
  }
  const table = options.table ?? OUTBOX_DEFAULTS.table;
  checkTableName('outbox.table', table);
  wholeNumber('outbox.pollIntervalMs', options.pollIntervalMs, 1, 'milliseconds', MAX_TIMER_MS);
  wholeNumber('outbox.batchSize', options.batchSize, 1, '', 10_000);
  const backoff = options.retryBackoffMs ?? OUTBOX_DEFAULTS.retryBackoffMs;
  if (!Array.isArray(backoff) || backoff.length === 0) throw new InvalidOptionsError('outbox.retryBackoffMs', 'must be a non-empty array');
  backoff.forEach((ms, i) => wholeNumber(`outbox.retryBackoffMs[${i}]`, ms, 1, 'milliseconds', MAX_TIMER_MS));
  for (const key of ['relay', 'ensureSchema'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean')
      throw new InvalidOptionsError(`outbox.${key}`, 'must be true or false');
  }
  return {
    table,
    pollIntervalMs: options.pollIntervalMs ?? OUTBOX_DEFAULTS.pollIntervalMs,
    batchSize: options.batchSize ?? OUTBOX_DEFAULTS.batchSize,
    retryBackoffMs: backoff,
    relay: options.relay ?? OUTBOX_DEFAULTS.relay,
    ensureSchema: options.ensureSchema ?? OUTBOX_DEFAULTS.ensureSchema,
  };
}
