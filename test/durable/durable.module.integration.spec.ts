import { INestApplication, Injectable, UsePipes, ValidationPipe } from '@nestjs/common';
import { IsNotEmpty, IsString } from 'class-validator';
import { connect } from '@nats-io/transport-node';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { EventBus, EventBusModule, EventBusModuleOptions, InvalidOptionsError, MessageContext, Subscribe } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { waitUntil } from '../harness/wait';

const received: Array<{ payload: unknown; ctx: MessageContext }> = [];

@Injectable()
class StatusHandlers {
  @Subscribe('mod.events.status', { durable: 'mod-notifier', maxDeliver: 2, backoffMs: [100] })
  onStatus(payload: unknown, ctx: MessageContext) {
    received.push({ payload, ctx });
  }
}

class Order {
  @IsString() @IsNotEmpty() id!: string;
}

const validated: unknown[] = [];

@Injectable()
class ValidatedHandlers {
  @Subscribe('mod.orders.new', { durable: 'mod-orders', deadLetter: 'mod.dead.order' })
  @UsePipes(new ValidationPipe())
  onOrder(order: Order) {
    validated.push(order);
  }
}

@Injectable()
class Unbound {
  @Subscribe('nowhere.events', { durable: 'lost' })
  onNothing() {}
}

// `@Subscribe({ durable })` through the Nest module, and `/_health` for a bus that uses JetStream.
describe('durable delivery through EventBusModule', () => {
  let nats: NatsServer;
  const apps: INestApplication[] = [];

  async function startApp(options: Partial<EventBusModuleOptions>, providers: any[] = []): Promise<INestApplication> {
    const moduleRef = await Test.createTestingModule({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url, reconnectTimeWait: 100 }, ...options })],
      providers,
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    apps.push(app);
    await app.init();
    return app;
  }

  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  afterAll(() => nats?.dispose());

  it('a @Subscribe durable handler gets persisted messages with deliveryCount, stream and seq; /_health reports JetStream', async () => {
    const app = await startApp({ jetstream: { streams: [{ name: 'MOD_EVENTS', subjects: ['mod.events.>'] }] } }, [StatusHandlers]);
    await app.listen(0, '127.0.0.1');
    const bus = app.get(EventBus);
    const ack = await bus.publish('mod.events.status', { edge: 1 }, { persist: true, msgId: 'e1' });
    expect(ack).toEqual({ stream: 'MOD_EVENTS', seq: 1, duplicate: false });
    await waitUntil(() => received.length === 1, 'the durable handler');
    expect(received[0].payload).toEqual({ edge: 1 });
    expect(received[0].ctx).toMatchObject({ subject: 'mod.events.status', deliveryCount: 1, stream: 'MOD_EVENTS', seq: 1 });
    expect(bus.subscriptionStats()).toContainEqual(expect.objectContaining({ subject: 'mod.events.status', durable: 'mod-notifier' }));

    const health = await request(app.getHttpServer()).get('/_health');
    expect(health.status).toBe(200);
    expect(health.body.details.jetstream).toEqual({ status: 'up' });
  });

  it('a message a ValidationPipe refuses goes to the dead letter at once (rejected), with the validation messages; valid ones are handled', async () => {
    const nc = await connect({ servers: nats.url });
    const dead: Array<Record<string, string>> = [];
    nc.subscribe('mod.dead.order', {
      callback: (_e, m) => {
        const h: Record<string, string> = {};
        for (const [k, v] of m.headers ?? []) h[k] = v[0];
        dead.push(h);
      },
    });
    await nc.flush();
    try {
      const app = await startApp({ jetstream: { streams: [{ name: 'MOD_ORDERS', subjects: ['mod.orders.new'] }] } }, [ValidatedHandlers]);
      const bus = app.get(EventBus);
      await bus.publish('mod.orders.new', { id: 42 }, { persist: true });
      await bus.publish('mod.orders.new', { id: 'ok' }, { persist: true });
      await waitUntil(() => dead.length === 1 && validated.length === 1, 'one dead letter and one valid order');
      expect(dead[0]).toMatchObject({ 'Eventbus-Dead-Reason': 'rejected', 'Eventbus-Dead-Deliveries': '1' });
      expect(dead[0]['Eventbus-Dead-Error']).toBe('id must be a string');
      expect(validated).toEqual([{ id: 'ok' }]);
    } finally {
      await nc.close();
    }
  });

  it('/_health answers 503 with jetstream down when the server comes back without JetStream', async () => {
    const server = await NatsServer.start();
    try {
      const moduleRef = await Test.createTestingModule({
        imports: [EventBusModule.forRoot({ nats: { servers: server.url, reconnectTimeWait: 100 }, jetstream: { apiTimeoutMs: 500 } })],
      }).compile();
      const app = moduleRef.createNestApplication({ logger: false });
      apps.push(app);
      await app.init();
      await app.listen(0, '127.0.0.1');
      const http = app.getHttpServer();
      expect((await request(http).get('/_health')).status).toBe(200);
      await server.stop();
      // The same port, no JetStream.
      const plain = await NatsServer.start({ port: server.port, jetstream: false });
      try {
        // 503 at first because NATS itself is away; then, reconnected, because JetStream does not answer.
        let down = await request(http).get('/_health');
        await waitUntil(
          async () => {
            down = await request(http).get('/_health');
            return down.body.details?.nats?.status === 'up';
          },
          'NATS reconnected',
          15_000,
        );
        expect(down.status).toBe(503);
        expect(down.body.details.jetstream).toEqual({ status: 'down', message: 'JetStream is not answering' });
      } finally {
        await plain.dispose();
      }
    } finally {
      await server.dispose();
    }
  });

  it('a bus without JetStream has no jetstream entry in /_health', async () => {
    const app = await startApp({});
    await app.listen(0, '127.0.0.1');
    const health = await request(app.getHttpServer()).get('/_health');
    expect(health.status).toBe(200);
    expect(health.body.details.jetstream).toBeUndefined();
  });

  it('a @Subscribe durable topic that no stream captures stops bootstrap with InvalidOptionsError naming the method', async () => {
    const err = await startApp({}, [Unbound]).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err.message).toContain('Unbound.onNothing');
    expect(err.message).toContain('no JetStream stream captures "nowhere.events"');
  });
});
