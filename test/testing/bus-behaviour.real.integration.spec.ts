import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { describeBusBehaviour } from './bus-behaviour';

// The shared behaviour suite against the real bus on a real nats-server (JetStream on).
describeBusBehaviour('real bus on nats-server', async (appModule, bus, options) => {
  const nats = await NatsServer.start({ jetstream: true });
  const moduleRef = await Test.createTestingModule({ imports: [appModule as never] })
    .overrideModule(bus)
    .useModule(EventBusModule.forRoot({ ...options, nats: { servers: nats.url } }))
    .compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  return {
    app,
    bus: app.get(EventBus),
    close: async () => {
      await app.close();
      await nats.dispose();
    },
  };
});
