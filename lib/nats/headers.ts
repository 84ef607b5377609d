// NATS headers as the bus writes them: built from a plain record with every name and value checked
// before anything is stored or sent, and their size on the wire (counted against max_payload).
import { headers as natsHeaders, type Msg, type MsgHdrs } from '@nats-io/transport-node';
import { InvalidOptionsError, RemoteHandlerError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import { LONE_SURROGATE } from './subjects';

/**
 * NATS headers from a plain record (or empty). Names are header tokens and values strings without
 * CR or LF; anything else is an `InvalidOptionsError` naming the header, raised before anything
 * is stored or sent.
 */
export function createHeaders(record?: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  if (!record) return h;
  if (typeof record !== 'object') throw new InvalidOptionsError('headers', 'must be an object of string values');
  for (const [k, v] of Object.entries(record)) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(k)) throw new InvalidOptionsError(`headers.${k}`, 'is not a valid header name');
    if (typeof v !== 'string') throw new InvalidOptionsError(`headers.${k}`, `must be a string, got ${typeof v}`);
    checkHeaderValue(`headers.${k}`, v);
    try {
      h.set(k, v);
    } catch (err) {
      throw new InvalidOptionsError(`headers.${k}`, describeThrown(err));
    }
  }
  return h;
}

/** A header value that NATS carries unchanged, or `InvalidOptionsError` naming `option`. */
export function checkHeaderValue(option: string, v: string): void {
  if (/[\r\n]/.test(v)) throw new InvalidOptionsError(option, 'must not contain CR or LF');
  // nats.js trims values when it sets and when it reads them: refuse what would arrive changed.
  if (v !== v.trim()) throw new InvalidOptionsError(option, 'must not start or end with whitespace (NATS would trim it)');
  // A lone surrogate becomes U+FFFD in UTF-8: two different values would arrive as one.
  if (LONE_SURROGATE.test(v)) throw new InvalidOptionsError(option, 'must be well-formed Unicode (it has a lone surrogate)');
}

/**
 * Text made fit for a header value: header values cannot carry CR, LF or other control
 * characters, so keep the first line, with the rest of the control characters as spaces, bounded.
 */
export function headerText(text: string, maxLength = 1024): string {
  return (
    text
      .split(/\r?\n/, 1)[0]
      // eslint-disable-next-line no-control-regex -- control characters are what this looks for
      .replace(/[\u0000-\u001f\u007f]/g, ' ')
      .slice(0, maxLength)
      .trim()
  );
}

/** Bytes `h` takes on the wire (`NATS/1.0\r\n`, a `name: value\r\n` line per value, `\r\n`). */
export function headersSize(h: MsgHdrs): number {
  let size = 12;
  for (const [name, values] of h) {
    for (const v of values) size += Buffer.byteLength(name) + Buffer.byteLength(v) + 4;
  }
  return size;
}

/** The NATS service-error headers (as `@nats-io/services` and the Go/Python micro frameworks write them). */
export const SERVICE_ERROR_HEADER = 'Nats-Service-Error';
export const SERVICE_ERROR_CODE_HEADER = 'Nats-Service-Error-Code';

/** `reply`, or `RemoteHandlerError` when it carries the NATS service-error headers. */
export function throwIfServiceError(subject: string, reply: Msg): Msg {
  const code = reply.headers?.get(SERVICE_ERROR_CODE_HEADER);
  if (code) throw new RemoteHandlerError(subject, reply.headers!.get(SERVICE_ERROR_HEADER) || 'remote handler failed', Number(code) || 500);
  return reply;
}
