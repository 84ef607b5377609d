// The compressors of stored bodies, each capped at what a decompressed body may grow to.
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

type Compress = (data: Buffer | string) => Promise<Buffer>;
type Decompress = (data: Buffer) => Promise<Buffer>;

// No JSON text V8 can parse is longer; a "compressed" body that inflates past it is refused, not held.
const MAX_DECODED_BYTES = 1024 * 1024 * 1024;

// zstd came to node:zlib in 22.15 / 23.8; on older Nodes these are undefined.
const z = zlib as unknown as Record<string, ((...args: unknown[]) => unknown) | undefined>;
/** Whether this Node's `node:zlib` has zstd. */
export const ZSTD_AVAILABLE = typeof z.zstdCompress === 'function' && typeof z.zstdDecompress === 'function';

export const codecs: Record<'gzip' | 'brotli' | 'zstd', { compress: Compress; decompress: Decompress } | undefined> = {
  gzip: {
    compress: (d) => promisify(zlib.gzip)(d),
    decompress: (d) => promisify(zlib.gunzip)(d, { maxOutputLength: MAX_DECODED_BYTES }),
  },
  brotli: {
    // Quality 5 of 11: the default 11 takes seconds for a few MiB; 5 keeps most of the ratio.
    compress: (d) => promisify(zlib.brotliCompress)(d, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } }),
    decompress: (d) => promisify(zlib.brotliDecompress)(d, { maxOutputLength: MAX_DECODED_BYTES }),
  },
  zstd: ZSTD_AVAILABLE
    ? {
        compress: promisify(z.zstdCompress as (d: Buffer | string, cb: (e: Error | null, r: Buffer) => void) => void),
        decompress: (d) =>
          promisify(z.zstdDecompress as (d: Buffer, o: object, cb: (e: Error | null, r: Buffer) => void) => void)(d, {
            maxOutputLength: MAX_DECODED_BYTES,
          }),
      }
    : undefined,
};
