import { Worker } from 'node:worker_threads';
import Redis from 'ioredis';
import { InvalidOptionsError, RedisStorageManager } from '../../lib';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, sha256, sleep, waitUntil } from '../harness/wait';

// Issue 26 item 19: a Nest subscriber beside a Python one, which GETs a stored body and then DELs
// it. When our subscriber's event loop is busy for the few ms in which the Python service reads,
// its recovery finds the key gone; the shadow copy that this library keeps in legacy mode
// (keyPrefix '') is what it falls back to. Real nats-server and Redis; the Python peer runs on a
// thread of its own, as a remote service runs on its own CPU.
describe('legacy mode: a shadow copy the Python services do not know (issue 26 item 19)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis;
  let logs: LogCapture;
  const buses = new TestBuses();

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  /**
   * The Python subscriber on a worker thread: GET the bare token, then DEL it, and count it in
   * `deleted` (shared memory, so the test thread can wait for it while its own event loop is blocked).
   */
  async function deleteOnReadPeer(subject: string) {
    const deleted = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const { connect } = require(workerData.nats);
      const Redis = require(workerData.ioredis);
      (async () => {
        const nc = await connect({ servers: workerData.natsUrl });
        const redis = new Redis(workerData.redisUrl);
        const deleted = new Int32Array(workerData.deleted);
        nc.subscribe(workerData.subject, { callback: async (_e, m) => {
          const { token } = JSON.parse(m.string());
          const body = await redis.getBuffer(token);
          await redis.del(token);
          parentPort.postMessage({ read: body ? body.length : 0 });
          Atomics.add(deleted, 0, 1);
          Atomics.notify(deleted, 0);
        } });
        await nc.flush();
        parentPort.postMessage('ready');
      })();
      `,
      {
        eval: true,
        workerData: {
          nats: require.resolve('@nats-io/transport-node'),
          ioredis: require.resolve('ioredis'),
          natsUrl: nats.url,
          redisUrl: redisServer.url,
          subject,
          deleted: deleted.buffer,
        },
      },
    );
    const reads: number[] = [];
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m) => (m === 'ready' ? resolve() : reads.push(m.read)));
      worker.on('error', reject);
    });
    return {
      reads,
      /** Block this thread (its event loop too, as a busy handler does) until the peer deleted `n` bodies. */
      blockUntilDeleted: (n: number) => {
        const until = Date.now() + 3000;
        for (let seen = Atomics.load(deleted, 0); seen < n && Date.now() < until; seen = Atomics.load(deleted, 0)) {
          Atomics.wait(deleted, 0, seen, until - Date.now());
        }
        return Atomics.load(deleted, 0);
      },
      stop: () => worker.terminate(),
    };
  }

  const bodies = [0, 1].map((i) => ({ i, text: String(i).repeat(1.5 * MiB) }));

  it('a busy subscriber whose event loop is held while the Python peer GETs and DELs still gets every body, from the shadow copy', async () => {
    const { bus: subscriber } = await buses.withRedis(nats.url, redisServer.url, '');
    const got: Array<{ i: number; sha: string }> = [];
    await subscriber.subscribe(
      'shadow.fanout',
      async (p: { i: number; text: string }) => {
        got.push({ i: p.i, sha: sha256(p.text) });
        await sleep(1500);
      },
      { maxConcurrent: 1 },
    );
    const peer = await deleteOnReadPeer('shadow.fanout');
    const { bus: publisher } = await buses.withRedis(nats.url, redisServer.url, '');
    logs.clear();
    try {
      for (const [n, body] of bodies.entries()) {
        await publisher.publish('shadow.fanout', body);
        // Busy for as long as the Python service takes to GET and DEL (the "few milliseconds").
        expect(peer.blockUntilDeleted(n + 1)).toBe(n + 1);
      }
      await waitUntil(() => got.length === bodies.length, 'both bodies handled', 5000).catch(() => undefined);
      expect(peer.reads).toEqual(bodies.map((b) => b.text.length + '{"i":0,"text":""}'.length));
      expect(got.map((g) => g.i)).toEqual([0, 1]);
      expect(got.map((g) => g.sha)).toEqual(bodies.map((b) => sha256(b.text)));
      expect(logs.matching(/not found/)).toEqual([]);
    } finally {
      await peer.stop();
    }
  });

  it('the shadow key is <token> under eventbus:shadow:, with the body and the TTL of the key itself; legacyShadowCopy: false writes none', async () => {
    const { storage } = await buses.withRedis(nats.url, redisServer.url, '');
    const envelope = await storage.storeMessage(Buffer.from('x'.repeat(1000)));
    const shadow = `eventbus:shadow:{${envelope.token}}`;
    expect((await redis.getBuffer(shadow))?.toString()).toBe('x'.repeat(1000));
    const [ttl, shadowTtl] = await Promise.all([redis.ttl(envelope.token), redis.ttl(shadow)]);
    expect(ttl).toBeGreaterThan(290);
    expect(Math.abs(shadowTtl - ttl)).toBeLessThanOrEqual(1);
    // Deleting a body (a failed publish, a reply read) deletes both.
    await storage.deleteMessage(envelope);
    expect(await redis.exists(envelope.token, shadow)).toBe(0);

    const plain = new RedisStorageManager(redis, { keyPrefix: '', legacyShadowCopy: false });
    const none = await plain.storeMessage(Buffer.from('y'));
    expect(await redis.exists(`eventbus:shadow:{${none.token}}`)).toBe(0);
    await redis.del(none.token);
  });

  it('what it costs: Redis used_memory for 20 bodies of 1 MiB, with and without the shadow copy', async () => {
    const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    const measure = async (legacyShadowCopy: boolean) => {
      await redis.flushall();
      const before = await usedMemory();
      const storage = new RedisStorageManager(redis, { keyPrefix: '', legacyShadowCopy });
      for (let i = 0; i < 20; i++) await storage.storeMessage(Buffer.alloc(MiB, 97 + i));
      return (await usedMemory()) - before;
    };
    const without = await measure(false);
    const withShadow = await measure(true);
    await redis.flushall();
    process.stdout.write(`used_memory for 20 x 1 MiB: ${without} bytes without the shadow copy, ${withShadow} with it\n`);
    expect(without).toBeGreaterThan(20 * MiB);
    expect(withShadow / without).toBeGreaterThan(1.75);
    expect(withShadow / without).toBeLessThan(2.1);
  });

  it('legacyShadowCopy applies to keyPrefix "" only, and must be a boolean', () => {
    const err = (() => {
      try {
        return new RedisStorageManager(redis, { keyPrefix: 'eventbus:', legacyShadowCopy: true });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe('storage.legacyShadowCopy');
    expect(() => new RedisStorageManager(redis, { keyPrefix: '', legacyShadowCopy: 'yes' as unknown as boolean })).toThrow(
      /storage\.legacyShadowCopy/,
    );
    expect(new RedisStorageManager(redis, { keyPrefix: '' }).legacyShadowCopy).toBe(true);
    expect(new RedisStorageManager(redis).legacyShadowCopy).toBe(false);
  });
});
