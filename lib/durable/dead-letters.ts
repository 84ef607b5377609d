import { Logger } from '@nestjs/common';
import { describeThrown } from '../errors/thrown';
import { Outbound } from '../delivery/outbound';
import { BusConnection, createHeaders, headersSize, headerText, MsgHdrs } from '../nats/bus-connection';
import { DurableMessage, JetStreamLink } from '../nats/jetstream';

/** Header of a dead letter saying why: `max_deliver`, `not_found`, `corrupt`, `invalid_message`, `forbidden`, `rejected`, `storage`. */
export const DEAD_REASON_HEADER = 'Eventbus-Dead-Reason';
/** Where the message was: its subject, stream, sequence, durable and how many times it was delivered. */
export const DEAD_SUBJECT_HEADER = 'Eventbus-Dead-Subject';
export const DEAD_STREAM_HEADER = 'Eventbus-Dead-Stream';
export const DEAD_SEQ_HEADER = 'Eventbus-Dead-Seq';
export const DEAD_DURABLE_HEADER = 'Eventbus-Dead-Durable';
export const DEAD_DELIVERIES_HEADER = 'Eventbus-Dead-Deliveries';
/** The last error, first line, when there was one. */
export const DEAD_ERROR_HEADER = 'Eventbus-Dead-Error';
/** Set when the original headers had to be left out for the dead letter to fit max_payload. */
export const DEAD_HEADERS_DROPPED_HEADER = 'Eventbus-Dead-Headers-Dropped';

/** Failed attempts to publish one message's dead letter before it is terminated without one. */
export const DEAD_LETTER_TRIES = 3;

/** Seconds a claim-checked dead-letter body outlives its dead-letter stream's age limit. */
const BODY_MARGIN_SECONDS = 60;
/** Dead-letter reasons whose stored body could not be read: the envelope is kept as it came. */
const BODY_UNREADABLE = new Set(['not_found', 'corrupt', 'storage', 'invalid_message']);

/**
 * Copied headers a dead letter never carries: any `Eventbus-Dead-*` (a publisher could forge them,
 * in any case), and any `Nats-*` (publish controls such as `Nats-Expected-Stream`, `Nats-Msg-Id` or
 * `Nats-Rollup`, which the server would apply to the dead letter itself).
 */
const NOT_COPIED = /^(eventbus-dead-|nats-)/i;

/** Where the dead letters of one durable subscription go, and how they are published. */
export interface DeadLetterTarget {
  /** The dead-letter subject; undefined: failed messages are logged and dropped. */
  subject: string | undefined;
  /** The durable consumer's name, part of the dead letter's id and headers. */
  durable: string;
  /** Age limit of the stream that captures `subject`, or undefined when none does (the dead letter is then published plain). */
  streamMaxAgeSeconds: number | undefined;
}

/**
 * Where a durable subscription's failed messages go: published to `deadLetter` with their original
 * body (an envelope stays an envelope) and headers, less any forged `Eventbus-Dead-*` and any
 * `Nats-*` publish control, plus the real `Eventbus-Dead-*` headers. Persisted when a stream
 * captures the dead-letter subject, plain otherwise. A dead letter always fits max_payload: a body
 * that no longer fits beside the headers is claim-checked, or without storage the copied headers
 * are left out. One that still cannot be published is retried with the message's backoff, at most
 * `DEAD_LETTER_TRIES` times, then the message is terminated and logged once. Without `deadLetter`
 * the message is logged, naming its subject, stream and sequence.
 */
export class DeadLetters {
  // Failed dead-letter attempts per message of this durable, so that an unpublishable one ends,
  // with why it was dead-lettered, so that its redelivery retries the dead letter and not the handler.
  private readonly failures = new Map<string, { tries: number; reason: string; error: unknown }>();
  private givenUp = 0;

  constructor(
    private readonly client: BusConnection,
    private readonly link: JetStreamLink,
    private readonly target: DeadLetterTarget,
    private readonly outbound: Outbound,
    private readonly apiTimeoutMs: number,
    private readonly logger: Logger,
  ) {}

  /** Messages terminated without a dead letter because publishing it failed `DEAD_LETTER_TRIES` times. */
  get failedCount(): number {
    return this.givenUp;
  }

  /** Why `m` was being dead-lettered when publishing its dead letter failed, if it was (in this process). */
  unsent(m: DurableMessage): { reason: string; error: unknown } | undefined {
    return this.failures.get(`${m.stream}:${m.seq}`);
  }

