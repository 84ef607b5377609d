// One NATS connection: state machine, publish/request/subscribe and the status watcher. The
// reconnect hold buffer is in reconnect-hold.ts, the first connect's retries in first-connect.ts,
// header building in headers.ts, and connect errors in connect-error.ts.
import { Logger } from '@nestjs/common';
import { createInbox, errors, Msg, MsgHdrs, NatsConnection, ServerInfo, Subscription } from '@nats-io/transport-node';
import { NotConnectedError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import { toBusError } from './nats-errors';
import { NatsConnectionOptions, resolveConnectionOptions, ResolvedConnectionOptions } from './bus-connection.options';
import { BusConnectionEvent, ConnectionState, ConnectionStatus } from './connection-status';
import { dialFirst } from './first-connect';
import { ReconnectHold } from './reconnect-hold';
import { ReplyMux } from './reply-mux';
import { settleWithin } from '../shared/deadline';
import { DEFAULTS, SERVER_MAX_PAYLOAD_BYTES } from '../options/defaults';

// The rest of the library sees nats.js only through this folder.
export type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
export { createInbox };
export type { BusConnectionEvent, ConnectionState, ConnectionStatus } from './connection-status';
export { checkHeaderValue, createHeaders, headersSize, headerText, SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER } from './headers';

/**
 * One NATS connection with library defaults: reconnects forever, holds publishes while the
 * server is away, turns request failures into typed errors, and drains on close.
 */
export class BusConnection implements ConnectionStatus {
  private nc?: NatsConnection;
  private stateNow: ConnectionState = 'new';
  private readonly hold: ReconnectHold;
  private settleTimer?: NodeJS.Timeout;
  private connectCancelled = false;
  private readonly logger: Logger;
  private readonly options: ResolvedConnectionOptions;
  private readonly listeners: Array<(event: BusConnectionEvent, data: unknown) => void> = [];
  private mux?: ReplyMux;

  constructor(
    readonly label: string,
    options: NatsConnectionOptions,
  ) {
    this.options = resolveConnectionOptions(options);
    this.logger = new Logger(`EventBus:nats:${label}`);
    this.hold = new ReconnectHold(label, this.logger);
  }

  get state(): ConnectionState {
    return this.stateNow;
  }

  get server(): string | undefined {
    return this.nc && !this.nc.isClosed() ? this.nc.getServer() : undefined;
  }

  get serverInfo(): Readonly<ServerInfo> | undefined {
    return this.nc?.info;
  }

  /** Open the connection, retrying for up to `firstConnectTimeoutMs` (see `dialFirst`). */
  async connect(firstConnectTimeoutMs = 0): Promise<void> {
    if (this.nc) return;
    const owner = { label: this.label, logger: this.logger, cancelled: () => this.connectCancelled };
    this.nc = await dialFirst(this.options, firstConnectTimeoutMs, owner);
    // Closed while the last attempt was under way: let it go at once.
    if (this.connectCancelled) {
      await this.nc.close().catch(() => undefined);
      throw new NotConnectedError(`NATS connection "${this.label}" was closed while connecting`);
    }
    this.stateNow = 'connected';
    void this.watchStatus(this.nc);
  }

  /** Stop a first connect that is still trying (`close()` during bootstrap). */
  cancelConnect(): void {
    this.connectCancelled = true;
  }

  /** Follow disconnects, reconnects and cluster updates. */
  onEvent(listener: (event: BusConnectionEvent, data: unknown) => void): void {
    this.listeners.push(listener);
  }

  /** The raw connection, for what this wrapper does not cover. */
  get connection(): NatsConnection {
    if (!this.nc || this.nc.isClosed()) throw new NotConnectedError(`NATS connection "${this.label}" is not open`);
    return this.nc;
  }

  /** The server's max_payload from its INFO; 1 MiB before the first connect. */
  get maxPayload(): number {
    return this.nc?.info?.max_payload ?? SERVER_MAX_PAYLOAD_BYTES;
  }

  /** True while connected to a server (false while reconnecting, draining or closed). */
  get isConnected(): boolean {
    return (this.stateNow === 'connected' || this.stateNow === 'settling') && !!this.nc && !this.nc.isClosed() && !this.nc.isDraining();
  }

  /** Round-trip time to the server in ms. */
  rtt(): Promise<number> {
    return this.connection.rtt();
  }

  /**
   * Publish, or, while the connection is reconnecting or settling, hold the message (up to
   * `RECONNECT_BUFFER_BYTES`) and send it once reconnected. Core NATS stays at most once: a
   * subscriber that has not re-subscribed yet still misses it (see `settle`).
   */
  publish(subject: string, data: Uint8Array, headers?: MsgHdrs, reply?: string): void {
    const nc = this.connection;
    if ((this.stateNow === 'reconnecting' || this.stateNow === 'settling') && !nc.isDraining()) {
      this.hold.add(subject, data, headers, reply);
      return;
    }
    try {
      nc.publish(subject, data, headers || reply ? { headers, reply } : undefined);
    } catch (err) {
      throw toBusError(err, subject);
    }
  }

  subscribe(subject: string, callback: (msg: Msg) => void, queue?: string): Subscription {
    const nc = this.connection;
    try {
      return this.subscribeOn(nc, subject, callback, queue);
    } catch (err) {
      throw toBusError(err, subject);
    }
  }

  private subscribeOn(nc: NatsConnection, subject: string, callback: (msg: Msg) => void, queue?: string): Subscription {
    return nc.subscribe(subject, {
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
   * `NoRespondersError` (at once), `RemoteHandlerError` when the reply carries the NATS
   * service-error headers, or another of the library's errors for what nats.js refuses.
   */
  request(subject: string, data: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Msg> {
    let nc: NatsConnection;
    try {
      nc = this.connection;
    } catch (err) {
      return Promise.reject(err);
    }
    // Our own reply mux rather than nats.js's request(): see reply-mux.ts for what that saves.
    this.mux ??= new ReplyMux(nc, this.options.inboxPrefix);
    return this.mux.request(subject, data, timeoutMs, headers);
  }

  async flush(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }

  /** Stop receiving, deliver what is buffered, flush, close. Idempotent. */
  async drain(timeoutMs: number = DEFAULTS.bus.shutdownTimeoutMs): Promise<void> {
    this.connectCancelled = true;
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    const wasSettling = this.stateNow === 'settling';
    this.stateNow = 'closed';
    clearTimeout(this.settleTimer);
    // Connected again (waiting for the others to re-subscribe): send now rather than drop.
    if (wasSettling && !nc.isDraining()) this.hold.release(nc);
    else this.hold.discard();
    let failure: unknown;
    const draining = nc.isDraining() ? nc.closed() : nc.drain().catch((err) => (failure = err));
    // A connection that cannot drain (server gone, still reconnecting) must still be released.
    const drained = await settleWithin(draining, timeoutMs);
    if (!drained || failure) {
      this.logger.warn(`drain ${drained ? `failed (${describeThrown(failure)})` : `did not finish in ${timeoutMs} ms`}; closing`);
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
  private settle(nc: NatsConnection): void {
    clearTimeout(this.settleTimer);
    this.stateNow = 'settling';
    const graceMs = this.options.reconnectTimeWait + this.options.reconnectJitter;
    this.settleTimer = setTimeout(() => {
      if (this.stateNow !== 'settling') return;
      this.stateNow = 'connected';
      this.hold.release(nc);
    }, graceMs);
    this.settleTimer.unref?.();
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      switch (status.type) {
        case 'disconnect':
          if (this.stateNow === 'closed') break;
          this.stateNow = 'reconnecting';
          clearTimeout(this.settleTimer);
          this.logger.warn(`disconnected from ${status.server}; reconnecting`);
          this.emit('disconnect', status.server);
          break;
        case 'reconnect':
          if (this.stateNow === 'closed') break;
          this.settle(nc);
          this.logger.log(`reconnected to ${status.server}`);
          this.emit('reconnect', status.server);
          break;
        case 'error':
          this.logger.error(`connection error: ${describeThrown(status.error)}`);
          if (status.error instanceof errors.PermissionViolationError) this.mux?.publishRefused(status.error);
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

  private emit(event: BusConnectionEvent, data: unknown): void {
    for (const listener of this.listeners) {
      try {
        listener(event, data);
      } catch (err) {
        this.logger.error(`"${event}" listener failed: ${describeThrown(err)}`);
      }
    }
  }
}
