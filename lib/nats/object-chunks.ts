// What a read of the object store holds while it reads: the chunks as they come, hashed, and how
// many chunks all reads of one bucket may ask for ahead at once.
import { createHash } from 'node:crypto';

/** How `@nats-io/obj` writes an object's digest: `SHA-256=` and the base64url of the hash, padded. */
export const DIGEST_PREFIX = 'SHA-256=';

/** Digests compared without their base64 padding, which writers may or may not add. */
export function sameDigest(a: string, b: string): boolean {
  return a.replace(/=+$/, '') === b.replace(/=+$/, '');
}

/** The chunks read of one object, hashed as they come. */
export class Chunks {
  readonly hash = createHash('sha256');
  readonly chunks: Uint8Array[] = [];
  size = 0;

  add(data: Uint8Array): void {
    this.hash.update(data);
    this.chunks.push(data);
    this.size += data.byteLength;
  }
}

/** Chunks (1 MiB each with the server's default max_payload) a read asks for at once. */
export const READ_AHEAD = 3;

/**
 * Chunks asked for ahead at once over all reads of a bucket: a burst of reads then asks no more of
 * the server than reading one chunk at a time did, plus this many (a connection with too much
 * waiting for it is cut as a slow consumer).
 */
export const READ_AHEAD_WINDOW_CHUNKS = 16;
