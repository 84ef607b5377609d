import { randomBytes } from 'node:crypto';
import { jetstream, type JetStreamClient, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { MessageStorageError } from '../../lib';
import { PUT_WINDOW_CHUNKS } from '../../lib/nats/chunk-window';
import { ObjectStoreBucket } from '../../lib/nats/object-store-bucket';
import { NatsServer } from '../harness/local-servers';

// Issue 29: ObjectStoreBucket.put keeps several chunks awaiting their acks, but at most
// PUT_WINDOW_CHUNKS over all the puts of a bucket; a put whose chunk fails leaves no chunk behind.
// Every chunk publish is counted here, below the bucket, on its JetStream client.
describe('ObjectStoreBucket.put: chunks pipelined within one window shared by all puts', () => {
  const KiB = 1024;
  const CHUNK = 64 * KiB;
  let nats: NatsServer;
  let nc: NatsConnection;
  let raw: NatsConnection;

  beforeAll(async () => {
    nats = await NatsServer.start();
    nc = await connect({ servers: nats.url });
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await nc?.close();
    await nats?.dispose();
  });

  /** Byte for byte (jest's toEqual walks a buffer element by element: seconds for a MiB). */
  const same = (got: Uint8Array | null, want: Buffer) =>
    got !== null && Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(want);

  /** A bucket whose chunk publishes are counted while awaiting their acks; `fail` may turn one ack into a failure. */
  async function open(bucket: string) {
    const store = await ObjectStoreBucket.open(
      { connection: nc, maxPayload: nc.info!.max_payload, state: 'connected' },
      { bucket, ttlSeconds: 3600, replicas: 1, storage: 'file', maxBytes: -1, operationTimeoutMs: 5000, chunkBytes: CHUNK },
    );
    const { js, jsm } = store as unknown as { js: JetStreamClient; jsm: JetStreamManager };
    const publish = js.publish.bind(js);
    const seen = { inFlight: 0, maxInFlight: 0, chunks: 0, fail: (_n: number) => false };
    jest.spyOn(js, 'publish').mockImplementation(async (subject, payload, opts) => {
      if (!subject.startsWith(`$O.${bucket}.C.`)) return publish(subject, payload, opts);
      const n = ++seen.chunks;
      seen.maxInFlight = Math.max(seen.maxInFlight, ++seen.inFlight);
      try {
        const ack: PubAck = await publish(subject, payload, opts);
        // The chunk is stored, but the put is told it failed (as after a lost ack).
        if (seen.fail(n)) throw new Error(`injected failure of chunk ${n}`);
        return ack;
      } finally {
        seen.inFlight--;
      }
    });
    const chunksLeft = async () => {
      const info = await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` });
      return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    };
    return { store, seen, chunksLeft, jsm };
  }

  it('a single put has several chunks in flight; a plain @nats-io/obj client reads what it wrote', async () => {
    const { store, seen, jsm } = await open('put-one');
    const objects = [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK, 20 * CHUNK + 7].map((size, i) => ({ name: `o${i}`, data: randomBytes(size) }));
    for (const o of objects) await store.put(o.name, o.data, Date.now());
    expect(seen.maxInFlight).toBe(PUT_WINDOW_CHUNKS);
    const plain = await new Objm(jetstream(raw)).open('put-one');
    for (const o of objects) {
      expect(same(await plain.getBlob(o.name), o.data)).toBe(true);
      expect(same(await store.get(o.name), o.data)).toBe(true);
      // Chunks lie back to back just before the metadata (what the read path's read ahead relies on).
      const info = (await plain.info(o.name))!;
      expect(info.chunks).toBe(Math.ceil(o.data.byteLength / CHUNK));
      for (let i = 0; i < info.chunks; i++) {
        const chunk = await jsm.streams.getMessage('OBJ_put-one', { seq: info.revision - info.chunks + i });
        expect(chunk?.subject).toBe(`$O.put-one.C.${info.nuid}`);
      }
    }
  });

  it('a burst of concurrent puts never has more than the window in flight, and every object is whole', async () => {
    const { store, seen } = await open('put-burst');
    const objects = Array.from({ length: 40 }, (_, i) => ({ name: `b${i}`, data: randomBytes(((i % 7) + 1) * CHUNK - (i % 3)) }));
    await Promise.all(objects.map((o) => store.put(o.name, o.data, Date.now())));
    expect(seen.chunks).toBe(objects.reduce((a, o) => a + Math.ceil(o.data.byteLength / CHUNK), 0));
    expect(seen.maxInFlight).toBe(PUT_WINDOW_CHUNKS);
    for (const o of objects) expect(same(await store.get(o.name), o.data)).toBe(true);
  });

  it('a put whose chunk fails rejects with MessageStorageError and leaves no chunk behind; other puts go on', async () => {
    const { store, seen, chunksLeft } = await open('put-fail');
    seen.fail = (n) => n === 3;
    const doomed = randomBytes(12 * CHUNK);
    const others = Array.from({ length: 5 }, (_, i) => ({ name: `ok${i}`, data: randomBytes(3 * CHUNK) }));
    const results = await Promise.allSettled([
      store.put('doomed', doomed, Date.now()),
      ...others.map((o) => store.put(o.name, o.data, Date.now())),
    ]);
    expect(results[0].status).toBe('rejected');
    const reason = (results[0] as PromiseRejectedResult).reason as Error;
    expect(reason).toBeInstanceOf(MessageStorageError);
    expect(reason.message).toMatch(/could not store message in object store bucket "put-fail": injected failure of chunk 3/);
    expect(results.slice(1).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(await store.get('doomed')).toBeNull();
    // Only the other objects' chunks remain: 5 objects of 3 chunks.
    expect(await chunksLeft()).toBe(15);
    expect(seen.inFlight).toBe(0);
    // The window is whole again: a later put still gets every slot.
    seen.fail = () => false;
    seen.maxInFlight = 0;
    await store.put('after', randomBytes(16 * CHUNK), Date.now());
    expect(seen.maxInFlight).toBe(PUT_WINDOW_CHUNKS);
  });

  it('an object replaced under the same name loses its old chunks', async () => {
    const { store, chunksLeft } = await open('put-replace');
    await store.put('x', randomBytes(4 * CHUNK), Date.now());
    const next = randomBytes(2 * CHUNK);
    await store.put('x', next, Date.now());
    expect(same(await store.get('x'), next)).toBe(true);
    expect(await chunksLeft()).toBe(2);
  });
});
