import { ClaimCheckCodec, HEADER_ROOM_BYTES } from '../../lib/claim-check/claim-check.codec';
import { isValidToken, looksLikeEnvelope } from '../../lib/claim-check/envelope';
import { InMemoryStorageManager, InvalidMessageError, MessageStorageError, PayloadTooLargeError } from '../../lib';
import { MiB } from '../harness/wait';

describe('token shapes', () => {
  it.each([
    ['0f8fad5b-d9cb-469f-a165-70867728950e', true],
    ['0F8FAD5B-D9CB-469F-A165-70867728950E', true],
    ['jUh2DjpY8Mke3evRtdqFej', true], // shortuuid, 22 chars
    ['jUh2DjpY8Mke3evRtdqFe', false], // 21 chars
    ['jUh2DjpY8Mke3evRtdqFe0', false], // 0 is not in the shortuuid alphabet
    ['jUh2DjpY8Mke3evRtdqFel', false], // nor is l
    ['../../etc/passwd', false],
    ['eventbus:*', false],
    ['0f8fad5b-d9cb-469f-a165-70867728950e\r\nDEL x', false],
    ['', false],
    [42, false],
    [null, false],
  ])('%j valid=%s', (token, valid) => {
    expect(isValidToken(token)).toBe(valid);
  });
});

describe('envelope recognition', () => {
  it('needs exactly {token, is_stored: true}', () => {
    expect(looksLikeEnvelope({ token: 'x', is_stored: true })).toBe(true);
    expect(looksLikeEnvelope({ is_stored: true, token: 'x' })).toBe(true);
    expect(looksLikeEnvelope({ token: 'x', is_stored: 'true' })).toBe(false);
    expect(looksLikeEnvelope({ token: 'x', is_stored: 1 })).toBe(false);
    expect(looksLikeEnvelope({ token: 'x', is_stored: true, more: 1 })).toBe(false);
    expect(looksLikeEnvelope({ is_stored: true })).toBe(false);
    expect(looksLikeEnvelope([{ token: 'x', is_stored: true }])).toBe(false);
    expect(looksLikeEnvelope(null)).toBe(false);
    expect(looksLikeEnvelope('{"token":"x","is_stored":true}')).toBe(false);
  });
});

describe('ClaimCheckCodec', () => {
  it('defaults the threshold to max_payload minus header room, and never goes above it', () => {
    expect(new ClaimCheckCodec(null).thresholdFor(MiB)).toBe(MiB - HEADER_ROOM_BYTES);
    expect(new ClaimCheckCodec(null, 1000).thresholdFor(MiB)).toBe(1000);
    expect(new ClaimCheckCodec(null, 10 * MiB).thresholdFor(MiB)).toBe(MiB - HEADER_ROOM_BYTES);
  });

  it('measures the threshold in bytes, not characters', async () => {
    const storage = new InMemoryStorageManager();
    const codec = new ClaimCheckCodec(storage, 100);
    // 40 characters (two quotes and 38 euro signs of 3 bytes each), 116 bytes: under the threshold only when counted in characters.
    const text = codec.stringifyJson('€'.repeat(38), 't');
    expect(text).toHaveLength(40);
    const body = codec.encodeJson('€'.repeat(38), 't');
    expect(body.byteLength).toBe(116);
    const wire = await codec.toWire('t', body, MiB);
    expect(Buffer.from(wire).toString()).toMatch(/^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/);
    expect(storage.size).toBe(1);
    // The same body given as text takes the path that counts UTF-16 units first; it must still count bytes.
    const wireFromText = await codec.toWire('t', text, MiB);
    expect(Buffer.from(wireFromText).toString()).toMatch(/^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/);
    expect(storage.size).toBe(2);
  });

  it('passes a body at the threshold through unchanged (same bytes, no copy)', () => {
    const codec = new ClaimCheckCodec(new InMemoryStorageManager(), 100);
    const body = Buffer.from('"' + 'a'.repeat(98) + '"');
    expect(codec.toWire('t', body, MiB)).toBe(body);
  });

  it('round-trips a stored body byte for byte', async () => {
    const codec = new ClaimCheckCodec(new InMemoryStorageManager(), 10);
    const payload = { text: 'ünïcode ✓'.repeat(10) };
    const wire = await codec.toWire('t', codec.encodeJson(payload, 't'), MiB);
    const decoded = codec.decode('t', wire);
    expect(decoded.envelope).toBeDefined();
    expect(await codec.recover('t', decoded.envelope!)).toEqual(payload);
  });

  it('rejects a large body with PayloadTooLargeError when there is no storage', () => {
    const codec = new ClaimCheckCodec(null, 10);
    expect(() => codec.toWire('t', Buffer.alloc(11, 0x61), MiB)).toThrow(PayloadTooLargeError);
  });

  it('wraps any storage failure in MessageStorageError', async () => {
    const codec = new ClaimCheckCodec(
      {
        storeMessage: async () => {
          throw new TypeError('socket closed');
        },
      } as any,
      10,
    );
    await expect(codec.toWire('t', Buffer.alloc(11, 0x61), MiB)).rejects.toBeInstanceOf(MessageStorageError);
  });

  it('rejects bodies that are not JSON and envelopes with forged tokens', () => {
    const codec = new ClaimCheckCodec(new InMemoryStorageManager());
    expect(() => codec.decode('t', Buffer.from('{nope'))).toThrow(InvalidMessageError);
    expect(() => codec.decode('t', Buffer.from(''))).toThrow(InvalidMessageError);
    expect(() => codec.decode('t', Buffer.from('{"token":"../x","is_stored":true}'))).toThrow(/unknown shape/);
  });

  it('peekEnvelope finds envelopes in both spellings, and passes over everything else', () => {
    const codec = new ClaimCheckCodec(new InMemoryStorageManager());
    const uuid = '2f1c3f0e-5b7a-4c1e-9d2a-0e6b7c8d9f10';
    const short = 'vytxeTZskVKR7C7WgdSP3d';
    expect(codec.peekEnvelope('t', Buffer.from(`{"token":"${uuid}","is_stored":true}`))).toEqual({ token: uuid, is_stored: true });
    // Python's json.dumps puts a space after each separator.
    expect(codec.peekEnvelope('t', Buffer.from(`{"is_stored": true, "token": "${short}"}`))).toEqual({ token: short, is_stored: true });
    expect(codec.peekEnvelope('t', Buffer.from('{"pattern":"p","data":{"is_stored":true,"token":"x"}}'))).toBeUndefined();
    expect(() => codec.peekEnvelope('t', Buffer.from('{"token":"../x","is_stored":true}'))).toThrow(InvalidMessageError);
    // Bodies without the key are passed over unparsed (their reader parses them once, itself);
    // a view into a larger buffer, as nats.js hands out, is searched only within its bounds.
    const parse = jest.spyOn(JSON, 'parse');
    try {
      const framed = new Uint8Array(Buffer.from(`xx{"pattern":"p","data":{"a":1}}"is_stored"`));
      expect(codec.peekEnvelope('t', framed.subarray(2, 32))).toBeUndefined();
      expect(codec.peekEnvelope('t', Buffer.from('{nope'))).toBeUndefined();
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
  });

  it('encodes unencodable payloads as InvalidMessageError naming the subject', () => {
    const codec = new ClaimCheckCodec(null);
    expect(() => codec.encodeJson(undefined, 'a.b')).toThrow(/"a\.b"/);
    expect(() => codec.encodeJson(() => 1, 'a.b')).toThrow(InvalidMessageError);
  });
});
