// What `storage` says about stored bodies: compression, encryption keys and who reads them.

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
