// A NATS server inside the test process: it speaks the client protocol (INFO, CONNECT, PUB/HPUB,
// SUB/UNSUB, MSG/HMSG, PING/PONG) to nats.js through an in-process transport, so nats.js and the
// whole bus above it run unchanged. Routing, queue groups, wildcards and no-responders follow the
// real server; clustering, permissions, TLS and slow-consumer limits are not modelled.
import type { Transport } from '@nats-io/transport-node';
import { registerInProcessHost } from '../nats/dial';

const CRLF = Buffer.from('\r\n');
/** `NATS/1.0 503`: what the server answers a request nobody is subscribed to. */
const NO_RESPONDERS = Buffer.from('NATS/1.0 503\r\n\r\n');

/** One message as the broker routes it. */
export interface BrokerMessage {
  subject: string;
  reply?: string;
  /** The raw header block (`NATS/1.0\r\n...\r\n\r\n`), when the message has headers. */
  headers?: Buffer;
  payload: Buffer;
}

/** What receives messages: a client connection, or a service inside the broker (JetStream). */
export interface BrokerSubscriber {
  deliver(message: BrokerMessage, sid: string): void;
  /** False for a client that asked not to get its own messages back (`echo: false`). */
  readonly echo?: boolean;
}

interface Subscription {
  owner: BrokerSubscriber;
  sid: string;
  subject: string;
  tokens: string[];
  queue?: string;
  /** Messages left before the server removes it (`UNSUB sid max`). */
  remaining?: number;
}

/** Sees every message a client publishes, before it is routed (the testing module's record). */
export type PublishObserver = (message: BrokerMessage, routed: number) => void;

/** Takes part in routing: JetStream captures published subjects into its streams. */
export interface BrokerExtension {
  /** Called for every client publish after core routing, with how many subscribers got it. */
  onPublish?(message: BrokerMessage, routed: number): { captured: boolean };
}

let brokers = 0;

/** Options of an in-process broker. */
export interface InProcessBrokerOptions {
  /** The `max_payload` in its INFO. Default 1 MiB, as a default nats-server. */
  maxPayload?: number;
}

/** A NATS server for one process: give `url` as the bus's `nats.servers`. */
export class InProcessBroker {
  readonly hostname: string;
  readonly url: string;
  readonly maxPayload: number;
  private readonly subs = new Set<Subscription>();
  private readonly clients = new Set<ClientConnection>();
  private readonly observers: PublishObserver[] = [];
  private readonly extensions: BrokerExtension[] = [];
  private readonly closers: Array<() => void> = [];
  private unregister?: () => void;

  constructor(options: InProcessBrokerOptions = {}) {
    brokers++;
    this.hostname = `in-process-${process.pid}-${brokers}.nats.invalid`;
    this.url = `nats://${this.hostname}:4222`;
    this.maxPayload = options.maxPayload ?? 1024 * 1024;
    this.unregister = registerInProcessHost(this.hostname, () => new InProcessTransport(this));
  }

  /** The INFO a client gets on connect. */
  info(clientId: number): Record<string, unknown> {
    return {
      server_id: this.hostname,
      server_name: this.hostname,
      version: '2.11.0',
      proto: 1,
      go: 'in-process',
      host: this.hostname,
      port: 4222,
      headers: true,
      max_payload: this.maxPayload,
      jetstream: true,
      client_id: clientId,
      client_ip: '127.0.0.1',
    };
  }

  observe(observer: PublishObserver): () => void {
    this.observers.push(observer);
    return () => this.observers.splice(this.observers.indexOf(observer) >>> 0, 1);
  }

  extend(extension: BrokerExtension): void {
    this.extensions.push(extension);
  }

  attach(client: ClientConnection): void {
    this.clients.add(client);
  }

  detach(client: ClientConnection): void {
    this.clients.delete(client);
    for (const s of this.subs) if (s.owner === client) this.subs.delete(s);
  }

  subscribe(owner: BrokerSubscriber, sid: string, subject: string, queue?: string): void {
    this.subs.add({ owner, sid, subject, tokens: subject.split('.'), queue });
  }

  unsubscribe(owner: BrokerSubscriber, sid: string, max?: number): void {
    for (const s of this.subs) {
      if (s.owner !== owner || s.sid !== sid) continue;
      if (max === undefined || max <= 0) this.subs.delete(s);
      else s.remaining = max;
    }
  }

