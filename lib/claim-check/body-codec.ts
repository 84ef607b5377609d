import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import {
  InvalidOptionsError,
  StoredBodyAuthenticationError,
  StoredMessageCorruptError,
  UnknownEncryptionKeyError,
} from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, wholeNumber } from '../options/rules';

/** How stored bodies are compressed. `'zstd'` needs a Node whose `node:zlib` has it (22.15 / 23.8 and later). */
export type BodyCompression = 'gzip' | 'brotli' | 'zstd' | false;

/** Keys by id: 32-byte Buffers, or strings of 64 hex digits or of base64 (standard or URL-safe) for 32 bytes. */
export type EncryptionKeys = Record<string, Buffer | Uint8Array | string>;

/** Returns the keys (from the environment, a KMS, Vault). Called at bootstrap, by `/_health`, and for an unknown key id. */
export type EncryptionKeyProvider = () => EncryptionKeys | Promise<EncryptionKeys>;

/** `storage.encryption`: AES-256-GCM of every stored body. */
export interface BodyEncryptionOptions {
  /** The keys, or a function that returns them. Every key decrypts; `currentKeyId` encrypts. */
  keys: EncryptionKeys | EncryptionKeyProvider;
  /** Id of the key that encrypts new bodies (1 to 64 printable ASCII characters, no spaces). */
  currentKeyId: string;
  /**
   * Refuse stored bodies that are not encrypted, with `StoredBodyAuthenticationError`. Default
   * `false`: plain JSON bodies (written before the upgrade, or by Python publishers) are read, so
   * whoever can write to the store can still replace a body with plain JSON. Turn it on once every
   * publisher encrypts and the bodies from before have expired.
   */
  requireEncryption?: boolean;
  /**
   * A key provider is called again for the same key id, or by `/_health`, at most once per this
   * many ms. Default 10000.
   */
  keyProviderIntervalMs?: number;
}

/** The body codec's part of `storage`: what happens to a stored body between JSON and the store. */
export interface BodyCodecOptions {
  /** Encrypt stored bodies (AES-256-GCM). Default: not encrypted. */
  encryption?: BodyEncryptionOptions;
  /**
   * Compress stored bodies, kept only where it saves at least `DEFAULTS.bodyCodec.minCompressionSaving`
   * (10 %) of the body; otherwise the body is stored as it is. Default `false`.
   */
  compression?: BodyCompression;
  /**
   * With `keyPrefix: ''` (the Python services' wire): no Python service reads these stored bodies,
   * so they may be encrypted or compressed. Default `false`, and the codec is refused there.
   */
  allReadersUseThisLibrary?: boolean;
}

/** The keys of `storage` that configure the codec (the module strips them before building the store). */
export const BODY_CODEC_KEYS = ['encryption', 'compression', 'allReadersUseThisLibrary'] as const;

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
const MAGIC = Buffer.from([0x00, 0x45, 0x42, 0x43, 0x31]);
const FIXED_HEADER = MAGIC.length + 2;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const enum Cipher {
  None = 0,
  AesGcm = 1,
  AesGcmBound = 2,
}
const COMPRESSION_IDS = { gzip: 1, brotli: 2, zstd: 3 } as const;
const COMPRESSION_NAMES = ['none', 'gzip', 'brotli', 'zstd'] as const;
// Printable ASCII without spaces: ids appear in headers, error messages and logs.
const KEY_ID = /^[\x21-\x7e]{1,64}$/;
// Distinct unknown key ids remembered for rate limiting; past it the memory starts over.
const MAX_TRIED_KEY_IDS = 1000;
// No JSON text V8 can parse is longer; a "compressed" body that inflates past it is refused, not held.
const MAX_DECODED_BYTES = 1024 * 1024 * 1024;

type Compress = (data: Buffer | string) => Promise<Buffer>;
type Decompress = (data: Buffer) => Promise<Buffer>;

// zstd came to node:zlib in 22.15 / 23.8; on older Nodes these are undefined.
const z = zlib as unknown as Record<string, ((...args: unknown[]) => unknown) | undefined>;
/** Whether this Node's `node:zlib` has zstd. */
export const ZSTD_AVAILABLE = typeof z.zstdCompress === 'function' && typeof z.zstdDecompress === 'function';

