// JetStream inside the in-process broker, at the wire: the `$JS.API` requests nats.js's JetStream
// client sends (account info, streams, consumers, pull requests), publish acks with `Nats-Msg-Id`
// deduplication, and `$JS.ACK` acks, naks with delay, in-progress and term. The bus's durable code
// then runs unchanged. Kept to what the bus uses: no limits, mirrors, KV or object store.
import { BrokerMessage, BrokerSubscriber, headerBlock, InProcessBroker, parseHeaderBlock, subjectMatches } from './in-process-broker';

const attached = new WeakMap<InProcessBroker, InProcessJetStream>();
const NS_PER_MS = 1_000_000;
/** The server's default duplicate window: 2 minutes. */
const DEFAULT_DUPLICATE_WINDOW_NS = 120_000 * NS_PER_MS;

interface StoredMessage {
  seq: number;
  subject: string;
  headers?: Buffer;
  payload: Buffer;
  time: number;
}

interface StreamConfig {
  name: string;
  subjects: string[];
  duplicate_window?: number;
  [key: string]: unknown;
}

interface Stream {
  config: StreamConfig;
  created: string;
  messages: StoredMessage[];
  lastSeq: number;
  /** Msg ids seen within the duplicate window: id → seq and when. */
  ids: Map<string, { seq: number; at: number }>;
  consumers: Map<string, Consumer>;
}

interface Outstanding {
  message: StoredMessage;
  deliveries: number;
  /** Broker-clock time at which it is delivered again: its ack wait, or the delay of its nak. */
  dueAt: number;
  /** Waiting for its nak delay (or ack wait) to pass, rather than handed out. */
  waiting: boolean;
}

interface PullRequest {
  inbox: string;
  left: number;
  expiresAt: number;
  heartbeat?: NodeJS.Timeout;
}

interface Consumer {
  name: string;
  config: Record<string, unknown> & { filter_subject?: string; ack_wait?: number };
  created: string;
  /** Next stream sequence not yet delivered. */
  cursor: number;
  consumerSeq: number;
  outstanding: Map<number, Outstanding>;
  pulls: PullRequest[];
}

/**
 * JetStream for one in-process broker. Time for redeliveries (nak delays, ack waits) runs on a
 * broker clock that `advance(ms)` moves forward, so backoff is tested without waiting for it.
 */
export class InProcessJetStream implements BrokerSubscriber {
  private readonly streams = new Map<string, Stream>();
  private offsetMs = 0;
  private timer?: NodeJS.Timeout;

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
    else this.onApi(message);
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

  private fail(reply: string | undefined, code: number, errCode: number, description: string): void {
    this.answer(reply, { error: { code, err_code: errCode, description } });
  }

  private onApi(m: BrokerMessage): void {
    const tokens = m.subject.split('.');
    const op = tokens.slice(2).join('.');
    let body: Record<string, any> = {};
    try {
      body = m.payload.length ? JSON.parse(m.payload.toString('utf8')) : {};
    } catch {
      return this.fail(m.reply, 400, 10025, 'bad request');
    }
    if (op === 'INFO') return this.answer(m.reply, this.accountInfo());
    if (op === 'STREAM.NAMES') {
      const names = [...this.streams.values()]
        .filter((s) => !body.subject || s.config.subjects.some((p) => subjectMatches(p, body.subject) || subjectMatches(body.subject, p)))
        .map((s) => s.config.name);
      return this.answer(m.reply, { total: names.length, offset: 0, limit: 1024, streams: names.length ? names : null });
    }
    const [group, action] = [tokens[2], tokens[3]];
    if (group === 'STREAM') {
      const name = tokens[4];
      if (action === 'CREATE') return this.createStream(m.reply, body as StreamConfig);
      const stream = this.streams.get(name);
      if (!stream) return this.fail(m.reply, 404, 10059, 'stream not found');
      if (action === 'INFO') return this.answer(m.reply, this.streamInfo(stream));
      if (action === 'UPDATE') {
        if (body.storage !== undefined && body.storage !== stream.config.storage) {
          return this.fail(m.reply, 500, 10052, 'stream configuration update can not change storage type');
        }
        stream.config = { ...stream.config, ...(body as StreamConfig) };
        return this.answer(m.reply, this.streamInfo(stream));
      }
      if (action === 'DELETE') {
        this.streams.delete(name);
        return this.answer(m.reply, { success: true });
      }
      return this.fail(m.reply, 400, 10025, `${op} is not simulated`);
    }
    if (group === 'CONSUMER') {
      if (action === 'CREATE' || (action === 'DURABLE' && tokens[4] === 'CREATE')) {
        const streamName = action === 'CREATE' ? tokens[4] : tokens[5];
        return this.createConsumer(m.reply, streamName, body);
      }
      // `CONSUMER.<action>.<stream>.<name>`, but `CONSUMER.MSG.NEXT.<stream>.<name>`.
      const at = action === 'MSG' ? 5 : 4;
      const stream = this.streams.get(tokens[at]);
      if (!stream) return this.fail(m.reply, 404, 10059, 'stream not found');
      const consumer = stream.consumers.get(tokens[at + 1]);
      if (!consumer) return this.fail(m.reply, 404, 10014, 'consumer not found');
      if (action === 'INFO') return this.answer(m.reply, this.consumerInfo(stream, consumer));
      if (action === 'DELETE') {
        stream.consumers.delete(consumer.name);
        return this.answer(m.reply, { success: true });
      }
      if (action === 'MSG' && tokens[4] === 'NEXT' && m.reply) return this.pull(stream, consumer, m.reply, body);
      return this.fail(m.reply, 400, 10025, `${op} is not simulated`);
    }
    return this.fail(m.reply, 400, 10025, `${op} is not simulated`);
  }

