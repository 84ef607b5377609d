import { connect, NatsConnection } from '@nats-io/transport-node';
import { JetStreamLink } from '../../lib/nats/jetstream';
import { NatsServer } from '../harness/local-servers';

// JetStreamLink against a real nats-server with JetStream: what instances of one service do when
// they start at the same moment.
describe('JetStreamLink', () => {
  let nats: NatsServer;
  const connections: NatsConnection[] = [];

  beforeAll(async () => {
    nats = await NatsServer.start();
    for (let i = 0; i < 8; i++) connections.push(await connect({ servers: nats.url }));
  });
  afterAll(async () => {
    await Promise.all(connections.map((c) => c.close()));
    await nats?.dispose();
  });

  it('instances ensuring the same new stream and durable at the same moment all succeed', async () => {
    const links = await Promise.all(connections.map((c) => JetStreamLink.open(c, 5000)));
    const failures: string[] = [];
    for (let round = 0; round < 60; round++) {
      const spec = { name: `RACE${round}`, subjects: [`race${round}.>`], maxAgeSeconds: 60 };
      const streams = await Promise.allSettled(links.map((l) => l.ensureStream(spec)));
      const consumers = await Promise.allSettled(
        links.map((l) => l.ensureConsumer({ stream: spec.name, durable: 'together', filterSubject: `race${round}.x`, ackWaitMs: 30_000 })),
      );
      for (const r of [...streams, ...consumers]) if (r.status === 'rejected') failures.push(String(r.reason));
    }
    expect(failures).toEqual([]);
  });
});