const codecs: Record<'gzip' | 'brotli' | 'zstd', { compress: Compress; decompress: Decompress } | undefined> = {
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

const stores = new WeakMap<object, BodyCodec>();

/**
 * Encrypts and compresses stored bodies, and reads them back. One per bus (it is attached to the
 * bus's store with `withBodyCodec`); `ClaimCheckCodec` applies it to every body it stores or
 * recovers, whatever the store. Bodies without its header pass through unchanged.
 */
export class BodyCodec {
  private keys = new Map<string, Buffer>();
  private readonly provider?: EncryptionKeyProvider;
  private readonly currentKeyId?: string;
  private readonly compression: BodyCompression;
  private readonly requireEncryption: boolean;
  private readonly intervalMs: number;
  private loaded = false;
  private calling?: Promise<void>;
  private lastCall = Number.NEGATIVE_INFINITY;
  private failure?: Error;
  private readonly triedKeyIds = new Map<string, number>();

  constructor(
    options: BodyCodecOptions = {},
    /** The store honours `StoreHints.token`: encrypted bodies are bound to their envelope's token, and unbound ones refused. */
    readonly bindsToken = false,
  ) {
    if (options === null || typeof options !== 'object') throw new InvalidOptionsError('storage', 'must be an object');
    const compression = options.compression ?? false;
    if (compression !== false && !(compression in COMPRESSION_IDS)) {
      throw new InvalidOptionsError('storage.compression', `must be 'gzip', 'brotli', 'zstd' or false, got ${JSON.stringify(compression)}`);
    }
    if (compression === 'zstd' && !ZSTD_AVAILABLE) {
      throw new InvalidOptionsError(
        'storage.compression',
        `'zstd' needs Node 22.15, 23.8 or later (node:zlib has no zstd in Node ${process.versions.node}); use 'gzip' or 'brotli'`,
      );
    }
    this.compression = compression;
    const enc = options.encryption;
    this.requireEncryption = false;
    this.intervalMs = DEFAULTS.bodyCodec.keyProviderIntervalMs;
    if (enc === undefined) return;
    if (enc === null || typeof enc !== 'object') throw new InvalidOptionsError('storage.encryption', 'must be { keys, currentKeyId }');
    knownKeys('storage.encryption', enc, ['keys', 'currentKeyId', 'requireEncryption', 'keyProviderIntervalMs']);
    if (typeof enc.currentKeyId !== 'string' || !KEY_ID.test(enc.currentKeyId)) {
      throw new InvalidOptionsError('storage.encryption.currentKeyId', 'must be a key id of 1 to 64 printable ASCII characters, no spaces');
    }
    if (enc.requireEncryption !== undefined && typeof enc.requireEncryption !== 'boolean') {
      throw new InvalidOptionsError('storage.encryption.requireEncryption', 'must be true or false');
    }
    wholeNumber('storage.encryption.keyProviderIntervalMs', enc.keyProviderIntervalMs, 0, 'milliseconds');
    this.currentKeyId = enc.currentKeyId;
    this.requireEncryption = enc.requireEncryption ?? false;
    this.intervalMs = enc.keyProviderIntervalMs ?? this.intervalMs;
    if (typeof enc.keys === 'function') {
      this.provider = enc.keys;
    } else {
      this.keys = parseKeys(enc.keys, this.currentKeyId);
      this.loaded = true;
    }
  }

  /** Whether stored bodies are changed at all (encrypted or compressed). */
  get encodes(): boolean {
    return this.currentKeyId !== undefined || this.compression !== false;
  }

  get encrypts(): boolean {
    return this.currentKeyId !== undefined;
  }

  /** Load the keys of a key provider (bootstrap). Rejects with `InvalidOptionsError` naming what is wrong. */
  async ready(): Promise<void> {
    if (!this.loaded && this.provider) await this.callProvider();
  }

  /**
   * Throws unless the keys are usable: a key provider is asked again (at most once per
   * `keyProviderIntervalMs`) and must answer with a key for `currentKeyId`. For `/_health`.
   */
  async checkKeys(): Promise<void> {
    if (!this.provider) return;
    if (this.calling || Date.now() - this.lastCall >= this.intervalMs) await this.callProvider().catch(() => undefined);
    if (this.failure) throw this.failure;
  }

  /**
   * The stored form of `body`: compressed where it saves enough, encrypted when keys are set,
   * with the header; `body` itself when neither applies. `token` (the envelope's) binds the body to it.
   */
  async encode(body: Buffer | string, token?: string): Promise<Buffer> {
    // JSON text goes to zlib and the cipher as it is: they encode it themselves, without a whole-body Buffer of ours.
    let data: Buffer | string = body;
    let compression = 0;
    if (this.compression !== false) {
      const packed = await codecs[this.compression]!.compress(body);
      const size = typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength;
      if (packed.byteLength <= size * (1 - DEFAULTS.bodyCodec.minCompressionSaving)) {
        data = packed;
        compression = COMPRESSION_IDS[this.compression];
      }
    }
    if (!this.encrypts) {
      if (compression !== 0) return Buffer.concat([MAGIC, Buffer.from([compression, Cipher.None]), data as Buffer]);
      return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    }
    await this.ready();
    const keyId = this.currentKeyId!;
    const id = Buffer.from(keyId, 'ascii');
    const header = Buffer.concat([
      MAGIC,
      Buffer.from([compression, token ? Cipher.AesGcmBound : Cipher.AesGcm, id.byteLength]),
      id,
      randomBytes(NONCE_BYTES),
    ]);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(keyId)!, header.subarray(header.byteLength - NONCE_BYTES));
    cipher.setAAD(additionalData(header, token));
    const sealed = typeof data === 'string' ? cipher.update(data, 'utf8') : cipher.update(data);
    return Buffer.concat([header, sealed, cipher.final(), cipher.getAuthTag()]);
  }

  /**
   * The body a stored value stands for. A value without the header is returned as it is (unless
   * `requireEncryption`). Rejects with `StoredBodyAuthenticationError`, `UnknownEncryptionKeyError`
   * or `StoredMessageCorruptError`; never hands over bytes that failed authentication.
   */
  async decode(stored: Uint8Array, token: string): Promise<Uint8Array> {
    const buf = Buffer.isBuffer(stored) ? stored : Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    if (!hasHeader(buf)) {
      if (this.requireEncryption)
        throw new StoredBodyAuthenticationError(token, 'it is not encrypted (storage.encryption.requireEncryption)');
      return stored;
    }
    if (buf.byteLength < FIXED_HEADER) throw new StoredBodyAuthenticationError(token, 'its header is cut short');
    const compression = buf[MAGIC.length];
    const cipherId = buf[MAGIC.length + 1];
    if (compression >= COMPRESSION_NAMES.length || cipherId > Cipher.AesGcmBound) {
      throw new StoredBodyAuthenticationError(token, `its header names an unknown codec (${compression}/${cipherId})`);
    }
    let data: Buffer;
    if (cipherId === Cipher.None) {
      if (this.requireEncryption)
        throw new StoredBodyAuthenticationError(token, 'it is not encrypted (storage.encryption.requireEncryption)');
      data = buf.subarray(FIXED_HEADER);
    } else {
      data = await this.decrypt(buf, cipherId, token);
    }
    if (compression === 0) return data;
    const name = COMPRESSION_NAMES[compression] as 'gzip' | 'brotli' | 'zstd';
    const codec = codecs[name];
    if (!codec) {
      throw new StoredMessageCorruptError(
        `stored body ${token} is compressed with ${name}, which node:zlib of Node ${process.versions.node} lacks (zstd needs 22.15 / 23.8 or later)`,
      );
    }
    try {
      return await codec.decompress(data);
    } catch (err) {
      throw new StoredMessageCorruptError(`stored body ${token} does not decompress (${name}): ${(err as Error).message}`, { cause: err });
    }
  }

  private async decrypt(buf: Buffer, cipherId: number, token: string): Promise<Buffer> {
    const idLength = buf[FIXED_HEADER] ?? 0;
    const headerLength = FIXED_HEADER + 1 + idLength + NONCE_BYTES;
    if (idLength === 0 || buf.byteLength < headerLength + TAG_BYTES) throw new StoredBodyAuthenticationError(token, 'it is cut short');
    const keyId = buf.toString('latin1', FIXED_HEADER + 1, FIXED_HEADER + 1 + idLength);
    if (!KEY_ID.test(keyId)) throw new StoredBodyAuthenticationError(token, 'its key id is malformed');
    // A bus whose store keeps the tokens it is given writes only bound bodies: an unbound one was put there by someone else.
    if (this.bindsToken && cipherId !== Cipher.AesGcmBound) {
      throw new StoredBodyAuthenticationError(token, 'it is not bound to its token');
    }
    const key = await this.keyFor(keyId, token);
    const header = buf.subarray(0, headerLength);
    const decipher = createDecipheriv('aes-256-gcm', key, header.subarray(headerLength - NONCE_BYTES));
    decipher.setAAD(additionalData(header, cipherId === Cipher.AesGcmBound ? token : undefined));
    decipher.setAuthTag(buf.subarray(buf.byteLength - TAG_BYTES));
    try {
      const plain = decipher.update(buf.subarray(headerLength, buf.byteLength - TAG_BYTES));
      // GCM's final() only checks the tag and returns no bytes: no copy of the whole body to join it.
      const rest = decipher.final();
      return rest.byteLength === 0 ? plain : Buffer.concat([plain, rest]);
    } catch {
      throw new StoredBodyAuthenticationError(
        token,
        'it failed AES-256-GCM authentication (changed, cut short, from another message, or another key under the same id)',
      );
    }
  }

  /** The key `keyId`; for an id not held, the provider is asked again, once per id and interval. */
  private async keyFor(keyId: string, token: string): Promise<Buffer> {
    if (!this.loaded && this.provider) await this.callProvider().catch(() => undefined);
    const key = this.keys.get(keyId);
    if (key) return key;
    if (!this.provider) {
      throw new UnknownEncryptionKeyError(keyId, token, this.encrypts ? undefined : 'and this bus has no storage.encryption');
    }
    const tried = this.triedKeyIds.get(keyId);
    if (tried === undefined || Date.now() - tried >= this.intervalMs) {
      if (this.triedKeyIds.size >= MAX_TRIED_KEY_IDS) this.triedKeyIds.clear();
      this.triedKeyIds.set(keyId, Date.now());
      await this.callProvider().catch(() => undefined);
    }
    const fresh = this.keys.get(keyId);
    if (fresh) return fresh;
    throw new UnknownEncryptionKeyError(keyId, token, 'which the key provider does not return');
  }

  // One call at a time; a set without the current key, or a provider that throws, keeps the keys held.
  private callProvider(): Promise<void> {
    this.calling ??= (async () => {
      this.lastCall = Date.now();
      try {
        let given: EncryptionKeys;
        try {
          given = await this.provider!();
        } catch (err) {
          throw new InvalidOptionsError('storage.encryption.keys', `the key provider failed: ${(err as Error)?.message ?? String(err)}`, {
            cause: err,
          });
        }
        this.keys = parseKeys(given, this.currentKeyId!);
        this.loaded = true;
        this.failure = undefined;
      } catch (err) {
        this.failure = err as Error;
        throw err;
      } finally {
        this.calling = undefined;
      }
    })();
    return this.calling;
  }
}

