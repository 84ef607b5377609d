import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, Subscribe } from '../../lib';
import { EventBusTestingModule } from '../../lib/testing';

// Issue 27's speed figure: a file that starts an app on the testing module, runs 10
// request/replies and tears it down. Measured from before compile() to after close().

@Injectable()
class Prices {
  @Subscribe('speed.price')
  price(n: number) {
    return n * 2;
  }
}

const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus], providers: [Prices] })
class AppModule {}

it('starts, answers 10 requests and tears down in well under a second', async () => {
  const started = performance.now();
  const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
    .overrideModule(Bus)
    .useModule(EventBusTestingModule.forRoot())
    .compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  const bus = app.get(EventBus);
  for (let i = 0; i < 10; i++) expect(await bus.rpcRequest('speed.price', i)).toBe(i * 2);
  await app.close();
  const took = performance.now() - started;
  process.stdout.write(`testing module: start + 10 request/replies + close in ${took.toFixed(1)} ms\n`);
  expect(took).toBeLessThan(1000);
});
