import { randomUUID } from 'node:crypto';
import { BodyCodec } from './body-codec';
import { EventBusError, InvalidMessageError, MessageStorageError, PayloadTooLargeError } from '../errors/event-bus.errors';
import { encodeEnvelope, isValidToken, StoredMessageEnvelope } from './envelope';
import { asBuffer, envelopeOf, MAX_ENVELOPE_BYTES, parseJsonBody, peekEnvelope } from './received-body';
import type { StoreHints } from './store-hints';

// Kept importable from here: the bus, delivery, dead letters and the transport name this module.
export { MAX_ENVELOPE_BYTES, parseJsonBody } from './received-body';

/** Bytes kept free under max_payload for NATS headers (service-error headers on replies, user headers). */
export const HEADER_ROOM_BYTES = 8 * 1024;

/**
 * What the codec needs of a store. `MessageStorageManager` (lib/storage) is one; declaring it here
 * keeps the import one-way: storage depends on the envelope, the codec on nothing in storage.
 */
export interface BodyStore {
  storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope>;
  /** Optional: store JSON given as text (stored as its UTF-8 bytes, as `storeMessage` would). */
  storeJson?(json: string, hints?: StoreHints): Promise<StoredMessageEnvelope>;
  recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array>;
  deleteMessage(envelope: StoredMessageEnvelope): Promise<void>;
}

/** A received body, parsed. When `envelope` is set, the payload must still be recovered. */
export interface DecodedBody {
  payload: unknown;
  envelope?: StoredMessageEnvelope;
}

/**
 * The claim-check pattern, both ways. Encodes JSON once; a body over the threshold is stored
 * and replaced by `{"token":"<id>","is_stored":true}`. On receive, only that exact shape with a
 * valid token is treated as stored.
 */
export class ClaimCheckCodec {
  constructor(
    private readonly storage: BodyStore | null,
    /** Explicit threshold in bytes; when unset, max_payload minus header room. */
    private readonly threshold?: number,
    /** Encrypts and compresses stored bodies (`withBodyCodec`); without one, stored bodies are the JSON itself. */
    private readonly bodyCodec?: BodyCodec,
  ) {}

  /** Bytes above which a body is stored, for a server that accepts `maxPayload`. */
  thresholdFor(maxPayload: number): number {
    const ceiling = maxPayload - HEADER_ROOM_BYTES;
    return this.threshold === undefined ? ceiling : Math.min(this.threshold, ceiling);
  }

  /** JSON-encode once, as text. `InvalidMessageError` names the subject when it cannot be encoded. */
  stringifyJson(payload: unknown, subject: string): string {
    let json: string | undefined;
    try {
      json = JSON.stringify(payload);
    } catch (err) {
      throw new InvalidMessageError(`payload for "${subject}" cannot be encoded as JSON: ${(err as Error).message}`, { cause: err });
    }
    if (json === undefined) throw new InvalidMessageError(`payload for "${subject}" cannot be encoded as JSON (got ${typeof payload})`);
    return json;
  }

  /** JSON-encode once into UTF-8 bytes. */
  encodeJson(payload: unknown, subject: string): Buffer {
    return Buffer.from(this.stringifyJson(payload, subject), 'utf8');
  }

  /**
   * What to put on the wire for `body` (bytes, or JSON text): the body itself when small enough,
   * else the envelope of the stored body. Rejects with `MessageStorageError` before anything is
   * published. A large body given as text goes to the store as text when the store can take it
   * (`storeJson`), which spares an encode and a copy of the whole body.
   */
  toWire(
    subject: string,
    body: Uint8Array | string,
    maxPayload: number,
    hints?: StoreHints,
    headerBytes = 0,
  ): Uint8Array | Promise<Uint8Array> {
    if (this.fitsInline(body, maxPayload, headerBytes)) return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    const limit = this.inlineLimit(maxPayload, headerBytes);
    this.checkStorable(
      subject,
      typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength,
      limit,
      maxPayload,
      headerBytes,
    );
    return this.store(body, hints);
  }

  /** Whether `body` goes on the wire as itself (else it is stored and sent as an envelope). */
  fitsInline(body: Uint8Array | string, maxPayload: number, headerBytes = 0): boolean {
    const limit = this.inlineLimit(maxPayload, headerBytes);
    if (typeof body !== 'string') return body.byteLength <= limit;
    // UTF-8 takes 1 to 3 bytes per UTF-16 unit: only text between limit/3 and limit units needs counting.
    return !(body.length > limit || (body.length * 3 > limit && Buffer.byteLength(body, 'utf8') > limit));
  }

  /** Whether a store is configured. */
  get hasStorage(): boolean {
    return this.storage !== null;
  }

  // Headers past the room kept for them take their excess from the body's share of max_payload.
  private inlineLimit(maxPayload: number, headerBytes: number): number {
    return Math.min(this.thresholdFor(maxPayload), maxPayload - headerBytes);
  }

  /** A body over `limit` can go only as an envelope: there must be a store, and room beside the headers for the envelope. */
  private checkStorable(subject: string, size: number, limit: number, maxPayload: number, headerBytes: number): void {
    if (!this.storage) throw new PayloadTooLargeError(subject, size, limit);
    if (maxPayload - headerBytes < MAX_ENVELOPE_BYTES)
      throw new PayloadTooLargeError(
        subject,
        size + headerBytes,
        maxPayload,
        `and its headers take ${headerBytes} bytes of that, leaving no room for a claim-check envelope`,
      );
  }

