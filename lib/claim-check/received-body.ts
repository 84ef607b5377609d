// Reading a received body: UTF-8 JSON, and whether it is a claim-check envelope (checked cheaply first).
import { isUtf8 } from 'node:buffer';
import { InvalidMessageError } from '../errors/event-bus.errors';
import { isValidToken, looksLikeEnvelope, markForgedToken, StoredMessageEnvelope } from './envelope';

/**
 * No envelope is longer than this (ours is 63 bytes; the Python services' json.dumps form about
 * 70), so `peekEnvelope` never parses a larger body.
 */
export const MAX_ENVELOPE_BYTES = 512;

// Every envelope spells this key; a body without it is not one, and need not be parsed to know.
const IS_STORED_KEY = Buffer.from('"is_stored"', 'utf8');

/**
 * The envelope `data` is, or undefined for an ordinary body. Only bodies of at most
 * `MAX_ENVELOPE_BYTES` are parsed; a body that is not JSON is left to the caller's parser.
 * Throws `InvalidMessageError` for an envelope with a forged token.
 */
export function peekEnvelope(subject: string, data: Uint8Array): StoredMessageEnvelope | undefined {
  if (data.byteLength > MAX_ENVELOPE_BYTES || data.byteLength === 0) return undefined;
  // The caller parses ordinary bodies itself: a native byte search spares them a second parse.
  // (A key written with \u escapes is not recognised; no producer of envelopes writes one.)
  if (asBuffer(data).indexOf(IS_STORED_KEY) === -1) return undefined;
  let payload: unknown;
  try {
    payload = parseJsonBody(subject, data);
  } catch {
    return undefined;
  }
  return envelopeOf(subject, payload);
}

/** The envelope a parsed body is, or undefined. Throws `InvalidMessageError` for a forged token. */
export function envelopeOf(subject: string, payload: unknown): StoredMessageEnvelope | undefined {
  if (!looksLikeEnvelope(payload)) return undefined;
  if (!isValidToken(payload.token)) {
    throw markForgedToken(new InvalidMessageError(`envelope on "${subject}" has a token of unknown shape; ignored`));
  }
  return { token: payload.token, is_stored: true };
}

/** The same bytes as a Buffer, without a copy (nats.js hands out plain Uint8Array views). */
export function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Parse a UTF-8 JSON body; `InvalidMessageError` names the subject when it is not JSON. */
export function parseJsonBody(subject: string, data: Uint8Array): unknown {
  const buf = asBuffer(data);
  // Buffer#toString would turn invalid UTF-8 (and overlong forms) into U+FFFD silently.
  if (!isUtf8(buf)) throw new InvalidMessageError(`body on "${subject}" is not valid UTF-8 (${data.byteLength} bytes)`);
  const text = buf.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidMessageError(`body on "${subject}" is not JSON (${data.byteLength} bytes)`);
  }
}
