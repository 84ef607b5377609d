// One behaviour suite, two implementations (issue 27): what an app sees of the bus, written once
// and run against the real bus on real servers and against the testing module. A behaviour added
// here is held to both.
import { CanActivate, DynamicModule, INestApplication, Injectable, Module, UseGuards, UsePipes, ValidationPipe } from '@nestjs/common';
import { IsEmail } from 'class-validator';
import request from 'supertest';
import {
  EventBus,
  EventBusModule,
  EventBusHealthOptions,
  EventBusModuleOptions,
  InMemoryStorageManager,
  InvalidSubjectError,
  NotPersistedError,
  MessageContext,
  NoRespondersError,
  PayloadTooLargeError,
  RemoteHandlerError,
  RpcTimeoutError,
  Subscribe,
} from '../../lib';
import { MiB, sleep, waitUntil } from '../harness/wait';

/** The options both implementations get (the real one adds `nats`). */
export type BehaviourOptions = Omit<EventBusModuleOptions, 'nats'> & { health?: EventBusHealthOptions };

/** An app started with `Bus` (the app's `EventBusModule.forRoot(...)`) replaced or kept. */
export interface AppUnderTest {
  app: INestApplication;
  bus: EventBus;
  close(): Promise<void>;
}

/**
 * Starts `appModule` (which imports `bus`, an `EventBusModule.forRoot(options)` kept in a
 * constant as the docs say) on one implementation; `options` are those `bus` was built with.
 */
export type MakeApp = (appModule: unknown, bus: DynamicModule, options: BehaviourOptions) => Promise<AppUnderTest>;

class EmailRequest {
  @IsEmail()
  to!: string;
}

@Injectable()
class DenyGuard implements CanActivate {
  canActivate(): boolean {
    return false;
  }
}

/** What the handlers saw, per test. */
const seen: Array<{ handler: string; payload: unknown; ctx: MessageContext }> = [];

@Injectable()
class Handlers {
  @Subscribe('behaviour.echo')
  echo(payload: unknown, ctx: MessageContext) {
    seen.push({ handler: 'echo', payload, ctx });
    return { echoed: payload, recovered: ctx.recovered, hasToken: ctx.token !== undefined };
  }

  @Subscribe('behaviour.event')
  event(payload: unknown, ctx: MessageContext) {
    seen.push({ handler: 'event', payload, ctx });
  }

  @Subscribe('behaviour.star.*')
  star(payload: unknown, ctx: MessageContext) {
    seen.push({ handler: 'star', payload, ctx });
  }

  @Subscribe('behaviour.tail.>')
  tail(payload: unknown, ctx: MessageContext) {
    seen.push({ handler: 'tail', payload, ctx });
  }

  @Subscribe('behaviour.validate')
  @UsePipes(new ValidationPipe())
  validate(payload: EmailRequest) {
    return { to: payload.to };
  }

  @Subscribe('behaviour.guarded')
  @UseGuards(DenyGuard)
  guarded() {
    return 'should not run';
  }

  @Subscribe('behaviour.slow')
  async slow() {
    await sleep(1500);
    return 'late';
  }
}

/** Runs of the durable handlers, per test. */
const durableRuns: Array<{ payload: { id: string; failTimes?: number }; deliveryCount?: number; at: number }> = [];

@Injectable()
class DurableHandlers {
  @Subscribe('behaviour.orders.*', {
    durable: 'behaviour-billing',
    maxDeliver: 3,
    backoffMs: [150, 300],
    deadLetter: 'behaviour-dead.orders',
  })
  bill(payload: { id: string; failTimes?: number }, ctx: MessageContext) {
    durableRuns.push({ payload, deliveryCount: ctx.deliveryCount, at: Date.now() });
    if ((ctx.deliveryCount ?? 1) <= (payload.failTimes ?? 0)) throw new Error(`bill ${payload.id} failed`);
  }
}

