import { Logger } from '@nestjs/common';
import { describeThrown } from '../errors/thrown';
import { BusConnection, createHeaders, headerText } from '../nats/bus-connection';
import { DurableMessage, JetStreamLink } from '../nats/jetstream';

/** Header of a dead letter saying why: `max_deliver`, `not_found`, `invalid_message`, `forbidden`. */
export const DEAD_REASON_HEADER = 'Eventbus-Dead-Reason';
/** Where the message was: its subject, stream, sequence and how many times it was delivered. */
export const DEAD_SUBJECT_HEADER = 'Eventbus-Dead-Subject';
export const DEAD_STREAM_HEADER = 'Eventbus-Dead-Stream';
export const DEAD_SEQ_HEADER = 'Eventbus-Dead-Seq';
export const DEAD_DELIVERIES_HEADER = 'Eventbus-Dead-Deliveries';
/** The last error, first line, when there was one. */
export const DEAD_ERROR_HEADER = 'Eventbus-Dead-Error';

/**
 * Where a durable subscription's failed messages go: published to `deadLetter` with their original
 * body (an envelope stays an envelope) and headers, plus the `Eventbus-Dead-*` headers. Persisted
 * when a stream captures the dead-letter subject, plain otherwise. Without `deadLetter` the
 * message is logged, naming its subject, stream and sequence.
 */
export class DeadLetters {
  constructor(
    private readonly client: BusConnection,
    private readonly link: JetStreamLink,
    private readonly subject: string | undefined,
    /** A stream captures `subject`: publish persisted, and only let the message go once it is stored. */
    private readonly persisted: boolean,
    private readonly apiTimeoutMs: number,
    private readonly logger: Logger,
  ) {}

  /** Resolves true once the message may be terminated: the dead letter went out, or there is none to send. */
  async send(m: DurableMessage, reason: string, error: unknown): Promise<boolean> {
    const where = `message ${m.stream}#${m.seq} on "${m.subject}" after ${m.deliveryCount} deliveries (${reason})`;
    const detail = error === undefined ? '' : headerText(describeThrown(error), 512);
    if (this.subject === undefined) {
      this.logger.error(`dropped ${where}${detail ? `: ${detail}` : ''}; set deadLetter to keep such messages`);
      return true;
    }
    const h = createHeaders();
    if (m.headers) for (const [name, values] of m.headers) for (const v of values) h.append(name, v);
    h.set(DEAD_REASON_HEADER, reason);
    h.set(DEAD_SUBJECT_HEADER, m.subject);
    h.set(DEAD_STREAM_HEADER, m.stream);
    h.set(DEAD_SEQ_HEADER, String(m.seq));
    h.set(DEAD_DELIVERIES_HEADER, String(m.deliveryCount));
    if (detail) h.set(DEAD_ERROR_HEADER, detail);
    try {
      if (this.persisted) await this.link.publish(this.subject, m.data, h, `${m.stream}:${m.seq}:dead`, this.apiTimeoutMs);
      else this.client.publish(this.subject, m.data, h);
    } catch (err) {
      this.logger.error(`could not dead-letter ${where} to "${this.subject}": ${(err as Error).message}; it will be redelivered`);
      return false;
    }
    this.logger.warn(`dead-lettered ${where} to "${this.subject}"`);
    return true;
  }
}
