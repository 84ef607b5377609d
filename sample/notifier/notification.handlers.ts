import { Inject, Injectable, Logger } from '@nestjs/common';
import { MessageContext, Subscribe } from 'nestjs-nats-eventbus';
import { EmailNotification, SlackNotification } from '../common/contracts';
import { describeAttachment, Outbox } from './outbox';

export const OUTBOX = Symbol('OUTBOX');

/** "Sends" notifications by logging them and appending them to the outbox file. */
@Injectable()
export class NotificationHandlers {
  private readonly logger = new Logger('NotificationHandlers');

  constructor(@Inject(OUTBOX) private readonly outbox: Outbox) {}

  @Subscribe('notification.slack.request', { queue: 'notifier' })
  async slack(req: SlackNotification, ctx: MessageContext): Promise<void> {
    this.logger.log({ hop: 'received', topic: ctx.subject, request_id: req.request_id, recovered: ctx.recovered, token: ctx.token });
    await this.outbox.write({
      kind: 'slack',
      request_id: req.request_id,
      channel: req.channel,
      message: req.message,
      recovered: ctx.recovered,
    });
    this.logger.log({ hop: 'sent', kind: 'slack', request_id: req.request_id, channel: req.channel, msg: req.message });
  }

  @Subscribe('notification.email.request', { queue: 'notifier' })
  async email(req: EmailNotification, ctx: MessageContext): Promise<void> {
    this.logger.log({
      hop: 'received',
      topic: ctx.subject,
      request_id: req.request_id,
      recovered: ctx.recovered,
      token: ctx.token,
      msg: ctx.recovered ? `email recovered from claim-check (token ${ctx.token})` : undefined,
    });
    const attachments = (req.attachments ?? []).map(describeAttachment);
    await this.outbox.write({
      kind: 'email',
      request_id: req.request_id,
      to: req.to,
      subject: req.subject,
      body: req.body,
      attachments,
      recovered: ctx.recovered,
      token: ctx.token,
    });
    this.logger.log({
      hop: 'sent',
      kind: 'email',
      request_id: req.request_id,
      to: req.to,
      subject: req.subject,
      attachments: attachments.length,
    });
  }
}
