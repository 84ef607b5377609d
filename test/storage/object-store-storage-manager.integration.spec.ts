import * as crypto from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { connect, NatsConnection } from '@nats-io/transport-node';
import {
  EventBus,
  InvalidMessageError,
  InvalidOptionsError,
  MessageContext,
  MessageStorageError,
  ObjectStoreStorageManager,
  ObjectStoreStorageOptions,
  StoredMessageNotFoundError,
} from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { bigPayload, MiB, sleep, waitUntil } from '../harness/wait';

// Issue 16: large bodies in a JetStream object store bucket, over the bus's own NATS connection.
// Real nats-server with JetStream; no Redis anywhere in this file.
describe('ObjectStoreStorageManager on a real nats-server (JetStream)', () => {
  let nats: NatsServer;
  let raw: NatsConnection;
  const buses: EventBus[] = [];

  /** A connected bus whose storage is a fresh object store manager on `bucket`. */
  async function busWith(
    options: ObjectStoreStorageOptions,
    url = nats.url,
  ): Promise<{ bus: EventBus; storage: ObjectStoreStorageManager }> {
    const storage = new ObjectStoreStorageManager(options);
    const bus = new EventBus({ nats: { servers: url, reconnectTimeWait: 100, reconnectJitter: 0 } }, storage);
    buses.push(bus);
    await bus.connect();
    return { bus, storage };
  }

  /** The bucket's stream as JetStream reports it. */
  const streamOf = async (bucket: string) => (await jetstreamManager(raw)).streams.info(`OBJ_${bucket}`);

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
    await raw?.close();
    await nats?.dispose();
  });

  it.each([
    ['3 MiB', 3 * MiB],
    ['8 MiB', 8 * MiB],
  ])('a %s body round-trips byte for byte: publish, fan-out to two subscribers on other buses', async (_label, size) => {
    const bucket = `fanout-${size}`;
    const { bus: publisher, storage } = await busWith({ bucket });
    const [{ bus: a }, { bus: b }] = await Promise.all([busWith({ bucket }), busWith({ bucket })]);
    const payload = bigPayload(size, `fan-${size}`);
    const json = JSON.stringify(payload);
    const got: Array<{ json: string; ctx: MessageContext }> = [];
    for (const bus of [a, b]) await bus.subscribe('os.fanout', (p: unknown, ctx) => void got.push({ json: JSON.stringify(p), ctx }));
    await publisher.publish('os.fanout', payload);
    await waitUntil(() => got.length === 2, 'both subscribers got the body', 30_000);
    for (const g of got) {
      expect(g.ctx.recovered).toBe(true);
      expect(g.json).toBe(json);
    }
    // One stored object, read by both; its bytes are the JSON the publisher encoded.
    expect(got[0].ctx.token).toBe(got[1].ctx.token);
    const stored = await storage.recoverMessage({ token: got[0].ctx.token!, is_stored: true });
    expect(Buffer.compare(Buffer.from(stored), Buffer.from(json, 'utf8'))).toBe(0);
    const info = await streamOf(bucket);
    expect(info.config.max_age).toBe(300 * 1e9);
    expect(info.config.num_replicas).toBe(1);
  });

  it('an rpc with a 3 MiB request and an 8 MiB reply round-trips byte for byte', async () => {
    const { bus: requester } = await busWith({ bucket: 'rpc' });
    const { bus: responder } = await busWith({ bucket: 'rpc' });
    const request = bigPayload(3 * MiB, 'request');
    const reply = bigPayload(8 * MiB, 'reply');
    let seen: { json: string; recovered: boolean } | undefined;
    await responder.subscribe('os.rpc', (p: unknown, ctx) => {
      seen = { json: JSON.stringify(p), recovered: ctx.recovered };
      return reply;
    });
    const answer = await requester.rpcRequest('os.rpc', request, { timeout: 30_000 });
    expect(seen).toEqual({ json: JSON.stringify(request), recovered: true });
    expect(JSON.stringify(answer)).toBe(JSON.stringify(reply));
  });

  it('the TTL (bucket max_age) expires a body: StoredMessageNotFoundError', async () => {
    const { storage } = await busWith({ bucket: 'ttl', ttlSeconds: 1 });
    const envelope = await storage.storeMessage(Buffer.from(JSON.stringify(bigPayload(2 * MiB))));
    expect((await storage.recoverMessage(envelope)).byteLength).toBeGreaterThan(2 * MiB);
    expect((await streamOf('ttl')).config.max_age).toBe(1e9);
    await sleep(1500);
    await expect(storage.recoverMessage(envelope)).rejects.toBeInstanceOf(StoredMessageNotFoundError);
    // The server removed it too: not only our own age check.
    await waitUntil(async () => (await streamOf('ttl')).state.messages === 0, 'the stream to drop the expired chunks', 5000);
  });

  it('a token never stored gives StoredMessageNotFoundError, a deleted one too; a forged token is never looked up', async () => {
    const { storage } = await busWith({ bucket: 'missing' });
    const unknown = crypto.randomUUID();
    const err = await storage.recoverMessage({ token: unknown, is_stored: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoredMessageNotFoundError);
    expect((err as StoredMessageNotFoundError).code).toBe('STORED_MESSAGE_NOT_FOUND');
    expect((err as StoredMessageNotFoundError).token).toBe(unknown);
    const envelope = await storage.storeMessage(Buffer.from('"x"'));
    await storage.deleteMessage(envelope);
    await expect(storage.recoverMessage(envelope)).rejects.toBeInstanceOf(StoredMessageNotFoundError);
    await expect(storage.recoverMessage({ token: '../M.>', is_stored: true })).rejects.toBeInstanceOf(InvalidMessageError);
  });

  it('a full bucket (maxBytes) fails the publish with MessageStorageError; nothing is published; smaller bodies still go', async () => {
    const { bus, storage } = await busWith({ bucket: 'full', maxBytes: 2 * MiB });
    expect((await streamOf('full')).config.max_bytes).toBe(2 * MiB);
    const got: unknown[] = [];
    await bus.subscribe('os.full', (p) => void got.push(p));
    const err = await bus.publish('os.full', bigPayload(3 * MiB)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as MessageStorageError).code).toBe('MESSAGE_STORAGE_ERROR');
    expect((err as Error).message).toMatch(/bucket "full" is full \(storage\.objectStore\.maxBytes 2097152\)/);
    expect((err as Error).cause).toBeDefined();
    await sleep(200);
    expect(got).toEqual([]);
    // The chunks that went in before the refusal were purged: the next body fits.
    await bus.publish('os.full', bigPayload(1.5 * MiB, 'fits'));
    await waitUntil(() => got.length === 1, 'the smaller body');
    expect((got[0] as { id: string }).id).toBe('fits');
    await expect(storage.ping()).resolves.toBeUndefined();
  });

  it('a body with a chunk missing (a write cut short) is never read as whole: MessageStorageError, not short bytes', async () => {
    const { storage } = await busWith({ bucket: 'digest' });
    const envelope = await storage.storeMessage(Buffer.from(JSON.stringify(bigPayload(3 * MiB))));
    // Remove the second chunk of the object from the stream, as a crash between two writes would leave it.
    const jsm = await jetstreamManager(raw);
    const info = await jsm.streams.info('OBJ_digest');
    expect(info.state.messages).toBeGreaterThan(2); // chunks + the metadata message
    await jsm.streams.deleteMessage('OBJ_digest', info.state.first_seq + 1);
    const err = await storage.recoverMessage(envelope).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as Error).message).toMatch(/is not whole: read \d+ of \d+ bytes/);
  });

  it('a chunk replaced by other bytes of the same size fails the digest check: MessageStorageError, never the wrong body', async () => {
    const { storage } = await busWith({ bucket: 'digest2' });
    const envelope = await storage.storeMessage(Buffer.from(JSON.stringify(bigPayload(3 * MiB))));
    const object = (await (await new Objm(raw).open('digest2')).info(envelope.token))!;
    const jsm = await jetstreamManager(raw);
    const second = await jsm.streams.getMessage('OBJ_digest2', { seq: (await jsm.streams.info('OBJ_digest2')).state.first_seq + 1 });
    await jsm.streams.deleteMessage('OBJ_digest2', second!.seq);
    // Same subject, same size, other bytes: the size check alone would pass it.
    await jetstream(raw).publish(`$O.digest2.C.${object.nuid}`, Buffer.alloc(second!.data.byteLength, 0x20));
    const err = await storage.recoverMessage(envelope).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as Error).message).toMatch(/is not whole: read (\d+) of \1 bytes, digest SHA-256=/);
  });

  it('nats-server killed mid-transfer: every publish completes or rejects with MessageStorageError; no body is ever read cut short', async () => {
    const server = await NatsServer.start();
    try {
      const { bus: publisher, storage } = await busWith({ bucket: 'restart', operationTimeoutMs: 2000 }, server.url);
      const tokens: string[] = [];
      // The tokens of the puts that fail are never returned: note every token the storage draws.
      const nodeCrypto = jest.requireActual<typeof crypto>('node:crypto');
      const draw = nodeCrypto.randomUUID.bind(nodeCrypto);
      const spy = jest.spyOn(nodeCrypto, 'randomUUID').mockImplementation(() => {
        const t = draw();
        tokens.push(t);
        return t;
      });
      const bodies = new Map<number, string>();
      let done = 0;
      // Puts start one every 40 ms; the kill comes once two are done, so it finds some done, some under way.
      const sends = Array.from({ length: 16 }, async (_, i) => {
        await sleep(i * 40);
        const payload = bigPayload(3 * MiB, `r${i}`);
        bodies.set(i, JSON.stringify(payload));
        return publisher.publish('os.restart', payload).then(
          () => {
            done++;
            return 'ok' as const;
          },
          (e: unknown) => e,
        );
      });
      await waitUntil(() => done >= 2, 'two puts to complete', 20_000);
      await server.stop('SIGKILL');
      await server.start();
      const outcomes = await Promise.all(sends);
      spy.mockRestore();
      const failed = outcomes.filter((o) => o !== 'ok');
      for (const f of failed) expect(f).toBeInstanceOf(MessageStorageError);
      process.stdout.write(`[object-store] restart mid-transfer: ${outcomes.length - failed.length} stored, ${failed.length} refused\n`);
      await waitUntil(() => publisher.connections().get('producer')!.isConnected, 'the producer to reconnect', 15_000);
      // Every token a put was started with: read back either whole (a body we sent) or not at all.
      const sent = new Set(bodies.values());
      let whole = 0;
      for (const token of tokens) {
        const got = await storage.recoverMessage({ token, is_stored: true }).catch((e: unknown) => e);
        if (got instanceof Uint8Array) {
          expect(sent.has(Buffer.from(got).toString('utf8'))).toBe(true);
          whole++;
        } else {
          expect([StoredMessageNotFoundError, MessageStorageError].some((c) => got instanceof c)).toBe(true);
        }
      }
      expect(tokens.length).toBe(16);
      expect(whole).toBeGreaterThanOrEqual(outcomes.length - failed.length);
    } finally {
      await server.dispose();
    }
  });

  it('reopening a bucket with other options updates it (TTL, max bytes); a storage type JetStream cannot change is refused naming the option', async () => {
    await busWith({ bucket: 'update', ttlSeconds: 60 });
    expect((await streamOf('update')).config.max_age).toBe(60e9);
    await busWith({ bucket: 'update', ttlSeconds: 120, maxBytes: 64 * MiB });
    const info = await streamOf('update');
    expect(info.config.max_age).toBe(120e9);
    expect(info.config.max_bytes).toBe(64 * MiB);
    const err = await busWith({ bucket: 'update', storage: 'memory' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe('storage.objectStore.storage');
  });

  it('without JetStream on the server the bus fails to connect with MessageStorageError saying so', async () => {
    const plain = await NatsServer.start({ jetstream: false });
    try {
      const storage = new ObjectStoreStorageManager({ operationTimeoutMs: 1000 });
      const bus = new EventBus({ nats: { servers: plain.url } }, storage);
      buses.push(bus);
      const err = await bus.connect().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MessageStorageError);
      expect((err as Error).message).toMatch(/is JetStream enabled on the server\? nats-server -js/);
    } finally {
      await plain.dispose();
    }
  });

  it('a body that must outlive the bucket TTL (a persisted message, minTtlSeconds) is refused with MessageStorageError naming the option', async () => {
    const { storage } = await busWith({ bucket: 'minttl', ttlSeconds: 120 });
    const err = await storage.storeMessage(Buffer.from('"x"'), { minTtlSeconds: 360 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MessageStorageError);
    expect((err as Error).message).toMatch(/keeps bodies 120 s, but this one must live 360 s.*storage\.objectStore\.ttlSeconds/);
    const ok = await storage.storeMessage(Buffer.from('"y"'), { minTtlSeconds: 120 });
    expect(Buffer.from(await storage.recoverMessage(ok)).toString()).toBe('"y"');
  });

  it('a storage not attached to any connection fails with MessageStorageError, not a crash', async () => {
    const storage = new ObjectStoreStorageManager();
    await expect(storage.storeMessage(Buffer.from('{}'))).rejects.toBeInstanceOf(MessageStorageError);
    await expect(storage.ping()).rejects.toBeInstanceOf(MessageStorageError);
  });

  it.each([
    [{ bucket: 'a.b' }, 'storage.objectStore.bucket'],
    [{ bucket: '' }, 'storage.objectStore.bucket'],
    [{ ttlSeconds: 0 }, 'storage.objectStore.ttlSeconds'],
    [{ replicas: 7 }, 'storage.objectStore.replicas'],
    [{ storage: 'disk' }, 'storage.objectStore.storage'],
    [{ maxBytes: 0 }, 'storage.objectStore.maxBytes'],
    [{ operationTimeoutMs: 1.5 }, 'storage.objectStore.operationTimeoutMs'],
    [{ ttl: 5 }, 'storage.objectStore.ttl'],
  ])('refuses %j naming %s', (options, option) => {
    let err: unknown;
    try {
      new ObjectStoreStorageManager(options as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe(option);
  });
});
