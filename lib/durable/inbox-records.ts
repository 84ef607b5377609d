// The inbox's KV records: the bucket's name, the key a delivery is recorded under, and what a value says.
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import type { DurableMessage } from '../nats/jetstream';
import { DEFAULTS } from '../options/defaults';

/**
 * The inbox of idempotent durables: one JetStream KV record per handled message id, so a message
 * handled to success is acked without calling the handler again when it comes back (a redelivery
 * after a lost ack, a republish with the same `msgId` after the stream's duplicate window).
 *
 * A record's value is one of:
 * - `claim <owner> <expiresAtMs>`: a lease. An instance is running the handler for this id now;
 *   `<owner>` names the instance and the delivery, so two deliveries of one id in one process are told
 *   apart. It is renewed while the handler runs; one left by a crashed instance is taken over once
 *   `expiresAtMs` (the owner's clock) has passed.
 * - `done <handledAtMs>`: handled to success. Written after the handler resolved, before the ack.
 *
 * A failed handler deletes its claim (with a revision check), so the redelivery claims afresh. The
 * bucket's age limit is the window: a record is gone `windowSeconds` after its last write.
 */

/** The bucket of idempotent durables with a window of `windowSeconds`. */
export function inboxBucket(windowSeconds: number): string {
  return `${DEFAULTS.idempotent.bucketPrefix}-${windowSeconds}s`;
}

/**
 * The id a delivery is recorded under: the publisher's `msgId` (`Nats-Msg-Id`) when it gave one,
 * else the stream and sequence. A republish without `msgId` is a new stream message, so a new id.
 */
export function inboxKey(m: Pick<DurableMessage, 'stream' | 'seq' | 'headers'>, durable: string): string {
  const msgId = m.headers?.get('Nats-Msg-Id');
  const id = msgId ? `m.${Buffer.from(msgId, 'utf8').toString('base64url')}` : `s.${m.seq}`;
  return `${token(m.stream)}.${token(durable)}.${id}`;
}

/** A name as a KV key token: as is when KV allows it, else base64url behind `=` (which no name allowed as is contains). */
function token(name: string): string {
  return /^[-\w]+$/.test(name) ? name : `=${Buffer.from(name, 'utf8').toString('base64url')}`;
}

type InboxRecord = { kind: 'done' } | { kind: 'claim'; owner: string; expiresAt: number };

/** A record's value; anything unreadable counts as an expired claim, so it is taken over rather than blocking the id. */
export function parseRecord(value: string): InboxRecord {
  const [kind, owner, at] = value.split(' ');
  if (kind === 'done') return { kind: 'done' };
  const expiresAt = Number(at);
  return { kind: 'claim', owner: owner ?? '?', expiresAt: kind === 'claim' && Number.isFinite(expiresAt) ? expiresAt : 0 };
}

/** The write expected another revision: the key exists (create) or changed since it was read (update). */
export function isWrongRevision(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