  /**
   * Delete the body behind an envelope this codec produced, when what it was stored for failed
   * (nobody will read it). Best effort and never throws: the TTL removes it anyway.
   */
  discard(wire: Uint8Array): void {
    const store = this.storage;
    if (!store || typeof store.deleteMessage !== 'function') return;
    try {
      const envelope = this.peekEnvelope('', wire);
      if (envelope) store.deleteMessage(envelope).catch(() => undefined);
    } catch {
      // A store that throws synchronously: the TTL still applies.
    }
  }

  /** Parse a received body. Throws `InvalidMessageError` for non-JSON or a forged envelope. */
  decode(subject: string, data: Uint8Array): DecodedBody {
    const payload = parseJsonBody(subject, data);
    const envelope = envelopeOf(subject, payload);
    return envelope ? { payload, envelope } : { payload };
  }

  /**
   * The envelope `data` is, or undefined for an ordinary body, for callers that parse bodies
   * themselves (the `@nestjs/microservices` transport). Only bodies of at most
   * `MAX_ENVELOPE_BYTES` are parsed; a body that is not JSON is left to the caller's parser.
   * Throws `InvalidMessageError` for an envelope with a forged token.
   */
  peekEnvelope(subject: string, data: Uint8Array): StoredMessageEnvelope | undefined {
    return peekEnvelope(subject, data);
  }

  /** Fetch and parse the body an envelope stands for. */
  async recover(subject: string, envelope: StoredMessageEnvelope): Promise<unknown> {
    return parseJsonBody(subject, await this.recoverBytes(subject, envelope));
  }

  /** Fetch the stored body an envelope stands for, as bytes (the original JSON, byte for byte). */
  async recoverBytes(subject: string, envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    if (!this.storage) {
      throw new MessageStorageError(`message on "${subject}" was stored (token ${envelope.token}) but no message storage is configured`);
    }
    let stored: Uint8Array;
    try {
      stored = await this.storage.recoverMessage(envelope);
    } catch (err) {
      // A custom storage may throw anything; callers rely on our classes.
      if (err instanceof EventBusError) throw err;
      throw new MessageStorageError(`could not recover message ${envelope.token}: ${(err as Error)?.message ?? String(err)}`, {
        cause: err,
      });
    }
    // Without a codec of its own a bus still reads compressed bodies, and names the key of an encrypted one.
    return (this.bodyCodec ?? PLAIN).decode(stored, envelope.token);
  }

  private async store(body: Uint8Array | string, hints: StoreHints | undefined): Promise<Uint8Array> {
    let envelope: StoredMessageEnvelope;
    const storage = this.storage!;
    if (this.bodyCodec?.encodes) return this.storeEncoded(this.bodyCodec, body, hints);
    try {
      if (typeof body !== 'string') envelope = await storage.storeMessage(body, hints);
      else if (typeof storage.storeJson === 'function') envelope = await storage.storeJson(body, hints);
      else envelope = await storage.storeMessage(Buffer.from(body, 'utf8'), hints);
    } catch (err) {
      // A custom storage may throw anything; callers rely on one error class.
      if (err instanceof MessageStorageError) throw err;
      throw new MessageStorageError(`could not store message: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    return this.checkedEnvelope(envelope);
  }

  /**
   * Store `body` encrypted and/or compressed. A store that honours `StoreHints.token` keeps it
   * under a token chosen here, which the encryption binds the body to: a body moved to another
   * message's key fails authentication.
   */
  private async storeEncoded(codec: BodyCodec, body: Uint8Array | string, hints: StoreHints | undefined): Promise<Uint8Array> {
    const token = codec.bindsToken ? randomUUID() : undefined;
    const plain = typeof body === 'string' ? body : asBuffer(body);
    let envelope: StoredMessageEnvelope;
    try {
      const encoded = await codec.encode(plain, token);
      envelope = await this.storage!.storeMessage(encoded, token ? { ...hints, token } : hints);
    } catch (err) {
      if (err instanceof EventBusError) throw err;
      throw new MessageStorageError(`could not store message: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    if (token && envelope?.token !== token) {
      if (isValidToken(envelope?.token)) this.storage!.deleteMessage(envelope).catch(() => undefined);
      throw new MessageStorageError(
        `storage declares honoursTokenHint but stored the body under ${JSON.stringify(envelope?.token)}, not the token it was given`,
      );
    }
    return this.checkedEnvelope(envelope);
  }

  private checkedEnvelope(envelope: StoredMessageEnvelope): Uint8Array {
    // Receivers accept only UUID or shortuuid tokens: a custom store's other token would make the
    // message undeliverable everywhere, so it fails here, before anything is published.
    if (!isValidToken(envelope?.token)) {
      throw new MessageStorageError(
        `storage returned token ${JSON.stringify(envelope?.token)}, which receivers reject: tokens must be a UUID (crypto.randomUUID()) or a 22-character shortuuid`,
      );
    }
    return encodeEnvelope(envelope.token);
  }
}

// What reads stored bodies for a bus without a codec: plain ones as they are, compressed ones inflated.
const PLAIN = new BodyCodec();
