// The notifier app module, apart from main.ts so that `nestjs-nats-eventbus asyncapi --module` can load it
// without starting the service.
import { resolve } from 'node:path';
import { Module } from '@nestjs/common';
import { envString, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { NotificationHandlers, OUTBOX } from './notification.handlers';
import { Outbox } from './outbox';

export const config = serviceConfig('notifier', 5002);

@Module({
  imports: [eventBusModule(config, { durable: true, description: 'Sends Slack and e-mail notifications, at least once' })],
  providers: [
    NotificationHandlers,
    { provide: OUTBOX, useFactory: () => new Outbox(resolve(envString('OUTBOX_DIR', '.tmp/sample/outbox'))) },
  ],
})
export class NotifierModule {}
