// The client side of the in-process broker: one connection's protocol (CONNECT, PUB/HPUB, SUB/UNSUB,
// PING, and MSG/HMSG written back), and the nats.js Transport that carries it instead of a socket.
import type { Transport } from '@nats-io/transport-node';
import type { BrokerMessage, BrokerSubscriber, InProcessBroker } from './in-process-broker';

const CRLF = Buffer.from('\r\n');

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
