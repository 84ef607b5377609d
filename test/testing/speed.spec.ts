import * as net from 'node:net';
import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, Subscribe } from '../../lib';
import { EventBusTestingModule } from '../../lib/testing';

// Issue 27: an app on the testing module starts, answers request/replies and closes without a
// single socket. How long that takes is measured by bench/testing-module-start.js, not here.

@Injectable()
class Prices {
  @Subscribe('speed.price')
  price(n: number) {
    return n * 2;
  }
}

// A real address on purpose: the machine may run a nats-server there, so only the spy below
// tells whether the testing module kept off the network.
const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus], providers: [Prices] })
class AppModule {}

it('starts, answers 10 requests and tears down without opening a socket', async () => {
  const connects = jest.spyOn(net.Socket.prototype, 'connect');
  try {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(EventBusTestingModule.forRoot())
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const bus = app.get(EventBus);
    for (let i = 0; i < 10; i++) expect(await bus.rpcRequest('speed.price', i)).toBe(i * 2);
    await app.close();
    expect(connects).not.toHaveBeenCalled();
  } finally {
    connects.mockRestore();
  }
});
