import { Logger } from '@nestjs/common';
import type { MsgHdrs, NatsConnection } from '@nats-io/transport-node';
import { NotConnectedError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';

/**
 * Bytes of publishes held while a connection is reconnecting (as the Go client's ReconnectBufSize).
 * Past this, `publish` throws `NotConnectedError` instead of growing without bound.
 */
export const RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024;

interface HeldPublish {
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  reply?: string;
}

/**
 * Publishes made while a connection is away, sent in order once it is back. nats.js v3, like v2,
 * discards what was published while disconnected at every reconnect attempt
 * (`ProtocolHandler.prepare()` resets its outbound buffer), so without this they would be lost.
 */
export class ReconnectHold {
  private held: HeldPublish[] = [];
  private bytes = 0;

  constructor(
    private readonly label: string,
    private readonly logger: Logger,
  ) {}

  get size(): number {
    return this.held.length;
  }

  /** Keep one publish; throws `NotConnectedError` when the buffer is full. */
  add(subject: string, data: Uint8Array, headers?: MsgHdrs, reply?: string): void {
    const size = data.byteLength + subject.length + (reply?.length ?? 0);
    if (this.bytes + size > RECONNECT_BUFFER_BYTES) {
      throw new NotConnectedError(
        `NATS connection "${this.label}" is reconnecting and its reconnect buffer (${RECONNECT_BUFFER_BYTES} bytes) is full; message to "${subject}" not sent`,
      );
    }
    this.held.push({ subject, data, headers, reply });
    this.bytes += size;
  }

  /** Send, in order, what was held. One that nats.js refuses is logged and skipped; the rest still go. */
  release(nc: NatsConnection): void {
    const held = this.take();
    if (!held.length) return;
    let sent = 0;
    for (const m of held) {
      try {
        nc.publish(m.subject, m.data, m.headers || m.reply ? { headers: m.headers, reply: m.reply } : undefined);
        sent++;
      } catch (err) {
        this.logger.error(`could not send a publish to "${m.subject}" held while reconnecting: ${describeThrown(err)}`);
      }
    }
    if (sent) this.logger.log(`sent ${sent} publishes held while reconnecting`);
  }

  /** Forget what was held, saying how much. */
  discard(): void {
    const n = this.take().length;
    if (n) this.logger.warn(`closing while reconnecting: ${n} held publishes were not sent`);
  }

  private take(): HeldPublish[] {
    const held = this.held;
    this.held = [];
    this.bytes = 0;
    return held;
  }
}