/** The durable behaviours (JetStream): persisted publishes, dedupe, ack, backoff, maxDeliver and the dead letter. */
function describeDurableBehaviour(name: string, makeApp: MakeApp): void {
  describe(`durable behaviour: ${name}`, () => {
    let started: AppUnderTest;
    let bus: EventBus;
    const dead: Array<{ payload: unknown; headers: Record<string, string> }> = [];

    beforeAll(async () => {
      const options: BehaviourOptions = {
        health: { enabled: false },
        storage: { useFactory: () => new InMemoryStorageManager() },
        jetstream: {
          streams: [
            { name: 'BEHAVIOUR_ORDERS', subjects: ['behaviour.orders.>'], maxAgeSeconds: 600, storage: 'memory' },
            { name: 'BEHAVIOUR_DEAD', subjects: ['behaviour-dead.>'], maxAgeSeconds: 600, storage: 'memory' },
          ],
        },
      };
      const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://unused.invalid' }, ...options });
      @Module({ imports: [Bus], providers: [DurableHandlers] })
      class AppModule {}
      started = await makeApp(AppModule, Bus, options);
      bus = started.bus;
      await bus.subscribe('behaviour-dead.>', (payload, ctx) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of ctx.headers ?? []) headers[k] = v[0];
        dead.push({ payload, headers });
      });
    });

    afterAll(() => started?.close());

    beforeEach(() => {
      durableRuns.length = 0;
      dead.length = 0;
    });

    it('a persisted publish resolves with its stream and sequence; a repeated msgId is a duplicate of the same sequence', async () => {
      const first = await bus.publish('behaviour.orders.dedupe', { id: 'd1' }, { persist: true, msgId: 'order-d1' });
      expect(first).toMatchObject({ stream: 'BEHAVIOUR_ORDERS', duplicate: false });
      const again = await bus.publish('behaviour.orders.dedupe', { id: 'd1' }, { persist: true, msgId: 'order-d1' });
      expect(again).toEqual({ stream: 'BEHAVIOUR_ORDERS', seq: first.seq, duplicate: true });
      await waitUntil(() => durableRuns.length >= 1, 'the message handled');
      await sleep(200);
      expect(durableRuns.map((r) => r.payload.id)).toEqual(['d1']);
    });

    it('a persisted publish no stream captures is NotPersistedError (no_stream)', async () => {
      const err = await bus.publish('behaviour.unstored', 1, { persist: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotPersistedError);
      expect((err as NotPersistedError).reason).toBe('no_stream');
    });

    it('a handler that succeeds acks its message: it runs once, with deliveryCount 1', async () => {
      await bus.publish('behaviour.orders.ok', { id: 'ok1' }, { persist: true });
      await waitUntil(() => durableRuns.length === 1, 'handled');
      await sleep(400);
      expect(durableRuns.map((r) => r.deliveryCount)).toEqual([1]);
    });

    it('a failing handler is redelivered after each backoff step with ctx.deliveryCount counting up', async () => {
      await bus.publish('behaviour.orders.retry', { id: 'r1', failTimes: 2 }, { persist: true });
      await waitUntil(() => durableRuns.length === 3, 'three deliveries', 10_000);
      expect(durableRuns.map((r) => r.deliveryCount)).toEqual([1, 2, 3]);
      expect(durableRuns[1].at - durableRuns[0].at).toBeGreaterThanOrEqual(140);
      expect(durableRuns[2].at - durableRuns[1].at).toBeGreaterThanOrEqual(290);
      await sleep(200);
      expect(dead).toEqual([]);
    });

    it('after maxDeliver failures the message goes to the dead letter with its Eventbus-Dead-* headers', async () => {
      await bus.publish('behaviour.orders.poison', { id: 'p1', failTimes: 99 }, { persist: true });
      await waitUntil(() => dead.length === 1, 'the dead letter', 10_000);
      expect(durableRuns.map((r) => r.deliveryCount)).toEqual([1, 2, 3]);
      expect(dead[0].payload).toEqual({ id: 'p1', failTimes: 99 });
      expect(dead[0].headers).toMatchObject({
        'Eventbus-Dead-Reason': 'max_deliver',
        'Eventbus-Dead-Subject': 'behaviour.orders.poison',
        'Eventbus-Dead-Stream': 'BEHAVIOUR_ORDERS',
        'Eventbus-Dead-Durable': 'behaviour-billing',
        'Eventbus-Dead-Deliveries': '3',
        'Eventbus-Dead-Error': 'bill p1 failed',
      });
      await sleep(500);
      expect(durableRuns).toHaveLength(3);
    });
  });
}

