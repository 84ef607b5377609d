import { Inject, Injectable, Logger, UsePipes, ValidationPipe } from '@nestjs/common';
import { MessageContext, Subscribe } from 'nestjs-nats-eventbus';
import { EmailRequest, SlackRequest } from './notification.requests';
import { describeAttachment, Outbox } from './outbox';

export const OUTBOX = Symbol('OUTBOX');

/**
 * "Sends" notifications by logging them and appending them to the outbox file. Requests are
 * validated first (`notification.requests.ts`): an e-mail without a recipient never reaches `email`.
 */
@Injectable()
@UsePipes(new ValidationPipe())
export class NotificationHandlers {
  private readonly logger = new Logger('NotificationHandlers');

  constructor(@Inject(OUTBOX) private readonly outbox: Outbox) {}

  @Subscribe('notification.slack.request', { queue: 'notifier' })
  async slack(req: SlackRequest, ctx: MessageContext): Promise<void> {
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
  async email(req: EmailRequest, ctx: MessageContext): Promise<void> {
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
