import { connect, NatsConnection } from '@nats-io/transport-node';
import { BusConnection, ConnectionState } from '../../lib/nats/bus-connection';
import { NotConnectedError } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { sc } from '../harness/text-codec';
import { waitUntil } from '../harness/wait';

// The connection's state machine against a real nats-server that is stopped and restarted.
describe('BusConnection states: new → connected → reconnecting → settling → connected → closed', () => {
  let nats: NatsServer;
  let raw: NatsConnection | undefined;

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false });
  });

  afterAll(async () => {
    await raw?.close().catch(() => undefined);
    await nats?.dispose();
  });

  it('holds publishes while the server is away and sends them, in order, once it is back', async () => {
    const conn = new BusConnection('state-test', { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 50 });
    const seen: ConnectionState[] = [conn.state];
    expect(() => conn.publish('x', sc.encode('1'))).toThrow(NotConnectedError);
    await conn.connect();
    seen.push(conn.state);
    expect(conn.isConnected).toBe(true);

    await nats.stop();
    await waitUntil(() => conn.state === 'reconnecting', 'reconnecting after the server stopped');
    seen.push(conn.state);
    expect(conn.isConnected).toBe(false);
    for (let i = 0; i < 5; i++) conn.publish('held.topic', sc.encode(String(i)));

    await nats.start();
    // A subscriber on its own connection, as the bus's consumers are.
    raw = await connect({ servers: nats.url });
    const got: string[] = [];
    raw.subscribe('held.topic', { callback: (_e, m) => void got.push(sc.decode(m.data)) });
    await raw.flush();
    await waitUntil(() => conn.state === 'settling' || conn.state === 'connected', 'reconnected');
    seen.push('settling');
    await waitUntil(() => conn.state === 'connected', 'settled');
    seen.push(conn.state);
    await waitUntil(() => got.length === 5, 'the held publishes');
    expect(got).toEqual(['0', '1', '2', '3', '4']);

    await conn.drain(2000);
    seen.push(conn.state);
    expect(seen).toEqual(['new', 'connected', 'reconnecting', 'settling', 'connected', 'closed']);
    expect(conn.isConnected).toBe(false);
    expect(() => conn.publish('x', sc.encode('1'))).toThrow(NotConnectedError);
  });

  it('drain while the server is away discards what was held, and still closes', async () => {
    const conn = new BusConnection('drain-away', { servers: nats.url, reconnectTimeWait: 100, reconnectJitter: 50 });
    await conn.connect();
    await nats.stop();
    await waitUntil(() => conn.state === 'reconnecting', 'reconnecting');
    conn.publish('lost.topic', sc.encode('x'));
    await conn.drain(500);
    expect(conn.state).toBe('closed');
    await nats.start();
  });
});