/** The behaviours of the bus an app relies on, against the implementation `makeApp` gives. */
export function describeBusBehaviour(name: string, makeApp: MakeApp): void {
  describe(`bus behaviour: ${name}`, () => {
    let started: AppUnderTest;
    let bus: EventBus;

    beforeAll(async () => {
      const options: BehaviourOptions = { rpcTimeoutMs: 3000, storage: { useFactory: () => new InMemoryStorageManager() } };
      const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://unused.invalid' }, ...options });
      @Module({ imports: [Bus], providers: [Handlers, DenyGuard] })
      class AppModule {}
      started = await makeApp(AppModule, Bus, options);
      bus = started.bus;
    });

    afterAll(() => started?.close());

    beforeEach(() => {
      seen.length = 0;
    });

    it('a request gets its handler’s reply', async () => {
      await expect(bus.rpcRequest('behaviour.echo', { n: 1 })).resolves.toEqual({ echoed: { n: 1 }, recovered: false, hasToken: false });
    });

    it('an event reaches its handler, and never inside publish()', async () => {
      await bus.publish('behaviour.event', { n: 2 });
      expect(seen).toHaveLength(0);
      await waitUntil(() => seen.length === 1, 'the event handled');
      expect(seen[0]).toMatchObject({ handler: 'event', payload: { n: 2 }, ctx: { subject: 'behaviour.event', recovered: false } });
    });

    it('`*` matches one token and `>` one or more', async () => {
      await bus.publish('behaviour.star.a', 1);
      await bus.publish('behaviour.star.a.b', 2);
      await bus.publish('behaviour.tail.a', 3);
      await bus.publish('behaviour.tail.a.b.c', 4);
      await bus.publish('behaviour.tail', 5);
      await waitUntil(() => seen.length >= 3, 'three handled');
      await sleep(100);
      expect(seen.map((s) => [s.handler, s.ctx.subject]).sort()).toEqual([
        ['star', 'behaviour.star.a'],
        ['tail', 'behaviour.tail.a'],
        ['tail', 'behaviour.tail.a.b.c'],
      ]);
    });

    it('a queue group gets each message once, other groups and plain subscribers each get every one', async () => {
      const got = { a1: 0, a2: 0, b: 0, plain: 0 };
      const subs = await Promise.all([
        bus.subscribe('behaviour.queue', () => void got.a1++, { queue: 'a' }),
        bus.subscribe('behaviour.queue', () => void got.a2++, { queue: 'a', consumer: 'second' }),
        bus.subscribe('behaviour.queue', () => void got.b++, { queue: 'b' }),
        bus.subscribe('behaviour.queue', () => void got.plain++),
      ]);
      for (let i = 0; i < 40; i++) await bus.publish('behaviour.queue', i);
      await waitUntil(() => got.a1 + got.a2 === 40 && got.b === 40 && got.plain === 40, 'every message delivered');
      await sleep(100);
      expect(got.a1 + got.a2).toBe(40);
      expect(got.a1).toBeGreaterThan(0);
      expect(got.a2).toBeGreaterThan(0);
      await Promise.all(subs.map((s) => s.unsubscribe()));
    });

    it('a request nobody subscribes to fails with NoRespondersError at once', async () => {
      const started = Date.now();
      await expect(bus.rpcRequest('behaviour.nobody', {})).rejects.toBeInstanceOf(NoRespondersError);
      expect(Date.now() - started).toBeLessThan(500);
    });

    it('a request whose handler is too slow fails with RpcTimeoutError at its timeout', async () => {
      const started = Date.now();
      await expect(bus.rpcRequest('behaviour.slow', {}, { timeout: 300 })).rejects.toBeInstanceOf(RpcTimeoutError);
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(1000);
    });

    it('a ValidationPipe failure is RemoteHandlerError 400, a guard 403', async () => {
      const invalid = await bus.rpcRequest('behaviour.validate', { to: 'not an email' }).catch((e: unknown) => e);
      expect(invalid).toBeInstanceOf(RemoteHandlerError);
      expect((invalid as RemoteHandlerError).remoteCode).toBe(400);
      const denied = await bus.rpcRequest('behaviour.guarded', {}).catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(RemoteHandlerError);
      expect((denied as RemoteHandlerError).remoteCode).toBe(403);
      await expect(bus.rpcRequest('behaviour.validate', { to: 'a@example.com' })).resolves.toEqual({ to: 'a@example.com' });
    });

    it('a 3 MiB message is claim-checked both ways, with ctx.recovered and ctx.token', async () => {
      const big = { text: 'x'.repeat(3 * MiB) };
      const reply = await bus.rpcRequest<{ echoed: typeof big; recovered: boolean; hasToken: boolean }>('behaviour.echo', big);
      expect(reply.recovered).toBe(true);
      expect(reply.hasToken).toBe(true);
      expect(reply.echoed.text.length).toBe(3 * MiB);
      await bus.publish('behaviour.event', big);
      await waitUntil(() => seen.some((s) => s.handler === 'event'), 'the large event handled');
      const event = seen.find((s) => s.handler === 'event')!;
      expect(event.ctx.recovered).toBe(true);
      expect(typeof event.ctx.token).toBe('string');
      expect((event.payload as typeof big).text.length).toBe(3 * MiB);
    });

    it('bad subjects are InvalidSubjectError, for publish, request and subscribe', async () => {
      await expect(bus.publish('bad subject', 1)).rejects.toBeInstanceOf(InvalidSubjectError);
      await expect(bus.publish('a..b', 1)).rejects.toBeInstanceOf(InvalidSubjectError);
      await expect(bus.publish('a.*', 1)).rejects.toBeInstanceOf(InvalidSubjectError);
      await expect(bus.rpcRequest('a.>', 1)).rejects.toBeInstanceOf(InvalidSubjectError);
      await expect(bus.subscribe('a.>.b', () => undefined)).rejects.toBeInstanceOf(InvalidSubjectError);
    });

    it('/_health answers 200 with the NATS check up', async () => {
      const res = await request(started.app.getHttpServer()).get('/_health');
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('ok');
    });
  });

  describe(`bus behaviour without storage: ${name}`, () => {
    let started: AppUnderTest;

    beforeAll(async () => {
      const options: BehaviourOptions = { health: { enabled: false } };
      const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://unused.invalid' }, ...options });
      @Module({ imports: [Bus] })
      class AppModule {}
      started = await makeApp(AppModule, Bus, options);
    });

    afterAll(() => started?.close());

    it('a body over max_payload is PayloadTooLargeError, and nothing is sent', async () => {
      let got = 0;
      await started.bus.subscribe('behaviour.big', () => void got++);
      await expect(started.bus.publish('behaviour.big', { text: 'x'.repeat(2 * MiB) })).rejects.toBeInstanceOf(PayloadTooLargeError);
      await started.bus.publish('behaviour.big', { small: true });
      await waitUntil(() => got === 1, 'the small one delivered');
      await sleep(100);
      expect(got).toBe(1);
    });
  });

  describeDurableBehaviour(name, makeApp);
}
