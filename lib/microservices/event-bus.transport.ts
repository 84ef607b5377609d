// Nest's NATS transport, server side: patterns subscribed with a bounded dispatcher each, stored
// packets recovered before Nest reads them, and large replies stored. Error answers are in
// error-answers.ts, packet format in nest-packets.ts, claim-check in ../delivery.
import { Logger } from '@nestjs/common';
import { CustomTransportStrategy, NatsContext, Server, Transport } from '@nestjs/microservices';
import { BoundedDispatcher } from '../delivery/bounded-dispatcher';
import { HeldBytes } from '../delivery/byte-budget';
import { ClaimCheckDelivery } from '../delivery/claim-check-delivery';
import { StoredMessageEnvelope } from '../claim-check/envelope';
import { DEFAULTS } from '../options/defaults';
import { settleWithin } from '../shared/deadline';
import { describeThrown } from '../errors/thrown';
import { Msg, BusConnection, Subscription } from '../nats/bus-connection';
import { TransportEvents } from './transport-events';
import { TraceTaggedLogger } from '../telemetry/trace-tagged-logger';
import { CustomDeserializer, CustomSerializer, deserializeRequest, NEST_DESERIALIZES_MESSAGES, serializePacket } from './nest-packets';
import { EventBusTransportOptions, openTransportClient, rpcError, TransportSetup, transportSetup } from './event-bus-transport.options';
import { ErrorAnswers } from './error-answers';

/**
 * Nest's NATS transport (server side) with claim-check, for Nest 11 and 12. Use it where
 * `Transport.NATS` was:
 *
 * ```ts
 * app.connectMicroservice({ strategy: new EventBusTransport({ nats: { servers }, storage }) });
 * ```
 *
 * It speaks the stock transport's wire (packets, headers, queue groups, the `RpcException`
 * shape, one reply per Observable item) over the library's own NATS connection. Incoming packets
 * that arrive as `{"token":"<id>","is_stored":true}` are recovered before they are deserialized;
 * reply packets over the threshold are stored and answered with the envelope.
 */
export class EventBusTransport extends Server implements CustomTransportStrategy {
  transportId = Transport.NATS;
  private readonly log: Logger;
  private readonly answers: ErrorAnswers;
  private readonly setup: TransportSetup;
  private readonly customSerializer?: CustomSerializer;
  private readonly customDeserializer?: CustomDeserializer;
  private readonly events = new TransportEvents(this._status$);
  private client: BusConnection | null = null;
  private delivery: ClaimCheckDelivery | null = null;
  private subscriptions: Subscription[] = [];
  private dispatchers: Array<BoundedDispatcher<Msg>> = [];
  // With telemetry on: requests whose publisher exists, and what to call once their last reply is out.
  private readonly replying = new WeakSet<Msg>();
  private readonly lastReply = new WeakMap<Msg, () => void>();

  constructor(eventBusOptions: EventBusTransportOptions) {
    super();
    this.setup = transportSetup(eventBusOptions, 'EventBusTransport');
    this.log = new TraceTaggedLogger('EventBusTransport', this.setup.telemetry);
    this.answers = new ErrorAnswers(this.log, () => this.delivery);
    this.customSerializer = this.setup.nest.serializer;
    this.customDeserializer = this.setup.nest.deserializer;
  }

  /** Connects storage and NATS, subscribes every pattern, then calls back (with the error, if any). */
  async listen(callback: (err?: unknown) => void): Promise<void> {
    try {
      const client = await openTransportClient(this.setup, 'microservices-server');
      client.onEvent((event, data) => this.events.emit(event, data));
      this.client = client;
      this.delivery = new ClaimCheckDelivery(this.setup.codec, client, this.log, this.setup.telemetry);
      this._status$.next('connected' as any);
      this.bindEvents(client);
      // Interest is known to the server before the app reports it is listening.
      await client.flush();
      callback();
    } catch (err) {
      callback(err);
    }
  }

  private bindEvents(client: BusConnection): void {
    const defaultQueue = this.setup.nest.queue as string | undefined;
    for (const [channel, handler] of this.messageHandlers) {
      const queue = (handler.extras?.queue as string | undefined) ?? defaultQueue;
      // Each message is handled inside a process span whose parent is the trace its headers carry.
      const run = this.setup.telemetry.on
        ? (msg: Msg, held?: HeldBytes) => this.handleTraced(channel, msg, held)
        : (msg: Msg, held?: HeldBytes) => this.handleMessage(channel, msg, held);
      const handle = this.setup.telemetry.consuming(channel, queue, run);
      // Bounded in bytes as @Subscribe is: without it, a burst of large packets held each body, and its parse, at once.
      const dispatcher = new BoundedDispatcher<Msg>(
        channel,
        this.setup.limits,
        (msg) => msg.data.byteLength,
        (msg, held) => handle(msg, held),
        this.log,
        undefined,
        (msg, why) =>
          msg.reply && this.answers.sendError(msg, msg.reply, { err: rpcError(`server busy: "${channel}" is ${why}`), isDisposed: true }),
      );
      this.dispatchers.push(dispatcher);
      this.subscriptions.push(client.subscribe(channel, (msg) => dispatcher.push(msg), queue));
    }
  }

  /**
   * A request's process span ends with its last reply, which Nest sends on a later tick than the
   * handler's promise settles (and, for a large reply, once it is stored).
   */
  private handleTraced(channel: string, msg: Msg, held?: HeldBytes): Promise<void> {
    if (!msg.reply) return this.handleMessage(channel, msg, held);
    const replied = new Promise<void>((resolve) => this.lastReply.set(msg, resolve));
    return this.handleMessage(channel, msg, held).then(() => (this.replying.has(msg) ? replied : undefined));
  }