  /** A client's publish: observed, routed, then offered to the extensions (JetStream). */
  publish(message: BrokerMessage, from?: BrokerSubscriber): void {
    const routed = this.route(message, from);
    let captured = false;
    for (const e of this.extensions) captured = (e.onPublish?.(message, routed).captured ?? false) || captured;
    // A request nobody answers (no subscriber, no stream) gets the 503 status at once.
    if (message.reply && routed === 0 && !captured && (from as ClientConnection | undefined)?.noResponders) {
      this.route({ subject: message.reply, headers: NO_RESPONDERS, payload: Buffer.alloc(0) });
    }
    for (const o of this.observers) o(message, routed);
  }

  /** Deliver to every plain subscriber and one member of each queue group; returns how many got it. */
  route(message: BrokerMessage, from?: BrokerSubscriber): number {
    const tokens = message.subject.split('.');
    const groups = new Map<string, Subscription[]>();
    const plain: Subscription[] = [];
    for (const s of this.subs) {
      if (!matches(s.tokens, tokens)) continue;
      if (s.owner === from && from.echo === false) continue;
      if (s.queue === undefined) plain.push(s);
      else groups.set(s.queue, [...(groups.get(s.queue) ?? []), s]);
    }
    const chosen = [...plain, ...[...groups.values()].map((members) => members[Math.floor(Math.random() * members.length)])];
    for (const s of chosen) {
      if (s.remaining !== undefined && --s.remaining <= 0) this.subs.delete(s);
      s.owner.deliver(message, s.sid);
    }
    return chosen.length;
  }

  /** Deliver `message` (its subject unchanged) to what subscribes to `target`: a pull request's inbox. */
  routeTo(target: string, message: BrokerMessage): number {
    const tokens = target.split('.');
    let n = 0;
    for (const s of this.subs) {
      if (!matches(s.tokens, tokens)) continue;
      n++;
      s.owner.deliver(message, s.sid);
    }
    return n;
  }

  /** Run `stop` when the broker closes (JetStream's timers). */
  onClose(stop: () => void): void {
    this.closers.push(stop);
  }

  /** Whether anything is subscribed to `subject`. */
  hasInterest(subject: string): boolean {
    const tokens = subject.split('.');
    for (const s of this.subs) if (matches(s.tokens, tokens)) return true;
    return false;
  }

  /** Drop every client connection and stop taking new ones. */
  close(): void {
    this.unregister?.();
    this.unregister = undefined;
    for (const c of [...this.clients]) c.close();
    for (const stop of this.closers.splice(0)) stop();
  }
}

/** NATS subject matching: `*` is one token, a final `>` one or more. */
export function subjectMatches(pattern: string, subject: string): boolean {
  return matches(pattern.split('.'), subject.split('.'));
}

function matches(pattern: string[], subject: string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === '>') return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== '*' && p !== subject[i]) return false;
  }
  return pattern.length === subject.length;
}

/** Header block → record of the first value of each header (names as sent). */
export function parseHeaderBlock(block: Buffer | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!block) return out;
  const lines = block.toString('utf8').split('\r\n').slice(1);
  for (const line of lines) {
    const at = line.indexOf(':');
    if (at <= 0) continue;
    const name = line.slice(0, at).trim();
    if (!(name in out)) out[name] = line.slice(at + 1).trim();
  }
  return out;
}

/** A header block from a record, as a client would send it. */
export function headerBlock(headers: Record<string, string>, status = ''): Buffer {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
  return Buffer.from(`NATS/1.0${status ? ` ${status}` : ''}\r\n${lines.join('')}\r\n`);
}

/** The broker's side of one client connection: parses what the client sends and writes MSG/HMSG back. */
export class ClientConnection implements BrokerSubscriber {
  private static ids = 0;
  readonly id = ++ClientConnection.ids;
  echo = true;
  noResponders = false;
  private pending: Buffer = Buffer.alloc(0);
  private closed = false;

  constructor(
    private readonly broker: InProcessBroker,
    private readonly write: (frame: Uint8Array) => void,
    private readonly onClose: (err?: Error) => void,
  ) {}

  greet(): void {
    this.broker.attach(this);
    this.write(Buffer.from(`INFO ${JSON.stringify(this.broker.info(this.id))}\r\n`));
  }

  deliver(message: BrokerMessage, sid: string): void {
    if (this.closed) return;
    const reply = message.reply ? ` ${message.reply}` : '';
    const size = message.payload.length;
    const head = message.headers
      ? `HMSG ${message.subject} ${sid}${reply} ${message.headers.length} ${message.headers.length + size}\r\n`
      : `MSG ${message.subject} ${sid}${reply} ${size}\r\n`;
    const parts = message.headers
      ? [Buffer.from(head), message.headers, message.payload, CRLF]
      : [Buffer.from(head), message.payload, CRLF];
    this.write(Buffer.concat(parts));
  }

