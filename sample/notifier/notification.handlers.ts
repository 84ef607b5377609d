import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, Logger, UsePipes, ValidationPipe } from '@nestjs/common';
import { MessageContext, Subscribe } from 'nestjs-nats-eventbus';
import { envInt } from '../common/config';
import { NOTIFICATIONS } from '../common/event-bus.config';
import { EmailRequest, SlackRequest } from './notification.requests';
import { describeAttachment, Outbox } from './outbox';

export const OUTBOX = Symbol('OUTBOX');

/**
 * At least once: each kind has its own durable consumer on the NOTIFICATIONS stream, so a
 * notification published while the notifier is down waits in the stream, and one whose handler
 * did not finish (the process died) is delivered again after `ackWaitMs`. A handler that throws
 * is retried after 1 s, then 5 s; after 3 deliveries the message goes to `notification.dead`.
 * Handled once (`idempotent`): the bus records each handled msgId (the notification's
 * request_id) in the JetStream KV bucket `eventbus-inbox-600s` and acks a repeat without calling
 * the handler, within 600 s (README "Handled once").
 */
const DURABLE = {
  idempotent: true,
  maxDeliver: 3,
  backoffMs: [1000, 5000],
  ackWaitMs: envInt('NOTIFIER_ACK_WAIT_MS', 30_000, 1000),
  deadLetter: NOTIFICATIONS.deadLetter,
};
/** Waited after writing, before the handler resolves: stands in for the provider confirming the send. */
const CONFIRM_DELAY_MS = envInt('NOTIFIER_CONFIRM_DELAY_MS', 0);

/**
 * "Sends" notifications by logging them and appending them to the outbox file, once per
 * notification id. Requests are validated first (`notification.requests.ts`): an e-mail without
 * a recipient never reaches `email`.
 */
@Injectable()
@UsePipes(new ValidationPipe())
export class NotificationHandlers {
  private readonly logger = new Logger('NotificationHandlers');

  constructor(@Inject(OUTBOX) private readonly outbox: Outbox) {}

  @Subscribe('notification.slack.request', { durable: 'notifier-slack', ...DURABLE })
  async slack(req: SlackRequest, ctx: MessageContext): Promise<void> {
    this.received(req.request_id, ctx);
    const written = await this.outbox.write(req.request_id, {
      kind: 'slack',
      channel: req.channel,
      message: req.message,
      recovered: ctx.recovered,
    });
    await sleep(CONFIRM_DELAY_MS);
    this.logger.log({
      hop: 'sent',
      kind: 'slack',
      request_id: req.request_id,
      channel: req.channel,
      msg: req.message,
      duplicate: !written,
    });
  }

  @Subscribe('notification.email.request', { durable: 'notifier-email', ...DURABLE })
  async email(req: EmailRequest, ctx: MessageContext): Promise<void> {
    this.received(req.request_id, ctx, ctx.recovered ? `email recovered from claim-check (token ${ctx.token})` : undefined);
    const attachments = (req.attachments ?? []).map(describeAttachment);
    const written = await this.outbox.write(req.request_id, {
      kind: 'email',
      to: req.to,
      subject: req.subject,
      body: req.body,
      attachments,
      recovered: ctx.recovered,
      token: ctx.token,
    });
    await sleep(CONFIRM_DELAY_MS);
    this.logger.log({
      hop: 'sent',
      kind: 'email',
      request_id: req.request_id,
      to: req.to,
      subject: req.subject,
      attachments: attachments.length,
      duplicate: !written,
    });
  }

  private received(request_id: string, ctx: MessageContext, msg?: string): void {
    this.logger.log({
      hop: 'received',
      topic: ctx.subject,
      request_id,
      delivery: ctx.deliveryCount,
      stream: ctx.stream,
      seq: ctx.seq,
      recovered: ctx.recovered,
      token: ctx.token,
      msg,
    });
  }
}
