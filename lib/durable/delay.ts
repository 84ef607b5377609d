// Delayed delivery on what nats-server 2.9 has: the due time travels in a header, and the durable
// side naks an early delivery with the time left. 2.11's per-message TTL and 2.12's Nats-Schedule
// are not used: they would leave 2.9 to 2.10 servers without delays, and this works on all of them.
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { createHeaders, type MsgHdrs } from '../nats/bus-connection';
import { wholeNumber } from '../options/rules';

/** Header of a delayed persisted message: when it is due, in ms since the epoch (publisher's clock). */
export const NOT_BEFORE_HEADER = 'Eventbus-Not-Before';

/** Latest due time accepted, about 10 years ahead: the nak delay travels in nanoseconds. */
const MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000;

/** `delayMs` / `notBefore` of a publish, checked; the due time in epoch ms, or undefined when neither is given. */
export function dueTime(
  opts: { persist?: unknown; delayMs?: unknown; notBefore?: unknown } | undefined,
  now = Date.now(),
): number | undefined {
  if (opts?.delayMs === undefined && opts?.notBefore === undefined) return undefined;
  const option = opts.delayMs !== undefined ? 'delayMs' : 'notBefore';
  // Only a stream keeps a message until it is due; a core publish is gone at once.
  if (opts.persist !== true) throw new InvalidOptionsError(option, 'applies to persisted publishes only; add persist: true');
  if (opts.delayMs !== undefined && opts.notBefore !== undefined)
    throw new InvalidOptionsError('delayMs', 'give delayMs or notBefore, not both');
  if (opts.delayMs !== undefined) {
    wholeNumber('delayMs', opts.delayMs, 0, 'milliseconds', MAX_DELAY_MS);
    return now + (opts.delayMs as number);
  }
  const at = opts.notBefore instanceof Date ? opts.notBefore.getTime() : opts.notBefore;
  if (typeof at !== 'number' || !Number.isFinite(at))
    throw new InvalidOptionsError('notBefore', `must be a valid Date or epoch milliseconds, got ${String(opts.notBefore)}`);
  if (at - now > MAX_DELAY_MS) throw new InvalidOptionsError('notBefore', 'must be less than 10 years ahead');
  // A time already past is due at once.
  return Math.round(at);
}

/** How many ms until a durable message carrying `headers` is due; 0 or less when due (or not delayed). */
export function msUntilDue(headers: MsgHdrs | undefined, now = Date.now()): number {
  const raw = headers?.get(NOT_BEFORE_HEADER);
  if (!raw) return 0;
  const due = Number(raw);
  // A malformed header (not ours, or tampered) does not hold a message back.
  return Number.isFinite(due) ? due - now : 0;
}

/** `hdrs` with the due header set (a new header set when there were none). */
export function withDueHeader(hdrs: MsgHdrs | undefined, due: number): MsgHdrs {
  const out = hdrs ?? createHeaders();
  out.set(NOT_BEFORE_HEADER, String(due));
  return out;
}

/**
 * Refuses a due time further ahead than `stream` keeps messages: it would be deleted before it is
 * due. A stream without an age limit (or not known) refuses nothing.
 */
export function checkDueWithin(stream: { name: string; maxAgeSeconds?: number } | undefined, due: DueTime, now = Date.now()): void {
  const ahead = due.at - now;
  if (!stream?.maxAgeSeconds || ahead <= stream.maxAgeSeconds * 1000) return;
  throw new InvalidOptionsError(
    due.option,
    `due in ${ahead} ms, past stream ${stream.name}'s max age of ${stream.maxAgeSeconds} s: the message would be deleted before it is due`,
  );
}

/** A persisted publish's due time, with the option that set it. */
export interface DueTime {
  at: number;
  option: 'delayMs' | 'notBefore';
}
