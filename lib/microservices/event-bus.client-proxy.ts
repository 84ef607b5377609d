import { ClientNats, PacketId, ReadPacket, WritePacket } from '@nestjs/microservices';
import { createInbox, NatsConnection } from 'nats';
import type { ReplaySubject } from 'rxjs';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { StoredMessageEnvelope } from '../claim-check/envelope';
import {
  checkThreshold,
  claimCheckFor,
  EventBusTransportOptions,
  maxPayloadOf,
  readyStorage,
} from './event-bus-transport.options';

type SubscriptionHandler = (error: string | Error | null | undefined, natsMsg: any) => Promise<any>;

/**
 * Nest's NATS `ClientProxy` with claim-check. Use it where `Transport.NATS` was:
 *
 * ```ts
 * ClientsModule.register([{ name: 'EDGES', customClass: EventBusClientProxy, options: { nats: { servers }, storage } }]);
 * ```
 *
 * `send()` and `emit()` store a serialized packet over the threshold and publish the envelope
 * instead; replies that arrive as an envelope are recovered (and deleted: a reply has one reader)
 * before Nest reads them. Small packets are byte for byte what `Transport.NATS` sends.
 */
export class EventBusClientProxy extends ClientNats {
  /**
   * Widened from `ReplaySubject<NatsStatus>` (type only) so that the class is assignable to
   * `customClass: Type<ClientProxy>` in `ClientsModule.register`; Nest's own `ClientNats` is not.
   */
  protected declare _status$: ReplaySubject<any>;
  private readonly codec: ClaimCheckCodec;

  constructor(private readonly eventBusOptions: EventBusTransportOptions) {
    const codec = claimCheckFor(eventBusOptions, 'EventBusClientProxy');
    super(eventBusOptions.nats ?? {});
    this.codec = codec;
  }

  /** Connects storage (a lazily connecting Redis) and NATS; rejects when the threshold is too high. */
  async createClient(): Promise<any> {
    await readyStorage(this.eventBusOptions);
    const nc = (await super.createClient()) as NatsConnection;
    try {
      checkThreshold(this.codec, this.eventBusOptions, maxPayloadOf(nc));
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
    return nc;
  }

  /** Reply messages go through recovery first, in arrival order (a stream may mix stored and inline items). */
  createSubscriptionHandler(packet: ReadPacket & PacketId, callback: (packet: WritePacket) => any): SubscriptionHandler {
    const handle = super.createSubscriptionHandler(packet, callback);
    const subject = `${this.normalizePattern(packet.pattern)} (reply)`;
    let tail: Promise<unknown> | null = null;
    return (error, natsMsg) => {
      let envelope: StoredMessageEnvelope | undefined;
      let forged: unknown;
      if (!error && natsMsg?.data) {
        try {
          envelope = this.codec.peekEnvelope(subject, natsMsg.data);
        } catch (err) {
          forged = err;
        }
      }
      // The common case: an inline reply and nothing stored ahead of it.
      if (!envelope && !forged && !tail) return handle(error ?? undefined, natsMsg);
      const step = async () => {
        if (forged) return fail(callback, forged);
        if (!envelope) return handle(error ?? undefined, natsMsg);
        let data: Uint8Array;
        try {
          data = await this.codec.recoverBytes(subject, envelope);
        } catch (err) {
          return fail(callback, err);
        }
        this.codec.discard(envelope);
        return handle(undefined, { subject: natsMsg.subject, headers: natsMsg.headers, data });
      };
      const next: Promise<unknown> = (tail ?? Promise.resolve()).then(step);
      tail = next;
      void next.finally(() => {
        if (tail === next) tail = null;
      });
      return next;
    };
  }

  protected publish(partialPacket: ReadPacket, callback: (packet: WritePacket) => any): () => void {
    try {
      const packet = this.assignPacketId(partialPacket);
      const channel = this.normalizePattern(partialPacket.pattern);
      const serialized = this.serializer.serialize(packet);
      const wire = this.toWire(channel, serialized.data);
      const nc = this.natsClient as NatsConnection;
      const inbox = createInbox(this.options.inboxPrefix);
      const subscription = nc.subscribe(inbox, { callback: this.createSubscriptionHandler(packet, callback) });
      const headers = this.mergeHeaders(serialized.headers);
      if (!isPromise(wire)) {
        nc.publish(channel, wire, { reply: inbox, headers });
        return () => subscription.unsubscribe();
      }
      let cancelled = false;
      wire
        .then((envelope) => {
          if (!cancelled) nc.publish(channel, envelope, { reply: inbox, headers });
        })
        .catch((err) => {
          subscription.unsubscribe();
          if (!cancelled) callback({ err });
        });
      return () => {
        cancelled = true;
        subscription.unsubscribe();
      };
    } catch (err) {
      callback({ err });
      return () => {};
    }
  }

  protected async dispatchEvent(packet: ReadPacket): Promise<any> {
    const pattern = this.normalizePattern(packet.pattern);
    const serialized = this.serializer.serialize(packet);
    const headers = this.mergeHeaders(serialized.headers);
    const pending = this.toWire(pattern, serialized.data);
    // Awaiting a small body that is ready anyway would cost a microtask hop per event.
    const wire = isPromise(pending) ? await pending : pending;
    (this.natsClient as NatsConnection).publish(pattern, wire, { headers });
  }

  private toWire(subject: string, data: unknown): Uint8Array | Promise<Uint8Array> {
    // A custom serializer may produce something other than bytes; leave that alone.
    if (!(data instanceof Uint8Array)) return data as Uint8Array;
    return this.codec.toWire(subject, data, maxPayloadOf(this.natsClient as NatsConnection | null));
  }
}

function fail(callback: (packet: WritePacket) => any, err: unknown): void {
  callback({ err, isDisposed: true });
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return value !== null && typeof value === 'object' && typeof (value as Promise<T>).then === 'function';
}

