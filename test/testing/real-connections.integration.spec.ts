import { EventBus } from '../../lib';
import { InProcessBroker } from '../../lib/testing';
import { NatsServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { waitUntil } from '../harness/wait';

// nats.js keeps one process-wide transport factory: an in-process broker in the same process must
// leave real connections as they were, through their first connect and through a reconnect.

describe('in-process broker beside a real server', () => {
  let nats: NatsServer;
  let broker: InProcessBroker;
  const buses: EventBus[] = [];
  let logs: LogCapture;

  beforeAll(async () => {
    // The restart's disconnect and reconnect lines are expected; kept out of the test output.
    logs = captureLogs();
    nats = await NatsServer.start({ jetstream: false });
    broker = new InProcessBroker();
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close()));
    broker.close();
    await nats.dispose();
    logs.restore();
  });

  it('a real bus and an in-process bus, connected at the same time, each reach only their own server', async () => {
    const real = new EventBus({ nats: { servers: nats.url } });
    const local = new EventBus({ nats: { servers: broker.url } });
    buses.push(real, local);
    await Promise.all([real.connect(), local.connect()]);
    await real.subscribe('where', () => 'real');
    await local.subscribe('where', () => 'in-process');
    await expect(real.rpcRequest('where', {})).resolves.toBe('real');
    await expect(local.rpcRequest('where', {})).resolves.toBe('in-process');
    expect(real.connections().get('producer')!.server).toContain('127.0.0.1');
    expect(local.connections().get('producer')!.server).toContain(broker.hostname);
  });

  it('the real bus reconnects over a socket after its server restarts', async () => {
    const real = new EventBus({ nats: { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 0 } });
    buses.push(real);
    await real.connect();
    await real.subscribe('again', () => 'yes');
    await nats.restart();
    await waitUntil(
      async () => (await real.rpcRequest('again', {}, { timeout: 500 }).catch(() => 'no')) === 'yes',
      'answer after restart',
      20_000,
    );
  });
});
