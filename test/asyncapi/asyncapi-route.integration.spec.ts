import { Parser } from '@asyncapi/parser';
import { INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { EventBusModule, InvalidOptionsError, Subscribe } from '../../lib';
import { NatsServer } from '../harness/local-servers';

@Injectable()
class Inventory {
  @Subscribe('inv.reserve', { queue: 'inventory' })
  reserve(req: { sku: string }) {
    return { reserved: req.sku };
  }
}

describe('forRoot({ asyncapi: { path } }) serves the AsyncAPI document of the running app', () => {
  let nats: NatsServer;
  let app: INestApplication;

  beforeAll(async () => {
    nats = await NatsServer.start();
    // forRootAsync: `service` and `asyncapi` are given beside the factory, as `health` is.
    const bus = EventBusModule.forRootAsync({
      useFactory: () => ({ nats: { servers: nats.url } }),
      service: { name: 'inventory', version: '1.0.0' },
      asyncapi: { path: 'docs/asyncapi.json' },
    });
    @Module({ imports: [bus], providers: [Inventory] })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    await nats?.dispose();
  });

  it('answers GET <path> with the JSON document, which @asyncapi/parser accepts', async () => {
    const res = await request(app.getHttpServer()).get('/docs/asyncapi.json').expect(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const doc = JSON.parse(res.text);
    expect(doc.info).toEqual({ title: 'inventory', version: '1.0.0' });
    expect(doc.channels.inv_reserve.address).toBe('inv.reserve');
    expect(doc.servers).toEqual({ nats0: { host: new URL(nats.url).host, protocol: 'nats' } });
    const { diagnostics } = await new Parser().parse(res.text);
    expect(diagnostics.filter((d) => d.severity === 0)).toEqual([]);
  });

  it('refuses a bad asyncapi option with InvalidOptionsError', () => {
    const nats = { servers: 'nats://127.0.0.1:4222' };
    expect(() => EventBusModule.forRoot({ nats, asyncapi: { pth: 'x' } as never })).toThrow(InvalidOptionsError);
    expect(() => EventBusModule.forRoot({ nats, asyncapi: { sends: [{ topic: '' }] } })).toThrow(/asyncapi\.sends\[0\]\.topic/);
  });
});
