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
