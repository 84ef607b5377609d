import { NatsServer, requireBinary } from './local-servers';

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
});
