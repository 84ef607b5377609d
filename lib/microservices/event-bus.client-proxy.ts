// Nest's ClientProxy contract (connect, close, publish with its reply stream, dispatchEvent, on,
// unwrap) in one class, as Nest's own ClientNats is. Reading replies is in client-replies.ts,
// packet format in nest-packets.ts, claim-check in ../delivery.
import { Logger } from '@nestjs/common';
import { ClientProxy, ReadPacket, WritePacket } from '@nestjs/microservices';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { replyReader } from './client-replies';
import { isPromise } from '../shared/maybe-async';
import { NotConnectedError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import { RELEASE_TIMEOUT_MS } from '../options/defaults';
import { createHeaders, createInbox, MsgHdrs, BusConnection, Subscription } from '../nats/bus-connection';
import { TransportEvents } from './transport-events';
import { TelemetryScope } from '../telemetry/bus-telemetry';
import { CustomDeserializer, CustomSerializer, serializePacket } from './nest-packets';
import { EventBusTransportOptions, openTransportClient, TransportSetup, transportSetup } from './event-bus-transport.options';

type Callback = (packet: WritePacket) => any;

/**
 * Nest's NATS `ClientProxy` with claim-check, for Nest 11 and 12. Use it where `Transport.NATS` was:
 *
 * ```ts
 * ClientsModule.register([{ name: 'EDGES', customClass: EventBusClientProxy, options: { nats: { servers }, storage } }]);
 * ```
 *
 * `send()` and `emit()` store a serialized packet over the threshold and publish the envelope
 * instead; replies that arrive as an envelope are recovered before Nest reads them. Small packets
 * are byte for byte what `Transport.NATS` sends. A send that fails leaves no inbox subscription
 * behind, and `close()` fails the sends still waiting with "Connection closed".
 */
export class EventBusClientProxy extends ClientProxy {
  private readonly log = new Logger('EventBusClientProxy');
  private readonly setup: TransportSetup;
  private readonly customSerializer?: CustomSerializer;
  private readonly customDeserializer?: CustomDeserializer;
  private readonly events = new TransportEvents(this._status$);
  private connecting: Promise<BusConnection> | null = null;
  private client: BusConnection | null = null;
  private delivery: ClaimCheckDelivery | null = null;

  constructor(eventBusOptions: EventBusTransportOptions) {
    super();
    this.setup = transportSetup(eventBusOptions, 'EventBusClientProxy');
    this.customSerializer = this.setup.nest.serializer;
    this.customDeserializer = this.setup.nest.deserializer;
  }

  /** Connects storage and NATS once; rejects when the threshold is too high. Nest calls it before each send. */
  connect(): Promise<any> {
    if (!this.connecting) {
      const attempt = openTransportClient(this.setup, 'microservices-client').then((client) => {
        if (this.connecting !== attempt) {
          // Closed while connecting: this connection is nobody's.
          void client.drain(RELEASE_TIMEOUT_MS);
          throw new NotConnectedError('EventBusClientProxy was closed while connecting');
        }
        client.onEvent((event, data) => this.events.emit(event, data));
        this.client = client;
        this.delivery = new ClaimCheckDelivery(this.setup.codec, client, this.log, this.setup.telemetry);
        this._status$.next('connected' as any);
        return client;
      });
      this.connecting = attempt;
      attempt.catch(() => {
        if (this.connecting === attempt) this.connecting = null;
      });
    }
    return this.connecting.then((c) => c.connection);
  }

  /** Fails the sends still waiting for a reply, then drains the connection. */
  async close(): Promise<void> {
    const waiting = [...this.routingMap.values()];
    this.routingMap.clear();
    for (const callback of waiting) {
      try {
        callback({ err: new Error('Connection closed'), isDisposed: true });
      } catch (err) {
        this.log.error(`a pending send's callback failed on close: ${describeThrown(err)}`);
      }
    }
    const client = this.client;
    this.client = null;
    this.delivery = null;
    this.connecting = null;
    await client?.drain();
  }

  /** The nats.js connection (as the stock client's `unwrap()`). */
  unwrap<T>(): T {
    if (!this.client) throw new Error('Not initialized. Please call the "connect" method first.');
    return this.client.connection as T;
  }

  /** `disconnect`, `reconnect` and `update`, as the stock client. */
  on(event: any, callback: any): void {
    this.events.on(event as string, callback as (data: unknown) => void);
  }

  protected publish(partialPacket: ReadPacket, callback: Callback): () => void {
    const telemetry = this.setup.telemetry;
    if (!telemetry.on) return this.publishNow(partialPacket, callback);
    // A CLIENT send span from the send until the last reply (or an error, or the caller's unsubscribe).
    const scope = telemetry.begin(this.channelOf(partialPacket), 'request');
    let ended = false;
    const end = (err?: unknown) => {
      if (ended) return;
      ended = true;
      telemetry.end(scope, err);
    };
    const teardown = telemetry.within(scope, () =>
      this.publishNow(
        partialPacket,
        (packet) => {
          if (packet.err !== undefined || packet.isDisposed) end(packet.err ?? undefined);
          return callback(packet);
        },
        scope,
      ),
    );
    return () => {
      teardown();
      end();
    };
  }

  private publishNow(partialPacket: ReadPacket, callback: Callback, scope?: TelemetryScope): () => void {
    const packet = this.assignPacketId(partialPacket);
    let subscription: Subscription | undefined;
    let done = false;
    const teardown = () => {
      done = true;
      this.routingMap.delete(packet.id);
      subscription?.unsubscribe();
    };
    const fail = (err: unknown) => {
      if (done) return;
      teardown();
      callback({ err });
    };
    this.routingMap.set(packet.id, callback);
    try {
      const { client, delivery, channel, headers, wire } = this.prepare(packet);
      const inbox = createInbox(this.setup.nest.inboxPrefix);
      const onReply = replyReader(channel, packet, callback, delivery, this.customDeserializer);
      // Replies are read (a stored one recovered) inside the send span.
      subscription = client.subscribe(inbox, scope ? (msg) => this.setup.telemetry.within(scope, () => onReply(msg)) : onReply);
      if (!isPromise(wire)) {
        client.publish(channel, wire, headers, inbox);
      } else {
        // Stored after the caller gave up: nobody will read it. A stored request that cannot be sent is deleted too.
        wire
          .then((envelope) =>
            done
              ? delivery.outbound.discard(envelope)
              : delivery.outbound.sendStored(envelope, (e) => client.publish(channel, e, headers, inbox)),
          )
          .catch(fail);
      }
    } catch (err) {
      fail(err);
    }
    return teardown;
  }

  protected dispatchEvent(packet: ReadPacket): Promise<any> {
    const telemetry = this.setup.telemetry;
    if (!telemetry.on) return this.dispatchNow(packet);
    return telemetry.send(this.channelOf(packet), 'publish', () => this.dispatchNow(packet));
  }

  private dispatchNow(packet: ReadPacket): Promise<any> {
    try {
      const { client, delivery, channel: pattern, headers, wire } = this.prepare(packet);
      if (!isPromise(wire)) {
        client.publish(pattern, wire, headers);
        return Promise.resolve();
      }
      return wire.then((envelope) => delivery.outbound.sendStored(envelope, (e) => client.publish(pattern, e, headers)));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The subject a packet goes to, for span names; a pattern Nest cannot normalize is named as such. */
  private channelOf(packet: ReadPacket): string {
    try {
      return this.normalizePattern(packet.pattern);
    } catch {
      return '(unknown pattern)';
    }
  }

  /** A packet ready to send: serialized, its headers with the trace context, its body planned inline or stored. */
  private prepare(packet: ReadPacket) {
    const { client, delivery } = this.open();
    const channel = this.normalizePattern(packet.pattern);
    const out = serializePacket(this.customSerializer, packet);
    const headers = this.setup.telemetry.inject(this.mergeHeaders(out.headers));
    const wire = this.setup.telemetry.sized(delivery.outbound.plan(channel, out.data, client.maxPayload, headers));
    return { client, delivery, channel, headers, wire };
  }

  private open(): { client: BusConnection; delivery: ClaimCheckDelivery } {
    if (!this.client || !this.delivery)
      throw new NotConnectedError('EventBusClientProxy is not connected; Nest connects it on the first send or emit');
    return { client: this.client, delivery: this.delivery };
  }

  /** The packet's own headers, plus the `headers` option for names they do not set (as the stock client). */
  private mergeHeaders(own?: MsgHdrs): MsgHdrs | undefined {
    const defaults = this.setup.nest.headers as Record<string, string> | undefined;
    if (!own && !defaults) return undefined;
    const headers = own ?? createHeaders();
    for (const [k, v] of Object.entries(defaults ?? {})) if (!headers.has(k)) headers.set(k, v);
    return headers;
  }
}
