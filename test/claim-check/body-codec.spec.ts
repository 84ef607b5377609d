import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { BodyCodec, bodyCodecOf, hasHeader, ZSTD_AVAILABLE } from '../../lib/claim-check/body-codec';
import { ClaimCheckCodec } from '../../lib/claim-check/claim-check.codec';
import {
  EventBusErrorCode,
  InMemoryStorageManager,
  InvalidOptionsError,
  MessageStorageManager,
  StoredBodyAuthenticationError,
  StoredMessageCorruptError,
  StoredMessageEnvelope,
  UnknownEncryptionKeyError,
  withBodyCodec,
} from '../../lib';
import { MiB } from '../harness/wait';

// Issue 32: the body codec, without servers. Stores here are in memory; the same cases run on
// Redis, the object store and a custom store in body-codec.integration.spec.ts.
const K1 = randomBytes(32);
const K2 = randomBytes(32);
const MARKER = 'site-report-marker-7f3a';
const report = (bytes: number) =>
  JSON.stringify({
    marker: MARKER,
    sites: Array.from({ length: Math.ceil(bytes / 120) }, (_, i) => ({ id: i, state: 'up', latencyMs: i % 97 })),
  });
const TOKEN = '0f8fad5b-d9cb-469f-a165-70867728950e';
const OTHER = '1f8fad5b-d9cb-469f-a165-70867728950e';

