// One NATS connection: state machine, publish/request/subscribe and the status watcher belong
// together, hence over 200 lines; the reconnect hold buffer is in reconnect-hold.ts and connect
// errors in connect-error.ts.
import { Logger } from '@nestjs/common';
import {
  createInbox,
  errors,
  headers as natsHeaders,
  Msg,
  MsgHdrs,
  NatsConnection,
  ServerInfo,
  Subscription,
} from '@nats-io/transport-node';
import { InvalidOptionsError, NotConnectedError, RemoteHandlerError } from '../errors/event-bus.errors';
import { toBusError } from './nats-errors';
import { LONE_SURROGATE } from './subjects';
import { NATS_CONNECTION_DEFAULTS, NatsConnectionOptions } from './bus-connection.options';
import { ReconnectHold } from './reconnect-hold';
import { dialNats } from './dial';
import { settleWithin } from '../shared/deadline';
import { DEFAULTS } from '../options/defaults';

// The rest of the library sees nats.js only through this folder.
export type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
export { createInbox };

/** Connection events others may follow (the microservices transport's `on()`). */
export type BusConnectionEvent = 'disconnect' | 'reconnect' | 'update';

/**
 * NATS headers from a plain record (or empty). Names are header tokens and values strings without
 * CR or LF; anything else is an `InvalidOptionsError` naming the header, raised before anything
 * is stored or sent.
 */
export function createHeaders(record?: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  if (!record) return h;
  if (typeof record !== 'object') throw new InvalidOptionsError('headers', 'must be an object of string values');
  for (const [k, v] of Object.entries(record)) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(k)) throw new InvalidOptionsError(`headers.${k}`, 'is not a valid header name');
    if (typeof v !== 'string') throw new InvalidOptionsError(`headers.${k}`, `must be a string, got ${typeof v}`);
    checkHeaderValue(`headers.${k}`, v);
    try {
      h.set(k, v);
    } catch (err) {
      throw new InvalidOptionsError(`headers.${k}`, (err as Error).message);
    }
  }
  return h;
}

/** A header value that NATS carries unchanged, or `InvalidOptionsError` naming `option`. */
export function checkHeaderValue(option: string, v: string): void {
  if (/[\r\n]/.test(v)) throw new InvalidOptionsError(option, 'must not contain CR or LF');
  // nats.js trims values when it sets and when it reads them: refuse what would arrive changed.
  if (v !== v.trim()) throw new InvalidOptionsError(option, 'must not start or end with whitespace (NATS would trim it)');
  // A lone surrogate becomes U+FFFD in UTF-8: two different values would arrive as one.
  if (LONE_SURROGATE.test(v)) throw new InvalidOptionsError(option, 'must be well-formed Unicode (it has a lone surrogate)');
}

/**
 * Text made fit for a header value: header values cannot carry CR, LF or other control
 * characters, so keep the first line, with the rest of the control characters as spaces, bounded.
 */
export function headerText(text: string, maxLength = 1024): string {
  return (
    text
      .split(/\r?\n/, 1)[0]
      // eslint-disable-next-line no-control-regex -- control characters are what this looks for
      .replace(/[\u0000-\u001f\u007f]/g, ' ')
      .slice(0, maxLength)
      .trim()
  );
}

/** Bytes `h` takes on the wire (`NATS/1.0\r\n`, a `name: value\r\n` line per value, `\r\n`). */
export function headersSize(h: MsgHdrs): number {
  let size = 12;
  for (const [name, values] of h) {
    for (const v of values) size += Buffer.byteLength(name) + Buffer.byteLength(v) + 4;
  }
  return size;
}

/** A first-connect failure that a later attempt may not have: refused, reset, name not resolvable yet, or no answer. */
function worthRetrying(err: unknown): boolean {
  if (err instanceof errors.TimeoutError) return true;
  if (!(err instanceof errors.ConnectionError)) return false;
  const text = `${err.message} ${(err.cause as Error | undefined)?.message ?? ''}`;
  return /refused|ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/i.test(text);
}

