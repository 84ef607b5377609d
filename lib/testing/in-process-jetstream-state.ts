// What the in-process JetStream keeps: streams with their messages and msg ids, and consumers with
// their cursor, outstanding deliveries and waiting pull requests. Shared by its API and delivery sides.
import { subjectMatches } from './in-process-broker';

export const NS_PER_MS = 1_000_000;
/** The server's default duplicate window: 2 minutes. */
export const DEFAULT_DUPLICATE_WINDOW_NS = 120_000 * NS_PER_MS;
/** The server's default ack wait: 30 s. */
export const DEFAULT_ACK_WAIT_NS = 30_000 * NS_PER_MS;

export interface StoredMessage {
  seq: number;
  subject: string;
  headers?: Buffer;
  payload: Buffer;
  time: number;
}

export interface StreamConfig {
  name: string;
  subjects: string[];
  duplicate_window?: number;
  [key: string]: unknown;
}

export interface Stream {
  config: StreamConfig;
  created: string;
  messages: StoredMessage[];
  lastSeq: number;
  /** Msg ids seen within the duplicate window: id → seq and when. */
  ids: Map<string, { seq: number; at: number }>;
  consumers: Map<string, Consumer>;
}

export interface Outstanding {
  message: StoredMessage;
  deliveries: number;
  /** Broker-clock time at which it is delivered again: its ack wait, or the delay of its nak. */
  dueAt: number;
  /** Waiting for its nak delay (or ack wait) to pass, rather than handed out. */
  waiting: boolean;
}

export interface PullRequest {
  inbox: string;
  left: number;
  expiresAt: number;
  heartbeat?: NodeJS.Timeout;
}

export interface Consumer {
  name: string;
  config: Record<string, unknown> & { filter_subject?: string; ack_wait?: number };
  created: string;
  /** Next stream sequence not yet delivered. */
  cursor: number;
  consumerSeq: number;
  outstanding: Map<number, Outstanding>;
  pulls: PullRequest[];
}

/** Messages the consumer has not delivered yet. */
export function unseen(stream: Stream, c: Consumer): number {
  return stream.messages.filter((m) => m.seq >= c.cursor && wants(c, m)).length;
}

export function wants(c: Consumer, m: StoredMessage): boolean {
  return !c.config.filter_subject || subjectMatches(c.config.filter_subject, m.subject);
}
