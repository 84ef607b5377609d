// The velocloud-bridge app module, apart from main.ts so that `nestjs-nats-eventbus asyncapi --module` can load it
// without starting the service.
import { Module } from '@nestjs/common';
import { envInt, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { EdgeHandlers, FLEET } from './edge.handlers';
import { Fleet } from './fleet';

export const config = serviceConfig('velocloud-bridge', 5001);

@Module({
  imports: [eventBusModule(config, { description: 'Answers edge list and status requests from the VeloCloud fleet' })],
  providers: [
    EdgeHandlers,
    {
      provide: FLEET,
      useFactory: () =>
        new Fleet({
          seed: envInt('FLEET_SEED', 42),
          size: envInt('FLEET_SIZE', 12, 1),
          bigEdgeEvents: envInt('BIG_EDGE_EVENTS', 8000, 0),
        }),
    },
  ],
})
export class VelocloudBridgeModule {}