  /** Stop receiving (after the grace period when `gracefulShutdown`), let replies go out, close. */
  async close(): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = null;
    if (this.setup.nest.gracefulShutdown) {
      for (const sub of this.subscriptions) sub.unsubscribe();
      await new Promise((resolve) =>
        setTimeout(resolve, (this.setup.nest.gracePeriod as number | undefined) ?? DEFAULTS.transport.gracePeriodMs),
      );
    }
    // Packets already taken but waiting for a handler slot still run, and their replies need the connection.
    await Promise.all(
      this.subscriptions.map((sub) => (sub.isClosed() ? undefined : settleWithin(sub.drain(), DEFAULTS.bus.shutdownTimeoutMs))),
    );
    await settleWithin(Promise.all(this.dispatchers.map((d) => d.whenIdle())), DEFAULTS.bus.shutdownTimeoutMs);
    this.subscriptions = [];
    this.dispatchers = [];
    await client.drain();
    this.events.clear();
  }

  /** The nats.js connection (as the stock transport's `unwrap()`). */
  unwrap<T>(): T {
    if (!this.client)
      throw new Error('Not initialized. Please call the "listen"/"startAllMicroservices" method before accessing the server.');
    return this.client.connection as T;
  }

  /** `disconnect`, `reconnect` (with the server) and `update` (cluster changes), as the stock transport. */
  on(event: any, callback: any): void {
    this.events.on(event as string, callback as (data: unknown) => void);
  }

  /**
   * Recovers a stored packet, then handles it as Nest's own transport would. Never rejects. With
   * `held` (its share of the pattern's byte budget), a stored body is read only once there is room.
   */
  handleMessage(channel: string, msg: Msg, held?: HeldBytes): Promise<void> {
    let envelope: StoredMessageEnvelope | undefined;
    try {
      envelope = this.delivery!.codec.peekEnvelope(msg.subject, msg.data);
    } catch (err) {
      return Promise.resolve(this.answers.drop(msg, describeThrown(err), 'invalid claim-check envelope'));
    }
    if (!envelope) return this.handlePacket(channel, msg, msg.data);
    const stored = envelope;
    const recover = () =>
      this.delivery!.codec.recoverBytes(msg.subject, stored).then((body) => {
        held?.storedArrived(body.byteLength);
        return body;
      });
    const room = held?.reserveStored();
    return (room ? room.then(recover) : recover()).then(
      (body) => this.handlePacket(channel, msg, body),
      (err) =>
        this.answers.drop(
          msg,
          `could not recover message (token ${stored.token}): ${describeThrown(err)}`,
          `could not recover stored message ${stored.token}`,
        ),
    );
  }

  private async handlePacket(channel: string, msg: Msg, bytes: Uint8Array): Promise<void> {
    const replyTo = msg.reply || undefined;
    const ctx = new NatsContext([msg.subject, msg.headers as any]);
    let packet: any;
    try {
      packet = await deserializeRequest(this.customDeserializer, msg, bytes, { channel, replyTo });
    } catch (err) {
      return this.answers.drop(msg, describeThrown(err), 'invalid message');
    }
    try {
      if (packet.id === undefined) {
        await this.handleEvent(channel, packet, ctx);
        return;
      }
      const publish = this.getPublisher(msg, replyTo, packet.id, ctx);
      const handler = this.getHandlerByPattern(channel);
      if (!handler) {
        publish({ id: packet.id, status: 'error', err: DEFAULTS.transport.noHandlerMessage } as any);
        return;
      }
      const produce = async () => this.transformToObservable(await handler(packet.data, ctx));
      if (NEST_DESERIALIZES_MESSAGES) {
        // Nest 12: its own request path, which runs the processing hooks once per stream.
        // Awaited, so that a failure is logged here and the process span ends after the reply.
        await (this as any).handleRequest(ctx, produce, publish);
      } else {
        return this.onProcessingStartHook(this.transportId, ctx, async () => {
          const response$ = await produce();
          if (response$) this.send(response$, publish);
        });
      }
    } catch (err) {
      this.log.error(`handling a message on "${msg.subject}" failed: ${describeThrown(err)}`);
    }
  }

  /** Nest's publisher, with large reply packets stored first. */
  private getPublisher(msg: Msg, replyTo: string | undefined, id: string, ctx: NatsContext): (response: any) => any {
    if (!replyTo) return () => {};
    if (this.setup.telemetry.on) this.replying.add(msg);
    return (response: any) => {
      Object.assign(response, { id });
      if (response?.err !== undefined) this.setup.telemetry.failed(response.err);
      if (!NEST_DESERIALIZES_MESSAGES) this.onProcessingEndHook?.(this.transportId, ctx);
      let out;
      try {
        out = serializePacket(this.customSerializer, response);
      } catch (err) {
        return this.answers.replyFailed(msg, replyTo, id, err);
      }
      const sent = this.delivery!.reply(replyTo, msg.subject, out.data, out.headers, (err) =>
        this.answers.replyFailed(msg, replyTo, id, err),
      );
      const done = response?.isDisposed || response?.err !== undefined ? this.lastReply.get(msg) : undefined;
      if (done) void Promise.resolve(sent).then(done, done);
      return sent;
    };
  }
}