/**
 * Give `store` a body codec from `options` (the `storage` options' `encryption`, `compression`,
 * `allReadersUseThisLibrary`) and load its keys; returns the store. `EventBus` and the
 * `@nestjs/microservices` transport then encrypt and compress what they store there.
 * `EventBusModule` calls it for `storage: { …, encryption, compression }`. Refuses, with
 * `InvalidOptionsError`, the Python services' wire (`keyPrefix: ''`) unless `allReadersUseThisLibrary`,
 * and the legacy shadow copy (only Python readers need it).
 */
export async function withBodyCodec<S extends object>(store: S, options: BodyCodecOptions): Promise<S> {
  const codec = new BodyCodec(options, (store as { honoursTokenHint?: unknown }).honoursTokenHint === true);
  if (!codec.encodes) return store;
  const option = options.encryption ? 'storage.encryption' : 'storage.compression';
  if ((store as { keyPrefix?: unknown }).keyPrefix === '') {
    if (options.allReadersUseThisLibrary !== undefined && typeof options.allReadersUseThisLibrary !== 'boolean') {
      throw new InvalidOptionsError('storage.allReadersUseThisLibrary', 'must be true or false');
    }
    if (options.allReadersUseThisLibrary !== true) {
      throw new InvalidOptionsError(
        option,
        "is refused with keyPrefix '' (the Python services' wire): a Python service cannot read an encrypted or compressed body. " +
          'Set storage.allReadersUseThisLibrary: true once every service that reads these bodies uses nestjs-nats-eventbus',
      );
    }
    if ((store as { legacyShadowCopy?: unknown }).legacyShadowCopy === true) {
      throw new InvalidOptionsError(
        'storage.legacyShadowCopy',
        `is for Python readers, which ${option} rules out; set legacyShadowCopy: false (EventBusModule turns it off by default with a body codec)`,
      );
    }
  }
  await codec.ready();
  stores.set(store, codec);
  return store;
}

