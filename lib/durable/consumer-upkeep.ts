// Each durable's consumer: ensured (with each changed setting logged), and kept pulling. When a
// pull fails because the consumer is gone (an operator's `consumer rm`, a re-created stream), it is
// re-created with a warning; when it cannot be, JetStream health goes down until it can.
import { Logger } from '@nestjs/common';
import { describeThrown } from '../errors/thrown';
import { DurableConsumerSpec, DurablePull, EnsureOptions, EnsureResult, JetStreamLink } from '../nats/jetstream';
import { DurablePullSource } from './durable-subscription';

/** The consumers of one bus's durable subscriptions. */
export class ConsumerUpkeep {
  // Durables that cannot pull and whose consumer could not be re-created: `/_health` reports them.
  private readonly broken = new Set<string>();

  constructor(
    private readonly ensureOptions: EnsureOptions,
    private readonly logger: Logger,
  ) {}

  /** A durable that cannot pull, for `/_health`; undefined when all can. */
  get firstBroken(): string | undefined {
    const [broken] = this.broken;
    return broken;
  }

  /** Ensure a durable's consumer, logging each setting changed on one that existed. */
  async ensure(link: JetStreamLink, consumer: DurableConsumerSpec): Promise<EnsureResult['outcome']> {
    const done = await link.ensureConsumer(consumer, this.ensureOptions);
    if (done.outcome === 'updated') {
      this.logger.log(`JetStream consumer ${consumer.durable} on ${consumer.stream} updated: ${done.changes.join(', ')}`);
    }
    return done.outcome;
  }

  /**
   * The pull of one durable subscription. When a pull fails because the consumer is gone (an
   * operator's `consumer rm`, a re-created stream), the consumer is re-created with a warning;
   * when it cannot be, JetStream health goes down and one error line says why, until it can.
   */
  pullSource(link: JetStreamLink, consumer: DurableConsumerSpec, topic: string, first: DurablePull): DurablePullSource {
    const name = `"${consumer.durable}" on ${consumer.stream} ("${topic}")`;
    let pull: DurablePull | undefined = first;
    let failing = false;
    return {
      open: async () => {
        const opened = pull ?? (await link.pull(consumer.stream, consumer.durable));
        pull = undefined;
        return opened;
      },
      failed: async (err) => {
        const what = `pulling failed: ${describeThrown(err)}`;
        try {
          if ((await this.ensure(link, consumer)) === 'created') {
            // Created afresh it starts at the stream's first message: those still kept are delivered again.
            this.logger.warn(`durable ${name}: its consumer was gone (${what}); re-created it`);
          } else if (!failing) {
            // The consumer is there (a lost connection, a leader election): pulling is retried each second.
            this.logger.warn(`durable ${name}: ${what}; retrying`);
          }
          failing = true;
        } catch (ensureErr) {
          if (this.broken.has(name)) return;
          failing = true;
          this.broken.add(name);
          this.logger.error(
            `durable ${name} cannot pull (${what}) and its consumer could not be re-created: ${describeThrown(ensureErr)}; /_health reports JetStream down until it can`,
          );
        }
      },
      pulled: () => {
        if (!failing) return;
        failing = false;
        this.broken.delete(name);
        this.logger.log(`durable ${name} pulls again`);
      },
    };
  }
}
