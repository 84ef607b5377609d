import { InvalidOptionsError } from '../errors/event-bus.errors';

/**
 * One rule per kind of value, used by the module, the bus, the storage and the transport, so the
 * same option is refused the same way wherever it is given. Each throws `InvalidOptionsError`
 * naming the option; `undefined` passes (the default applies).
 */

/** Longest delay Node's timers take (2^31 - 1 ms); a longer one fires after about 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A whole number >= `min` and <= `max` (counts, bytes, milliseconds, seconds). */
export function wholeNumber(option: string, value: unknown, min = 1, unit = '', max = Number.MAX_SAFE_INTEGER): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new InvalidOptionsError(option, `must be a whole number${unit ? ` of ${unit}` : ''} ${range}, got ${String(value)}`);
  }
}

/** A non-empty string. */
export function nonEmptyString(option: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string' || value.length === 0) throw new InvalidOptionsError(option, 'must be a non-empty string');
}

/** A string (may be empty, e.g. a key prefix or a route). */
export function string(option: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'string') throw new InvalidOptionsError(option, 'must be a string');
}

/**
 * A `MessageStorageManager`, or anything that does its job (`storeMessage` and `recoverMessage`):
 * a subclass from another copy of the library, or a test double, is accepted alike.
 */
export function storageManager<T>(option: string, value: unknown): T {
  const v = value as { storeMessage?: unknown; recoverMessage?: unknown } | null | undefined;
  if (!v || typeof v !== 'object' || typeof v.storeMessage !== 'function' || typeof v.recoverMessage !== 'function') {
    throw new InvalidOptionsError(
      option,
      'must be a MessageStorageManager (storeMessage and recoverMessage), e.g. new RedisStorageManager(redis)',
    );
  }
  return value as T;
}

/**
 * Only the keys an options object knows: a typo (`rpcTimeout` for `rpcTimeoutMs`) would otherwise
 * be ignored, and the default used without a word. The closest known key is suggested.
 */
export function knownKeys(where: string, value: object, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const option = where ? `${where}.${key}` : key;
    const closest = suggestion(key, known);
    const hint = closest ? `; did you mean "${closest}"?` : '';
    throw new InvalidOptionsError(option, `is not an option${hint} (known: ${known.join(', ')})`);
  }
}

/**
 * The known key a typo most likely meant: one that differs by a unit suffix (`ttl` for
 * `ttlSeconds`, `timeout` for `timeoutMs`), else the nearest by edit distance, if near enough.
 */
function suggestion(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const unitless = known.find((k) => /(Ms|Seconds)$/.test(k) && k.replace(/(Ms|Seconds)$/, '').toLowerCase() === lower);
  if (unitless) return unitless;
  const closest = known.reduce((best, k) => (distance(key, k) < distance(key, best) ? k : best), known[0]);
  return distance(key, closest) <= Math.max(2, Math.floor(closest.length / 3)) ? closest : undefined;
}

// Edit distance, for the suggestion only (option names are short).
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = row[j];
      row[j] = next;
    }
  }
  return row[b.length];
}

/** What `renamed` found: the value, and the name it was given under (for the errors that name it). */
export interface RenamedOption<T> {
  value: T | undefined;
  option: string;
}

/**
 * An option renamed, its old name kept as a deprecated alias: the value under either name. Both
 * given with different values is an `InvalidOptionsError`, since neither can be guessed to win.
 */
export function renamed<T>(owner: object | null | undefined, name: string, deprecated: string, prefix = ''): RenamedOption<T> {
  const o = (owner ?? {}) as Record<string, unknown>;
  const [now, old] = [o[name], o[deprecated]];
  if (now !== undefined && old !== undefined && now !== old) {
    throw new InvalidOptionsError(
      `${prefix}${name}`,
      `and its deprecated name ${prefix}${deprecated} are both given, with different values (${String(now)} and ${String(old)}); give ${name} alone`,
    );
  }
  return now !== undefined || old === undefined
    ? { value: now as T | undefined, option: `${prefix}${name}` }
    : { value: old as T, option: `${prefix}${deprecated}` };
}
