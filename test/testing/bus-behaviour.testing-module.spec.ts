import { Test } from '@nestjs/testing';
import { EventBus } from '../../lib';
import { EventBusTestingModule } from '../../lib/testing';
import { describeBusBehaviour } from './bus-behaviour';

// The shared behaviour suite against the testing module: no server, the documented override.
describeBusBehaviour('testing module', async (appModule, bus, options) => {
  const { storage, ...rest } = options;
  const moduleRef = await Test.createTestingModule({ imports: [appModule as never] })
    .overrideModule(bus)
    .useModule(EventBusTestingModule.forRoot({ ...rest, storage: storage ?? null }))
    .compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  return { app, bus: app.get(EventBus), close: () => app.close() };
});
