import { resolve } from 'node:path';
import { Module } from '@nestjs/common';
import { bootstrap } from '../common/bootstrap';
import { envString, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { NotificationHandlers, OUTBOX } from './notification.handlers';
import { Outbox } from './outbox';

const config = serviceConfig('notifier', 5002);

@Module({
  imports: [eventBusModule(config, { durable: true })],
  providers: [
    NotificationHandlers,
    { provide: OUTBOX, useFactory: () => new Outbox(resolve(envString('OUTBOX_DIR', '.tmp/sample/outbox'))) },
  ],
})
class NotifierModule {}

void bootstrap(NotifierModule, config);
