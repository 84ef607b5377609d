// The replies of one `send()`: each recovered when it came stored, handed to Nest in arrival order
// (a stream may mix stored and inline items), and read as Nest's stock NATS client reads them.
import type { PacketId, ReadPacket, WritePacket } from '@nestjs/microservices';
import { ClaimCheckDelivery, InboundBody } from '../delivery/claim-check-delivery';
import type { Msg } from '../nats/bus-connection';
import { isPromise, MaybePromise } from '../shared/maybe-async';
import { CustomDeserializer, deserializeResponse } from './nest-packets';

type ReplyCallback = (packet: WritePacket) => any;

/** Replies in arrival order (a stream may mix stored and inline items), each recovered before Nest reads it. */
export function replyReader(
  channel: string,
  packet: ReadPacket & PacketId,
  callback: ReplyCallback,
  delivery: ClaimCheckDelivery,
  deserializer: CustomDeserializer | undefined,
): (msg: Msg) => void {
  const subject = `${channel} (reply)`;
  const handle = (msg: Msg, bytes: Uint8Array) => handleReply(channel, packet, callback, deserializer, msg, bytes);
  let tail: Promise<unknown> | null = null;
  return (msg) => {
    let inbound: InboundBody;
    try {
      inbound = delivery.inbound(subject, msg.data);
    } catch (err) {
      return void callback({ err, isDisposed: true });
    }
    const { envelope, bytes } = inbound;
    // The common case: an inline reply and nothing stored ahead of it.
    if (!envelope && !tail) return void handle(msg, bytes as Uint8Array);
    const next: Promise<unknown> = (tail ?? Promise.resolve()).then(async () => {
      let body: Uint8Array;
      try {
        body = await bytes;
      } catch (err) {
        return callback({ err, isDisposed: true });
      }
      // Not deleted after reading (see EventBus.readReply): replies are stored with a short TTL.
      return handle(msg, body);
    });
    tail = next;
    void next.finally(() => {
      if (tail === next) tail = null;
    });
  };
}

/** One reply, read as Nest's stock client does: empty is "no subscribers", a packet for another id is ignored. */
function handleReply(
  channel: string,
  packet: ReadPacket & PacketId,
  callback: ReplyCallback,
  deserializer: CustomDeserializer | undefined,
  msg: Msg,
  bytes: Uint8Array,
): MaybePromise<void> {
  if (bytes.byteLength === 0) {
    return callback({
      err: new Error(`Empty response. There are no subscribers listening to that message ("${channel}")`),
      isDisposed: true,
    });
  }
  let message: any;
  try {
    message = deserializeResponse(deserializer, msg, bytes);
  } catch (err) {
    return callback({ err, isDisposed: true });
  }
  const settle = (m: any) => {
    if (m?.id && m.id !== packet.id) return;
    const { err, response, isDisposed } = m ?? {};
    if (isDisposed || err) return callback({ err, response, isDisposed: true });
    callback({ err, response });
  };
  if (isPromise(message)) return message.then(settle, (err: unknown) => callback({ err, isDisposed: true }));
  return settle(message);
}