  private accountInfo(): Record<string, unknown> {
    let consumers = 0;
    for (const s of this.streams.values()) consumers += s.consumers.size;
    return {
      type: 'io.nats.jetstream.api.v1.account_info_response',
      memory: 0,
      storage: 0,
      streams: this.streams.size,
      consumers,
      limits: { max_memory: -1, max_storage: -1, max_streams: -1, max_consumers: -1 },
      api: { total: 0, errors: 0 },
    };
  }

  private createStream(reply: string | undefined, config: StreamConfig): void {
    const existing = this.streams.get(config.name);
    if (existing) {
      if (JSON.stringify(existing.config) === JSON.stringify(this.withDefaults(config)))
        return this.answer(reply, this.streamInfo(existing));
      return this.fail(reply, 400, 10058, 'stream name already in use with a different configuration');
    }
    for (const s of this.streams.values()) {
      if (s.config.subjects.some((a) => config.subjects.some((b) => subjectMatches(a, b) || subjectMatches(b, a)))) {
        return this.fail(reply, 400, 10065, 'subjects overlap with an existing stream');
      }
    }
    const stream: Stream = {
      config: this.withDefaults(config),
      created: new Date(this.now()).toISOString(),
      messages: [],
      lastSeq: 0,
      ids: new Map(),
      consumers: new Map(),
    };
    this.streams.set(config.name, stream);
    this.answer(reply, this.streamInfo(stream));
  }

  private withDefaults(config: StreamConfig): StreamConfig {
    return {
      retention: 'limits',
      max_consumers: -1,
      max_msgs: -1,
      max_bytes: -1,
      max_age: 0,
      max_msg_size: -1,
      storage: 'file',
      discard: 'old',
      num_replicas: 1,
      duplicate_window: DEFAULT_DUPLICATE_WINDOW_NS,
      ...config,
    };
  }

  private streamInfo(stream: Stream): Record<string, unknown> {
    const first = stream.messages[0];
    return {
      type: 'io.nats.jetstream.api.v1.stream_info_response',
      config: stream.config,
      created: stream.created,
      state: {
        messages: stream.messages.length,
        bytes: stream.messages.reduce((n, m) => n + m.payload.length, 0),
        first_seq: first?.seq ?? stream.lastSeq + 1,
        last_seq: stream.lastSeq,
        consumer_count: stream.consumers.size,
      },
    };
  }

  private createConsumer(reply: string | undefined, streamName: string, body: Record<string, any>): void {
    const stream = this.streams.get(streamName);
    if (!stream) return this.fail(reply, 404, 10059, 'stream not found');
    const config = (body.config ?? {}) as Consumer['config'];
    const name = String(config.durable_name ?? config.name ?? '');
    const existing = stream.consumers.get(name);
    if (existing) {
      if (body.action === 'create' && JSON.stringify({ ...existing.config, ...config }) !== JSON.stringify(existing.config)) {
        return this.fail(reply, 400, 10148, 'consumer already exists');
      }
      existing.config = { ...existing.config, ...config };
      return this.answer(reply, this.consumerInfo(stream, existing));
    }
    if (body.action === 'update') return this.fail(reply, 404, 10149, 'consumer does not exist');
    const consumer: Consumer = {
      name,
      config: {
        deliver_policy: 'all',
        ack_policy: 'explicit',
        ack_wait: 30_000 * NS_PER_MS,
        max_deliver: -1,
        replay_policy: 'instant',
        ...config,
      },
      created: new Date(this.now()).toISOString(),
      cursor: stream.messages[0]?.seq ?? stream.lastSeq + 1,
      consumerSeq: 0,
      outstanding: new Map(),
      pulls: [],
    };
    stream.consumers.set(name, consumer);
    this.answer(reply, this.consumerInfo(stream, consumer));
  }

  private consumerInfo(stream: Stream, c: Consumer): Record<string, unknown> {
    return {
      type: 'io.nats.jetstream.api.v1.consumer_info_response',
      stream_name: stream.config.name,
      name: c.name,
      created: c.created,
      config: c.config,
      delivered: { consumer_seq: c.consumerSeq, stream_seq: c.cursor - 1 },
      ack_floor: { consumer_seq: 0, stream_seq: 0 },
      num_ack_pending: [...c.outstanding.values()].filter((o) => !o.waiting).length,
      num_redelivered: [...c.outstanding.values()].filter((o) => o.deliveries > 1).length,
      num_waiting: c.pulls.length,
      num_pending: this.unseen(stream, c),
    };
  }

  /** Messages the consumer has not delivered yet. */
  private unseen(stream: Stream, c: Consumer): number {
    return stream.messages.filter((m) => m.seq >= c.cursor && this.wants(c, m)).length;
  }

  private wants(c: Consumer, m: StoredMessage): boolean {
    return !c.config.filter_subject || subjectMatches(c.config.filter_subject, m.subject);
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
    return (c.config.ack_wait ?? 30_000 * NS_PER_MS) / NS_PER_MS;
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
      if (message && this.wants(c, message)) {
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
    const reply = `$JS.ACK.${stream.config.name}.${c.name}.${o.deliveries}.${m.seq}.${++c.consumerSeq}.${m.time * NS_PER_MS}.${this.unseen(stream, c)}`;
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
