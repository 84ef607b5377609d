// A NATS server inside the test process: it speaks the client protocol (INFO, CONNECT, PUB/HPUB,
// SUB/UNSUB, MSG/HMSG, PING/PONG) to nats.js through an in-process transport, so nats.js and the
// whole bus above it run unchanged. Routing, queue groups, wildcards and no-responders follow the
// real server; clustering, permissions, TLS and slow-consumer limits are not modelled.
import { registerInProcessHost } from '../nats/dial';
import { tokensMatch } from '../nats/subjects';
import { SERVER_MAX_PAYLOAD_BYTES } from '../options/defaults';
import { renamed } from '../options/rules';
import { ClientConnection, InProcessTransport } from './in-process-client';

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
  /** The `max_payload` in its INFO, in bytes. Default 1 MiB, as a default nats-server. */
  maxPayloadBytes?: number;
  /** @deprecated Use `maxPayloadBytes` (the same option, its unit in the name). */
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
    this.maxPayload = renamed<number>(options, 'maxPayloadBytes', 'maxPayload').value ?? SERVER_MAX_PAYLOAD_BYTES;
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
      if (!tokensMatch(s.tokens, tokens)) continue;
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
      if (!tokensMatch(s.tokens, tokens)) continue;
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
    for (const s of this.subs) if (tokensMatch(s.tokens, tokens)) return true;
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

export { subjectMatches } from '../nats/subjects';

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
