import { Module } from '@nestjs/common';
import { bootstrap } from '../common/bootstrap';
import { envInt, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { EdgeHandlers, FLEET } from './edge.handlers';
import { Fleet } from './fleet';

const config = serviceConfig('velocloud-bridge', 5001);

@Module({
  imports: [eventBusModule(config)],
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
class VelocloudBridgeModule {}

void bootstrap(VelocloudBridgeModule, config);
