import { INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { Svcm, ServiceClient, ServiceIdentity, ServiceInfo, ServiceStats } from '@nats-io/services';
import {
  EventBus,
  EventBusModule,
  EventBusModuleOptions,
  EventBusServiceOptions,
  InvalidOptionsError,
  MessageContext,
  RemoteHandlerError,
  Subscribe,
} from '../../lib';
import { NatsServiceResponder } from '../../lib/services/nats-service';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, MiB } from '../harness/wait';

@Injectable()
class OrderHandlers {
  @Subscribe('svc.orders.get', { queue: 'orders' })
  get(req: { id: string }) {
    if (req.id === 'missing') throw new Error(`order ${req.id} not found`);
    return { id: req.id, total: 3 };
  }

  @Subscribe('svc.orders.size')
  size(req: { text: string }, ctx: MessageContext) {
    return { bytes: req.text.length, recovered: ctx.recovered };
  }

  @Subscribe('svc.orders.created')
  created(_event: unknown) {}
}

@Injectable()
class BillingHandlers {
  @Subscribe('svc.billing.charge', { queue: 'billing' })
  charge(req: { amount: number }) {
    return { charged: req.amount };
  }
}

/** Every reply the client gets within its wait, collected. */
async function all<T>(it: Promise<AsyncIterable<T>>): Promise<T[]> {
  const out: T[] = [];
  for await (const v of await it) out.push(v);
  return out;
}

