import { InvalidOptionsError, UnknownEncryptionKeyError } from '../errors/event-bus.errors';
import { KEY_ID } from './body-format';
import type { EncryptionKeyProvider, EncryptionKeys } from './body-codec.options';

const KEY_BYTES = 32;
// Distinct unknown key ids remembered for rate limiting; past it the memory starts over.
const MAX_TRIED_KEY_IDS = 1000;

/**
 * The encryption keys of a body codec: given once, or loaded from a key provider, which is asked
 * again (at most once per interval) for a key id not held and by `/_health`.
 */
export class KeyRing {
  private keys = new Map<string, Buffer>();
  private readonly provider?: EncryptionKeyProvider;
  private loaded = false;
  private calling?: Promise<void>;
  private lastCall = Number.NEGATIVE_INFINITY;
  private failure?: Error;
  private readonly triedKeyIds = new Map<string, number>();

  constructor(
    keys: EncryptionKeys | EncryptionKeyProvider,
    /** The key that encrypts new bodies. */
    readonly currentKeyId: string,
    private readonly intervalMs: number,
  ) {
    if (typeof keys === 'function') {
      this.provider = keys;
    } else {
      this.keys = parseKeys(keys, currentKeyId);
      this.loaded = true;
    }
  }

  /** Load the keys of a key provider (bootstrap). Rejects with `InvalidOptionsError` naming what is wrong. */
  async ready(): Promise<void> {
    if (!this.loaded && this.provider) await this.callProvider();
  }

  /** The key of `currentKeyId`; call `ready()` first. */
  get current(): Buffer {
    return this.keys.get(this.currentKeyId)!;
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

  /** The key `keyId`; for an id not held, the provider is asked again, once per id and interval. */
  async keyFor(keyId: string, token: string): Promise<Buffer> {
    if (!this.loaded && this.provider) await this.callProvider().catch(() => undefined);
    const key = this.keys.get(keyId);
    if (key) return key;
    if (!this.provider) throw new UnknownEncryptionKeyError(keyId, token);
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
        this.keys = parseKeys(given, this.currentKeyId);
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