describe('BodyCodec: the stored form', () => {
  it('plain JSON (any first character JSON allows) never looks like an encoded body', () => {
    for (const json of ['{"a":1}', '[1]', '"s"', '42', '-1', 'true', 'false', 'null', ' {}', '\n[]']) {
      expect(hasHeader(Buffer.from(json))).toBe(false);
    }
  });

  it('a body without the header is read as it is (bodies from before the upgrade and from Python publishers)', async () => {
    const codec = new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' }, compression: 'gzip' });
    const old = Buffer.from('{"from":"python"}');
    expect(Buffer.from(await codec.decode(old, TOKEN)).toString()).toBe('{"from":"python"}');
  });

  it('encrypted: no plaintext in the stored bytes; header = NUL "EBC1", codec bytes, key id, nonce; fresh nonce per body', async () => {
    const codec = new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
    const body = Buffer.from(report(4096));
    const a = await codec.encode(body, TOKEN);
    const b = await codec.encode(body, TOKEN);
    expect(a.subarray(0, 5)).toEqual(Buffer.from([0, 0x45, 0x42, 0x43, 0x31]));
    expect([a[5], a[6], a[7]]).toEqual([0, 2, 2]); // no compression, GCM bound to the token, key id of 2 bytes
    expect(a.subarray(8, 10).toString()).toBe('k1');
    expect(a.includes(MARKER)).toBe(false);
    expect(a.subarray(10, 22).equals(b.subarray(10, 22))).toBe(false); // nonces differ
    expect(a.byteLength).toBe(body.byteLength + 10 + 12 + 16);
    expect(Buffer.from(await codec.decode(a, TOKEN)).equals(body)).toBe(true);
  });

  it.each(['gzip', 'brotli'] as const)('%s: a compressible body is stored compressed and comes back byte for byte', async (compression) => {
    const codec = new BodyCodec({ compression });
    const body = Buffer.from(report(256 * 1024));
    const stored = await codec.encode(body);
    expect(stored[5]).toBe(compression === 'gzip' ? 1 : 2);
    expect(stored.byteLength).toBeLessThan(body.byteLength / 4);
    expect(Buffer.from(await codec.decode(stored, TOKEN)).equals(body)).toBe(true);
  });

  if (ZSTD_AVAILABLE) {
    it(`zstd (node:zlib of Node ${process.versions.node} has it): round trip, marked 3`, async () => {
      const codec = new BodyCodec({ compression: 'zstd', encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
      const body = Buffer.from(report(256 * 1024));
      const stored = await codec.encode(body, TOKEN);
      expect(stored[5]).toBe(3);
      expect(stored.byteLength).toBeLessThan(body.byteLength / 4);
      expect(Buffer.from(await codec.decode(stored, TOKEN)).equals(body)).toBe(true);
    });
  } else {
    it(`zstd on Node ${process.versions.node} (no zstd in node:zlib): a clear InvalidOptionsError naming storage.compression`, () => {
      expect(typeof (zlib as unknown as Record<string, unknown>).zstdCompress).toBe('undefined');
      const err = catching(() => new BodyCodec({ compression: 'zstd' }));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe('storage.compression');
      expect((err as Error).message).toMatch(/'zstd' needs Node 22\.15, 23\.8 or later/);
    });
  }

  it('incompressible bytes (saving under 10 %) are stored as they are: no header without encryption, compression 0 with it', async () => {
    const noise = Buffer.from(randomBytes(64 * 1024).toString('base64')); // base64 gzips by about 25 %; raw noise does not
    const raw = randomBytes(64 * 1024);
    const gz = new BodyCodec({ compression: 'gzip' });
    expect((await gz.encode(raw)).equals(raw)).toBe(true);
    expect((await gz.encode(noise))[5]).toBe(1);
    const both = new BodyCodec({ compression: 'gzip', encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
    const stored = await both.encode(raw, TOKEN);
    expect(stored[5]).toBe(0);
    expect(Buffer.from(await both.decode(stored, TOKEN)).equals(raw)).toBe(true);
  });

  it('a bus without a codec still reads a compressed body, and names the key of an encrypted one', async () => {
    const plain = new BodyCodec();
    const body = Buffer.from(report(64 * 1024));
    expect(Buffer.from(await plain.decode(await new BodyCodec({ compression: 'gzip' }).encode(body), TOKEN)).equals(body)).toBe(true);
    const encrypted = await new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } }).encode(body, TOKEN);
    const err = await rejection(plain.decode(encrypted, TOKEN));
    expect(err).toBeInstanceOf(UnknownEncryptionKeyError);
    expect(err).toMatchObject({ keyId: 'k1', token: TOKEN, code: EventBusErrorCode.UnknownEncryptionKey });
    expect((err as Error).message).toMatch(/no storage\.encryption/);
  });
});

describe('BodyCodec: tampering', () => {
  const codec = new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' }, compression: 'gzip' }, true);
  const body = Buffer.from(report(32 * 1024));

  it.each([
    ['a flipped byte in the ciphertext', (s: Buffer) => flip(s, s.byteLength >> 1)],
    ['a flipped byte in the tag', (s: Buffer) => flip(s, s.byteLength - 1)],
    ['a flipped byte in the nonce', (s: Buffer) => flip(s, 12)],
    ['the compression marker changed', (s: Buffer) => set(s, 5, 2)],
    ['cut short by one byte', (s: Buffer) => s.subarray(0, s.byteLength - 1)],
    ['cut to its header', (s: Buffer) => s.subarray(0, 22)],
    ['cut inside its header', (s: Buffer) => s.subarray(0, 6)],
    ['the bound marker removed (cipher 2 -> 1)', (s: Buffer) => set(s, 6, 1)],
  ])('%s: StoredBodyAuthenticationError, nothing of the body handed over', async (_what, tamper) => {
    const stored = await codec.encode(body, TOKEN);
    const err = await rejection(codec.decode(tamper(Buffer.from(stored)), TOKEN));
    expect(err).toBeInstanceOf(StoredBodyAuthenticationError);
    expect(err).toBeInstanceOf(StoredMessageCorruptError); // durable subscriptions dead-letter it as `corrupt`
    expect(err).toMatchObject({ code: 'STORED_BODY_AUTHENTICATION_FAILED', token: TOKEN });
  });

  it("a body swapped in from another message (its token in GCM's additional data) is rejected", async () => {
    const other = await codec.encode(Buffer.from('{"other":true}'), OTHER);
    expect(await rejection(codec.decode(other, TOKEN))).toBeInstanceOf(StoredBodyAuthenticationError);
    expect(Buffer.from(await codec.decode(other, OTHER)).toString()).toBe('{"other":true}');
  });

  it('a key under the same id with other bytes fails authentication (not a garbled body)', async () => {
    const stored = await codec.encode(body, TOKEN);
    const impostor = new BodyCodec({ encryption: { keys: { k1: K2 }, currentKeyId: 'k1' } }, true);
    expect(await rejection(impostor.decode(stored, TOKEN))).toBeInstanceOf(StoredBodyAuthenticationError);
  });

  it('requireEncryption refuses plain and compressed-only bodies', async () => {
    const strict = new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1', requireEncryption: true } });
    expect(await rejection(strict.decode(Buffer.from('{"a":1}'), TOKEN))).toBeInstanceOf(StoredBodyAuthenticationError);
    const gz = await new BodyCodec({ compression: 'gzip' }).encode(Buffer.from(report(8192)));
    expect(await rejection(strict.decode(gz, TOKEN))).toBeInstanceOf(StoredBodyAuthenticationError);
  });
});

describe('BodyCodec: keys', () => {
  it('rotation: a body under the old key is read by a bus whose current key is the new one', async () => {
    const old = new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
    const rotated = new BodyCodec({ encryption: { keys: { k1: K1, k2: K2 }, currentKeyId: 'k2' } });
    const stored = await old.encode(Buffer.from('{"v":1}'));
    expect(Buffer.from(await rotated.decode(stored, TOKEN)).toString()).toBe('{"v":1}');
    expect((await rotated.encode(Buffer.from('{"v":2}'))).subarray(8, 10).toString()).toBe('k2');
  });

  it('a removed key: UnknownEncryptionKeyError naming the key id', async () => {
    const stored = await new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } }).encode(Buffer.from('{}'));
    const err = await rejection(new BodyCodec({ encryption: { keys: { k2: K2 }, currentKeyId: 'k2' } }).decode(stored, TOKEN));
    expect(err).toBeInstanceOf(UnknownEncryptionKeyError);
    expect(err).toMatchObject({ keyId: 'k1', code: 'UNKNOWN_ENCRYPTION_KEY' });
    expect((err as Error).message).toBe(`stored body ${TOKEN} is encrypted with key "k1", which is not among storage.encryption.keys`);
  });

  it.each([
    ['a Buffer of 32 bytes', true, K1],
    ['64 hex digits', true, K1.toString('hex')],
    ['base64 of 32 bytes', true, K1.toString('base64')],
    ['base64url of 32 bytes', true, K1.toString('base64url')],
    ['a Buffer of 16 bytes', false, randomBytes(16)],
    ['base64 of 24 bytes', false, randomBytes(24).toString('base64')],
    ['a passphrase', false, 'correct horse battery staple'],
    ['a number', false, 42],
  ])('a key given as %s: accepted=%s', (_what, ok, key) => {
    const make = () => new BodyCodec({ encryption: { keys: { k1: key as Buffer }, currentKeyId: 'k1' } });
    if (ok) return void expect(make().encrypts).toBe(true);
    const err = catching(make);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe('storage.encryption.keys.k1');
    if (typeof key === 'string') expect((err as Error).message).not.toContain(key); // never echo a key
  });

  it('currentKeyId must name a configured key', () => {
    const err = catching(() => new BodyCodec({ encryption: { keys: { k1: K1 }, currentKeyId: 'k9' } }));
    expect(err).toMatchObject({ option: 'storage.encryption.currentKeyId' });
    expect((err as Error).message).toMatch(/no key "k9" among storage.encryption.keys \("k1"\)/);
  });

  it('a key provider: called at bootstrap, and again for an unknown key id, once per id within keyProviderIntervalMs', async () => {
    let calls = 0;
    let keys: Record<string, Buffer> = { k1: K1 };
    const codec = new BodyCodec({ encryption: { keys: async () => (calls++, keys), currentKeyId: 'k1', keyProviderIntervalMs: 60_000 } });
    await codec.ready();
    expect(calls).toBe(1);
    const underK2 = await new BodyCodec({ encryption: { keys: { k2: K2 }, currentKeyId: 'k2' } }).encode(Buffer.from('{"k":2}'));
    // k2 not given yet: one call for it, then the error; further bodies under k2 do not call again.
    expect(await rejection(codec.decode(underK2, TOKEN))).toBeInstanceOf(UnknownEncryptionKeyError);
    expect(await rejection(codec.decode(underK2, TOKEN))).toBeInstanceOf(UnknownEncryptionKeyError);
    expect(calls).toBe(2);
    const underK3 = await new BodyCodec({ encryption: { keys: { k3: K2 }, currentKeyId: 'k3' } }).encode(Buffer.from('{"k":3}'));
    keys = { k1: K1, k3: K2 };
    expect(Buffer.from(await codec.decode(underK3, TOKEN)).toString()).toBe('{"k":3}');
    expect(calls).toBe(3);
  });

  it('a key provider that throws or drops the current key: bootstrap fails naming the option; later, checkKeys throws and the held keys still work', async () => {
    const failing = new BodyCodec({ encryption: { keys: async () => Promise.reject(new Error('KMS unreachable')), currentKeyId: 'k1' } });
    const err = await rejection(failing.ready());
    expect(err).toMatchObject({ option: 'storage.encryption.keys' });
    expect((err as Error).message).toMatch(/the key provider failed: KMS unreachable/);

    let answer: () => Record<string, Buffer> = () => ({ k1: K1 });
    const codec = new BodyCodec({ encryption: { keys: async () => answer(), currentKeyId: 'k1', keyProviderIntervalMs: 0 } });
    await codec.ready();
    await expect(codec.checkKeys()).resolves.toBeUndefined();
    answer = () => ({ k2: K2 });
    await expect(codec.checkKeys()).rejects.toMatchObject({ option: 'storage.encryption.currentKeyId' });
    answer = () => {
      throw new Error('KMS unreachable');
    };
    await expect(codec.checkKeys()).rejects.toThrow(/KMS unreachable/);
    const stored = await codec.encode(Buffer.from('{"still":"works"}'));
    expect(Buffer.from(await codec.decode(stored, TOKEN)).toString()).toBe('{"still":"works"}');
  });
});

