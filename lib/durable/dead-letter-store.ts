// Dead letters as data: list, read, replay and purge the messages durable subscriptions gave up on,
// straight from their dead-letter streams. Used by `bus.deadLetters` and the `dlq` CLI alike.
import { ClaimCheckCodec, parseJsonBody } from '../claim-check/claim-check.codec';
import { DeadLetterNotFoundError, InvalidOptionsError } from '../errors/event-bus.errors';
import { BusConnection, createHeaders, MsgHdrs } from '../nats/bus-connection';
import type { PersistAck } from '../nats/jetstream';
import { StreamMessage, StreamMessages } from '../nats/stream-messages';
import { DEFAULTS } from '../options/defaults';
import {
  checkFilter,
  DeadLetter,
  DeadLetterEntry,
  DeadLetterFilter,
  entryOf,
  headerOf,
  headersOf,
  idOf,
  matches,
  parseId,
  ReplayResult,
} from './dead-letter-entry';
import { DEAD_REASON_HEADER } from './dead-letters';

// Kept importable from here: lib/index.ts and the dlq CLI name this module.
export type { DeadLetter, DeadLetterEntry, DeadLetterFilter, ReplayResult } from './dead-letter-entry';
export { parseId } from './dead-letter-entry';

/** Header of a replayed message: the id of the dead letter it came from. */
export const REPLAYED_FROM_HEADER = 'Eventbus-Replayed-From';

/** Headers a replay does not copy: the dead letter's own, and publish controls (`Nats-*`). */
const NOT_REPLAYED = /^(eventbus-dead-|eventbus-replayed-from$|nats-)/i;

/** What `DeadLetters` needs from a bus (or from the CLI, which makes them without Nest). */
export interface DeadLettersDeps {
  /** The connection to read and delete on; called for each operation. */
  connection(): BusConnection;
  /** Recovers claim-checked bodies (and discards them on purge). */
  codec: ClaimCheckCodec;
  /** Publish persisted; a large body is claim-checked for as long as the target stream keeps it. */
  publish(subject: string, body: Uint8Array, headers: MsgHdrs, msgId: string): Promise<PersistAck>;
  apiTimeoutMs: number;
}

/**
 * Dead letters as data. A dead letter's id is `<dead-letter stream>:<sequence>`: the stream's own
 * numbering, so it needs no index, stays valid until the message is purged or ages out, and two
 * listings agree. A replay is published persisted with the msgId `<id>:replay`, so a replay
 * repeated within the target stream's duplicate window (default 2 minutes) is stored once.
 */
export class DeadLetters {
  private messages?: { nc: unknown; open: Promise<StreamMessages> };

  constructor(private readonly deps: DeadLettersDeps) {}

  /** Dead letters matching `filter`, oldest first, without bodies. */
  async list(filter: DeadLetterFilter = {}): Promise<DeadLetterEntry[]> {
    const limit = filter.limit ?? DEFAULTS.deadLetters.listLimit;
    checkFilter(filter);
    const found: DeadLetterEntry[] = [];
    for await (const m of this.scan({ ...filter, limit })) found.push(entryOf(m, this.deps.codec));
    // Several streams: each was read in order; merge by time.
    return found.sort((a, b) => a.time.getTime() - b.time.getTime() || a.id.localeCompare(b.id)).slice(0, limit);
  }

  /** One dead letter with its body; `DeadLetterNotFoundError` when there is none with this id. */
  async get(id: string): Promise<DeadLetter> {
    const m = await this.find(id);
    const entry = entryOf(m, this.deps.codec);
    const envelope = entry.claimChecked ? this.deps.codec.peekEnvelope(entry.subject, m.data) : undefined;
    // A recovery failure (storage down, body expired) is the caller's to see: the typed storage errors.
    const body = envelope ? await this.deps.codec.recoverBytes(entry.subject, envelope) : m.data;
    let payload: unknown;
    try {
      payload = parseJsonBody(entry.subject, body);
    } catch {
      payload = undefined;
    }
    return { ...entry, headers: headersOf(m.headers), body, payload };
  }

