import { Logger } from '@nestjs/common';
import { CustomTransportStrategy, NatsContext, ServerNats } from '@nestjs/microservices';
import type { Msg, NatsConnection } from 'nats';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { StoredMessageEnvelope } from '../claim-check/envelope';
import { MessageStorageError } from '../errors/event-bus.errors';
import { RateLimitedLog } from '../event-bus/rate-limited-log';
import {
  checkThreshold,
  claimCheckFor,
  EventBusTransportOptions,
  maxPayloadOf,
  readyStorage,
  rpcError,
} from './event-bus-transport.options';

/**
 * Nest's NATS transport (server side) with claim-check. Use it where `Transport.NATS` was:
 *
 * ```ts
 * app.connectMicroservice({ strategy: new EventBusTransport({ nats: { servers }, storage }) });
 * ```
 *
 * Incoming packets that arrive as `{"token":"<id>","is_stored":true}` are recovered from storage
 * before Nest deserializes them; replies of `@MessagePattern` handlers (values, Promises, each
 * item of an Observable) whose serialized packet is over the threshold are stored and answered
 * with the envelope. Everything else — packet format, queue groups (`@MessagePattern(p, { queue })`
 * or `nats.queue`), `NatsContext`, RPC exceptions, `Transport.NATS`-bound handlers — is Nest's own,
 * so small messages are byte for byte what `Transport.NATS` sends.
 */
export class EventBusTransport extends ServerNats implements CustomTransportStrategy {
  private readonly log = new Logger('EventBusTransport');
  private readonly badInputLog = new RateLimitedLog(this.log);
  private readonly codec: ClaimCheckCodec;
  private connection: NatsConnection | null = null;

  constructor(private readonly eventBusOptions: EventBusTransportOptions) {
    const codec = claimCheckFor(eventBusOptions, 'EventBusTransport');
    super(eventBusOptions.nats ?? {});
    this.codec = codec;
  }

  /** Connects storage (a lazily connecting Redis) and NATS; rejects when the threshold is too high. */
  async createNatsClient(): Promise<any> {
    await readyStorage(this.eventBusOptions);
    const nc = (await super.createNatsClient()) as NatsConnection;
    try {
      checkThreshold(this.codec, this.eventBusOptions, maxPayloadOf(nc));
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
    this.connection = nc;
    return nc;
  }

  async close(): Promise<void> {
    await super.close();
    this.connection = null;
  }

  /** Recovers a stored packet, then hands it to Nest's own handling. Never rejects. */
  handleMessage(channel: string, natsMsg: Msg): Promise<any> {
    let envelope: StoredMessageEnvelope | undefined;
    try {
      envelope = this.codec.peekEnvelope(natsMsg.subject, natsMsg.data);
    } catch (err) {
      return Promise.resolve(this.drop(natsMsg, (err as Error).message, 'invalid claim-check envelope'));
    }
    // Most messages are inline: no async frame of our own around Nest's on their path.
    if (!envelope) return this.handleGuarded(channel, natsMsg);
    return this.recoverAndHandle(channel, natsMsg, envelope);
  }

  private async recoverAndHandle(channel: string, natsMsg: Msg, envelope: StoredMessageEnvelope): Promise<any> {
    let body: Uint8Array;
    try {
      body = await this.codec.recoverBytes(natsMsg.subject, envelope);
    } catch (err) {
      return this.drop(
        natsMsg,
        `could not recover message (token ${envelope.token}): ${(err as Error).message}`,
        `could not recover stored message ${envelope.token}`,
      );
    }
    const recovered = {
      subject: natsMsg.subject,
      sid: natsMsg.sid,
      reply: natsMsg.reply,
      headers: natsMsg.headers,
      data: body,
      respond: (data?: Uint8Array, opts?: any) => natsMsg.respond(data, opts),
    };
    return this.handleGuarded(channel, recovered as unknown as Msg);
  }

  /** Nest's publisher, with large reply packets stored first. Resolves once the reply is out. */
  getPublisher(natsMsg: Msg, id: string, ctx: NatsContext): (response: any) => any {
    if (!natsMsg.reply) return () => {};
    return (response: any) => {
      Object.assign(response, { id });
      const out = this.serializer.serialize(response);
      const done = () => this.onProcessingEndHook?.(this.transportId, ctx);
      let wire: Uint8Array | Promise<Uint8Array>;
      try {
        wire = this.toWire(natsMsg.subject, out.data);
      } catch (err) {
        done();
        return this.replyFailed(natsMsg, id, err);
      }
      if (!isPromise(wire)) {
        done();
        return this.respond(natsMsg, wire, out.headers);
      }
      return wire.then(
        (envelope) => {
          done();
          return this.respond(natsMsg, envelope, out.headers);
        },
        (err) => {
          done();
          return this.replyFailed(natsMsg, id, err);
        },
      );
    };
  }

  private toWire(subject: string, data: unknown): Uint8Array | Promise<Uint8Array> {
    // A custom serializer may produce something other than bytes; leave that alone.
    if (!(data instanceof Uint8Array)) return data as Uint8Array;
    return this.codec.toWire(subject, data, maxPayloadOf(this.connection));
  }

  private respond(natsMsg: Msg, data: Uint8Array, headers?: any): boolean {
    try {
      return natsMsg.respond(data, { headers });
    } catch (err) {
      this.log.error(`could not send reply for "${natsMsg.subject}": ${(err as Error).message}`);
      return false;
    }
  }

  /** A reply that cannot be stored still answers, so the client fails at once instead of timing out. */
  private replyFailed(natsMsg: Msg, id: string | undefined, err: unknown): boolean {
    const message = (err as Error)?.message ?? String(err);
    this.log.error(`could not encode or store reply for "${natsMsg.subject}": ${message}`);
    const reason = err instanceof MessageStorageError ? 'reply could not be stored' : 'reply could not be sent';
    const packet = this.serializer.serialize({ id: id as string, err: rpcError(`${reason}: ${message}`), isDisposed: true });
    return this.respond(natsMsg, packet.data, packet.headers);
  }

  private handleGuarded(channel: string, natsMsg: Msg): Promise<any> {
    // Nest's deserializer throws on a body that is not JSON; keep the subscription alive.
    const invalid = (err: unknown) => this.drop(natsMsg, (err as Error)?.message ?? String(err), 'invalid message');
    try {
      return super.handleMessage(channel, natsMsg).catch(invalid);
    } catch (err) {
      return Promise.resolve(invalid(err));
    }
  }

  /** Log a message that cannot be handled; a requester gets an error packet instead of a timeout. */
  private drop(natsMsg: Msg, logMessage: string, replyMessage: string): void {
    this.badInputLog.error(natsMsg.subject, `dropped message on "${natsMsg.subject}": ${logMessage}`);
    if (natsMsg.reply) {
      // The packet id is unknown here; Nest's client accepts an answer without one on its own inbox.
      const packet = this.serializer.serialize({ err: rpcError(replyMessage), isDisposed: true } as any);
      this.respond(natsMsg, packet.data, packet.headers);
    }
  }
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return value !== null && typeof value === 'object' && typeof (value as Promise<T>).then === 'function';
}
