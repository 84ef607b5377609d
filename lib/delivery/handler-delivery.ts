import { Logger } from '@nestjs/common';
import { DecodedBody, parseJsonBody } from '../claim-check/claim-check.codec';
import { ClaimCheckDelivery } from './claim-check-delivery';
import { isPromise, MaybePromise } from '../shared/maybe-async';
import { RateLimitedLog } from './rate-limited-log';
import { replyStatusOf } from '../errors/reply-status';
import { describeThrown, isNestException, stackOf, statusOfThrown } from '../errors/thrown';
import { createHeaders, headerText, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from '../nats/bus-connection';
import { MessageContext, MessageHandler } from './message-context';
import { HeldBytes } from './byte-budget';
import { StoredMessageEnvelope } from '../claim-check/envelope';
import {
  DeliverOptions,
  DELIVERY_OBSERVER,
  DeliveryFailure,
  DeliveryObserver,
  DeliveryOutcome,
  DurableContext,
  failureOf,
  InboundMessage,
} from './inbound';

// Kept importable from here: durable subscriptions and service endpoints name this module.
export { DELIVERY_OBSERVER } from './inbound';
export type { DeliverOptions, DeliveryFailure, DeliveryObserver, DeliveryOutcome, DurableContext, InboundMessage } from './inbound';

/**
 * One `EventBus` message through recovery, the handler and the reply. Never throws: bad input is
 * logged (rate-limited, naming the subject) and a requester is answered with the NATS
 * service-error headers, so it fails at once instead of timing out.
 */
export class HandlerDelivery {
  constructor(
    readonly claimCheck: ClaimCheckDelivery,
    private readonly logger: Logger,
    private readonly badInputLog: RateLimitedLog,
  ) {}

  deliver(msg: InboundMessage, handler: MessageHandler, options: DeliverOptions = {}): MaybePromise<DeliveryOutcome> {
    const observer = (handler as { [DELIVERY_OBSERVER]?: DeliveryObserver })[DELIVERY_OBSERVER];
    if (!observer) return this.deliverOne(msg, handler, options);
    const started = observer.started();
    const outcome = this.deliverOne(msg, handler, options);
    if (!isPromise(outcome)) {
      observer.settled(started, outcome);
      return outcome;
    }
    return outcome.then((o) => {
      observer.settled(started, o);
      return o;
    });
  }

  private deliverOne(msg: InboundMessage, handler: MessageHandler, options: DeliverOptions): MaybePromise<DeliveryOutcome> {
    const { literalSubject, held, eager = false, durable } = options;
    const subject = literalSubject ?? msg.subject;
    // nats.js decodes `msg.reply` again on every read while it is empty (an event), so read it once.
    const reply = msg.reply || undefined;
    // The bus parses every body anyway: parse once, then see whether it is an envelope (a cheap
    // shape test), rather than searching the bytes first as the transport must.
    let decoded: DecodedBody;
    try {
      decoded = this.claimCheck.codec.decode(subject, msg.data);
    } catch (err) {
      return this.badInput(subject, reply, err, `dropped message on "${subject}"`);
    }
    if (!decoded.envelope)
      return this.run(handler, decoded.payload, new MessageContext({ subject, reply, headers: msg.headers, recovered: false, ...durable }));
    const envelope = decoded.envelope;
    // Recovery on receipt already fetched it (or is fetching it).
    if (held?.prefetched) return this.recover(msg, handler, subject, reply, envelope, held, durable);
    // A stored body may be large: wait for room in the subscription's byte budget before fetching it.
    const room = held?.reserveStored(eager ? this.storedAtLeast() : 0);
    return room
      ? room.then(() => this.recover(msg, handler, subject, reply, envelope, held, durable))
      : this.recover(msg, handler, subject, reply, envelope, held, durable);
  }

  private recover(
    msg: InboundMessage,
    handler: MessageHandler,
    subject: string,
    reply: string | undefined,
    envelope: StoredMessageEnvelope,
    held?: HeldBytes,
    durable?: DurableContext,
  ): Promise<DeliveryOutcome> {
    const bytes = held?.prefetched ?? this.claimCheck.codec.recoverBytes(subject, envelope);
    return bytes.then(
      (data) => {
        if (!held?.prefetched) held?.storedArrived(data.byteLength);
        let payload: unknown;
        try {
          payload = parseJsonBody(subject, data);
        } catch (err) {
          return this.badInput(subject, reply, err, `dropped message on "${subject}" (token ${envelope.token})`);
        }
        return this.run(
          handler,
          payload,
          new MessageContext({ subject, reply, headers: msg.headers, recovered: true, token: envelope.token, ...durable }),
        );
      },
      (err) =>
        this.badInput(
          subject,
          reply,
          err,
          `could not recover message on "${subject}" (token ${envelope.token})`,
          `could not recover stored message ${envelope.token}`,
        ),
    );
  }

  /**
   * Recovery on receipt: for a message that must wait for a handler slot, start fetching its stored
   * body now, as soon as the byte budget has room, not when a slot frees. A peer that deletes what
   * it reads (the Python storage manager) may otherwise delete it first.
   */
  prefetch(msg: InboundMessage, held: HeldBytes, literalSubject?: string): void {
    const subject = literalSubject ?? msg.subject;
    let envelope: StoredMessageEnvelope | undefined;
    try {
      envelope = this.claimCheck.codec.peekEnvelope(subject, msg.data);
    } catch {
      // A forged token: `deliver` reports it when the message's turn comes.
      return;
    }
    if (!envelope) return;
    const stored = envelope;
    const fetch = () =>
      this.claimCheck.codec.recoverBytes(subject, stored).then((data) => {
        held.storedArrived(data.byteLength);
        return data;
      });
    // Every stored body is over the offload threshold: reckon the unknown ones at that, so a burst
    // is fetched at once rather than one at a time until a first size is learnt.
    const room = held.reserveStored(this.storedAtLeast());
    const fetching = room ? room.then(fetch) : fetch();
    // Its failure is reported by `deliver`, which awaits it when the message's turn comes.
    fetching.catch(() => undefined);
    held.prefetched = fetching;
  }

  /** No stored body is smaller than the offload threshold. */
  private storedAtLeast(): number {
    return this.claimCheck.codec.thresholdFor(this.claimCheck.client.maxPayload);
  }

  private run(handler: MessageHandler, payload: unknown, ctx: MessageContext): MaybePromise<DeliveryOutcome> {
    let result: unknown;
    try {
      result = handler(payload, ctx);
    } catch (err) {
      return this.handlerFailed(ctx, err);
    }
    if (isPromise(result)) {
      return result.then(ctx.reply !== undefined ? (value) => this.reply(ctx, value) : undefined, (err) =>
        this.handlerFailed(ctx, err),
      ) as Promise<DeliveryOutcome>;
    }
    if (ctx.reply !== undefined) return this.reply(ctx, result) as MaybePromise<undefined>;
  }

  private reply(ctx: MessageContext, value: unknown): MaybePromise<void> {
    const subject = ctx.subject;
    const failed = (err: unknown) => {
      this.logger.error(`could not encode or store reply for "${subject}": ${(err as Error).message}`);
      this.respondError(ctx.reply!, subject, replyStatusOf(err) === 503 ? 503 : 500, `reply could not be sent: ${(err as Error).message}`);
    };
    let body: string;
    try {
      body = this.claimCheck.codec.stringifyJson(value === undefined ? null : value, subject);
    } catch (err) {
      return failed(err);
    }
    return this.claimCheck.reply(ctx.reply!, subject, body, undefined, failed);
  }

  private handlerFailed(ctx: MessageContext, err: unknown): DeliveryFailure {
    this.claimCheck.telemetry.failed(err);
    const message = describeThrown(err);
    const status = statusOfThrown(err);
    // A pipe or guard refusing the message (4xx from Nest) is bad input: logged rate-limited, without a stack.
    const refused = status < 500 && isNestException(err);
    if (refused) this.badInputLog.error(ctx.subject, `message on "${ctx.subject}" refused (${status}): ${message}`);
    else this.logger.error(`handler for "${ctx.subject}" failed: ${message}`, stackOf(err));
    if (ctx.reply !== undefined) this.respondError(ctx.reply, ctx.subject, status, message || 'handler failed');
    // A pipe or guard refusing the message will refuse it again: a durable subscription does not retry it.
    return refused ? { kind: 'poison', reason: 'rejected', error: err } : { kind: 'handler', reason: 'handler_error', error: err };
  }

  private badInput(subject: string, reply: string | undefined, err: unknown, what: string, replyText?: string): DeliveryFailure {
    this.claimCheck.telemetry.failed(err);
    this.badInputLog.error(subject, `${what}: ${(err as Error).message}`);
    if (reply !== undefined) this.respondError(reply, subject, replyStatusOf(err), replyText ?? (err as Error).message);
    return failureOf(err);
  }

  /**
   * Answer a request with the NATS service-error headers, so the requester fails at once, and the
   * same as a JSON body, `{"status": <code>, "error": "<message>"}`, for clients that read no
   * headers (the Python services): an empty body would make them fail to parse it, and retry.
   */
  private respondError(replyTo: string, subject: string, code: number, description: string): void {
    const h = createHeaders();
    h.set(SERVICE_ERROR_CODE_HEADER, String(code));
    const safe = headerText(description);
    h.set(SERVICE_ERROR_HEADER, safe || 'error');
    this.claimCheck.send(replyTo, subject, Buffer.from(JSON.stringify({ status: code, error: safe || 'error' }), 'utf8'), h);
  }
}
