/** What is published instead of a body that is too large: `{"token":"<id>","is_stored":true}`. */
export interface StoredMessageEnvelope {
  token: string;
  is_stored: true;
}

// RFC 4122 textual UUID, as this library (crypto.randomUUID) and Python's uuid4() write it.
const UUID_TOKEN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
// Python shortuuid: 22 characters from its 57-letter alphabet (no 0, 1, I, O, l).
const SHORTUUID_TOKEN = /^[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{22}$/;

/** True only for the token shapes this library or the Python services produce. */
export function isValidToken(token: unknown): token is string {
  return typeof token === 'string' && (UUID_TOKEN.test(token) || SHORTUUID_TOKEN.test(token));
}

/**
 * True only for an object with exactly the keys `token` and `is_stored`, where `is_stored`
 * is `true`. The token's shape is checked separately, so a forged one can be reported.
 */
export function looksLikeEnvelope(value: unknown): value is { token: unknown; is_stored: true } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  if (v.is_stored !== true || !('token' in v)) return false;
  let keys = 0;
  for (const _ in v) keys++;
  return keys === 2;
}

export function encodeEnvelope(token: string): Uint8Array {
  return Buffer.from(`{"token":"${token}","is_stored":true}`, 'utf8');
}

// Marks the InvalidMessageError of an envelope whose token has a shape no producer makes, so a
// durable subscription can dead-letter it as `forbidden` rather than as a body that is not JSON.
const forged = new WeakSet<object>();

/** Note that `err` was raised for a forged token. */
export function markForgedToken<E extends object>(err: E): E {
  forged.add(err);
  return err;
}

/** True for the error of an envelope with a forged token. */
export function isForgedToken(err: unknown): boolean {
  return typeof err === 'object' && err !== null && forged.has(err);
}
