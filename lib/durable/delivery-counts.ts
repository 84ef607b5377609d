import { DurableMessage } from '../nats/jetstream';

/**
 * Deliveries of each message that do not count against `maxDeliver`: those that never reached the
 * handler (its stored body or the inbox unreachable, its id busy elsewhere) and those before a
 * delayed message was due (`Eventbus-Not-Before`). Both maps are bounded, so a long outage over
 * many messages cannot grow them without end.
 */
export class DeliveryCounts {
  private readonly notReached = new Map<string, number>();
  private readonly early = new Map<string, number>();

  /** Deliveries that reached the handler (or could have). */
  attempts(m: DurableMessage): number {
    const key = keyOf(m);
    return m.deliveryCount - (this.notReached.get(key) ?? 0) - (this.early.get(key) ?? 0);
  }

  /** One more delivery that did not reach the handler; returns how many there were. */
  countNotReached(m: DurableMessage): number {
    const key = keyOf(m);
    const count = (this.notReached.get(key) ?? 0) + 1;
    if (this.notReached.size >= 10_000) this.notReached.clear();
    this.notReached.set(key, count);
    return count;
  }

  /** One more delivery before the message was due. */
  countEarly(m: DurableMessage): void {
    const key = keyOf(m);
    const count = (this.early.get(key) ?? 0) + 1;
    this.early.delete(key);
    // Past 100,000 delayed messages the oldest count is forgotten (that message may then get one handler run fewer).
    if (this.early.size >= 100_000) this.early.delete(this.early.keys().next().value as string);
    this.early.set(key, count);
  }

  /** The message is settled for good (acked, skipped, dead-lettered). */
  forget(m: DurableMessage): void {
    const key = keyOf(m);
    this.notReached.delete(key);
    this.early.delete(key);
  }
}

const keyOf = (m: DurableMessage): string => `${m.stream}:${m.seq}`;
