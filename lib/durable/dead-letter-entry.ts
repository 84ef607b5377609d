// A dead letter as data: its id, the filters that pick it, and the entry read from its headers.
import type { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { DeadLetterNotFoundError, InvalidOptionsError } from '../errors/event-bus.errors';
import { subjectMatches } from '../nats/subjects';
import type { MsgHdrs } from '../nats/bus-connection';
import type { StreamMessage } from '../nats/stream-messages';
import {
  DEAD_DELIVERIES_HEADER,
  DEAD_DURABLE_HEADER,
  DEAD_ERROR_HEADER,
  DEAD_REASON_HEADER,
  DEAD_SEQ_HEADER,
  DEAD_STREAM_HEADER,
  DEAD_SUBJECT_HEADER,
} from './dead-letters';

/** Which dead letters: all filters must hold. */
export interface DeadLetterFilter {
  /**
   * The dead-letter stream. Default: every stream whose last message is a dead letter (one look-up
   * per stream of the account).
   */
  stream?: string;
  /** The original subject; NATS wildcards (`*`, `>`) allowed. */
  topic?: string;
  /** The durable that gave up on it. */
  durable?: string;
  /** Why: `max_deliver`, `not_found`, `corrupt`, `invalid_message`, `forbidden`, `rejected`, `storage`. */
  reason?: string;
  /** Dead-lettered at this time or later. */
  since?: Date;
  /** At most this many, oldest first (default 100 for `list`; all for `replay` and `purge`). */
  limit?: number;
}

/** One dead letter, without its body. */
export interface DeadLetterEntry {
  /** `<dead-letter stream>:<sequence in it>`, e.g. `EDGE_DEAD:42`: unique and stable while the stream keeps it. */
  id: string;
  stream: string;
  seq: number;
  /** The dead-letter subject it was published to. */
  deadLetterSubject: string;
  /** The subject the original message was published to. */
  subject: string;
  /** Where the original was: its stream and sequence. */
  sourceStream: string | undefined;
  sourceSeq: number | undefined;
  durable: string | undefined;
  reason: string;
  deliveries: number | undefined;
  /** The last error's first line, when there was one. */
  lastError: string | undefined;
  /** When the dead letter was stored. */
  time: Date;
  /** Bytes of the dead letter's body on the wire (an envelope's when claim-checked). */
  size: number;
  /** Whether the body is in storage (the dead letter carries a claim-check envelope). */
  claimChecked: boolean;
}

/** One dead letter with its headers and body (recovered from storage when claim-checked). */
export interface DeadLetter extends DeadLetterEntry {
  /** The original message's headers, less publish controls, plus the `Eventbus-Dead-*` ones. */
  headers: Record<string, string[]>;
  /** The original body, byte for byte. */
  body: Uint8Array;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  payload: unknown;
}

/** What `replay` did for one dead letter. */
export interface ReplayResult {
  id: string;
  /** The subject it was published to. */
  to: string;
  /** Where the target stream stored it. */
  stream: string;
  seq: number;
  /** True when the stream already had this replay (same id, within its duplicate window): not published again. */
  duplicate: boolean;
}

/** `<stream>:<seq>`; `DeadLetterNotFoundError` for anything else. */
export function parseId(id: string): { stream: string; seq: number } {
  const at = typeof id === 'string' ? id.lastIndexOf(':') : -1;
  const seq = at > 0 ? Number(id.slice(at + 1)) : NaN;
  if (!Number.isSafeInteger(seq) || seq < 1 || !/^\d+$/.test(id.slice(at + 1))) {
    throw new DeadLetterNotFoundError(String(id), 'not a dead-letter id (<stream>:<sequence>, e.g. EDGE_DEAD:42)');
  }
  return { stream: id.slice(0, at), seq };
}

export function idOf(m: StreamMessage): string {
  return `${m.stream}:${m.seq}`;
}

export function checkFilter(filter: DeadLetterFilter): void {
  if (filter.limit !== undefined && (!Number.isSafeInteger(filter.limit) || filter.limit < 1)) {
    throw new InvalidOptionsError('limit', 'must be a positive whole number');
  }
  if (filter.since !== undefined && !(filter.since instanceof Date && !Number.isNaN(filter.since.getTime()))) {
    throw new InvalidOptionsError('since', 'must be a valid Date');
  }
}

export function matches(m: StreamMessage, f: DeadLetterFilter): boolean {
  const reason = headerOf(m.headers, DEAD_REASON_HEADER);
  if (!reason) return false;
  if (f.reason !== undefined && reason !== f.reason) return false;
  if (f.durable !== undefined && headerOf(m.headers, DEAD_DURABLE_HEADER) !== f.durable) return false;
  if (f.topic !== undefined && !subjectMatches(f.topic, headerOf(m.headers, DEAD_SUBJECT_HEADER) ?? '')) return false;
  if (f.since !== undefined && m.time.getTime() < f.since.getTime()) return false;
  return true;
}

export function entryOf(m: StreamMessage, codec: ClaimCheckCodec): DeadLetterEntry {
  const h = m.headers;
  const num = (name: string) => {
    const v = headerOf(h, name);
    return v === undefined || !/^\d+$/.test(v) ? undefined : Number(v);
  };
  const subject = headerOf(h, DEAD_SUBJECT_HEADER) ?? m.subject;
  let claimChecked = false;
  try {
    claimChecked = codec.peekEnvelope(subject, m.data) !== undefined;
  } catch {
    // A forged envelope: listed as the bytes it is.
  }
  return {
    id: idOf(m),
    stream: m.stream,
    seq: m.seq,
    deadLetterSubject: m.subject,
    subject,
    sourceStream: headerOf(h, DEAD_STREAM_HEADER),
    sourceSeq: num(DEAD_SEQ_HEADER),
    durable: headerOf(h, DEAD_DURABLE_HEADER),
    reason: headerOf(h, DEAD_REASON_HEADER) ?? '',
    deliveries: num(DEAD_DELIVERIES_HEADER),
    lastError: headerOf(h, DEAD_ERROR_HEADER),
    time: m.time,
    size: m.data.byteLength,
    claimChecked,
  };
}

export function headerOf(h: MsgHdrs | undefined, name: string): string | undefined {
  if (!h) return undefined;
  for (const [k, values] of h) if (k.toLowerCase() === name.toLowerCase()) return values[0];
  return undefined;
}

export function headersOf(h: MsgHdrs | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (h) for (const [k, values] of h) out[k] = [...(out[k] ?? []), ...values];
  return out;
}
