import { Logger } from '@nestjs/common';
import {
  connect,
  ErrorCode,
  Msg,
  MsgHdrs,
  NatsConnection,
  NatsError,
  ServiceError,
  Subscription,
} from 'nats';
import { NoRespondersError, NotConnectedError, RemoteHandlerError, RpcTimeoutError } from '../errors/event-bus.errors';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from './nats-client.options';

/** 1 MiB: the server default, used until a connection has said otherwise in its INFO. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * One NATS connection with library defaults: reconnects forever, tracks whether it is up,
 * turns request failures into typed errors, and drains on close.
 */
export class NatsClient {
  private nc?: NatsConnection;
  private up = false;
  private readonly logger: Logger;

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

  publish(subject: string, data: Uint8Array, headers?: MsgHdrs, reply?: string): void {
    this.connection.publish(subject, data, headers || reply ? { headers, reply } : undefined);
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
  async request(subject: string, data: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Msg> {
    let reply: Msg;
    try {
      reply = await this.connection.request(subject, data, { timeout: timeoutMs, headers });
    } catch (err) {
      const code = (err as NatsError).code;
      if (code === ErrorCode.NoResponders) throw new NoRespondersError(subject, { cause: err });
      if (code === ErrorCode.Timeout) throw new RpcTimeoutError(subject, timeoutMs, { cause: err });
      throw err;
    }
    const serviceError = ServiceError.toServiceError(reply);
    if (serviceError) throw new RemoteHandlerError(subject, serviceError.message, serviceError.code);
    return reply;
  }

  async flush(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }

  /** Stop receiving, deliver what is buffered, flush, close. Idempotent. */
  async drain(): Promise<void> {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    this.up = false;
    try {
      if (!nc.isDraining()) await nc.drain();
      else await nc.closed();
    } catch (err) {
      // A connection that cannot drain (e.g. server gone) must still be released.
      this.logger.warn(`drain failed, closing: ${(err as Error).message}`);
      await nc.close().catch(() => undefined);
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      switch (status.type) {
        case 'disconnect':
          this.up = false;
          this.logger.warn(`disconnected from ${String(status.data)}; reconnecting`);
          break;
        case 'reconnect':
          this.up = true;
          this.logger.log(`reconnected to ${String(status.data)}`);
          break;
        case 'error':
          this.logger.error(`connection error: ${String(status.data)}`);
          break;
        case 'ldm':
          this.logger.warn('server entering lame-duck mode');
          break;
      }
    }
  }
}
