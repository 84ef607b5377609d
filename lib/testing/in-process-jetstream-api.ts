// The `$JS.API` requests of the in-process JetStream: account info, stream and consumer create,
// info, update and delete, as nats.js's JetStream manager sends them. Pull requests are handed to
// the delivery side (in-process-jetstream.ts), which owns the messages and their timers.
import { BrokerMessage, subjectMatches } from './in-process-broker';
import { Consumer, DEFAULT_ACK_WAIT_NS, DEFAULT_DUPLICATE_WINDOW_NS, Stream, StreamConfig, unseen } from './in-process-jetstream-state';

/** What the API side needs of the JetStream it serves. */
export interface JetStreamApiHost {
  readonly streams: Map<string, Stream>;
  /** The broker clock (moved by `advance`). */
  now(): number;
  answer(reply: string | undefined, body: unknown): void;
  pull(stream: Stream, consumer: Consumer, inbox: string, body: Record<string, any>): void;
}

/** Answers `$JS.API.>` requests against the host's streams. */
export class JetStreamApi {
  private readonly streams: Map<string, Stream>;

  constructor(private readonly host: JetStreamApiHost) {
    this.streams = host.streams;
  }

  private answer(reply: string | undefined, body: unknown): void {
    this.host.answer(reply, body);
  }

  private fail(reply: string | undefined, code: number, errCode: number, description: string): void {
    this.answer(reply, { error: { code, err_code: errCode, description } });
  }

  handle(m: BrokerMessage): void {
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
      if (action === 'MSG' && tokens[4] === 'NEXT' && m.reply) return this.host.pull(stream, consumer, m.reply, body);
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
      created: new Date(this.host.now()).toISOString(),
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
        ack_wait: DEFAULT_ACK_WAIT_NS,
        max_deliver: -1,
        replay_policy: 'instant',
        ...config,
      },
      created: new Date(this.host.now()).toISOString(),
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
      num_pending: unseen(stream, c),
    };
  }
}
