import { INestApplication, Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, MessageContext, NoRespondersError, Subscribe } from '../../lib';
import { freePort, NatsServer } from '../harness/local-servers';
import { sleep, waitUntil } from '../harness/wait';

/** What the Nest handlers below received. */
const nestSeen: Array<{ where: string; payload: unknown }> = [];

@Injectable()
class AuditHandlers {
  @Subscribe('c.nest.audit', { consumer: 'nest-audit' })
  audit(payload: unknown) {
    nestSeen.push({ where: 'audit', payload });
  }

  @Subscribe('c.nest.plain')
  plain(payload: unknown) {
    nestSeen.push({ where: 'plain', payload });
  }
}

/** One connection as the server's monitoring endpoint (`/connz?subs=1`) shows it. */
interface ServerSideConnection {
  cid: number;
  name?: string;
  subscriptions_list?: string[];
}

describe('EventBus consumers and unsubscribe, against a real nats-server', () => {
  let nats: NatsServer;
  let monitorPort: number;
  let buses: EventBus[] = [];

  async function makeBus(name: string): Promise<EventBus> {
    const bus = new EventBus({ nats: { servers: nats.url, name, reconnectTimeWait: 100 } });
    buses.push(bus);
    await bus.connect();
    return bus;
  }

  /** The open connections the server knows of, with their subscriptions. */
  async function connz(): Promise<ServerSideConnection[]> {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/connz?subs=1&limit=1024`);
    return ((await res.json()) as { connections: ServerSideConnection[] }).connections;
  }

  /** The subjects the server has for the connection named `name`; undefined when there is no such connection. */
  async function subjectsOf(name: string): Promise<string[] | undefined> {
    const named = (await connz()).filter((c) => c.name === name);
    if (named.length > 1) throw new Error(`${named.length} connections named "${name}"`);
    return named[0] ? [...(named[0].subscriptions_list ?? [])].sort() : undefined;
  }

  beforeAll(async () => {
    monitorPort = await freePort();
    // The monitoring endpoint is where the server says which connection holds which subscription.
    nats = await NatsServer.start({ jetstream: false, args: ['-m', String(monitorPort)] });
    await waitUntil(() => connz().then(Array.isArray, () => false), 'nats-server monitoring endpoint');
  });

  afterEach(async () => {
    await Promise.all(buses.map((b) => b.close()));
    buses = [];
  });

  afterAll(async () => {
    await nats?.dispose();
  });

  it('a subscription on a named consumer gets a NATS connection of its own, and receives and replies on it', async () => {
    const bus = await makeBus('cons-named');
    const got: Array<[unknown, MessageContext]> = [];
    const audit = await bus.subscribe('c.named.audit', (p, ctx) => void got.push([p, ctx]), { consumer: 'audit' });
    await bus.subscribe('c.named.rpc', (p: { n: number }) => ({ n: p.n + 1 }), { consumer: 'audit' });
    const plain = await bus.subscribe('c.named.default', () => undefined);
    expect(audit.consumer).toBe('audit');
    expect(plain.consumer).toBe('default');

    const conns = bus.connections();
    expect([...conns.keys()].sort()).toEqual(['consumer:audit', 'consumer:default', 'producer']);
    expect(conns.get('consumer:audit')!.isConnected).toBe(true);
    // Three clients to the server, not one connection under three names.
    expect(new Set([...conns.values()].map((c) => c.serverInfo?.client_id)).size).toBe(3);
    // The server holds each subscription on the connection of its consumer, named after it.
    expect(await subjectsOf('cons-named:audit')).toEqual(['c.named.audit', 'c.named.rpc']);
    expect(await subjectsOf('cons-named:default')).toEqual(['c.named.default']);
    expect(await subjectsOf('cons-named')).toEqual([]); // the producer

    await bus.publish('c.named.audit', { n: 1 });
    await waitUntil(() => got.length === 1, 'message on the named consumer');
    expect(got[0][0]).toEqual({ n: 1 });
    expect(got[0][1]).toMatchObject({ subject: 'c.named.audit', recovered: false });
    expect(await bus.rpcRequest('c.named.rpc', { n: 41 }, { timeout: 5000 })).toEqual({ n: 42 });
  });

  it("addConsumer applies its own NATS options over the bus's, and connects at once", async () => {
    const bus = await makeBus('cons-add');
    await bus.addConsumer('reports', { name: 'reports-connection' });
    // Connected before any subscription uses it, with the name given, on the bus's servers.
    expect(bus.connections().get('consumer:reports')?.isConnected).toBe(true);
    expect(await subjectsOf('reports-connection')).toEqual([]);
    expect(await subjectsOf('cons-add:reports')).toBeUndefined();

    const got: unknown[] = [];
    const sub = await bus.subscribe('c.add.reports', (p) => void got.push(p), { consumer: 'reports' });
    expect(sub.consumer).toBe('reports');
    expect(await subjectsOf('reports-connection')).toEqual(['c.add.reports']);
    expect(bus.connections().has('consumer:default')).toBe(false);
    await bus.publish('c.add.reports', { report: 'r1' });
    await waitUntil(() => got.length === 1, 'message on the added consumer');
    expect(got).toEqual([{ report: 'r1' }]);
  });

  it('@Subscribe(topic, { consumer }) subscribes on that consumer, in a Nest app', async () => {
    nestSeen.length = 0;
    @Module({
      imports: [EventBusModule.forRoot({ nats: { servers: nats.url, name: 'cons-nest' }, health: { enabled: false } })],
      providers: [AuditHandlers],
    })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app: INestApplication = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      expect([...bus.connections().keys()].sort()).toEqual(['consumer:default', 'consumer:nest-audit', 'producer']);
      expect(await subjectsOf('cons-nest:nest-audit')).toEqual(['c.nest.audit']);
      expect(await subjectsOf('cons-nest:default')).toEqual(['c.nest.plain']);
      await bus.publish('c.nest.audit', { a: 1 });
      await waitUntil(() => nestSeen.length === 1, 'message to the @Subscribe method on the named consumer');
      expect(nestSeen).toEqual([{ where: 'audit', payload: { a: 1 } }]);
    } finally {
      await app.close();
    }
  });

  it('after unsubscribe() resolves, the handler gets nothing more; another subscription on the topic still does', async () => {
    const bus = await makeBus('cons-unsub');
    const leaving: number[] = [];
    const staying: number[] = [];
    // Both on the default consumer: unsubscribing one must not take the connection's other subscription with it.
    const sub = await bus.subscribe('c.unsub', (p: { i: number }) => void leaving.push(p.i));
    await bus.subscribe('c.unsub', (p: { i: number }) => void staying.push(p.i));
    await bus.publish('c.unsub', { i: 0 });
    await waitUntil(() => leaving.length === 1 && staying.length === 1, 'both subscriptions receive before unsubscribe');

    await sub.unsubscribe();
    for (let i = 1; i <= 20; i++) await bus.publish('c.unsub', { i });
    await bus.connections().get('producer')!.flush();
    await waitUntil(() => staying.length === 21, 'the other subscription receives every message');
    // A round trip on the shared connection: anything the server sent for the old subscription has arrived by now.
    await bus.connections().get('consumer:default')!.flush();
    expect(leaving).toEqual([0]);
    expect(staying).toEqual(Array.from({ length: 21 }, (_, i) => i));
    expect(await subjectsOf('cons-unsub:default')).toEqual(['c.unsub']);
  });

  it('unsubscribe() lets an in-flight handler finish, and its reply go out, before it resolves', async () => {
    const bus = await makeBus('cons-inflight');
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const order: string[] = [];
    let started = 0;
    const sub = await bus.subscribe(
      'c.inflight',
      async (p: { n: number }) => {
        started++;
        await gate;
        order.push('handler finished');
        return { n: p.n + 1 };
      },
      { consumer: 'slow' },
    );
    const reply = bus.rpcRequest('c.inflight', { n: 41 }, { timeout: 10_000 });
    await waitUntil(() => started === 1, 'handler started');

    const stopped = sub.unsubscribe().then(() => void order.push('unsubscribe resolved'));
    try {
      await sleep(300);
      expect(order).toEqual([]); // still waiting for the handler
    } finally {
      // Released on failure too, so closing the bus does not wait out the shutdown timeout.
      release();
    }
    await stopped;
    expect(order).toEqual(['handler finished', 'unsubscribe resolved']);
    expect(await reply).toEqual({ n: 42 });

    // Nothing listens on the topic any more; the consumer's connection stays open for others.
    const after = await bus.rpcRequest('c.inflight', { n: 0 }, { timeout: 2000 }).catch((e: unknown) => e);
    expect(after).toBeInstanceOf(NoRespondersError);
    expect(started).toBe(1);
    expect(bus.connections().get('consumer:slow')!.isConnected).toBe(true);
    expect(await subjectsOf('cons-inflight:slow')).toEqual([]);
  });
});