  /**
   * Publish each dead letter again, persisted, to its original subject or `to`, with its body and
   * copied headers, `Eventbus-Replayed-From: <id>`, and the msgId `<id>:replay`. The dead letters
   * stay (purge them once you are satisfied). With ids, every id is checked first: an unknown one
   * throws `DeadLetterNotFoundError` and nothing is replayed.
   */
  async replay(which: string[] | DeadLetterFilter, options: { to?: string } = {}): Promise<ReplayResult[]> {
    const ids = await this.idsOf(which);
    // Every id checked before anything is published; bodies are then recovered one at a time, not all held.
    if (Array.isArray(which)) for (const id of ids) await this.find(id);
    const done: ReplayResult[] = [];
    for (const id of ids) {
      const letter = await this.get(id);
      const to = options.to ?? letter.subject;
      const headers = createHeaders();
      for (const [name, values] of Object.entries(letter.headers)) {
        if (!NOT_REPLAYED.test(name)) for (const v of values) headers.append(name, v);
      }
      headers.set(REPLAYED_FROM_HEADER, letter.id);
      const ack = await this.deps.publish(to, letter.body, headers, `${letter.id}:replay`);
      done.push({ id: letter.id, to, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate });
    }
    return done;
  }

  /**
   * Delete dead letters (and their stored bodies, best effort: the TTL removes them anyway). With
   * ids, every id is checked first: an unknown one throws `DeadLetterNotFoundError` and nothing is
   * purged. Resolves with the ids purged.
   */
  async purge(which: string[] | DeadLetterFilter): Promise<string[]> {
    const ids = await this.idsOf(which);
    const found: StreamMessage[] = [];
    for (const id of ids) found.push(await this.find(id));
    const reader = await this.reader();
    const purged: string[] = [];
    for (const m of found) {
      if (await reader.delete(m.stream, m.seq)) {
        purged.push(idOf(m));
        this.deps.codec.discard(m.data);
      }
    }
    return purged;
  }

  private async idsOf(which: string[] | DeadLetterFilter): Promise<string[]> {
    if (Array.isArray(which)) {
      for (const id of which) parseId(id);
      return [...new Set(which)];
    }
    const all = await this.list({ ...which, limit: which.limit ?? Number.MAX_SAFE_INTEGER });
    return all.map((e) => e.id);
  }

  private async find(id: string): Promise<StreamMessage> {
    const { stream, seq } = parseId(id);
    const reader = await this.reader();
    let m: StreamMessage | undefined;
    try {
      m = await reader.get(stream, seq);
    } catch (err) {
      if (err instanceof InvalidOptionsError) throw new DeadLetterNotFoundError(id, `no stream "${stream}"`);
      throw err;
    }
    if (!m) throw new DeadLetterNotFoundError(id);
    if (!headerOf(m.headers, DEAD_REASON_HEADER)) throw new DeadLetterNotFoundError(id, 'the message there is not a dead letter');
    return m;
  }

  /** Dead letters of the filter's stream (or of every dead-letter stream), in stream order. */
  private async *scan(filter: DeadLetterFilter): AsyncIterable<StreamMessage> {
    const reader = await this.reader();
    const streams = filter.stream !== undefined ? [filter.stream] : await this.deadLetterStreams();
    for (const stream of streams) {
      let seq = filter.since ? await reader.firstSince(stream, filter.since) : (await reader.bounds(stream)).firstSeq;
      if (seq === undefined) continue;
      let taken = 0;
      for (let m = await reader.next(stream, seq); m; m = await reader.next(stream, seq)) {
        seq = m.seq + 1;
        if (!matches(m, filter)) continue;
        yield m;
        if (++taken >= (filter.limit ?? Infinity)) break;
      }
    }
  }

  /** Streams whose last message is a dead letter. */
  private async deadLetterStreams(): Promise<string[]> {
    const reader = await this.reader();
    const names = await reader.streamNames();
    const found: string[] = [];
    for (const name of names) {
      const { lastSeq, messages } = await reader.bounds(name);
      if (!messages) continue;
      const last = await reader.get(name, lastSeq);
      if (last && headerOf(last.headers, DEAD_REASON_HEADER)) found.push(name);
    }
    return found;
  }

  private reader(): Promise<StreamMessages> {
    const nc = this.deps.connection().connection;
    // One manager per connection: a bus reconnects under the same object, a new bus is a new one.
    if (this.messages?.nc !== nc) {
      const open = StreamMessages.open(nc, this.deps.apiTimeoutMs);
      open.catch(() => (this.messages = undefined));
      this.messages = { nc, open };
    }
    return this.messages.open;
  }
}
