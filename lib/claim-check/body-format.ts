/**
 * Stored-body header. NUL cannot start JSON text (nor any UTF-8 text a publisher sends), so a plain
 * body, from before the upgrade or from a Python service, is never mistaken for an encoded one.
 *   0      0x00 'E' 'B' 'C' '1'   magic and format version
 *   5      compression: 0 none, 1 gzip, 2 brotli, 3 zstd
 *   6      cipher: 0 none, 1 AES-256-GCM, 2 AES-256-GCM bound to the envelope's token
 *   7      key id length n, then n bytes of key id, then the 12-byte nonce   (cipher only)
 *   ...    body (ciphertext followed by the 16-byte GCM tag when encrypted)
 * The whole header (and the token, for cipher 2) is GCM's additional data: changing any of it fails authentication.
 */
export const MAGIC = Buffer.from([0x00, 0x45, 0x42, 0x43, 0x31]);
export const FIXED_HEADER = MAGIC.length + 2;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
// A plain object, not a const enum: it is shared across modules, which isolated transpilers cannot inline.
export const Cipher = { None: 0, AesGcm: 1, AesGcmBound: 2 } as const;
export const COMPRESSION_IDS = { gzip: 1, brotli: 2, zstd: 3 } as const;
export const COMPRESSION_NAMES = ['none', 'gzip', 'brotli', 'zstd'] as const;
// Printable ASCII without spaces: ids appear in headers, error messages and logs.
export const KEY_ID = /^[\x21-\x7e]{1,64}$/;

/** Whether a stored value carries the codec's header (it is not plain JSON). */
export function hasHeader(buf: Uint8Array): boolean {
  return buf.byteLength >= MAGIC.length && buf[0] === 0 && Buffer.from(buf.buffer, buf.byteOffset, MAGIC.length).equals(MAGIC);
}

/** GCM's additional data: the header, and for a bound body the envelope's token after it. */
export function additionalData(header: Buffer, token: string | undefined): Buffer {
  return token ? Buffer.concat([header, Buffer.from(token, 'utf8')]) : header;
}
