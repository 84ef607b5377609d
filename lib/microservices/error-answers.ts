// The answers the server side gives when it cannot handle a packet or send its reply: an error
// packet on the requester's inbox, so the client fails at once instead of waiting for its timeout.
import { Logger } from '@nestjs/common';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { RateLimitedLog } from '../delivery/rate-limited-log';
import { MessageStorageError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import type { Msg } from '../nats/bus-connection';
import { rpcError } from './event-bus-transport.options';
import { serializePacket } from './nest-packets';

/** Error answers of one `EventBusTransport`, and its rate-limited log of bad input. */
export class ErrorAnswers {
  private readonly badInputLog: RateLimitedLog;

  constructor(
    private readonly log: Logger,
    /** The connection's delivery path, while connected. */
    private readonly delivery: () => ClaimCheckDelivery | null,
  ) {
    this.badInputLog = new RateLimitedLog(log);
  }

  /** A reply that cannot be stored still answers, so the client fails at once instead of timing out. */
  replyFailed(msg: Msg, replyTo: string, id: string | undefined, err: unknown): void {
    const message = describeThrown(err);
    this.log.error(`could not encode or store reply for "${msg.subject}": ${message}`);
    const reason = err instanceof MessageStorageError ? 'reply could not be stored' : 'reply could not be sent';
    this.sendError(msg, replyTo, { id, err: rpcError(`${reason}: ${message}`), isDisposed: true });
  }

  /** Log a message that cannot be handled; a requester gets an error packet instead of a timeout. */
  drop(msg: Msg, logMessage: string, replyMessage: string): void {
    this.badInputLog.error(msg.subject, `dropped message on "${msg.subject}": ${logMessage}`);
    // The packet id is unknown here; Nest's client accepts an answer without one on its own inbox.
    if (msg.reply) this.sendError(msg, msg.reply, { err: rpcError(replyMessage), isDisposed: true });
  }

  sendError(msg: Msg, replyTo: string, packet: object): void {
    const out = serializePacket(undefined, packet);
    this.delivery()?.send(replyTo, msg.subject, out.data, out.headers);
  }
}
