// JetStream inside the in-process broker, at the wire: the `$JS.API` requests nats.js's JetStream
// client sends (account info, streams, consumers, pull requests), publish acks with `Nats-Msg-Id`
// deduplication, and `$JS.ACK` acks, naks with delay, in-progress and term. The bus's durable code
// then runs unchanged. Kept to what the bus uses: no limits, mirrors, KV or object store.
import { BrokerMessage, BrokerSubscriber, headerBlock, InProcessBroker, parseHeaderBlock, subjectMatches } from './in-process-broker';
import { JetStreamApi } from './in-process-jetstream-api';
import {
  Consumer,
  DEFAULT_ACK_WAIT_NS,
  DEFAULT_DUPLICATE_WINDOW_NS,
  NS_PER_MS,
  Outstanding,
  PullRequest,
  StoredMessage,
  Stream,
  unseen,
  wants,
} from './in-process-jetstream-state';

const attached = new WeakMap<InProcessBroker, InProcessJetStream>();

/**
 * JetStream for one in-process broker. Time for redeliveries (nak delays, ack waits) runs on a
 * broker clock that `advance(ms)` moves forward, so backoff is tested without waiting for it.
 */
export class InProcessJetStream implements BrokerSubscriber {
  private readonly streams = new Map<string, Stream>();
  private offsetMs = 0;
  private timer?: NodeJS.Timeout;
  private readonly api = new JetStreamApi({
    streams: this.streams,
    now: () => this.now(),
    answer: (reply, body) => this.answer(reply, body),
    pull: (stream, consumer, inbox, body) => this.pull(stream, consumer, inbox, body),
  });

  private constructor(private readonly broker: InProcessBroker) {
    broker.subscribe(this, 'api', '$JS.API.>');
    broker.subscribe(this, 'ack', '$JS.ACK.>');
    broker.extend({ onPublish: (m) => ({ captured: this.store(m) }) });
    broker.onClose(() => this.stop());
  }

  static of(broker: InProcessBroker): InProcessJetStream | undefined {
    return attached.get(broker);
  }

  static attach(broker: InProcessBroker): InProcessJetStream {
    let js = attached.get(broker);
    if (!js) attached.set(broker, (js = new InProcessJetStream(broker)));
    return js;
  }

  /** Whether a stream captures `subject`. */
  captures(subject: string): boolean {
    return this.streamFor(subject) !== undefined;
  }

  /** Move the clock `ms` forward and deliver whatever came due. */
  advance(ms: number): void {
    this.offsetMs += ms;
    this.pump();
  }

  private now(): number {
    return Date.now() + this.offsetMs;
  }

  deliver(message: BrokerMessage, sid: string): void {
    if (sid === 'ack') this.onAck(message);
    else this.api.handle(message);
  }

  private streamFor(subject: string): Stream | undefined {
    for (const s of this.streams.values()) if (s.config.subjects.some((p) => subjectMatches(p, subject))) return s;
    return undefined;
  }

  /** A client publish: stored by the stream that captures its subject, and acked when it asked. */
  private store(m: BrokerMessage): boolean {
    if (m.subject.startsWith('$JS.')) return false;
    const stream = this.streamFor(m.subject);
    if (!stream) return false;
    const id = parseHeaderBlock(m.headers)['Nats-Msg-Id'];
    const now = this.now();
    const windowMs = (stream.config.duplicate_window ?? DEFAULT_DUPLICATE_WINDOW_NS) / NS_PER_MS;
    for (const [key, seen] of stream.ids) if (now - seen.at > windowMs) stream.ids.delete(key);
    const earlier = id ? stream.ids.get(id) : undefined;
    if (earlier) {
      this.answer(m.reply, { stream: stream.config.name, seq: earlier.seq, duplicate: true });
      return true;
    }
    const stored: StoredMessage = { seq: ++stream.lastSeq, subject: m.subject, headers: m.headers, payload: m.payload, time: now };
    stream.messages.push(stored);
    if (id) stream.ids.set(id, { seq: stored.seq, at: now });
    this.answer(m.reply, { stream: stream.config.name, seq: stored.seq });
    this.pump();
    return true;
  }

  private answer(reply: string | undefined, body: unknown): void {
    if (!reply) return;
    this.broker.route({ subject: reply, payload: Buffer.from(JSON.stringify(body)) });
  }

  private pull(stream: Stream, consumer: Consumer, inbox: string, body: Record<string, any>): void {
    const request: PullRequest = {
      inbox,
      left: Math.max(1, Number(body.batch ?? 1)),
      // Pull expiries run on real time, as nats.js's own timers for them do.
      expiresAt: body.expires ? Date.now() + Number(body.expires) / NS_PER_MS : Number.POSITIVE_INFINITY,
    };
    if (body.idle_heartbeat) {
      const every = Math.max(1, Number(body.idle_heartbeat) / NS_PER_MS);
      request.heartbeat = setInterval(() => this.status(inbox, '100 Idle Heartbeat'), every);
      request.heartbeat.unref?.();
    }
    consumer.pulls.push(request);
    this.pump();
    if (body.no_wait && consumer.pulls.includes(request)) this.endPull(consumer, request, '404 No Messages');
  }

