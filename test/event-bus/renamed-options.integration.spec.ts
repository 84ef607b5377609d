import { EventBus, DEFAULT_CONNECTION, DEFAULT_CONSUMER, InvalidOptionsError, RpcTimeoutError } from '../../lib';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import { NatsServer } from '../harness/local-servers';
import { waitUntil } from '../harness/wait';

// Options renamed for their unit or their meaning (issue 28): the new name and the deprecated one
// both work, and both given with different values is an InvalidOptionsError naming the new one.
describe('renamed options and their deprecated names, against a real nats-server', () => {
  let nats: NatsServer;
  const buses: EventBus[] = [];

  async function makeBus(extra: Record<string, unknown> = {}): Promise<EventBus> {
    const bus = new EventBus({ nats: { servers: nats.url }, ...extra });
    buses.push(bus);
    await bus.connect();
    return bus;
  }

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false });
  });
  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close()));
    await nats?.dispose();
  });

  it('largeMessageThresholdBytes and largeMessageThreshold both set the threshold; differing values are refused', async () => {
    expect((await makeBus({ largeMessageThresholdBytes: 4096 })).offloadThreshold).toBe(4096);
    expect((await makeBus({ largeMessageThreshold: 5000 })).offloadThreshold).toBe(5000);
    expect((await makeBus({ largeMessageThresholdBytes: 6000, largeMessageThreshold: 6000 })).offloadThreshold).toBe(6000);
    const both = () => new EventBus({ nats: { servers: nats.url }, largeMessageThresholdBytes: 4096, largeMessageThreshold: 8192 });
    expect(both).toThrow(InvalidOptionsError);
    expect(both).toThrow(/largeMessageThresholdBytes.*largeMessageThreshold.*4096 and 8192/);
  });

  it('rpcRequest takes timeoutMs, and the deprecated timeout; both differing is refused', async () => {
    // Closing does not wait long for the handler below, which never finishes.
    const bus = await makeBus({ shutdownTimeoutMs: 200 });
    // A responder that never answers: the request ends with the timeout it was given.
    await bus.subscribe('renamed.slow', () => new Promise(() => undefined));
    await expect(bus.rpcRequest('renamed.slow', {}, { timeoutMs: 150 })).rejects.toMatchObject({ timeoutMs: 150 });
    await expect(bus.rpcRequest('renamed.slow', {}, { timeout: 160 })).rejects.toBeInstanceOf(RpcTimeoutError);
    await expect(bus.rpcRequest('renamed.slow', {}, { timeout: 170 })).rejects.toMatchObject({ timeoutMs: 170 });
    await expect(bus.rpcRequest('renamed.slow', {}, { timeoutMs: 100, timeout: 200 })).rejects.toMatchObject({
      name: 'InvalidOptionsError',
      option: 'timeoutMs',
    });
    await expect(bus.rpcRequest('renamed.slow', {}, { timeout: -1 })).rejects.toMatchObject({ option: 'timeout' });
  });

  it('a named connection: addConnection and { connection }, or the deprecated addConsumer and { consumer }', async () => {
    const bus = await makeBus();
    expect(DEFAULT_CONSUMER).toBe(DEFAULT_CONNECTION);
    await bus.addConnection('audit', { name: 'renamed-audit' });
    await bus.addConsumer('legacy');
    const viaNew = await bus.subscribe('renamed.a', () => undefined, { connection: 'audit' });
    const viaOld = await bus.subscribe('renamed.b', () => undefined, { consumer: 'legacy' });
    const plain = await bus.subscribe('renamed.c', () => undefined);
    expect([viaNew.connection, viaNew.consumer]).toEqual(['audit', 'audit']);
    expect([viaOld.connection, viaOld.consumer]).toEqual(['legacy', 'legacy']);
    expect(plain.connection).toBe(DEFAULT_CONNECTION);
    expect([...bus.connections().keys()].sort()).toEqual(['consumer:audit', 'consumer:default', 'consumer:legacy', 'producer']);
    // Each connection is a NATS connection of its own: a message published reaches the one that named it.
    const got: unknown[] = [];
    await bus.subscribe('renamed.d', (p: unknown) => void got.push(p), { connection: 'audit', consumer: 'audit' });
    await bus.publish('renamed.d', { n: 1 });
    await waitUntil(() => got.length === 1, 'the message on the audit connection');
    expect(got).toEqual([{ n: 1 }]);
    await expect(bus.subscribe('renamed.e', () => undefined, { connection: 'audit', consumer: 'legacy' })).rejects.toMatchObject({
      name: 'InvalidOptionsError',
      option: 'connection',
    });
    await expect(bus.addConnection('')).rejects.toBeInstanceOf(InvalidOptionsError);
  });

  it('the microservices transport and client take largeMessageThresholdBytes, and refuse it differing from the deprecated name', () => {
    const nestNats = { servers: [nats.url] };
    expect(() => new EventBusTransport({ nats: nestNats, largeMessageThresholdBytes: 4096 })).not.toThrow();
    expect(() => new EventBusClientProxy({ nats: nestNats, largeMessageThreshold: 4096 })).not.toThrow();
    expect(() => new EventBusTransport({ nats: nestNats, largeMessageThresholdBytes: 4096, largeMessageThreshold: 1 })).toThrow(
      InvalidOptionsError,
    );
    expect(() => new EventBusClientProxy({ nats: nestNats, largeMessageThresholdBytes: 4096, largeMessageThreshold: 1 })).toThrow(
      /largeMessageThresholdBytes/,
    );
  });
});