  receive(frame: Uint8Array): void {
    if (this.closed) return;
    this.pending = this.pending.length ? Buffer.concat([this.pending, frame]) : Buffer.from(frame);
    while (!this.closed) {
      const eol = this.pending.indexOf(CRLF);
      if (eol < 0) return;
      const line = this.pending.subarray(0, eol).toString('latin1');
      const space = line.indexOf(' ');
      const op = (space < 0 ? line : line.slice(0, space)).toUpperCase();
      const args =
        space < 0
          ? []
          : line
              .slice(space + 1)
              .trim()
              .split(/\s+/);
      if (op === 'PUB' || op === 'HPUB') {
        const total = Number(args[args.length - 1]);
        const headerSize = op === 'HPUB' ? Number(args[args.length - 2]) : 0;
        const start = eol + 2;
        if (this.pending.length < start + total + 2) return;
        const body = this.pending.subarray(start, start + total);
        this.pending = this.pending.subarray(start + total + 2);
        const fixed = op === 'HPUB' ? 3 : 2;
        if (total - headerSize > this.broker.maxPayload) {
          this.fail('Maximum Payload Violation');
          return;
        }
        this.broker.publish(
          {
            subject: args[0],
            reply: args.length > fixed ? args[1] : undefined,
            headers: op === 'HPUB' ? Buffer.from(body.subarray(0, headerSize)) : undefined,
            payload: Buffer.from(body.subarray(headerSize)),
          },
          this,
        );
        continue;
      }
      this.pending = this.pending.subarray(eol + 2);
      switch (op) {
        case 'CONNECT': {
          const options = JSON.parse(line.slice(space + 1)) as { echo?: boolean; no_responders?: boolean; headers?: boolean };
          this.echo = options.echo !== false;
          this.noResponders = options.no_responders === true && options.headers === true;
          break;
        }
        case 'PING':
          this.write(Buffer.from('PONG\r\n'));
          break;
        case 'PONG':
          break;
        case 'SUB':
          this.broker.subscribe(this, args[args.length - 1], args[0], args.length === 3 ? args[1] : undefined);
          break;
        case 'UNSUB':
          this.broker.unsubscribe(this, args[0], args[1] === undefined ? undefined : Number(args[1]));
          break;
        default:
          this.fail('Unknown Protocol Operation');
      }
    }
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.broker.detach(this);
    this.onClose(err);
  }

  private fail(reason: string): void {
    this.write(Buffer.from(`-ERR '${reason}'\r\n`));
    this.close();
  }
}

/** nats.js's Transport over a ClientConnection: what it would read from and write to a socket. */
export class InProcessTransport implements Transport {
  readonly lang = 'nats.js';
  readonly version = 'in-process';
  closeError?: Error;
  private client?: ClientConnection;
  private yields: Uint8Array[] = [];
  private wake?: () => void;
  private done = false;
  private readonly whenClosed: Promise<void | Error>;
  private closedNow!: (value: void | Error) => void;

  constructor(private readonly broker: InProcessBroker) {
    this.whenClosed = new Promise((resolve) => (this.closedNow = resolve));
  }

  get isClosed(): boolean {
    return this.done;
  }

  connect(): Promise<void> {
    this.client = new ClientConnection(
      this.broker,
      (frame) => this.push(frame),
      (err) => this.finish(err),
    );
    this.client.greet();
    return Promise.resolve();
  }

  private push(frame: Uint8Array): void {
    this.yields.push(frame);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    while (true) {
      if (this.yields.length === 0) {
        if (this.done) return;
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      const frames = this.yields;
      this.yields = [];
      for (const f of frames) yield f;
    }
  }

  isEncrypted(): boolean {
    return false;
  }

  send(frame: Uint8Array): void {
    // A socket writes later: the broker reads on a later tick, so no subscriber runs inside publish().
    const copy = Uint8Array.from(frame);
    queueMicrotask(() => this.client?.receive(copy));
  }

  close(err?: Error): Promise<void> {
    this.client?.close(err);
    this.finish(err);
    return Promise.resolve();
  }

  /** The server dropped the connection: nats.js sees a disconnect and reconnects. */
  disconnect(): void {
    this.client?.close();
  }

  closed(): Promise<void | Error> {
    return this.whenClosed;
  }

  discard(): void {}

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.closeError = err;
    this.wake?.();
    this.closedNow(err);
  }
}
