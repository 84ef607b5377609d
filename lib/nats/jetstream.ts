// JetStream through nats.js's own client (`@nats-io/jetstream`): persisted publish and durable pull
// consumers, with nats.js errors turned into ours; stream and consumer administration is in
// jetstream-admin.ts. Nothing else imports nats.js's JetStream.
import {
  jetstream,
  JetStreamApiCodes,
  jetstreamManager,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { InvalidOptionsError, NotPersistedError } from '../errors/event-bus.errors';
import { JetStreamAdmin, type DurableConsumerSpec, type EnsureOptions, type EnsureResult, type StreamSpec } from './jetstream-admin';
import { NS_PER_SECOND } from './jetstream-drift';
import { asNotConnected, isApiError, isNoStream, publishRefusal } from './jetstream-errors';

export type { DurableConsumerSpec, EnsureOptions, EnsureResult, StreamSpec } from './jetstream-admin';
export { mayHaveBeenStored } from './jetstream-errors';

/** What the stream said when it stored a persisted publish. */
export interface PersistAck {
  /** The stream that stored it. */
  stream: string;
  /** Its sequence number in that stream. */
  seq: number;
  /** True when the stream had already stored a message with the same `msgId` within its duplicate window. */
  duplicate: boolean;
}

/** One message of a durable consumer, as the delivery path sees it. */
export interface DurableMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  /** 1 on first delivery. */
  readonly deliveryCount: number;
  readonly stream: string;
  readonly seq: number;
  ack(): void;
  /** Redeliver after `delayMs`. */
  nak(delayMs: number): void;
  /** Still being worked on: restart the ack wait. */
  working(): void;
  /** Never redeliver. (`reason` is for the caller's records; the server is not told it, see toDurableMessage.) */
  term(reason: string): void;
}

/** One pull request's messages as an async iterable, and a way to stop waiting for more. */
export interface DurableBatch extends AsyncIterable<DurableMessage> {
  stop(): void;
}

/** A durable pull consumer: messages are taken only when asked for, a batch at a time. */
export interface DurablePull {
  /** Ask for up to `max` messages; the batch ends when they came or the pull request expired (5 s). */
  fetch(max: number): Promise<DurableBatch>;
}

/** What a stream keeps, for deciding how long a claim-checked body must live. */
export interface StreamLimits {
  name: string;
  /** 0 when the stream has no age limit. */
  maxAgeSeconds: number;
}

/** How long one pull request lives; nats.js sends idle heartbeats at half of it and re-pulls after two are missed. */
const PULL_EXPIRES_MS = 5000;

/** JetStream on one NATS connection: stream and consumer management, persisted publish and pulls. */
export class JetStreamLink {
  private readonly admin: JetStreamAdmin;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {
    this.admin = new JetStreamAdmin(jsm);
  }

  /** Fails with `InvalidOptionsError` naming `jetstream` when the server (or account) has no JetStream. */
  static async open(nc: NatsConnection, apiTimeoutMs: number): Promise<JetStreamLink> {
    try {
      const jsm = await jetstreamManager(nc, { timeout: apiTimeoutMs });
      return new JetStreamLink(jetstream(nc, { timeout: apiTimeoutMs }), jsm);
    } catch (err) {
      // nats.js does not export its JetStreamNotEnabled class from the package root; its name is stable.
      if ((err as Error)?.name === 'JetStreamNotEnabled' || isApiError(err, JetStreamApiCodes.JetStreamNotEnabledForAccount)) {
        throw new InvalidOptionsError(
          'jetstream',
          'the NATS server has no JetStream for this account; start nats-server with -js (and -sd <dir>), or enable it in the account',
          { cause: err },
        );
      }
      throw asNotConnected('JetStream did not answer', err);
    }
  }

  /** See `JetStreamAdmin.ensureStream`. */
  ensureStream(spec: StreamSpec, options?: EnsureOptions): Promise<EnsureResult> {
    return this.admin.ensureStream(spec, options);
  }

  /** See `JetStreamAdmin.ensureConsumer`. */
  ensureConsumer(spec: DurableConsumerSpec, options?: EnsureOptions): Promise<EnsureResult> {
    return this.admin.ensureConsumer(spec, options);
  }

  /** The stream that captures `subject`, or undefined when none does. */
  async streamFor(subject: string): Promise<StreamLimits | undefined> {
    try {
      const name = await this.jsm.streams.find(subject);
      const info = await this.jsm.streams.info(name);
      return { name, maxAgeSeconds: Math.ceil(info.config.max_age / NS_PER_SECOND) };
    } catch (err) {
      if (isNoStream(err)) return undefined;
      throw asNotConnected(`could not look up the stream for "${subject}"`, err);
    }
  }

  /** Resolves once a stream stored the message; `NotPersistedError` when none took it or the ack did not come. */
  async publish(
    subject: string,
    data: Uint8Array,
    headers: MsgHdrs | undefined,
    msgId: string | undefined,
    timeoutMs: number,
  ): Promise<PersistAck> {
    try {
      const ack = await this.js.publish(subject, data, { headers, msgID: msgId, timeout: timeoutMs });
      return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      const [reason, detail] = await publishRefusal(this.jsm, subject, err, timeoutMs);
      throw new NotPersistedError(subject, reason, detail, { cause: err });
    }
  }

  /**
   * Pull from a durable on demand. Unlike nats.js's `consume()`, which pulls again as soon as its
   * messages arrive, however many still wait to be handled, a message is asked for only when the
   * caller has room for it, so none waits unseen while its ack wait runs.
   */
  async pull(stream: string, durable: string): Promise<DurablePull> {
    let consumer: Consumer;
    try {
      consumer = await this.js.consumers.get(stream, durable);
    } catch (err) {
      throw asNotConnected(`could not pull from ${stream}/${durable}`, err);
    }
    return {
      fetch: async (max) => {
        let messages: ConsumerMessages;
        try {
          // Pull requests expire every 5 s (heartbeat 2.5 s): when the consumer's leader dies, the
          // next one goes out within about 5 s, not the 30–45 s of the 30 s default.
          messages = await consumer.fetch({ max_messages: max, expires: PULL_EXPIRES_MS });
        } catch (err) {
          throw asNotConnected(`could not pull from ${stream}/${durable}`, err);
        }
        return {
          stop: () => messages.stop(),
          [Symbol.asyncIterator]: async function* () {
            for await (const m of messages) yield toDurableMessage(m);
          },
        };
      },
    };
  }

  /** Throws when JetStream does not answer (for `/_health`). */
  async ping(): Promise<void> {
    try {
      await this.jsm.getAccountInfo();
    } catch (err) {
      throw asNotConnected('JetStream did not answer', err);
    }
  }
}

function toDurableMessage(m: JsMsg): DurableMessage {
  const info = m.info;
  return {
    subject: m.subject,
    data: m.data,
    headers: m.headers,
    deliveryCount: info.deliveryCount,
    stream: info.stream,
    seq: info.streamSequence,
    ack: () => m.ack(),
    nak: (delayMs) => m.nak(delayMs),
    working: () => m.working(),
    // A bare +TERM: nats-server 2.9 (Debian's 2.9.10) does not recognise "+TERM <reason>" and keeps the message
    // pending, so it came back each ack wait. The reason travels in the dead letter's headers and the log.
    term: () => m.term(),
  };
}
