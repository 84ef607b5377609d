// Reading and deleting single messages of a stream by sequence (STREAM.MSG.GET / MSG.DELETE), for
// dead letters worked as data. No consumer is made, so a user allowed only these two APIs can do it.
import { JetStreamApiCodes, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { asNotConnected, isApiError, isNoStream } from './jetstream-errors';

/** One message as the stream keeps it. */
export interface StreamMessage {
  stream: string;
  seq: number;
  subject: string;
  /** When the stream stored it. */
  time: Date;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
}

/** The stream's first and last sequence and when its last message was stored. */
export interface StreamBounds {
  firstSeq: number;
  lastSeq: number;
  messages: number;
}

/** What a durable consumer's info says about its backlog. */
export interface ConsumerCounts {
  /** Messages in the stream not yet delivered to it. */
  pending: number;
  /** Delivered, not yet acked. */
  ackPending: number;
  /** Delivered more than once and not yet acked. */
  redelivered: number;
}

/** Messages of streams by sequence, and consumers' counts, on one connection; no consumer is made. */
export class StreamMessages {
  private constructor(private readonly jsm: JetStreamManager) {}

  static async open(nc: NatsConnection, apiTimeoutMs: number): Promise<StreamMessages> {
    try {
      return new StreamMessages(await jetstreamManager(nc, { timeout: apiTimeoutMs, checkAPI: false }));
    } catch (err) {
      throw asNotConnected('JetStream did not answer', err);
    }
  }

  /** Fails with `InvalidOptionsError` naming `stream` when there is no such stream. */
  async bounds(stream: string): Promise<StreamBounds> {
    try {
      const { state } = await this.jsm.streams.info(stream);
      return { firstSeq: state.first_seq, lastSeq: state.last_seq, messages: state.messages };
    } catch (err) {
      throw this.described(stream, err);
    }
  }

  /** The stream that captures `subject`, or undefined when none does. */
  async streamFor(subject: string): Promise<string | undefined> {
    try {
      return await this.jsm.streams.find(subject);
    } catch (err) {
      if (isNoStream(err)) return undefined;
      throw asNotConnected(`could not look up the stream for "${subject}"`, err);
    }
  }

  /** A durable consumer's counts from its info, or undefined when it does not exist. */
  async consumerCounts(stream: string, durable: string): Promise<ConsumerCounts | undefined> {
    try {
      const info = await this.jsm.consumers.info(stream, durable);
      return { pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.ConsumerNotFound) || isApiError(err, JetStreamApiCodes.StreamNotFound)) return undefined;
      throw asNotConnected(`could not read consumer ${durable} on ${stream}`, err);
    }
  }

  /** Names of the account's streams. */
  async streamNames(): Promise<string[]> {
    try {
      const names: string[] = [];
      for await (const name of this.jsm.streams.names()) names.push(name);
      return names;
    } catch (err) {
      throw asNotConnected('could not list the JetStream streams', err);
    }
  }

  /** The message at `seq`, or undefined when there is none (never stored, deleted, or aged out). */
  async get(stream: string, seq: number): Promise<StreamMessage | undefined> {
    return this.read(stream, { seq });
  }

  /** The first message at `seq` or after it (a server of 2.9 or later answers `next_by_subj`). */
  async next(stream: string, seq: number): Promise<StreamMessage | undefined> {
    return this.read(stream, { seq, next_by_subj: '>' });
  }

  /** The first sequence whose message was stored at `since` or later (binary search over the stream), or undefined. */
  async firstSince(stream: string, since: Date): Promise<number | undefined> {
    const { firstSeq, lastSeq, messages } = await this.bounds(stream);
    if (!messages) return undefined;
    let lo = firstSeq;
    let hi = lastSeq + 1;
    // Invariant: every message before lo is older than since; hi is past the answer or one.
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const m = await this.next(stream, mid);
      if (!m) hi = mid;
      else if (m.time.getTime() >= since.getTime()) hi = Math.min(mid, m.seq);
      else lo = m.seq + 1;
    }
    return lo <= lastSeq ? lo : undefined;
  }

  /** Delete the message at `seq`; false when there was none. */
  async delete(stream: string, seq: number): Promise<boolean> {
    try {
      // No erase: a dead letter is not secret from the server's disk, and erasing rewrites the block.
      return await this.jsm.streams.deleteMessage(stream, seq, false);
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound) || /no message found|sequence .* not found/i.test(String(err))) return false;
      throw this.described(stream, err);
    }
  }

  private async read(stream: string, query: { seq: number; next_by_subj?: string }): Promise<StreamMessage | undefined> {
    try {
      const m = await this.jsm.streams.getMessage(stream, query);
      if (!m) return undefined;
      return { stream, seq: m.seq, subject: m.subject, time: m.time, data: m.data, headers: m.header };
    } catch (err) {
      if (isApiError(err, JetStreamApiCodes.NoMessageFound)) return undefined;
      throw this.described(stream, err);
    }
  }

  private described(stream: string, err: unknown): Error {
    if (isApiError(err, JetStreamApiCodes.StreamNotFound)) {
      return new InvalidOptionsError('stream', `no JetStream stream "${stream}"`, { cause: err });
    }
    return asNotConnected(`JetStream did not answer for stream ${stream}`, err);
  }
}
