// What a test asks of the bus: what was published, waiting for a publish, what the handlers did.
// It watches the in-process broker (every client's publishes, with their headers, as the wire
// carried them) and the real EventBus's subscriptions; it changes nothing they do.
import { Inject, Injectable, OnApplicationShutdown, Optional } from '@nestjs/common';
import { looksLikeEnvelope, StoredMessageEnvelope } from '../claim-check/envelope';
import { EventBus } from '../event-bus/event-bus';
import type { MessageContext, MessageHandler } from '../delivery/message-context';
import { MESSAGE_STORAGE_MANAGER, MessageStorageManager } from '../storage/message-storage-manager';
import { BrokerMessage, InProcessBroker, parseHeaderBlock, subjectMatches } from './in-process-broker';
import { InProcessJetStream } from './in-process-jetstream';

/** The in-process broker of a testing module (one per app unless one is given to `forRoot`). */
export const IN_PROCESS_BROKER = Symbol.for('nestjs-nats-eventbus:IN_PROCESS_BROKER');
/** Whether the testing module made its broker (and so closes it with the app). */
export const OWNED_BROKER = Symbol.for('nestjs-nats-eventbus:OWNED_BROKER');

/** One message published on the broker, as its subscribers get it. */
export interface PublishedMessage {
  topic: string;
  /** The JSON payload; a claim-checked body is recovered from the storage. */
  payload: unknown;
  /** The NATS headers it carried (the library's own, such as `Nats-Msg-Id`, included). */
  headers: Record<string, string>;
  /** True when a JetStream stream stored it (a persisted publish, or a plain one a stream captures). */
  persisted: boolean;
  /** The storage token, when the body was claim-checked. */
  token?: string;
}

/** One run of a subscribed handler. */
export interface HandledMessage {
  /** The message's subject. */
  topic: string;
  /** The subscription's topic (with its wildcards). */
  subscription: string;
  /** `dead-lettered`: the last run of a durable message that was then dead-lettered (or dropped). */
  outcome: 'ok' | 'error' | 'dead-lettered';
  error?: unknown;
  payload: unknown;
  deliveryCount?: number;
}

interface Waiter {
  topic: string;
  predicate?: (m: PublishedMessage) => boolean;
  resolve: (m: PublishedMessage) => void;
}

/**
 * `published(topic?)`, `waitFor(topic, predicate?, timeoutMs?)`, `handled(topic?)`, `reset()`, and
 * `advance(ms)`: durable redeliveries (backoff) come due without waiting real time.
 */
@Injectable()
export class TestEventBus implements OnApplicationShutdown {
  private publishedNow: PublishedMessage[] = [];
  private handledNow: HandledMessage[] = [];
  private waiters: Waiter[] = [];
  private readonly stopObserving: () => void;

  constructor(
    @Inject(IN_PROCESS_BROKER) readonly broker: InProcessBroker,
    @Inject(EventBus) readonly bus: EventBus,
    @Inject(MESSAGE_STORAGE_MANAGER) private readonly storage: MessageStorageManager | null,
    @Optional() @Inject(OWNED_BROKER) private readonly ownsBroker: boolean = false,
  ) {
    this.stopObserving = broker.observe((m) => this.onPublish(m));
    this.recordHandlers(bus);
  }

  /** What was published, oldest first; with a topic (wildcards allowed), only what matches it. Requests and replies are not listed. */
  published(topic?: string): PublishedMessage[] {
    return this.publishedNow.filter((m) => topic === undefined || matchesTopic(topic, m.topic));
  }

  /** Handler runs, oldest first; a topic (wildcards allowed) matches the subject or the subscription's topic. */
  handled(topic?: string): HandledMessage[] {
    return this.handledNow.filter((h) => topic === undefined || h.subscription === topic || matchesTopic(topic, h.topic));
  }

