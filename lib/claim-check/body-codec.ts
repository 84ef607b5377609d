import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import {
  InvalidOptionsError,
  StoredBodyAuthenticationError,
  StoredMessageCorruptError,
  UnknownEncryptionKeyError,
} from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import { knownKeys, wholeNumber } from '../options/rules';
import type { BodyCodecOptions, BodyCompression } from './body-codec.options';
import { codecs, ZSTD_AVAILABLE } from './body-compression';
import {
  additionalData,
  Cipher,
  COMPRESSION_IDS,
  COMPRESSION_NAMES,
  FIXED_HEADER,
  hasHeader,
  KEY_ID,
  MAGIC,
  NONCE_BYTES,
  TAG_BYTES,
} from './body-format';
import { KeyRing } from './key-ring';

// Kept importable from here: the public index and the codec's callers name this module.
export { BODY_CODEC_KEYS } from './body-codec.options';
export type { BodyCodecOptions, BodyCompression, BodyEncryptionOptions, EncryptionKeyProvider, EncryptionKeys } from './body-codec.options';
export { ZSTD_AVAILABLE } from './body-compression';
export { hasHeader } from './body-format';

const stores = new WeakMap<object, BodyCodec>();

/**
 * Encrypts and compresses stored bodies, and reads them back. One per bus (it is attached to the
 * bus's store with `withBodyCodec`); `ClaimCheckCodec` applies it to every body it stores or
 * recovers, whatever the store. Bodies without its header pass through unchanged.
 */
export class BodyCodec {
  private readonly ring?: KeyRing;
  private readonly compression: BodyCompression;
  private readonly requireEncryption: boolean;

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
    this.requireEncryption = enc.requireEncryption ?? false;
    this.ring = new KeyRing(enc.keys, enc.currentKeyId, enc.keyProviderIntervalMs ?? DEFAULTS.bodyCodec.keyProviderIntervalMs);
  }

  /** Whether stored bodies are changed at all (encrypted or compressed). */
  get encodes(): boolean {
    return this.ring !== undefined || this.compression !== false;
  }

  get encrypts(): boolean {
    return this.ring !== undefined;
  }

  /** Load the keys of a key provider (bootstrap). Rejects with `InvalidOptionsError` naming what is wrong. */
  async ready(): Promise<void> {
    await this.ring?.ready();
  }

  /**
   * Throws unless the keys are usable: a key provider is asked again (at most once per
   * `keyProviderIntervalMs`) and must answer with a key for `currentKeyId`. For `/_health`.
   */
  async checkKeys(): Promise<void> {
    await this.ring?.checkKeys();
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
    const ring = this.ring!;
    await ring.ready();
    const keyId = ring.currentKeyId;
    const id = Buffer.from(keyId, 'ascii');
    const header = Buffer.concat([
      MAGIC,
      Buffer.from([compression, token ? Cipher.AesGcmBound : Cipher.AesGcm, id.byteLength]),
      id,
      randomBytes(NONCE_BYTES),
    ]);
    const cipher = createCipheriv('aes-256-gcm', ring.current, header.subarray(header.byteLength - NONCE_BYTES));
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
    if (!this.ring) throw new UnknownEncryptionKeyError(keyId, token, 'and this bus has no storage.encryption');
    const key = await this.ring.keyFor(keyId, token);
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
