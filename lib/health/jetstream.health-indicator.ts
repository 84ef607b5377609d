import { Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { EventBus } from '../event-bus/event-bus';
import { withTimeout } from '../shared/deadline';

/** Up when JetStream answers an account-info request in time. Checked only for a bus that uses JetStream. */
@Injectable()
export class JetStreamHealthIndicator {
  constructor(
    private readonly bus: EventBus,
    private readonly indicator: HealthIndicatorService,
  ) {}

  /** Whether `/_health` should ask: `jetstream` configured, or a durable subscription or persisted publish opened it. */
  get applies(): boolean {
    return this.bus.usesJetStream;
  }

  async isHealthy(key: string, timeoutMs: number) {
    const session = this.indicator.check(key);
    try {
      await withTimeout(this.bus.pingJetStream(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
      return session.up();
    } catch {
      return session.down({ message: 'JetStream is not answering' });
    }
  }
}
