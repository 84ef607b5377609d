import { Logger } from '@nestjs/common';
import { connect, createInbox, errors, headers as natsHeaders, Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';

// The rest of the library sees nats.js only through this folder.
export type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
export { createInbox };

/** Connection events others may follow (the microservices transport's `on()`). */
export type NatsClientEvent = 'disconnect' | 'reconnect' | 'update';

/** NATS headers from a plain record (or empty). */
export function createHeaders(record?: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  if (record) for (const [k, v] of Object.entries(record)) h.set(k, v);
  return h;
}
import { NoRespondersError, NotConnectedError, RemoteHandlerError, RpcTimeoutError } from '../errors/event-bus.errors';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from './nats-client.options';
import { settleWithin } from './settle-within';

/** The NATS service-error headers (as `@nats-io/services` and the Go/Python micro frameworks write them). */
export const SERVICE_ERROR_HEADER = 'Nats-Service-Error';
export const SERVICE_ERROR_CODE_HEADER = 'Nats-Service-Error-Code';

/** 1 MiB: the server default, used until a connection has said otherwise in its INFO. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * Bytes of publishes held while a connection is reconnecting (as the Go client's ReconnectBufSize).
 * Past this, `publish` throws `NotConnectedError` instead of growing without bound.
 */
export const RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024;

interface HeldPublish {
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  reply?: string;
}

/**
 * One NATS connection with library defaults: reconnects forever, tracks whether it is up,
 * turns request failures into typed errors, and drains on close.
 */
export class NatsClient {
  private nc?: NatsConnection;
  private up = false;
  /**
   * From a `disconnect` until shortly after the next `reconnect` (see `releaseHeld`): publishes
   * are held, not sent.
   */
  private reconnecting = false;
  private held: HeldPublish[] = [];
  private heldBytes = 0;
  private releaseTimer?: NodeJS.Timeout;
  /** False from a `disconnect` until the next `reconnect`. */
  private connectedAgain = true;
  private readonly logger: Logger;
  private readonly listeners: Array<(event: NatsClientEvent, data: unknown) => void> = [];

  constructor(
    readonly label: string,
    private readonly options: NatsConnectionOptions,
  ) {
    this.logger = new Logger(`EventBus:nats:${label}`);
  }

  async connect(): Promise<void> {
    if (this.nc) return;
    this.nc = await connect({ ...NATS_CONNECTION_DEFAULTS, ...this.options });
    this.up = true;
    void this.watchStatus(this.nc);
  }

  /** Follow disconnects, reconnects and cluster updates. */
  onEvent(listener: (event: NatsClientEvent, data: unknown) => void): void {
    this.listeners.push(listener);
  }

  /** The raw connection, for what this wrapper does not cover. */
  get connection(): NatsConnection {
    if (!this.nc || this.nc.isClosed()) throw new NotConnectedError(`NATS connection "${this.label}" is not open`);
    return this.nc;
  }

  /** The server's max_payload from its INFO; 1 MiB before the first connect. */
  get maxPayload(): number {
    return this.nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
  }

  /** True while connected to a server (false while reconnecting, draining or closed). */
  get isConnected(): boolean {
    return this.up && !!this.nc && !this.nc.isClosed() && !this.nc.isDraining();
  }

  /** Round-trip time to the server in ms. */
  rtt(): Promise<number> {
    return this.connection.rtt();
  }

  /**
   * Publish, or, while the connection is reconnecting, hold the message (up to
   * `RECONNECT_BUFFER_BYTES`) and send it once reconnected. nats.js v3, like v2, discards what was
   * published while disconnected at every reconnect attempt (`ProtocolHandler.prepare()` resets
   * its outbound buffer), so without this those messages would be lost. Core NATS stays at most once: a subscriber that has not re-subscribed yet
   * still misses them (see `releaseHeld`).
   */
  publish(subject: string, data: Uint8Array, headers?: MsgHdrs, reply?: string): void {
    const nc = this.connection;
    if (this.reconnecting && !nc.isDraining()) {
      const size = data.byteLength + subject.length + (reply?.length ?? 0);
      if (this.heldBytes + size > RECONNECT_BUFFER_BYTES) {
        throw new NotConnectedError(
          `NATS connection "${this.label}" is reconnecting and its reconnect buffer (${RECONNECT_BUFFER_BYTES} bytes) is full; message to "${subject}" not sent`,
        );
      }
      this.held.push({ subject, data, headers, reply });
      this.heldBytes += size;
      return;
    }
    nc.publish(subject, data, headers || reply ? { headers, reply } : undefined);
  }

  subscribe(subject: string, callback: (msg: Msg) => void, queue?: string): Subscription {
    return this.connection.subscribe(subject, {
      queue,
      callback: (err, msg) => {
        // nats.js only passes errors here for permission violations and subscription timeouts.
        if (err) this.logger.error(`subscription on "${subject}" failed: ${err.message}`);
        else callback(msg);
      },
    });
  }

  /**
   * Sends one request and waits for one reply. Never re-sends. Fails with `RpcTimeoutError`,
   * `NoRespondersError` (at once), or `RemoteHandlerError` when the reply carries the NATS
   * service-error headers.
   */
  request(subject: string, data: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Msg> {
    // One `.then` instead of an async frame: this runs once per request, so it is kept lean.
    let pending: Promise<Msg>;
    try {
      pending = this.connection.request(subject, data, { timeout: timeoutMs, headers });
    } catch (err) {
      return Promise.reject(err);
    }
    return pending.then(
      (reply) => {
        const code = reply.headers?.get(SERVICE_ERROR_CODE_HEADER);
        if (code) throw new RemoteHandlerError(subject, reply.headers!.get(SERVICE_ERROR_HEADER) || 'remote handler failed', Number(code) || 500);
        return reply;
      },
      (err) => {
        if (err instanceof errors.NoRespondersError || (err instanceof errors.RequestError && err.isNoResponders()))
          throw new NoRespondersError(subject, { cause: err });
        if (err instanceof errors.TimeoutError) throw new RpcTimeoutError(subject, timeoutMs, { cause: err });
        throw err;
      },
    );
  }

  async flush(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }

  /** Stop receiving, deliver what is buffered, flush, close. Idempotent. */
  async drain(timeoutMs = 10_000): Promise<void> {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    this.up = false;
    clearTimeout(this.releaseTimer);
    if (this.held.length) {
      // Connected again (waiting for the others to re-subscribe): send now rather than drop.
      if (this.reconnecting && this.connectedAgain && !nc.isDraining()) this.sendHeld(nc);
      else this.logger.warn(`closing while reconnecting: ${this.held.length} held publishes were not sent`);
      this.held = [];
      this.heldBytes = 0;
    }
    this.reconnecting = false;
    let failure: unknown;
    const draining = nc.isDraining() ? nc.closed() : nc.drain().catch((err) => (failure = err));
    // A connection that cannot drain (server gone, still reconnecting) must still be released.
    const drained = await settleWithin(draining, timeoutMs);
    if (!drained || failure) {
      this.logger.warn(`drain ${drained ? `failed (${(failure as Error).message})` : `did not finish in ${timeoutMs} ms`}; closing`);
    }
    // nats.js can resolve drain() while disconnected without closing, and its reconnect loop would
    // then run (and reconnect) forever; close() is the call that stops it.
    if (!nc.isClosed()) await nc.close().catch(() => undefined);
  }

  /**
   * After a reconnect, keep holding for one reconnect interval (`reconnectTimeWait` +
   * `reconnectJitter`) before sending what was held. The subscribers, on other connections, retry
   * at that same pace: sending at once would often reach the server before they re-subscribed,
   * and the server would drop every held message. Holding that little longer keeps the order.
   */
  private releaseHeld(nc: NatsConnection): void {
    clearTimeout(this.releaseTimer);
    const o = { ...NATS_CONNECTION_DEFAULTS, ...this.options };
    const graceMs = (o.reconnectTimeWait ?? 0) + (o.reconnectJitter ?? 0);
    this.releaseTimer = setTimeout(() => {
      this.reconnecting = false;
      this.sendHeld(nc);
    }, graceMs);
    this.releaseTimer.unref?.();
  }

  /** Send, in order, what was published while reconnecting. */
  private sendHeld(nc: NatsConnection): void {
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    if (!held.length) return;
    let sent = 0;
    try {
      for (const m of held) {
        nc.publish(m.subject, m.data, m.headers || m.reply ? { headers: m.headers, reply: m.reply } : undefined);
        sent++;
      }
    } catch (err) {
      this.logger.error(`could not send ${held.length - sent} publishes held while reconnecting: ${(err as Error).message}`);
    }
    if (sent) this.logger.log(`sent ${sent} publishes held while reconnecting`);
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      switch (status.type) {
        case 'disconnect':
          this.up = false;
          this.reconnecting = true;
          this.connectedAgain = false;
          clearTimeout(this.releaseTimer);
          this.logger.warn(`disconnected from ${status.server}; reconnecting`);
          this.emit('disconnect', status.server);
          break;
        case 'reconnect':
          this.up = true;
          this.connectedAgain = true;
          this.releaseHeld(nc);
          this.logger.log(`reconnected to ${status.server}`);
          this.emit('reconnect', status.server);
          break;
        case 'error':
          this.logger.error(`connection error: ${status.error?.message ?? String(status.error)}`);
          break;
        case 'update':
          this.emit('update', { added: status.added, deleted: status.deleted });
          break;
        case 'ldm':
          this.logger.warn('server entering lame-duck mode');
          break;
      }
    }
  }

  private emit(event: NatsClientEvent, data: unknown): void {
    for (const listener of this.listeners) {
      try {
        listener(event, data);
      } catch (err) {
        this.logger.error(`"${event}" listener failed: ${(err as Error).message}`);
      }
    }
  }
}
