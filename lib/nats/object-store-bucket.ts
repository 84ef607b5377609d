// The JetStream object store, laid out as nats.js's own client (@nats-io/obj) does: chunked puts, a
// SHA-256 digest written with the object's metadata after its last chunk and checked on every read.
// Every failure leaves this file as one of the library's errors, the nats.js error kept as `cause`.
import { jetstream, JetStreamApiError, jetstreamManager, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import type { DirectMsgRequest, JetStreamClient, MsgRequest, StoredMsg } from '@nats-io/jetstream';
import { Objm, setSha256Backend, type ObjectStore } from '@nats-io/obj';
import { nanos } from '@nats-io/transport-node';
import { InvalidOptionsError, MessageStorageError, StoredMessageCorruptError } from '../errors/event-bus.errors';
import { withTimeout } from '../shared/deadline';
import { ChunkWindow, PUT_WINDOW_CHUNKS, putChunked } from './chunk-window';
import { Chunks, DIGEST_PREFIX, READ_AHEAD, READ_AHEAD_WINDOW_CHUNKS, sameDigest } from './object-chunks';
import type { StoreConnection } from './store-connection';
import { replicasRefusal, retryWhenTimedOut } from './nats-errors';

// Node's crypto hashes several times faster than the pure-JS default; process-wide, set once.
setSha256Backend('native');

/** What the bucket is made with (`storage: { objectStore }`), checked by `ObjectStoreStorageManager`. */
export interface ObjectStoreBucketConfig {
  bucket: string;
  ttlSeconds: number;
  replicas: number;
  storage: 'file' | 'memory';
  /** Bytes the bucket may hold; -1 for no limit. */
  maxBytes: number;
  /** One JetStream API call or chunk ack, and the gap between two chunks of a read. */
  operationTimeoutMs: number;
  /** Bytes per chunk (a JetStream message); at most the server's max_payload. */
  chunkBytes: number;
}

/** A JetStream "stream full" answer: discard-new refuses what would pass `max_bytes`. */
const BUCKET_FULL = /maximum bytes|insufficient (storage|resources)|resource limits exceeded/i;
/** nats.js's answer when the account has no JetStream. */
const NO_JETSTREAM = /jetstream (is )?not enabled|no responders/i;

/** A bucket name JetStream accepts as a stream-name suffix and a subject token. */
export const BUCKET_NAME = /^[-\w]+$/;

/** One object store bucket on one NATS connection. */
export class ObjectStoreBucket {
  private readonly stream: string;
  /** Chunks of all puts on this bucket awaiting their acks (`putChunked`). */
  private readonly window = new ChunkWindow(PUT_WINDOW_CHUNKS);
  /** Chunks all reads of this bucket ask for ahead of the one they need (`readChunks`). */
  private readonly readAhead = new ChunkWindow(READ_AHEAD_WINDOW_CHUNKS);

  private constructor(
    private readonly store: ObjectStore,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly config: ObjectStoreBucketConfig,
  ) {
    this.stream = `OBJ_${config.bucket}`;
  }

  /**
   * Create the bucket, or bring an existing one to `config` (TTL, replicas, max bytes). Its storage
   * type cannot change: an existing bucket of the other type fails with `InvalidOptionsError`.
   */
  static async open(connection: StoreConnection, config: ObjectStoreBucketConfig): Promise<ObjectStoreBucket> {
    const nc = connection.connection;
    const timeout = config.operationTimeoutMs;
    const wanted = {
      max_age: nanos(config.ttlSeconds * 1000),
      num_replicas: config.replicas,
      max_bytes: config.maxBytes,
      storage: config.storage === 'memory' ? StorageType.Memory : StorageType.File,
    };
    try {
      const js = jetstream(nc, { timeout });
      const store = await retryWhenTimedOut(() =>
        new Objm(js).create(config.bucket, {
          ttl: wanted.max_age,
          replicas: wanted.num_replicas,
          max_bytes: wanted.max_bytes,
          storage: wanted.storage,
        }),
      );
      const stream = (await store.status()).streamInfo.config;
      if (stream.storage !== wanted.storage) {
        throw new InvalidOptionsError(
          'storage.objectStore.storage',
          `bucket "${config.bucket}" exists with ${stream.storage} storage, which JetStream cannot change to ${wanted.storage}; use another bucket name or delete it`,
        );
      }
      const jsm = await jetstreamManager(nc, { timeout });
      if (stream.max_age !== wanted.max_age || stream.num_replicas !== wanted.num_replicas || stream.max_bytes !== wanted.max_bytes) {
        const update: StreamConfig = { ...stream, max_age: wanted.max_age, num_replicas: wanted.num_replicas, max_bytes: wanted.max_bytes };
        await retryWhenTimedOut(() => jsm.streams.update(stream.name, update));
      }
      return new ObjectStoreBucket(store, js, jsm, config);
    } catch (err) {
      if (err instanceof InvalidOptionsError) throw err;
      const replicas = replicasRefusal(err, 'storage.objectStore.replicas', config.replicas);
      if (replicas) throw replicas;
      const message = describe(err);
      const hint = NO_JETSTREAM.test(message) ? ' (is JetStream enabled on the server? nats-server -js)' : '';
      throw new MessageStorageError(`could not create or update object store bucket "${config.bucket}": ${message}${hint}`, { cause: err });
    }
  }

  /**
   * Store `data` under `name`; `storedAt` (ms) goes with it, so a read can tell an expired object. Up to
   * `PUT_WINDOW_CHUNKS` chunks over all puts on this bucket await their acks at once (`putChunked`).
   */
  async put(name: string, data: Uint8Array, storedAt: number): Promise<void> {
    const { bucket, chunkBytes, operationTimeoutMs: timeout } = this.config;
    try {
      const previous = this.store.info(name).catch(() => null); // the object this one replaces, looked up meanwhile
      const put = { stream: this.stream, bucket, name, data, chunkBytes, timeout, metadata: { [STORED_AT]: String(storedAt) }, previous };
      await putChunked(this.js, this.jsm, this.window, put);
    } catch (err) {
      const message = describe(err);
      if (BUCKET_FULL.test(message)) {
        throw new MessageStorageError(
          `object store bucket "${this.config.bucket}" is full (storage.objectStore.maxBytes ${this.config.maxBytes}): ${message}`,
          { cause: err },
        );
      }
      throw new MessageStorageError(`could not store message in object store bucket "${this.config.bucket}": ${message}`, { cause: err });
    }
  }

  /**
   * The bytes stored under `name`, or null when there is none (never stored, deleted, or past the
   * bucket's TTL). Rejects with `MessageStorageError` when the store fails or does not answer within
   * `operationTimeoutMs`, or when the bytes read are not the object's whole body (the SHA-256 digest
   * or the size written after its last chunk differs): a body cut short is never returned.
   *
   * The chunks are read with JetStream direct gets, not with the ordered consumer of `@nats-io/obj`'s
   * `get`: a consumer per read costs a JetStream API round trip, and in a cluster with a replica down
   * nats-server 2.9 places some of them on the dead node (the read then times out). The metadata comes
   * from the stream leader, so an object announced by an envelope is always found; a replica that has
   * not caught up yet with a chunk is skipped for the leader. Chunks written back to back are asked
   * for several at a time (`readChunks`); objects written by other clients are read the same way.
   */
  async get(name: string): Promise<Uint8Array | null> {
    const timeout = this.config.operationTimeoutMs;
    try {
      const info = await withTimeout(this.store.info(name), timeout, () => new Error(`no answer within ${timeout} ms`));
      if (info === null || info.deleted) return null;
      const storedAt = Number(info.metadata?.[STORED_AT]);
      // Chunks go out before the metadata: past the TTL from the first chunk, some may be gone already.
      if (Number.isFinite(storedAt) && Date.now() - storedAt >= this.config.ttlSeconds * 1000) return null;
      if (!info.digest.startsWith(DIGEST_PREFIX)) throw new Error(`unknown digest ${info.digest}`);
      const subject = `$O.${this.config.bucket}.C.${info.nuid}`;
      const { hash, chunks, size } = await this.readChunks(subject, info.chunks, info.revision - info.chunks);
      const digest = `${DIGEST_PREFIX}${hash.digest('base64url')}`;
      if (size !== info.size || !sameDigest(digest, info.digest)) {
        throw new StoredMessageCorruptError(
          `object ${name} in bucket "${this.config.bucket}" is not whole: read ${size} of ${info.size} bytes, digest ${digest} instead of ${info.digest}`,
        );
      }
      return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
    } catch (err) {
      if (err instanceof MessageStorageError) throw err;
      throw new MessageStorageError(`could not recover ${name} from object store bucket "${this.config.bucket}": ${describe(err)}`, {
        cause: err,
      });
    }
  }

  /**
   * Up to `count` chunks of `subject`, in order. Each is the subject's next message after the one
   * before; as a put sends the chunks and then the metadata, with no other write between them chunk i
   * is at `first + i`, so from the first chunk on the next ones are asked for by sequence, up to
   * `READ_AHEAD` at once. As soon as one of them is not the next chunk (a write came between), the
   * rest are asked for one after another (`next_by_subj`), each after the one before.
   */
  private async readChunks(subject: string, count: number, first: number): Promise<Chunks> {
    const read = new Chunks();
    const asked: Array<Promise<StoredMsg | null>> = [];
    const ask = (i: number): void => {
      // Not asked when the bucket's reads have their window's worth ahead already: read one by one then.
      if (i >= count || !this.readAhead.tryAcquire()) return;
      asked[i] = this.chunk({ seq: first + i }).finally(() => this.readAhead.release());
      asked[i].catch(() => undefined); // awaited below, unless an earlier chunk ends the read-ahead
    };
    let ahead = count > 1 && first > 0;
    for (let i = 1; ahead && i < READ_AHEAD; i++) ask(i);
    for (let i = 0, seq = 0; i < count; i++) {
      let chunk = ahead && i > 0 ? ((await asked[i]) ?? null) : null;
      if (chunk && (chunk.subject !== subject || chunk.seq !== seq + 1)) chunk = null;
      if (i > 0 && !chunk) ahead = false;
      chunk ??= await this.chunk({ next_by_subj: subject, seq: seq + 1 });
      if (chunk === null || chunk.subject !== subject) break;
      if (i === 0 && chunk.seq !== first) ahead = false;
      if (ahead) ask(i + READ_AHEAD);
      seq = chunk.seq;
      read.add(chunk.data);
    }
    return read;
  }

  /** One message of the bucket's stream: a direct get (any replica), else from the stream leader. */
  private async chunk(query: DirectMsgRequest): Promise<StoredMsg | null> {
    return (await this.jsm.direct.getMessage(this.stream, query)) ?? (await this.jsm.streams.getMessage(this.stream, query as MsgRequest));
  }

  /** Remove an object (its chunks are purged). */
  async delete(name: string): Promise<void> {
    try {
      await this.store.delete(name);
    } catch (err) {
      throw new MessageStorageError(`could not delete ${name} from object store bucket "${this.config.bucket}": ${describe(err)}`, {
        cause: err,
      });
    }
  }

  /** Throws `MessageStorageError` unless the bucket's stream answers (it has a leader). */
  async ping(): Promise<void> {
    try {
      await this.store.status();
    } catch (err) {
      throw new MessageStorageError(`object store bucket "${this.config.bucket}" is not answering: ${describe(err)}`, { cause: err });
    }
  }
}

/** Metadata key of the time (ms since the epoch) the first chunk was about to be sent. */
const STORED_AT = 'eventbus-stored-at';

function describe(err: unknown): string {
  if (err instanceof JetStreamApiError) return `${err.message} (JetStream error ${err.code})`;
  return err instanceof Error ? err.message : String(err);
}
