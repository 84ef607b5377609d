import { connect } from '@nats-io/transport-node';
import { NatsCluster, NatsServer, requireBinary } from './local-servers';

describe('server launcher', () => {
  it.each([
    ['nats-server', 'apt-get update && apt-get install -y nats-server'],
    ['redis-server', 'apt-get update && apt-get install -y redis-server'],
  ])('fails with the install command when %s is missing', (name, hint) => {
    expect(() => requireBinary(name, ['/nonexistent'])).toThrow(`${name} was not found`);
    expect(() => requireBinary(name, ['/nonexistent'])).toThrow(hint);
  });

  it('finds the real binaries on this machine', () => {
    expect(requireBinary('nats-server')).toMatch(/nats-server$/);
    expect(requireBinary('redis-server')).toMatch(/redis-server$/);
  });

  it('starts, stops and restarts a server on the same port', async () => {
    const nats = await NatsServer.start();
    try {
      const port = nats.port;
      expect(nats.running).toBe(true);
      await nats.stop();
      expect(nats.running).toBe(false);
      await nats.start();
      expect(nats.port).toBe(port);
      expect(nats.running).toBe(true);
    } finally {
      await nats.dispose();
    }
  });

  it('starts a 3-node JetStream cluster, finds a stream leader by name, survives killing it', async () => {
    const cluster = await NatsCluster.start({ size: 3, jetstream: true });
    const nc = await connect({ servers: cluster.urls, reconnectTimeWait: 100 });
    try {
      expect(cluster.nodes.map((n) => n.serverName)).toEqual(['n0', 'n1', 'n2']);
      expect(['n0', 'n1', 'n2']).toContain(await cluster.metaLeader());
      // An R3 stream can only be created once the meta group has a leader (start waited for it).
      const created = await nc.request(
        '$JS.API.STREAM.CREATE.HARNESS',
        JSON.stringify({ name: 'HARNESS', subjects: ['harness.>'], num_replicas: 3 }),
        {
          timeout: 10_000,
        },
      );
      expect(created.json<{ config?: { num_replicas: number }; error?: unknown }>()).toMatchObject({ config: { num_replicas: 3 } });
      let leader: string | undefined;
      const deadline = Date.now() + 15_000;
      while (!(leader = await cluster.streamLeader('HARNESS')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(['n0', 'n1', 'n2']).toContain(leader);

      const killed = await cluster.kill(leader!);
      expect(killed.running).toBe(false);
      expect(killed).toBe(cluster.byName(leader!));
      let next: string | undefined;
      const until = Date.now() + 20_000;
      while ((!(next = await cluster.streamLeader('HARNESS')) || next === leader) && Date.now() < until)
        await new Promise((r) => setTimeout(r, 200));
      expect(next).toBeDefined();
      expect(next).not.toBe(leader);

      // Its store is kept: it comes back and rejoins.
      await killed.start();
      await cluster.waitForRoutes();
      await cluster.waitForJetStream();
      await expect(cluster.kill('n9')).rejects.toThrow('no node named n9');
    } finally {
      await nc.close();
      await cluster.dispose();
    }
  });
});
