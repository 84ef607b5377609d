// The object store's pipelined put (issue 29): an object's chunks, then its metadata, written as
// @nats-io/obj writes them, with several chunks awaiting their JetStream acks at once, but never more
// than one window's worth across all the puts of one bucket (a burst of puts must not overload the
// server: 200 puts with 4 MiB of chunks in flight each made some of them time out, 501b312).
import { createHash } from 'node:crypto';
import { JsHeaders, type JetStreamClient, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, type ObjectInfo } from '@nats-io/obj';
import { headers, nuid } from '@nats-io/transport-node';

/** Chunks (1 MiB each with the server's default max_payload) awaiting their acks at once, over all puts of a bucket. */
export const PUT_WINDOW_CHUNKS = 8;

/**
 * A number of slots shared by concurrent puts, one per chunk awaiting its ack, served first come,
 * first served, chunk by chunk. (Serving the oldest put first kept an object's chunks together, but
 * puts then completed one by one during a burst, their reads overlapped the writes, and in the
 * 200-put reliability spec the reading connection was cut as a slow consumer in 4 of 9 runs.)
 */
export class ChunkWindow {
  private inFlight = 0;
  /** Chunks waiting for a slot, in the order they asked; a put waits for one slot at a time. */
  private readonly waiting: Array<() => void> = [];

  constructor(readonly size: number) {}

  /** A slot now, if one is free (then nobody waits: a released slot passes straight to a waiter). */
  tryAcquire(): boolean {
    if (this.inFlight >= this.size) return false;
    this.inFlight++;
    return true;
  }

  /** Resolves when one more chunk may go out; `release` once its ack settles. */
  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((grant) => this.waiting.push(grant));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.inFlight--;
  }
}

/** One object to write. */
export interface ChunkedPut {
  stream: string;
  bucket: string;
  name: string;
  data: Uint8Array;
  chunkBytes: number;
  /** Per chunk ack and for the metadata's ack. */
  timeout: number;
  metadata: Record<string, string>;
  /** The object stored under `name` before, if any: its chunks are purged once the new object is live. */
  previous: Promise<ObjectInfo | null>;
}

/**
 * Write `put.data` as `@nats-io/obj` does: chunks on `$O.<bucket>.C.<nuid>`, then (only after every
 * chunk's ack, so an object a reader can find is whole) the metadata with the SHA-256 digest on
 * `$O.<bucket>.M.<name>`, rolled up. Chunks go out as `window` gives slots. The acks' stream
 * sequences must follow the chunks' order (a reader takes chunks by sequence), else the put fails.
 * A failed put waits for its chunks' acks to settle and then purges the chunks that landed.
 */
export async function putChunked(js: JetStreamClient, jsm: JetStreamManager, window: ChunkWindow, put: ChunkedPut): Promise<void> {
  const { bucket, name, data, chunkBytes, timeout } = put;
  const id = nuid.next();
  const chunkSubject = `$O.${bucket}.C.${id}`;
  try {
    const hash = createHash('sha256');
    const acks: Promise<PubAck>[] = [];
    const state: { failed: boolean; error?: unknown } = { failed: false };
    for (let offset = 0; offset < data.byteLength && !state.failed; offset += chunkBytes) {
      // Taken without a wait while slots are free, so the chunks that fit go out back to back.
      if (!window.tryAcquire()) await window.acquire();
      if (state.failed) {
        window.release();
        break;
      }
      const chunk = data.subarray(offset, Math.min(offset + chunkBytes, data.byteLength));
      const ack = js.publish(chunkSubject, chunk, { timeout });
      acks.push(ack);
      ack.then(
        () => window.release(),
        (err: unknown) => {
          if (!state.failed) Object.assign(state, { failed: true, error: err });
          window.release();
        },
      );
      // Hashed once on its way, so the digest's CPU overlaps the server's write.
      hash.update(chunk);
    }
    // Every chunk sent has its answer before the put goes on or fails: a purge must come after the last.
    const settled = await Promise.allSettled(acks);
    if (state.failed) throw state.error;
    const seqs = settled.map((s) => (s as PromiseFulfilledResult<PubAck>).value.seq);
    if (seqs.some((seq, i) => i > 0 && seq <= seqs[i - 1])) throw new Error(`chunks stored out of order (sequences ${seqs.join(', ')})`);
    // The fields, in their order, of @nats-io/obj's metadata.
    const info = {
      bucket,
      nuid: id,
      size: data.byteLength,
      chunks: acks.length,
      name,
      description: '',
      options: { max_chunk_size: chunkBytes },
      metadata: put.metadata,
      mtime: new Date().toISOString(),
      digest: `SHA-256=${Base64UrlPaddedCodec.encode(hash.digest())}`,
      deleted: false,
    };
    const h = headers();
    h.set(JsHeaders.RollupHdr, JsHeaders.RollupValueSubject);
    await js.publish(`$O.${bucket}.M.${Base64UrlPaddedCodec.encode(name)}`, JSON.stringify(info), { headers: h, timeout });
    // The new object is live: the one it replaces loses its chunks (a failure here is not the put's, as in @nats-io/obj).
    const old = await put.previous;
    if (old && old.nuid !== id) await jsm.streams.purge(put.stream, { filter: `$O.${bucket}.C.${old.nuid}` }).catch(() => undefined);
  } catch (err) {
    // Chunks that landed before the failure would otherwise stay until the bucket's TTL.
    await jsm.streams.purge(put.stream, { filter: chunkSubject }).catch(() => undefined);
    throw err;
  }
}