/** The body codec given to `store` with `withBodyCodec`, if any. */
export function bodyCodecOf(store: object | null | undefined): BodyCodec | undefined {
  return store ? stores.get(store) : undefined;
}

/** Whether a stored value carries the codec's header (it is not plain JSON). */
export function hasHeader(buf: Uint8Array): boolean {
  return buf.byteLength >= MAGIC.length && buf[0] === 0 && Buffer.from(buf.buffer, buf.byteOffset, MAGIC.length).equals(MAGIC);
}

function additionalData(header: Buffer, token: string | undefined): Buffer {
  return token ? Buffer.concat([header, Buffer.from(token, 'utf8')]) : header;
}

/** Validated 32-byte keys; `InvalidOptionsError` names the key id, never the key. */
function parseKeys(given: unknown, currentKeyId: string): Map<string, Buffer> {
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    throw new InvalidOptionsError('storage.encryption.keys', 'must be an object of key id to key (or a function returning one)');
  }
  const keys = new Map<string, Buffer>();
  for (const [id, value] of Object.entries(given as Record<string, unknown>)) {
    if (!KEY_ID.test(id)) {
      throw new InvalidOptionsError(
        'storage.encryption.keys',
        `key id ${JSON.stringify(id.slice(0, 80))} must be 1 to 64 printable ASCII characters, no spaces`,
      );
    }
    keys.set(id, keyBytes(id, value));
  }
  if (!keys.has(currentKeyId)) {
    throw new InvalidOptionsError(
      'storage.encryption.currentKeyId',
      `no key "${currentKeyId}" among storage.encryption.keys (${[...keys.keys()].map((k) => `"${k}"`).join(', ') || 'none'})`,
    );
  }
  return keys;
}

function keyBytes(id: string, value: unknown): Buffer {
  const option = `storage.encryption.keys.${id}`;
  let bytes: Buffer;
  if (value instanceof Uint8Array) bytes = Buffer.from(value);
  else if (typeof value === 'string') {
    const text = value.trim();
    // 64 hex digits are also valid base64 (of 48 bytes): hex is tried first.
    if (/^[0-9a-fA-F]{64}$/.test(text)) bytes = Buffer.from(text, 'hex');
    else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) bytes = Buffer.from(text, 'base64');
    else throw new InvalidOptionsError(option, 'must be a 32-byte Buffer, 64 hex digits or base64 of 32 bytes');
  } else throw new InvalidOptionsError(option, `must be a 32-byte Buffer, 64 hex digits or base64 of 32 bytes, got ${typeof value}`);
  if (bytes.byteLength !== KEY_BYTES) {
    throw new InvalidOptionsError(
      option,
      `must be ${KEY_BYTES} bytes for AES-256, got ${bytes.byteLength} (generate one with: openssl rand -base64 32)`,
    );
  }
  return bytes;
}
