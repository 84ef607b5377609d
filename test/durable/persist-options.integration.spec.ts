import { connect, NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { InvalidOptionsError } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { bigPayload, MiB, sleep } from '../harness/wait';

// Options of a persisted publish that would reach the wire changed, or not at all, are refused at once.
describe('persisted publish options (msgId)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let jsm: JetStreamManager;
  const buses = new TestBuses();

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    jsm = await jetstreamManager(raw);
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    await raw?.close();
    await Promise.all([nats?.dispose(), redis?.stop()]);
  });

  const stored = async (stream: string) => (await jsm.streams.info(stream)).state.messages;
  const keys = (prefix: string) => redis.cli('--scan', '--pattern', `${prefix}*`).split('\n').filter(Boolean);

  it('a msgId with a lone surrogate, surrounding whitespace, CR/LF or another control character is InvalidOptionsError at once; nothing is published or stored', async () => {
    await jsm.streams.add({ name: 'PO_IDS', subjects: ['poi.>'], max_age: 3600 * 1e9 });
    const { bus } = await buses.withRedis(nats.url, redis.url, 'po1:');
    const bad = ['id\ud800', 'id\udc00', ' id', 'id ', 'id\t', 'a\r\nb', 'a\u0000b', 'a\u007fb'];
    for (const msgId of bad) {
      const err = await bus.publish('poi.a', { msgId }, { persist: true, msgId }).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.option).toBe('msgId');
      // Large too: refused before its body is stored.
      await expect(bus.publish('poi.a', bigPayload(2 * MiB), { persist: true, msgId })).rejects.toThrow(InvalidOptionsError);
    }
    await sleep(100);
    expect(await stored('PO_IDS')).toBe(0);
    expect(keys('po1:')).toEqual([]);

    // Ids that differ inside (a space, a paired surrogate) stay distinct messages.
    expect(await bus.publish('poi.a', {}, { persist: true, msgId: 'a b' })).toMatchObject({ duplicate: false });
    expect(await bus.publish('poi.a', {}, { persist: true, msgId: 'a\u00a0b' })).toMatchObject({ duplicate: false });
    expect(await bus.publish('poi.a', {}, { persist: true, msgId: 'id\ud83d\ude00' })).toMatchObject({ duplicate: false });
    expect(await stored('PO_IDS')).toBe(3);
  });
});
