import Redis from 'ioredis';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, REDIS_CLIENT_DEFAULTS, RedisStorageManager, RemoteHandlerError } from '../../lib';
import { TestBuses } from '../harness/buses';
import { captureLogs } from '../harness/log-capture';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, sha256, sleep, waitUntil } from '../harness/wait';

// Issue 20: beside the original Python services, on real servers. Their storage manager deletes a
// stored body when it reads it, and their NATS client reads no headers.
describe('mixed fleets: running beside the Python services (legacy keyPrefix "")', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let raw: NatsConnection;
  let redis: Redis;
  const buses = new TestBuses();

  const unshadowed: RedisStorageManager[] = [];

  async function makeBus(opts: { recoverOnReceipt?: boolean; legacyShadowCopy?: boolean } = {}) {
    const { legacyShadowCopy, ...busOptions } = opts;
    if (legacyShadowCopy === undefined) return (await buses.withRedis(nats.url, redisServer.url, '', busOptions)).bus;
    const storage = new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: '', legacyShadowCopy });
    unshadowed.push(storage);
    await storage.connect();
    const bus = buses.track(new EventBus({ nats: { servers: nats.url }, ...busOptions }, storage));
    await bus.connect();
    return bus;
  }

  /**
   * The Python service is another process, with its own CPU: here it shares this test's one event
   * loop with the publisher and the subscriber, where parsing or hashing a 1.5 MiB body elsewhere
   * can hold our subscriber's callback for milliseconds while the peer's GET and DEL go through
   * (that failed about one run in ten). Its GET therefore leaves a few ms after the envelope
   * arrives, as a remote service's would; bodies that wait for a handler slot still wait hundreds of ms.
   */
  const PEER_LATENCY_MS = 10;

  /** What the Python subscriber did with a stored message: GET the bare token, then DEL it. */
  function deleteOnReadPeer(subject: string): { reads: number; stop: () => void } {
    const state = { reads: 0, stop: () => sub.unsubscribe() };
    const sub = raw.subscribe(subject, {
      callback: (_e, m) => {
        const envelope = JSON.parse(m.string()) as { token: string; is_stored: boolean };
        setTimeout(() => {
          void redis.getBuffer(envelope.token).then(async (body) => {
            if (body) state.reads++;
            await redis.del(envelope.token);
          });
        }, PEER_LATENCY_MS);
      },
    });
    return state;
  }

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
    redis = new Redis(redisServer.url);
  });

  afterAll(async () => {
    await buses.closeAll();
    await Promise.all(unshadowed.map((s) => s.disconnect()));
    redis?.disconnect();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  const bodies = [0, 1, 2, 3, 4].map((i) => ({ i, text: String(i).repeat(1.5 * MiB) }));

  /** A subscriber (by default busy: one handler at a time, 300 ms each) in a fan-out with a delete-on-read peer. */
  async function fanOutWithPythonPeer(subject: string, subscriber: EventBus, maxConcurrent = 1, publisher?: EventBus) {
    const got: Array<{ i: number; sha: string }> = [];
    await subscriber.subscribe(
      subject,
      async (p: { i: number; text: string }) => {
        got.push({ i: p.i, sha: sha256(p.text) });
        await sleep(300);
      },
      { maxConcurrent },
    );
    const peer = deleteOnReadPeer(subject);
    await raw.flush();
    publisher ??= await makeBus();
    // All at once: the envelopes arrive before the first body is back (no body size learnt yet).
    await Promise.all(bodies.map((b) => publisher.publish(subject, b)));
    await waitUntil(() => peer.reads === bodies.length, 'the Python peer read (and deleted) every body');
    // The last one is handled after 4 x 300 ms; give it time either way.
    await sleep(1800);
    peer.stop();
    return got;
  }

  it('in legacy mode a busy subscriber recovers every body on receipt, before the Python peer deletes it', async () => {
    const logs = captureLogs();
    try {
      const got = await fanOutWithPythonPeer('py.fanout.on', await makeBus());
      got.sort((a, b) => a.i - b.i);
      expect(got.map((g) => g.i)).toEqual([0, 1, 2, 3, 4]);
      expect(got.map((g) => g.sha)).toEqual(bodies.map((b) => sha256(b.text)));
      expect(logs.matching(/not found/)).toEqual([]);
    } finally {
      logs.restore();
    }
  });

  it('in legacy mode an idle subscriber (free handler slots) also recovers every body of a burst', async () => {
    const logs = captureLogs();
    try {
      const got = await fanOutWithPythonPeer('py.fanout.idle', await makeBus(), 64);
      expect(got.map((g) => g.i).sort()).toEqual([0, 1, 2, 3, 4]);
      expect(logs.matching(/not found/)).toEqual([]);
    } finally {
      logs.restore();
    }
  });

  it('without recovery on receipt and without the shadow copy, the same busy subscriber loses the bodies the peer deleted while it waited (the hazard is real)', async () => {
    const logs = captureLogs();
    try {
      const subscriber = await makeBus({ recoverOnReceipt: false, legacyShadowCopy: false });
      const got = await fanOutWithPythonPeer('py.fanout.off', subscriber, 1, await makeBus({ legacyShadowCopy: false }));
      expect(got.length).toBeLessThan(bodies.length);
      expect(logs.matching(/could not recover message on "py\.fanout\.off".*not found/).length).toBe(bodies.length - got.length);
    } finally {
      logs.restore();
    }
  });

  it('without recovery on receipt, the busy subscriber still gets every body the peer deleted, from the shadow copy (issue 26 item 19)', async () => {
    const logs = captureLogs();
    try {
      const got = await fanOutWithPythonPeer('py.fanout.shadow', await makeBus({ recoverOnReceipt: false }));
      got.sort((a, b) => a.i - b.i);
      expect(got.map((g) => g.i)).toEqual([0, 1, 2, 3, 4]);
      expect(got.map((g) => g.sha)).toEqual(bodies.map((b) => sha256(b.text)));
      expect(logs.matching(/not found/)).toEqual([]);
    } finally {
      logs.restore();
    }
  });

  it('every error reply carries a JSON body a header-less requester can parse; our requester still gets RemoteHandlerError', async () => {
    const bus = await makeBus();
    await bus.subscribe('py.rpc.fails', () => {
      throw new Error('no such edge\nsecond line');
    });
    await bus.subscribe('py.rpc.ok', () => ({ ok: true }));
    // A header-less client (the Python NATSClient) sees only the body.
    const failed = await raw.request('py.rpc.fails', JSON.stringify({ q: 1 }), { timeout: 2000 });
    expect(JSON.parse(failed.string())).toEqual({ status: 500, error: 'no such edge' });
    const badInput = await raw.request('py.rpc.ok', new Uint8Array([0xff, 0xfe]), { timeout: 2000 });
    expect(JSON.parse(badInput.string())).toEqual({ status: 400, error: expect.stringContaining('not valid UTF-8') });
    const unknownToken = await raw.request('py.rpc.ok', JSON.stringify({ token: 'aB3dEfGhJkLmNoPqRsTuVw', is_stored: true }), {
      timeout: 2000,
    });
    expect(JSON.parse(unknownToken.string())).toMatchObject({ status: 404 });
    // Our own requester reads the headers, as before.
    const err = await bus.rpcRequest('py.rpc.fails', { q: 1 }, { timeout: 2000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteHandlerError);
    expect((err as RemoteHandlerError).remoteCode).toBe(500);
    expect((err as RemoteHandlerError).remoteMessage).toBe('no such edge');
    expect(await bus.rpcRequest('py.rpc.ok', { q: 1 })).toEqual({ ok: true });
  });

  it('recoverOnReceipt must be a boolean', () => {
    expect(() => new EventBus({ nats: { servers: nats.url }, recoverOnReceipt: 'yes' as unknown as boolean })).toThrow(/recoverOnReceipt/);
  });
});
