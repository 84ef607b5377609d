import { EventBus, NotConnectedError } from '../../lib';
import { captureLogs } from '../harness/log-capture';
import { freePort, NatsServer } from '../harness/local-servers';
import { sleep, waitUntil } from '../harness/wait';

// Issue 19, item 6: a service started before NATS waits for it (bounded by firstConnectTimeoutMs)
// instead of dying at once; what retrying cannot mend still fails at once.
describe('first connect: waiting for a NATS that starts late', () => {
  const servers: NatsServer[] = [];
  const buses: EventBus[] = [];

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.dispose()));
  });

  const busOn = (port: number, firstConnectTimeoutMs?: number) => {
    const bus = new EventBus({
      nats: { servers: `nats://127.0.0.1:${port}`, reconnectTimeWait: 200, reconnectJitter: 0 },
      firstConnectTimeoutMs,
    });
    buses.push(bus);
    return bus;
  };

  it('connects once the server comes up 1.5 s later, and then works; the wait is logged once', async () => {
    const logs = captureLogs();
    try {
      const port = await freePort();
      const bus = busOn(port, 10_000);
      let connected = false;
      const connecting = bus.connect().then(() => (connected = true));
      await sleep(1500);
      expect(connected).toBe(false);
      servers.push(await NatsServer.start({ port, jetstream: false }));
      await connecting;
      const got: unknown[] = [];
      await bus.subscribe('late.hello', (p) => void got.push(p));
      await bus.publish('late.hello', { n: 1 });
      await waitUntil(() => got.length === 1, 'delivery after a late start');
      expect(logs.matching(/NATS is not reachable yet.*trying again for up to 10000 ms/).length).toBe(1);
    } finally {
      logs.restore();
    }
  });

  it('gives up after firstConnectTimeoutMs with NotConnectedError naming the address tried and the option', async () => {
    const port = await freePort();
    const bus = busOn(port, 1000);
    const started = Date.now();
    const err = await bus.connect().catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(NotConnectedError);
    expect((err as Error).message).toBe(
      `could not connect to NATS at nats://127.0.0.1:${port} (option "nats.servers"): connection refused`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(600);
    expect(elapsed).toBeLessThan(3000);
  });

  it('names every server tried, without the credentials in their URLs', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const bus = new EventBus({
      nats: { servers: [`nats://app:s3cret@127.0.0.1:${a}`, `127.0.0.1:${b}`], pass: 'other-secret' },
      firstConnectTimeoutMs: 0,
    });
    buses.push(bus);
    const err = (await bus.connect().catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NotConnectedError);
    expect(err.message).toContain(`at nats://***@127.0.0.1:${a}, 127.0.0.1:${b} (option "nats.servers")`);
    expect(err.message).not.toMatch(/s3cret|other-secret|app:/);
  });

  it('firstConnectTimeoutMs: 0 tries once and fails at once', async () => {
    const bus = busOn(await freePort(), 0);
    const started = Date.now();
    await expect(bus.connect()).rejects.toBeInstanceOf(NotConnectedError);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('close() while the first connect is waiting stops it: connect rejects, nothing connects later', async () => {
    const port = await freePort();
    const bus = busOn(port, 20_000);
    const connecting = bus.connect().catch((e: unknown) => e);
    await sleep(500);
    const started = Date.now();
    await bus.close();
    expect(await connecting).toBeInstanceOf(NotConnectedError);
    expect(Date.now() - started).toBeLessThan(2000);
    const server = await NatsServer.start({ port, jetstream: false });
    servers.push(server);
    await sleep(600);
    expect([...bus.connections().values()].every((c) => !c.isConnected)).toBe(true);
  });

  it('refuses a firstConnectTimeoutMs that is not a whole number of ms from 0', () => {
    expect(() => busOn(4222, -1)).toThrow(/firstConnectTimeoutMs/);
    expect(() => busOn(4222, 1.5)).toThrow(/firstConnectTimeoutMs/);
  });
});