  /** Resolves true once the message may be terminated: the dead letter went out, there is none to send, or it was given up on. */
  async send(m: DurableMessage, reason: string, error: unknown): Promise<boolean> {
    const where = `message ${m.stream}#${m.seq} on "${m.subject}" after ${m.deliveryCount} deliveries (${reason})`;
    const detail = error === undefined ? '' : headerText(describeThrown(error), 512);
    const subject = this.target.subject;
    if (subject === undefined) {
      this.logger.error(`dropped ${where}${detail ? `: ${detail}` : ''}; set deadLetter to keep such messages`);
      return true;
    }
    const key = `${m.stream}:${m.seq}`;
    try {
      await this.publish(subject, m, reason, detail);
    } catch (err) {
      const tries = (this.failures.get(key)?.tries ?? 0) + 1;
      if (tries >= DEAD_LETTER_TRIES) {
        this.failures.delete(key);
        this.givenUp++;
        this.logger.error(
          `gave up dead-lettering ${where} to "${subject}" after ${tries} failed tries (${(err as Error).message}); terminated without a dead letter`,
        );
        return true;
      }
      // Bounded: a flood of failing dead letters must not grow the map without end.
      if (this.failures.size >= 10_000) this.failures.clear();
      this.failures.set(key, { tries, reason, error });
      this.logger.error(
        `could not dead-letter ${where} to "${subject}" (try ${tries} of ${DEAD_LETTER_TRIES}): ${(err as Error).message}; it will be redelivered`,
      );
      return false;
    }
    this.failures.delete(key);
    this.logger.warn(`dead-lettered ${where} to "${subject}"`);
    return true;
  }

  private async publish(subject: string, m: DurableMessage, reason: string, detail: string): Promise<void> {
    const dead = createHeaders();
    dead.set(DEAD_REASON_HEADER, reason);
    dead.set(DEAD_SUBJECT_HEADER, m.subject);
    dead.set(DEAD_STREAM_HEADER, m.stream);
    dead.set(DEAD_SEQ_HEADER, String(m.seq));
    dead.set(DEAD_DURABLE_HEADER, this.target.durable);
    dead.set(DEAD_DELIVERIES_HEADER, String(m.deliveryCount));
    if (detail) dead.set(DEAD_ERROR_HEADER, detail);
    const withCopies = withCopiedHeaders(m.headers, dead);
    const maxPayload = this.client.maxPayload;
    let headers = withCopies;
    let data = m.data;
    const persisted = this.target.streamMaxAgeSeconds !== undefined;
    const age = this.target.streamMaxAgeSeconds;
    const ttl = age ? { minTtlSeconds: age + BODY_MARGIN_SECONDS } : undefined;
    // A claim-checked body expires with its source stream's limit: the dead letter gets its own copy,
    // kept as long as the dead-letter stream keeps it (not for a body that failed to read).
    if (ttl && this.outbound.hasStorage && !BODY_UNREADABLE.has(reason)) {
      const copy = await this.outbound.copyStored(m.subject, data, subject, maxPayload, headers, ttl).catch((err: unknown) => {
        this.logger.warn(
          `dead letter of ${m.stream}#${m.seq} keeps the original envelope, its body could not be copied: ${describeThrown(err)}`,
        );
        return undefined;
      });
      if (copy) data = copy;
    }
    if (data.byteLength + headersSize(headers) > maxPayload) {
      if (this.outbound.hasStorage) {
        // Keep every header and claim-check the body: it lives as long as the dead-letter stream keeps the letter.
        data = await this.outbound.plan(subject, data, maxPayload, headers, ttl);
      } else {
        headers = dead;
        headers.set(DEAD_HEADERS_DROPPED_HEADER, String(countHeaders(m.headers)));
      }
    }
    try {
      // Its own id per durable: two durables dead-lettering one message must both be kept.
      if (persisted) await this.link.publish(subject, data, headers, `${m.stream}:${m.seq}:${this.target.durable}:dead`, this.apiTimeoutMs);
      else this.client.publish(subject, data, headers);
    } catch (err) {
      if (data !== m.data) this.outbound.discard(data);
      throw err;
    }
  }
}

/** `dead` with the original headers in front, less those a dead letter never carries. */
function withCopiedHeaders(original: MsgHdrs | undefined, dead: MsgHdrs): MsgHdrs {
  const h = createHeaders();
  if (original) for (const [name, values] of original) if (!NOT_COPIED.test(name)) for (const v of values) h.append(name, v);
  for (const [name, values] of dead) for (const v of values) h.append(name, v);
  return h;
}

function countHeaders(h: MsgHdrs | undefined): number {
  let n = 0;
  if (h) for (const [name] of h) if (!NOT_COPIED.test(name)) n++;
  return n;
}
