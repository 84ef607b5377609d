import { NatsRecord, Server } from '@nestjs/microservices';
import { parseJsonBody } from '../claim-check/claim-check.codec';
import { InvalidMessageError } from '../errors/event-bus.errors';
import type { Msg, MsgHdrs } from '../nats/bus-connection';

/** A serializer or deserializer given in the `Transport.NATS` options. */
export interface CustomSerializer {
  serialize(value: any, options?: Record<string, any>): any;
}
export interface CustomDeserializer {
  deserialize(value: any, options?: Record<string, any>): any;
}

/**
 * Nest 12 hands a NATS deserializer the message (it calls `msg.json()`); Nest 11 hands it the
 * bytes. Only custom deserializers care: our default parses the bytes itself on both.
 */
export const NEST_DESERIALIZES_MESSAGES = typeof (Server.prototype as unknown as { handleRequest?: unknown }).handleRequest === 'function';

/** Bytes and headers of an outgoing packet. */
export interface SerializedPacket {
  data: Uint8Array;
  headers?: MsgHdrs;
}

/**
 * What Nest's `NatsRecordSerializer` produces, on both majors: the packet as JSON with `data`
 * taken out of a `NatsRecord` (whose headers become the NATS headers). As bytes, always: Nest 12's
 * own serializer returns a string, which would skip the claim-check size test.
 */
export function serializePacket(custom: CustomSerializer | undefined, packet: any): SerializedPacket {
  if (custom) {
    const out = custom.serialize(packet);
    return { data: toBytes(out?.data), headers: out?.headers };
  }
  const record = packet?.data instanceof NatsRecord ? (packet.data as NatsRecord) : undefined;
  const data = record ? record.data : packet?.data;
  const headers = (record ? record.headers : packet?.headers) as MsgHdrs | undefined;
  return { data: Buffer.from(JSON.stringify({ ...packet, data }), 'utf8'), headers };
}

/** A received NATS message with its (possibly recovered) body, in the shape each Nest major's deserializers take. */
function deserializerInput(msg: Msg, bytes: Uint8Array): unknown {
  if (!NEST_DESERIALIZES_MESSAGES) return bytes;
  return {
    subject: msg.subject,
    reply: msg.reply,
    headers: msg.headers,
    sid: msg.sid,
    data: bytes,
    string: () => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'),
    json: () => parseJsonBody(msg.subject, bytes),
    respond: (data?: Uint8Array, opts?: any) => msg.respond(data, opts),
  };
}

/**
 * A request or event packet (`{ pattern, data, id? }`). A body that is not in Nest's packet shape
 * (an "external" message, e.g. from a plain NATS client) becomes `{ pattern: channel, data: body }`,
 * as Nest's `IncomingRequestDeserializer` maps it. Throws `InvalidMessageError` for non-JSON.
 */
export function deserializeRequest(
  custom: CustomDeserializer | undefined,
  msg: Msg,
  bytes: Uint8Array,
  options: { channel: string; replyTo?: string },
): any {
  if (custom) return custom.deserialize(deserializerInput(msg, bytes), options);
  const value = parseJsonBody(msg.subject, bytes) as any;
  const isPacket = value && (value.pattern !== undefined || value.data !== undefined);
  return isPacket ? value : { pattern: options.channel, data: value };
}

/** A response packet (`{ id, response?, err?, isDisposed? }`); an external body becomes `{ response: body, isDisposed: true }`. */
export function deserializeResponse(custom: CustomDeserializer | undefined, msg: Msg, bytes: Uint8Array): any {
  if (custom) return custom.deserialize(deserializerInput(msg, bytes));
  const value = parseJsonBody(msg.subject, bytes) as any;
  const isPacket = value && (value.err !== undefined || value.response !== undefined || value.isDisposed !== undefined);
  return isPacket ? value : { id: value?.id, response: value, isDisposed: true };
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  throw new InvalidMessageError(`a custom serializer must produce bytes or a string, got ${typeof data}`);
}
