// How JetStream's failures read to the bus: nats.js wraps what the server said, and a persisted
// publish that failed is told apart (no stream, JetStream off, a stream between leaders, a timeout).
import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import { errors as natsErrors } from '@nats-io/transport-node';
import { NotConnectedError, NotPersistedError, type NotPersistedReason } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';

/**
 * Why a persisted publish failed, from what the server answered. nats.js 3.4 reports a publish
 * that nobody answered as `JetStreamNotEnabled` ("jetstream is not enabled"), whatever the cause:
 * the server's no-responders status is underneath, and one look-up then tells a missing stream,
 * JetStream off, and a stream that exists but is between leaders apart.
 */
export async function publishRefusal(
  jsm: JetStreamManager,
  subject: string,
  err: unknown,
  timeoutMs: number,
): Promise<[NotPersistedReason, string]> {
  if (isNoResponders(err)) return whyUnanswered(jsm, subject);
  const api = apiErrorIn(err);
  if (api) return [apiRefusal(api), api.message];
  if (err instanceof natsErrors.TimeoutError) return ['timeout', `the stream did not acknowledge within ${timeoutMs} ms`];
  if (err instanceof natsErrors.ClosedConnectionError || err instanceof natsErrors.DrainingConnectionError) {
    return ['closed', 'the connection closed before the stream answered'];
  }
  return ['other', describeThrown(err)];
}

async function whyUnanswered(jsm: JetStreamManager, subject: string): Promise<[NotPersistedReason, string]> {
  try {
    const name = await jsm.streams.find(subject);
    return ['unavailable', `stream ${name} captures the subject but did not answer (no leader yet?)`];
  } catch (err) {
    if (isNoStream(err)) return ['no_stream', 'no stream captures the subject'];
    if (isNoResponders(err) || isApiError(apiErrorIn(err), JetStreamApiCodes.JetStreamNotEnabledForAccount)) {
      return ['jetstream_disabled', 'the server has no JetStream for this account'];
    }
    return ['unavailable', `nobody answered, and JetStream could not say which stream captures the subject: ${describeThrown(err)}`];
  }
}

/** A stream look-up that found none: the API's 10059, or nats.js's own text for `streams.find`. */
export function isNoStream(err: unknown): boolean {
  return isApiError(err, JetStreamApiCodes.StreamNotFound) || /no stream matches subject/i.test((err as Error)?.message ?? '');
}

/** A persisted publish whose ack did not come may still have been stored; one that a stream refused, or none answered, was not. */
export function mayHaveBeenStored(err: unknown): boolean {
  if (err instanceof NotPersistedError) return err.reason === 'timeout' || (err.reason === 'other' && !apiErrorIn(err.cause));
  return true;
}

/** `err` or the first of its causes that `match` accepts: nats.js wraps what the server said (a few levels at most). */
function inCauses(err: unknown, match: (e: unknown) => boolean): unknown {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) if (match(e)) return e;
  return undefined;
}

/** No-responders, as nats.js reports it: bare, inside a RequestError, or wrapped as `JetStreamNotEnabled`. */
function isNoResponders(err: unknown): boolean {
  return !!inCauses(err, (e) => e instanceof natsErrors.NoRespondersError || (e instanceof natsErrors.RequestError && e.isNoResponders()));
}

/** The server's own refusal, possibly wrapped by nats.js (10039 comes inside `JetStreamNotEnabled`). */
export function apiErrorIn(err: unknown): JetStreamApiError | undefined {
  return inCauses(err, (e) => e instanceof JetStreamApiError) as JetStreamApiError | undefined;
}

/** Server error codes of a refused publish (nats-server errors.json), by what they mean to the caller. */
function apiRefusal(err: JetStreamApiError): NotPersistedReason {
  switch (err.code) {
    case JetStreamApiCodes.StreamNotFound:
      return 'no_stream';
    case JetStreamApiCodes.JetStreamNotEnabledForAccount:
      return 'jetstream_disabled';
    // JSStreamMessageExceedsMaximumErr, JSStreamHeaderExceedsMaximumErr.
    case 10054:
    case 10097:
      return 'message_too_large';
    case JetStreamApiCodes.StreamWrongLastSequence:
    case JetStreamApiCodes.StreamWrongLastSequenceUnknown:
      return 'wrong_last_sequence';
    // JSStreamWrongLastMsgIDErrF.
    case 10070:
      return 'wrong_last_msg_id';
    // JSStreamNotMatchErr ("expected stream does not match").
    case 10060:
      return 'wrong_stream';
  }
  // JSStreamStoreFailedF carries the store's own text: the limits of a stream that discards new messages.
  if (/maximum messages/i.test(err.message)) return 'max_messages';
  if (/maximum bytes/i.test(err.message)) return 'max_bytes';
  // 503: insufficient resources, no cluster leader, a store that failed for a moment.
  return err.status === 503 ? 'unavailable' : 'other';
}

export function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

export function asNotConnected(what: string, err: unknown): NotConnectedError {
  return new NotConnectedError(`${what}: ${describeThrown(err)}`, { cause: err });
}