  /** The first publish on `topic` (wildcards allowed) matching `predicate`: one already seen, or the next. Default timeout 5000 ms. */
  waitFor(topic: string, predicate?: (m: PublishedMessage) => boolean, timeoutMs = 5000): Promise<PublishedMessage> {
    const seen = this.published(topic).find((m) => !predicate || predicate(m));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        topic,
        predicate,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const got = this.published(topic).length;
        reject(new Error(`waitFor("${topic}"): no matching publish within ${timeoutMs} ms (${got} on that topic did not match)`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Forget what was published and handled (streams and their messages stay). */
  reset(): void {
    this.publishedNow = [];
    this.handledNow = [];
  }

  /**
   * Move the broker's clock `ms` forward: durable redeliveries whose backoff ends within it are
   * delivered now, and ack waits run out. Resolves once the broker has sent them.
   */
  async advance(ms: number): Promise<void> {
    // What the handlers sent (a nak with its delay) must reach the broker before its clock moves.
    await settle();
    await Promise.all([...this.bus.connections().values()].map((c) => c.flush().catch(() => undefined)));
    this.jetStream?.advance(ms);
    await settle();
  }

  /** Runs after the bus closed its connections (`onModuleDestroy`). */
  onApplicationShutdown(): void {
    this.stopObserving();
    if (this.ownsBroker) this.broker.close();
  }

  private get jetStream(): InProcessJetStream | undefined {
    return InProcessJetStream.of(this.broker);
  }

  private onPublish(message: BrokerMessage): void {
    const subject = message.subject;
    if (subject.startsWith('_INBOX.') || subject.startsWith('$')) return;
    const persisted = this.jetStream?.captures(subject) ?? false;
    // A request (reply inbox, no stream) is not a publish; a persisted publish waits for its ack on an inbox.
    if (message.reply && !persisted) return;
    const headers = parseHeaderBlock(message.headers);
    const dead = headers['Eventbus-Dead-Stream'];
    if (dead) this.markDeadLettered(dead, Number(headers['Eventbus-Dead-Seq']));
    let payload: unknown;
    try {
      payload = message.payload.length ? JSON.parse(message.payload.toString('utf8')) : undefined;
    } catch {
      payload = message.payload.toString('utf8');
    }
    const entry: PublishedMessage = { topic: subject, payload, headers, persisted };
    if (looksLikeEnvelope(payload) && this.storage) {
      const envelope = payload as unknown as StoredMessageEnvelope;
      entry.token = envelope.token;
      // Recorded once its body is read back, so that a listed claim-checked message shows its payload.
      this.storage.recoverMessage(envelope).then(
        (body) => {
          entry.payload = JSON.parse(Buffer.from(body).toString('utf8'));
          this.record(entry);
        },
        () => this.record(entry),
      );
      return;
    }
    this.record(entry);
  }

  private record(entry: PublishedMessage): void {
    this.publishedNow.push(entry);
    for (const w of [...this.waiters]) {
      if (!matchesTopic(w.topic, entry.topic) || (w.predicate && !w.predicate(entry))) continue;
      this.waiters = this.waiters.filter((x) => x !== w);
      w.resolve(entry);
    }
  }

  /** The last run of the dead-lettered message is its dead-lettered outcome. */
  private markDeadLettered(stream: string, seq: number): void {
    const run = this.findRun(stream, seq);
    if (run) run.outcome = 'dead-lettered';
  }

  private findRun(stream: string, seq: number): HandledMessage | undefined {
    for (let i = this.handledNow.length - 1; i >= 0; i--) {
      const h = this.handledNow[i] as HandledMessage & { stream?: string; seq?: number };
      if (h.stream === stream && h.seq === seq) return h;
    }
    return undefined;
  }

  /** Every handler the bus subscribes (those of `@Subscribe` too) reports its runs here. */
  private recordHandlers(bus: EventBus): void {
    const subscribe = bus.subscribe.bind(bus);
    const handledNow = () => this.handledNow;
    bus.subscribe = ((topic: string, handler: MessageHandler, options?: Parameters<EventBus['subscribe']>[2]) => {
      const maxDeliver = options?.durable ? (options.maxDeliver ?? 5) : undefined;
      const recorded: MessageHandler = (payload, ctx) => {
        const run = runOf(topic, payload, ctx);
        const failed = (error: unknown) => {
          run.outcome = maxDeliver !== undefined && (ctx.deliveryCount ?? 0) >= maxDeliver ? 'dead-lettered' : 'error';
          run.error = error;
          handledNow().push(run);
        };
        let result: unknown;
        try {
          result = handler(payload, ctx);
        } catch (err) {
          failed(err);
          throw err;
        }
        if (result && typeof (result as Promise<unknown>).then === 'function') {
          return (result as Promise<unknown>).then(
            (value) => {
              handledNow().push(run);
              return value;
            },
            (err: unknown) => {
              failed(err);
              throw err;
            },
          );
        }
        handledNow().push(run);
        return result;
      };
      return subscribe(topic, recorded, options);
    }) as EventBus['subscribe'];
  }
}

function runOf(subscription: string, payload: unknown, ctx: MessageContext): HandledMessage & { stream?: string; seq?: number } {
  const run: HandledMessage & { stream?: string; seq?: number } = { topic: ctx.subject, subscription, outcome: 'ok', payload };
  if (ctx.deliveryCount !== undefined) run.deliveryCount = ctx.deliveryCount;
  // Kept out of sight (not enumerable): they only tie a dead letter to its run.
  if (ctx.stream !== undefined) Object.defineProperty(run, 'stream', { value: ctx.stream, enumerable: false });
  if (ctx.seq !== undefined) Object.defineProperty(run, 'seq', { value: ctx.seq, enumerable: false });
  return run;
}

const settle = () => new Promise<void>((r) => setImmediate(r));

function matchesTopic(pattern: string, subject: string): boolean {
  return pattern === subject || subjectMatches(pattern, subject);
}