describe('NATS services: forRoot({ service }) answers $SRV.PING/INFO/STATS for a @nats-io/services client', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let raw: NatsConnection;
  let client: ServiceClient;
  const apps: INestApplication[] = [];

  const options = (): EventBusModuleOptions => ({
    nats: { servers: nats.url, name: 'svc-test' },
    storage: { redis: { url: redisServer.url }, keyPrefix: 'svc:' },
  });

  async function startApp(service: EventBusServiceOptions | undefined, providers: any[]): Promise<INestApplication> {
    @Module({ imports: [EventBusModule.forRoot({ ...options(), service })], providers })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    apps.push(app);
    return app;
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    // The framework's own client, as `nats micro` and the other languages' clients ask.
    client = new Svcm(raw as any).client({ strategy: 'stall', maxWait: 3000 } as any);
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('lists every instance in PING, by name and by name and id, and an instance that stops is gone', async () => {
    const orders1 = await startApp({ name: 'orders', version: '1.2.0', description: 'Order book' }, [OrderHandlers]);
    const orders2 = await startApp({ name: 'orders', version: '1.2.0' }, [OrderHandlers]);
    await startApp({ name: 'billing', version: '0.3.1-rc.1', metadata: { team: 'payments' } }, [BillingHandlers]);
    // A bus without `service` is no service.
    await startApp(undefined, []);

    const pings = await all<ServiceIdentity>(client.ping());
    expect(pings.map((p) => p.name).sort()).toEqual(['billing', 'orders', 'orders']);
    for (const p of pings) expect(p.type).toBe('io.nats.micro.v1.ping_response');
    const billing = pings.find((p) => p.name === 'billing')!;
    expect(billing).toEqual({
      type: 'io.nats.micro.v1.ping_response',
      name: 'billing',
      id: billing.id,
      version: '0.3.1-rc.1',
      metadata: { team: 'payments' },
    });

    const ordersPings = await all<ServiceIdentity>(client.ping('orders'));
    expect(ordersPings).toHaveLength(2);
    const [first] = ordersPings;
    const one = await all<ServiceIdentity>(client.ping('orders', first.id));
    expect(one.map((p) => p.id)).toEqual([first.id]);

    // The instance that answered first stops: the next PING no longer lists it.
    const stopping = [orders1, orders2].find((app) => app.get(NatsServiceResponder).id === first.id)!;
    await stopping.close();
    apps.splice(apps.indexOf(stopping), 1);
    const after = await all<ServiceIdentity>(client.ping('orders'));
    expect(after.map((p) => p.id)).toEqual(ordersPings.filter((p) => p.id !== first.id).map((p) => p.id));
  });

  it('INFO lists the endpoints: one per @Subscribe, with their subjects and queue groups', async () => {
    const infos = await all<ServiceInfo>(client.info('orders'));
    expect(infos).toHaveLength(1);
    const info = infos[0];
    expect(info.type).toBe('io.nats.micro.v1.info_response');
    expect(info.version).toBe('1.2.0');
    expect(info.endpoints).toEqual([
      { name: 'OrderHandlers-get', subject: 'svc.orders.get', queue_group: 'orders', metadata: {} },
      { name: 'OrderHandlers-size', subject: 'svc.orders.size', metadata: {} },
      { name: 'OrderHandlers-created', subject: 'svc.orders.created', metadata: {} },
    ]);
    const [billing] = await all<ServiceInfo>(client.info('billing'));
    expect(billing.description).toBe('');
    expect(billing.endpoints.map((e) => [e.name, e.subject, e.queue_group])).toEqual([
      ['BillingHandlers-charge', 'svc.billing.charge', 'billing'],
    ]);
  });

  it('STATS counts the requests the handlers ran, errors and claim-checked requests included', async () => {
    const requester = await startApp(undefined, []);
    const bus = requester.get(EventBus);
    await bus.rpcRequest('svc.orders.get', { id: 'a' });
    await bus.rpcRequest('svc.orders.get', { id: 'b' });
    await expect(bus.rpcRequest('svc.orders.get', { id: 'missing' })).rejects.toBeInstanceOf(RemoteHandlerError);
    // Over the server's max_payload: the request crosses NATS as an envelope, and the handler recovers it.
    const big = bigPayload(2 * MiB, 'order');
    await expect(bus.rpcRequest('svc.orders.size', big)).resolves.toEqual({ bytes: big.text.length, recovered: true });
    await bus.publish('svc.orders.created', { id: 'a' });
    await bus.rpcRequest('svc.billing.charge', { amount: 5 });

    const stats = await waitForStats('orders', (s) => byName(s, 'OrderHandlers-created')?.num_requests === 1);
    expect(stats.type).toBe('io.nats.micro.v1.stats_response');
    expect(Number.isNaN(Date.parse(stats.started))).toBe(false);
    const get = byName(stats, 'OrderHandlers-get')!;
    expect(get).toMatchObject({
      subject: 'svc.orders.get',
      queue_group: 'orders',
      num_requests: 3,
      num_errors: 1,
      last_error: 'order missing not found',
    });
    expect(get.processing_time).toBeGreaterThan(0);
    expect(get.average_processing_time).toBe(Math.round(get.processing_time / 3));
    expect(byName(stats, 'OrderHandlers-size')).toMatchObject({ num_requests: 1, num_errors: 0, last_error: '' });
    const [billing] = await all<ServiceStats>(client.stats('billing'));
    expect(byName(billing, 'BillingHandlers-charge')).toMatchObject({ num_requests: 1, num_errors: 0 });
  });

  it('refuses a bad service name or version with InvalidOptionsError naming the field', () => {
    const base = { nats: { servers: 'nats://127.0.0.1:4222' } };
    expect(() => EventBusModule.forRoot({ ...base, service: { name: 'orders.v2', version: '1.0.0' } })).toThrow(InvalidOptionsError);
    expect(() => EventBusModule.forRoot({ ...base, service: { name: 'orders.v2', version: '1.0.0' } })).toThrow(/service\.name/);
    expect(() => EventBusModule.forRoot({ ...base, service: { name: 'orders', version: '1.0' } })).toThrow(
      /service\.version.*semantic version/,
    );
    expect(() => EventBusModule.forRoot({ ...base, service: { name: 'orders', version: '1.0.0', descripton: 'x' } as any })).toThrow(
      /service\.descripton.*did you mean "description"/,
    );
    expect(() => EventBusModule.forRoot({ ...base, service: { name: 'orders', version: '1.0.0' } })).not.toThrow();
  });

  /** STATS of the one `name` instance, once `ready` holds (the event is counted when its handler ends). */
  async function waitForStats(name: string, ready: (s: ServiceStats) => boolean): Promise<ServiceStats> {
    for (let i = 0; i < 50; i++) {
      const [s] = await all<ServiceStats>(client.stats(name));
      if (s && ready(s)) return s;
    }
    throw new Error(`STATS of ${name} never got ready`);
  }
});

function byName(stats: ServiceStats, name: string) {
  return stats.endpoints?.find((e) => e.name === name);
}