describe('withBodyCodec and the claim-check codec', () => {
  it("refuses keyPrefix '' (the Python wire) unless allReadersUseThisLibrary, and the legacy shadow copy", async () => {
    const legacy = Object.assign(new InMemoryStorageManager(), { keyPrefix: '', legacyShadowCopy: false });
    const err = await rejection(withBodyCodec(legacy, { compression: 'gzip' }));
    expect(err).toMatchObject({ option: 'storage.compression' });
    expect((err as Error).message).toMatch(/a Python service cannot read an encrypted or compressed body.*allReadersUseThisLibrary: true/);
    await expect(withBodyCodec(legacy, { compression: 'gzip', allReadersUseThisLibrary: true })).resolves.toBe(legacy);
    const shadowed = Object.assign(new InMemoryStorageManager(), { keyPrefix: '', legacyShadowCopy: true });
    await expect(
      withBodyCodec(shadowed, { encryption: { keys: { k1: K1 }, currentKeyId: 'k1' }, allReadersUseThisLibrary: true }),
    ).rejects.toMatchObject({ option: 'storage.legacyShadowCopy' });
    // No codec asked for: nothing to refuse, nothing attached.
    const none = Object.assign(new InMemoryStorageManager(), { keyPrefix: '' });
    expect(bodyCodecOf(await withBodyCodec(none, { compression: false }))).toBeUndefined();
  });

  it('through ClaimCheckCodec on a store that honours the token hint: stored encrypted under the token it proposed, read back', async () => {
    const store = await withBodyCodec(new InMemoryStorageManager(), {
      encryption: { keys: { k1: K1 }, currentKeyId: 'k1' },
      compression: 'gzip',
    });
    const spy = jest.spyOn(store, 'storeMessage');
    const cc = new ClaimCheckCodec(store, 1024, bodyCodecOf(store));
    const json = report(MiB);
    const envelope = JSON.parse(Buffer.from(await cc.toWire('s', json, 2 * MiB)).toString()) as StoredMessageEnvelope;
    expect(Object.keys(envelope)).toEqual(['token', 'is_stored']);
    expect(spy.mock.calls[0][1]).toEqual({ token: envelope.token });
    const stored = Buffer.from(await store.recoverMessage(envelope));
    expect(stored.includes(MARKER)).toBe(false);
    expect(stored[6]).toBe(2);
    expect(Buffer.from(await cc.recoverBytes('s', envelope)).toString()).toBe(json);
  });

  it('a custom store that ignores the hint gets bodies encrypted without the token binding, and reads them', async () => {
    class MapStore extends MessageStorageManager {
      readonly map = new Map<string, Uint8Array>();
      async storeMessage(body: Uint8Array) {
        const token = crypto.randomUUID();
        this.map.set(token, body);
        return { token, is_stored: true as const };
      }
      async recoverMessage(e: StoredMessageEnvelope) {
        return this.map.get(e.token)!;
      }
    }
    const store = await withBodyCodec(new MapStore(), { encryption: { keys: { k1: K1 }, currentKeyId: 'k1' } });
    const cc = new ClaimCheckCodec(store, 16, bodyCodecOf(store));
    const envelope = JSON.parse(Buffer.from(await cc.toWire('s', '{"custom":"store"}', MiB)).toString());
    expect(store.map.get(envelope.token)![6]).toBe(1);
    expect(Buffer.from(await cc.recoverBytes('s', envelope)).toString()).toBe('{"custom":"store"}');
  });
});

function flip(buf: Buffer, at: number): Buffer {
  buf[at] ^= 0x01;
  return buf;
}
function set(buf: Buffer, at: number, value: number): Buffer {
  buf[at] = value;
  return buf;
}
function catching(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}
