import { Logger } from '@nestjs/common';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { StoredMessageEnvelope } from '../claim-check/envelope';
import { MsgHdrs, BusConnection } from '../nats/bus-connection';
import { isPromise, MaybePromise } from '../shared/maybe-async';
import { Outbound } from './outbound';
import { BusTelemetry } from '../telemetry/bus-telemetry';

// Replies have one reader, within its timeout: stores keep them briefly.
const REPLY = { reply: true } as const;

/**
 * A received message after claim-check: the envelope it came as (if any), and the bytes the
 * publisher meant, ready now for an inline body or once recovered from storage.
 */
export interface InboundBody {
  envelope?: StoredMessageEnvelope;
  bytes: MaybePromise<Uint8Array>;
}

/**
 * The claim-check half of receiving and replying, shared by `EventBus` and the
 * `@nestjs/microservices` transport: recover a stored body before anything parses it, and store
 * a large reply before it is sent. What the bytes mean (our JSON, or a Nest packet) is the caller's.
 */
export class ClaimCheckDelivery {
  /** The one way out, which a reply and the transport's client take too. */
  readonly outbound: Outbound;

  constructor(
    readonly codec: ClaimCheckCodec,
    readonly client: BusConnection,
    private readonly logger: Logger,
    /** Traces replies (their headers carry the handler's trace context) and counts claim-check. */
    readonly telemetry: BusTelemetry = new BusTelemetry(),
  ) {
    this.outbound = new Outbound(codec);
  }

  /**
   * The body a received message stands for: its own bytes, or the stored body it is an
   * envelope of. Throws `InvalidMessageError` for a forged token; `bytes` rejects with
   * `StoredMessageNotFoundError` or `MessageStorageError`.
   */
  inbound(subject: string, data: Uint8Array): InboundBody {
    const envelope = this.codec.peekEnvelope(subject, data);
    if (!envelope) return { bytes: data };
    return { envelope, bytes: this.codec.recoverBytes(subject, envelope) };
  }

  /**
   * Send `body` to `replyTo`, stored first when over the threshold. Calls `onFailure` (and sends
   * nothing) when it cannot be stored. Never throws: a send that fails is logged.
   */
  reply(
    replyTo: string,
    subject: string,
    body: Uint8Array | string,
    headers: MsgHdrs | undefined,
    onFailure: (err: unknown) => void,
  ): MaybePromise<void> {
    let wire: MaybePromise<Uint8Array>;
    try {
      wire = this.outbound.plan(subject, body, this.client.maxPayload, headers, REPLY);
    } catch (err) {
      return onFailure(err);
    }
    if (!isPromise(wire)) return this.send(replyTo, subject, wire, headers);
    return wire.then(
      (envelope) => this.sendStored(replyTo, subject, envelope, headers),
      (err) => onFailure(err),
    );
  }

  /** Publish to a reply inbox; a connection that cannot send is logged, not thrown. */
  send(replyTo: string, subject: string, data: Uint8Array, headers?: MsgHdrs): void {
    try {
      this.client.publish(replyTo, data, this.telemetry.inject(headers));
    } catch (err) {
      this.logger.error(`could not send reply for "${subject}": ${(err as Error).message}`);
    }
  }

  // A stored reply that cannot be sent is read by nobody: its body is deleted.
  private sendStored(replyTo: string, subject: string, envelope: Uint8Array, headers?: MsgHdrs): void {
    try {
      this.outbound.sendStored(envelope, (e) => this.client.publish(replyTo, e, this.telemetry.inject(headers)));
    } catch (err) {
      this.logger.error(`could not send reply for "${subject}": ${(err as Error).message}`);
    }
  }
}
