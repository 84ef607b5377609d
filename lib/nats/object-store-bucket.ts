// The JetStream object store, through nats.js's own client (@nats-io/obj): chunked puts, a
// SHA-256 digest written with the object's metadata after its last chunk and checked on every read.
// Every failure leaves this file as one of the library's errors, the nats.js error kept as `cause`.
import { createHash } from 'node:crypto';
import {
  jetstream,
  JetStreamApiError,
  jetstreamManager,
  JsHeaders,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
  type StreamConfig,
} from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, Objm, setSha256Backend, type ObjectStore } from '@nats-io/obj';
import { headers, nanos, nuid } from '@nats-io/transport-node';
import { InvalidOptionsError, MessageStorageError, StoredMessageCorruptError } from '../errors/event-bus.errors';
import { withTimeout } from '../shared/deadline';
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
   * Store `data` under `name`; `storedAt` (ms) goes with it, so a read can tell an expired object.
   *
   * Written as `@nats-io/obj` writes it (chunks on `$O.<bucket>.C.<nuid>`, then the metadata with the
   * SHA-256 digest on `$O.<bucket>.M.<name>`, rolled up), but with up to `PUT_WINDOW_BYTES` of chunks
   * awaiting their acks at once instead of one: the metadata still goes out only after every chunk's
   * ack, so an object a reader can find is whole. The acks' stream sequences must follow the chunks'
   * order (a reader takes chunks by sequence), else the put fails; a failed put purges its chunks.
   */
  async put(name: string, data: Uint8Array, storedAt: number): Promise<void> {
    const { bucket, chunkBytes, operationTimeoutMs: timeout } = this.config;
    const id = nuid.next();
    const chunkSubject = `$O.${bucket}.C.${id}`;
    // An object stored before under this name loses its chunks once the new one is live, as @nats-io/obj does; looked up meanwhile.
    const previous = this.store.info(name).catch(() => null);
    try {
      const hash = createHash('sha256');
      const window = Math.max(1, Math.floor(PUT_WINDOW_BYTES / chunkBytes));
      const inFlight: Promise<PubAck>[] = [];
      const seqs: number[] = [];
      let chunks = 0;
      for (let offset = 0; offset < data.byteLength; offset += chunkBytes) {
        const chunk = data.subarray(offset, Math.min(offset + chunkBytes, data.byteLength));
        if (inFlight.length >= window) seqs.push((await inFlight.shift()!).seq);
        const ack = this.js.publish(chunkSubject, chunk, { timeout });
        // Awaited in order below; until then a rejection must not count as unhandled (it would end the process).
        ack.catch(() => undefined);
        inFlight.push(ack);
        // Hashed once on its way, so the digest's CPU overlaps the server's write.
        hash.update(chunk);
        chunks++;
      }
      for (const ack of inFlight) seqs.push((await ack).seq);
      if (seqs.some((seq, i) => i > 0 && seq <= seqs[i - 1])) throw new Error(`chunks stored out of order (sequences ${seqs.join(', ')})`);
      const info = {
        name,
        description: '',
        options: { max_chunk_size: chunkBytes },
        metadata: { [STORED_AT]: String(storedAt) },
        bucket,
        nuid: id,
        size: data.byteLength,
        chunks,
        mtime: new Date().toISOString(),
        digest: `${DIGEST_PREFIX}${Base64UrlPaddedCodec.encode(hash.digest())}`,
        deleted: false,
      };
      const h = headers();
      h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
      await this.js.publish(`$O.${bucket}.M.${Base64UrlPaddedCodec.encode(name)}`, JSON.stringify(info), { headers: h, timeout });
      const old = await previous;
      if (old && old.nuid !== id) {
        await this.jsm.streams.purge(this.stream, { filter: `$O.${bucket}.C.${old.nuid}` }).catch(() => undefined);
      }
    } catch (err) {
      // Chunks that landed before the failure would otherwise stay until the bucket's TTL.
      await this.jsm.streams.purge(this.stream, { filter: chunkSubject }).catch(() => undefined);
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
   * not caught up yet with a chunk is skipped for the leader.
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
      const hash = createHash('sha256');
      const chunks: Uint8Array[] = [];
      let size = 0;
      let seq = 0;
      for (let i = 0; i < info.chunks; i++) {
        const query = { next_by_subj: subject, seq: seq + 1 };
        const chunk = (await this.jsm.direct.getMessage(this.stream, query)) ?? (await this.jsm.streams.getMessage(this.stream, query));
        if (chunk === null || chunk.subject !== subject) break;
        seq = chunk.seq;
        hash.update(chunk.data);
        chunks.push(chunk.data);
        size += chunk.data.byteLength;
      }
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

/** Bytes of chunks one put keeps awaiting their acks at once (at least one chunk): 4 chunks at 1 MiB. */
const PUT_WINDOW_BYTES = 4 * 1024 * 1024;

/** How `@nats-io/obj` writes an object's digest: `SHA-256=` and the base64url of the hash, padded. */
const DIGEST_PREFIX = 'SHA-256=';

/** Digests compared without their base64 padding, which writers may or may not add. */
function sameDigest(a: string, b: string): boolean {
  return a.replace(/=+$/, '') === b.replace(/=+$/, '');
}

/** Metadata key of the time (ms since the epoch) the first chunk was about to be sent. */
const STORED_AT = 'eventbus-stored-at';

function describe(err: unknown): string {
  if (err instanceof JetStreamApiError) return `${err.message} (JetStream error ${err.code})`;
  return err instanceof Error ? err.message : String(err);
}