  private status(inbox: string, status: string, headers: Record<string, string> = {}): void {
    this.broker.route({ subject: inbox, headers: headerBlock(headers, status), payload: Buffer.alloc(0) });
  }

  private endPull(consumer: Consumer, request: PullRequest, status?: string): void {
    clearInterval(request.heartbeat);
    consumer.pulls = consumer.pulls.filter((p) => p !== request);
    if (status) this.status(request.inbox, status, { 'Nats-Pending-Messages': String(request.left), 'Nats-Pending-Bytes': '0' });
  }

  /** `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`: +ACK, -NAK {delay}, +WPI, +TERM. */
  private onAck(m: BrokerMessage): void {
    const t = m.subject.split('.');
    const consumer = this.streams.get(t[2])?.consumers.get(t[3]);
    const seq = Number(t[5]);
    const o = consumer?.outstanding.get(seq);
    const text = m.payload.toString('utf8');
    if (consumer && o && !o.waiting) {
      if (text.startsWith('+ACK') || text.startsWith('+TERM')) consumer.outstanding.delete(seq);
      else if (text.startsWith('+WPI')) o.dueAt = this.now() + this.ackWaitMs(consumer);
      else if (text.startsWith('-NAK')) {
        const delay = /\{.*\}/.exec(text);
        const delayNs = delay ? Number((JSON.parse(delay[0]) as { delay?: number }).delay ?? 0) : 0;
        o.waiting = true;
        o.dueAt = this.now() + delayNs / NS_PER_MS;
      }
    }
    if (m.reply) this.broker.route({ subject: m.reply, payload: Buffer.alloc(0) });
    this.pump();
  }

  private ackWaitMs(c: Consumer): number {
    return (c.config.ack_wait ?? DEFAULT_ACK_WAIT_NS) / NS_PER_MS;
  }

  /** Hand out what is due to the waiting pull requests, end expired ones, and set the timer for the next due time. */
  private pump(): void {
    const now = this.now();
    for (const stream of this.streams.values()) {
      for (const c of stream.consumers.values()) {
        for (const o of c.outstanding.values()) {
          // An ack wait that ran out makes the message due again, as a nak with no delay would.
          if (o.dueAt <= now) o.waiting = true;
        }
        for (const request of [...c.pulls]) {
          if (request.expiresAt <= Date.now()) {
            this.endPull(c, request, '408 Request Timeout');
            continue;
          }
          while (request.left > 0) {
            const next = this.nextFor(stream, c, now);
            if (!next) break;
            this.send(stream, c, request, next, now);
          }
          if (request.left === 0) this.endPull(c, request);
        }
      }
    }
    this.schedule();
  }

  private nextFor(stream: Stream, c: Consumer, now: number): Outstanding | undefined {
    let due: Outstanding | undefined;
    for (const o of c.outstanding.values()) {
      if (o.waiting && o.dueAt <= now && (!due || o.message.seq < due.message.seq)) due = o;
    }
    if (due) return due;
    while (c.cursor <= stream.lastSeq) {
      const message = stream.messages.find((m) => m.seq === c.cursor);
      c.cursor++;
      if (message && wants(c, message)) {
        const fresh: Outstanding = { message, deliveries: 0, dueAt: now, waiting: true };
        c.outstanding.set(message.seq, fresh);
        return fresh;
      }
    }
    return undefined;
  }

  private send(stream: Stream, c: Consumer, request: PullRequest, o: Outstanding, now: number): void {
    o.deliveries++;
    o.waiting = false;
    o.dueAt = now + this.ackWaitMs(c);
    request.left--;
    const m = o.message;
    const reply = `$JS.ACK.${stream.config.name}.${c.name}.${o.deliveries}.${m.seq}.${++c.consumerSeq}.${m.time * NS_PER_MS}.${unseen(stream, c)}`;
    // Delivered to the pull's inbox under the message's own subject, as the server does.
    this.broker.routeTo(request.inbox, { subject: m.subject, reply, headers: m.headers, payload: m.payload });
  }

  /** One real timer for the earliest redelivery or pull expiry. */
  private schedule(): void {
    clearTimeout(this.timer);
    let next = Number.POSITIVE_INFINITY;
    for (const stream of this.streams.values()) {
      for (const c of stream.consumers.values()) {
        for (const o of c.outstanding.values()) next = Math.min(next, o.dueAt - this.offsetMs);
        for (const p of c.pulls) next = Math.min(next, p.expiresAt);
      }
    }
    if (next === Number.POSITIVE_INFINITY) return;
    this.timer = setTimeout(() => this.pump(), Math.max(0, next - Date.now()) + 1);
    this.timer.unref?.();
  }

  private stop(): void {
    clearTimeout(this.timer);
    for (const stream of this.streams.values())
      for (const c of stream.consumers.values()) for (const p of c.pulls) clearInterval(p.heartbeat);
  }
}
