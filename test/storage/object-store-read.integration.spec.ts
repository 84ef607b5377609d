import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager, type DirectMsgRequest, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { connect, headers, NatsConnection } from '@nats-io/transport-node';
import { MessageStorageError, StoredMessageCorruptError } from '../../lib';
import { ObjectStoreBucket } from '../../lib/nats/object-store-bucket';
import { NatsServer } from '../harness/local-servers';

// Issue 29: ObjectStoreBucket.get reads the chunks of an object written back to back (the usual case)
// several at a time, by stream sequence, and one after another otherwise; either way a body is
// returned only whole and with its digest.
describe('ObjectStoreBucket.get: chunks read ahead by sequence, or one after another', () => {
  const KiB = 1024;
  const CHUNK = 64 * KiB;
  let nats: NatsServer;
  let raw: NatsConnection;
  let reader: NatsConnection;

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
    reader = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await reader?.close();
    await raw?.close();
    await nats?.dispose();
  });

  /** A bucket opened on the reader connection, with every direct get it sends recorded. */
  async function open(bucket: string) {
    const store = await ObjectStoreBucket.open(
      { connection: reader, maxPayload: reader.info!.max_payload, state: 'connected' },
      { bucket, ttlSeconds: 3600, replicas: 1, storage: 'file', maxBytes: -1, operationTimeoutMs: 5000, chunkBytes: CHUNK },
    );
    const jsm = (store as unknown as { jsm: JetStreamManager }).jsm;
    const direct = jsm.direct.getMessage.bind(jsm.direct);
    const asked: DirectMsgRequest[] = [];
    let inFlight = 0;
    const seen = { maxInFlight: 0, asked, answer: direct as (s: string, q: DirectMsgRequest) => Promise<StoredMsg | null> };
    jest.spyOn(jsm.direct, 'getMessage').mockImplementation(async (stream, query) => {
      asked.push(query);
      seen.maxInFlight = Math.max(seen.maxInFlight, ++inFlight);
      try {
        return await seen.answer(stream, query);
      } finally {
        inFlight--;
      }
    });
    const reset = () => {
      asked.length = 0;
      seen.maxInFlight = 0;
    };
    return { store, jsm, seen, reset, direct };
  }

  const bySeq = (asked: DirectMsgRequest[]) => asked.filter((q) => !('next_by_subj' in q)).length;
  const inOrder = (asked: DirectMsgRequest[]) => asked.filter((q) => 'next_by_subj' in q).length;

  /**
   * Write `name` again by hand, as @nats-io/obj lays it out, under a new nuid: its chunks (changed by
   * `chunks`), with `between` other messages published after each chunk, then its metadata.
   */
  async function rewrite(bucket: string, name: string, chunks: (c: Uint8Array[]) => Uint8Array[], between = 0): Promise<void> {
    const jsm = await jetstreamManager(raw);
    const js = jetstream(raw);
    const info = (await (await new Objm(raw).open(bucket)).info(name))!;
    const meta = (await jsm.streams.getMessage(`OBJ_${bucket}`, { seq: info.revision }))!;
    const old: Uint8Array[] = [];
    for (let seq = 0, i = 0; i < info.chunks; i++) {
      const m = (await jsm.streams.getMessage(`OBJ_${bucket}`, { next_by_subj: `$O.${bucket}.C.${info.nuid}`, seq: seq + 1 } as never))!;
      old.push(m.data);
      seq = m.seq;
    }
    const nuid = randomBytes(11).toString('hex');
    for (const c of chunks(old)) {
      await js.publish(`$O.${bucket}.C.${nuid}`, c);
      for (let k = 0; k < between; k++) await js.publish(`$O.${bucket}.C.other${nuid}`, c);
    }
    const h = headers();
    h.set('Nats-Rollup', 'sub');
    await js.publish(meta.subject, JSON.stringify({ ...meta.json<object>(), nuid }), { headers: h });
  }

  it('an object written back to back is read by sequence, several chunks at once, byte for byte', async () => {
    const { store, seen, reset } = await open('ahead');
    const body = randomBytes(20 * CHUNK + 123);
    await store.put('a', body, Date.now());
    reset();
    const got = await store.get('a');
    expect(Buffer.compare(Buffer.from(got!), body)).toBe(0);
    // The first chunk by subject (it tells where the object starts), the 20 others by sequence, 3 at once.
    expect(inOrder(seen.asked)).toBe(1);
    expect(bySeq(seen.asked)).toBe(20);
    expect(seen.maxInFlight).toBe(3);
  });

  it('a burst of 30 reads asks for at most 16 chunks ahead over all of them (plus the one each needs): every body whole', async () => {
    const { store, seen, reset } = await open('burst');
    const bodies = Array.from({ length: 30 }, () => randomBytes(8 * CHUNK));
    for (let i = 0; i < bodies.length; i++) await store.put(`b${i}`, bodies[i], Date.now());
    reset();
    const got = await Promise.all(bodies.map((_, i) => store.get(`b${i}`)));
    got.forEach((g, i) => expect(Buffer.compare(Buffer.from(g!), bodies[i])).toBe(0));
    // Without the bucket's window the 30 reads would have 30 x 3 direct gets out at once.
    expect(seen.maxInFlight).toBeLessThanOrEqual(30 + 16);
    expect(seen.maxInFlight).toBeGreaterThan(30);
    // Once read-ahead had its window's worth, reads went on one chunk after another.
    expect(inOrder(seen.asked)).toBeGreaterThan(30);
  });

  it('an object written by plain @nats-io/obj (putBlob) reads, ahead by sequence; also its other sizes', async () => {
    const { store, seen, reset } = await open('plain');
    const obj = await new Objm(jetstream(raw)).open('plain');
    for (const size of [0, 1, CHUNK, CHUNK + 1, 7 * CHUNK]) {
      const body = randomBytes(size);
      await obj.putBlob({ name: `p${size}`, options: { max_chunk_size: CHUNK } }, body);
      reset();
      const got = await store.get(`p${size}`);
      expect(Buffer.compare(Buffer.from(got!), body)).toBe(0);
      const chunks = Math.ceil(size / CHUNK);
      expect([inOrder(seen.asked), bySeq(seen.asked)]).toEqual([Math.min(chunks, 1), Math.max(chunks - 1, 0)]);
    }
    expect(await store.get('never-stored')).toBeNull();
  });

  it('chunks with other messages between them, or metadata updated since, are read one after another', async () => {
    const { store, seen, reset } = await open('apart');
    const body = randomBytes(6 * CHUNK);
    await store.put('x', body, Date.now());
    await rewrite('apart', 'x', (c) => c, 1);
    reset();
    expect(Buffer.compare(Buffer.from((await store.get('x'))!), body)).toBe(0);
    expect(inOrder(seen.asked)).toBe(6);

    await store.put('y', body, Date.now());
    await store.put('z', randomBytes(3 * CHUNK), Date.now());
    await (await new Objm(jetstream(raw)).open('apart')).update('y', { name: 'y', description: 'changed later' });
    reset();
    expect(Buffer.compare(Buffer.from((await store.get('y'))!), body)).toBe(0);
    expect(inOrder(seen.asked)).toBe(6);
  });

  it('a chunk of other bytes, on the read-ahead path, fails the digest check: StoredMessageCorruptError', async () => {
    const { store, seen, reset } = await open('tamper');
    await store.put('t', randomBytes(5 * CHUNK), Date.now());
    await rewrite('tamper', 't', (c) => c.map((x, i) => (i === 3 ? Buffer.alloc(x.byteLength, 0x20) : x)));
    reset();
    const err = await store.get('t').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoredMessageCorruptError);
    expect((err as Error).message).toMatch(/is not whole: read (\d+) of \1 bytes, digest SHA-256=/);
    expect([inOrder(seen.asked), bySeq(seen.asked)]).toEqual([1, 4]);
  });

  it('a chunk missing: the read-ahead stops, the read one after another comes up short: MessageStorageError, never short bytes', async () => {
    const { store, seen, reset } = await open('missing');
    await store.put('m', randomBytes(5 * CHUNK), Date.now());
    const info = (await (await new Objm(raw).open('missing')).info('m'))!;
    await (await jetstreamManager(raw)).streams.deleteMessage('OBJ_missing', info.revision - 3);
    reset();
    const err = await store.get('m').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as Error).message).toMatch(new RegExp(`is not whole: read ${4 * CHUNK} of ${5 * CHUNK} bytes`));
    // Chunk 0 by subject; 1 to 4 asked for by sequence, 3 at a time, and 2 is gone; then 3, 4 and a
    // fifth that is not there by subject.
    expect(bySeq(seen.asked)).toBe(4);
    expect(inOrder(seen.asked)).toBe(4);
  });

  it('a direct get that finds nothing (a replica behind) is asked again of the stream leader, still by sequence', async () => {
    const { store, jsm, seen, reset, direct } = await open('leader');
    const body = randomBytes(4 * CHUNK);
    await store.put('l', body, Date.now());
    const leader = jest.spyOn(jsm.streams, 'getMessage');
    let misses = 0;
    seen.answer = async (stream, query) => ('seq' in query && !('next_by_subj' in query) && misses++ < 2 ? null : direct(stream, query));
    reset();
    expect(Buffer.compare(Buffer.from((await store.get('l'))!), body)).toBe(0);
    expect(leader.mock.calls.filter(([, q]) => !('next_by_subj' in q) && 'seq' in q)).toHaveLength(2);
    expect([inOrder(seen.asked), bySeq(seen.asked)]).toEqual([1, 3]);
  });
});
