import type { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import type { StoreHints } from '../claim-check/store-hints';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { headersSize, type MsgHdrs } from '../nats/bus-connection';
import { isPromise, type MaybePromise } from '../shared/maybe-async';

/**
 * The one way out. Every send (the bus's publish, request and persisted publish, a handler's
 * reply, the `@nestjs/microservices` client) turns its body into wire bytes here, with the
 * headers' bytes counted against the server's max_payload, and deletes a stored body whose
 * envelope could not be sent.
 */
export class Outbound {
  constructor(private readonly codec: ClaimCheckCodec) {}

  /** Whether a body too large to send inline can be stored (a store is configured). */
  get hasStorage(): boolean {
    return this.codec.hasStorage;
  }

  /**
   * What to send for `body`: the body itself when it fits beside `headers`, else (a promise of)
   * the envelope of its stored copy. Throws `PayloadTooLargeError` before anything is stored; a
   * store that fails rejects with `MessageStorageError`, and nothing is sent.
   */
  plan(subject: string, body: Uint8Array | string, maxPayload: number, headers?: MsgHdrs, hints?: StoreHints): MaybePromise<Uint8Array> {
    return this.codec.toWire(subject, body, maxPayload, hints, headerBytes(headers));
  }

  /** Whether `body` goes on the wire as itself beside `headers`. */
  fitsInline(body: Uint8Array | string, maxPayload: number, headers?: MsgHdrs): boolean {
    return this.codec.fitsInline(body, maxPayload, headerBytes(headers));
  }

  /**
   * Throws what `plan` would throw for a body that can go neither inline nor stored, and stores
   * nothing: for a caller that must refuse before it does anything else.
   */
  checkSendable(subject: string, body: Uint8Array | string, maxPayload: number, headers?: MsgHdrs): void {
    if (this.hasStorage || this.fitsInline(body, maxPayload, headers)) return;
    this.codec.toWire(subject, body, maxPayload, undefined, headerBytes(headers));
  }

  /**
   * `send(envelope)` for an envelope `plan` stored. When it throws or rejects, nobody will read the
   * stored body, so it is deleted (best effort; its TTL removes it otherwise).
   */
  sendStored<T>(envelope: Uint8Array, send: (envelope: Uint8Array) => T): T {
    try {
      const sent = send(envelope);
      if (!isPromise(sent)) return sent;
      return sent.catch((err: unknown) => {
        this.codec.discard(envelope);
        throw err;
      }) as T;
    } catch (err) {
      this.codec.discard(envelope);
      throw err;
    }
  }

  /**
   * What to send for the body behind `wire`, an envelope received on `from`, so that it lives by
   * `hints`: a new stored copy (or the body itself when it fits beside `headers`). Undefined when
   * `wire` is no envelope. For a body that must outlive the message that brought it (a dead letter's).
   */
  async copyStored(
    from: string,
    wire: Uint8Array,
    to: string,
    maxPayload: number,
    headers: MsgHdrs,
    hints: StoreHints,
  ): Promise<Uint8Array | undefined> {
    const envelope = this.codec.peekEnvelope(from, wire);
    if (!envelope) return undefined;
    return this.plan(to, await this.codec.recoverBytes(from, envelope), maxPayload, headers, hints);
  }

  /** Deletes the body behind an envelope `plan` stored, for a send given up after the store. */
  discard(envelope: Uint8Array): void {
    this.codec.discard(envelope);
  }

  /**
   * Refuses a configured `largeMessageThresholdBytes` (or its deprecated name) above what the server accepts (its max_payload
   * less the room kept for headers), once connected: the bus and the transport check the same way.
   */
  checkThreshold(threshold: number | undefined, maxPayload: number): void {
    const ceiling = this.codec.thresholdFor(maxPayload);
    if (threshold !== undefined && threshold > ceiling) {
      throw new InvalidOptionsError(
        'largeMessageThresholdBytes',
        `${threshold} bytes is above what the server accepts (max_payload ${maxPayload} minus header room = ${ceiling})`,
      );
    }
  }
}

function headerBytes(headers: MsgHdrs | undefined): number {
  return headers ? headersSize(headers) : 0;
}