/** The NATS service-error headers (as `@nats-io/services` and the Go/Python micro frameworks write them). */
export const SERVICE_ERROR_HEADER = 'Nats-Service-Error';
export const SERVICE_ERROR_CODE_HEADER = 'Nats-Service-Error-Code';

/** 1 MiB: the server default, used until a connection has said otherwise in its INFO. */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

export { RECONNECT_BUFFER_BYTES } from './reconnect-hold';

/**
 * Where a connection is:
 * - `new`: `connect()` not called or not finished;
 * - `connected`: publishes go straight out;
 * - `reconnecting`: the server is gone; publishes are held;
 * - `settling`: back, but still holding for one reconnect interval (see `settle`);
 * - `closed`: drained or closed; nothing more is sent.
 */
export type ConnectionState = 'new' | 'connected' | 'reconnecting' | 'settling' | 'closed';

/** What `EventBus.connections()` shows of each connection: a read-only view. */
export interface ConnectionStatus {
  readonly label: string;
  readonly state: ConnectionState;
  readonly isConnected: boolean;
  /** The server this connection is on (`host:port`), once connected. */
  readonly server: string | undefined;
  /** The server's INFO (`max_payload`, `tls_required`, …), once connected. */
  readonly serverInfo: Readonly<ServerInfo> | undefined;
  /** Round-trip time to the server in ms. */
  rtt(): Promise<number>;
  /** Resolves once the server has processed everything sent so far. */
  flush(): Promise<void>;
}

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
  private readonly listeners: Array<(event: BusConnectionEvent, data: unknown) => void> = [];

  constructor(
    readonly label: string,
    private readonly options: NatsConnectionOptions,
  ) {
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

  /**
   * Open the connection. While the server refuses or does not answer (a service started before
   * NATS, as containers often are), keep trying every `reconnectTimeWait` for up to
   * `firstConnectTimeoutMs`; a refusal that retrying cannot mend (credentials, TLS) fails at once.
   */
  async connect(firstConnectTimeoutMs = 0): Promise<void> {
    if (this.nc) return;
    const options = { ...NATS_CONNECTION_DEFAULTS, ...this.options };
    const deadline = Date.now() + firstConnectTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        this.nc = await dialNats(options);
        break;
      } catch (err) {
        const waitMs = options.reconnectTimeWait ?? NATS_CONNECTION_DEFAULTS.reconnectTimeWait;
        if (this.connectCancelled || !worthRetrying(err) || Date.now() + waitMs > deadline) throw err;
        if (attempt === 1) {
          this.logger.warn(`NATS is not reachable yet (${(err as Error).message}); trying again for up to ${firstConnectTimeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, waitMs));
        if (this.connectCancelled) throw new NotConnectedError(`NATS connection "${this.label}" was closed while connecting`);
      }
    }
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
    return this.nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
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
    // One `.then` instead of an async frame: this runs once per request, so it is kept lean.
    let pending: Promise<Msg>;
    try {
      pending = this.connection.request(subject, data, { timeout: timeoutMs, headers });
    } catch (err) {
      return Promise.reject(toBusError(err, subject, timeoutMs));
    }
    return pending.then(
      (reply) => {
        const code = reply.headers?.get(SERVICE_ERROR_CODE_HEADER);
        if (code)
          throw new RemoteHandlerError(subject, reply.headers!.get(SERVICE_ERROR_HEADER) || 'remote handler failed', Number(code) || 500);
        return reply;
      },
      (err) => {
        throw toBusError(err, subject, timeoutMs);
      },
    );
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
  private settle(nc: NatsConnection): void {
    clearTimeout(this.settleTimer);
    this.stateNow = 'settling';
    const o = { ...NATS_CONNECTION_DEFAULTS, ...this.options };
    const graceMs = (o.reconnectTimeWait ?? 0) + (o.reconnectJitter ?? 0);
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

  private emit(event: BusConnectionEvent, data: unknown): void {
    for (const listener of this.listeners) {
      try {
        listener(event, data);
      } catch (err) {
        this.logger.error(`"${event}" listener failed: ${(err as Error).message}`);
      }
    }
  }
}
