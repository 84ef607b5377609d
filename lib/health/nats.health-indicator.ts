import { Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { EventBus } from '../event-bus/event-bus';
import { withTimeout } from '../shared/deadline';

/** Up when every live NATS connection of the bus is connected and answers a round trip, all within `timeoutMs`. */
@Injectable()
export class NatsHealthIndicator {
  constructor(
    private readonly bus: EventBus,
    private readonly indicator: HealthIndicatorService,
  ) {}

  async isHealthy(key: string, timeoutMs: number) {
    const session = this.indicator.check(key);
    // All at once: one after another, five frozen connections took five timeouts, not one.
    const checked = await Promise.all(
      [...this.bus.connections()].map(async ([name, client]): Promise<[string, { connected: boolean; rttMs?: number }]> => {
        if (!client.isConnected) return [name, { connected: false }];
        try {
          const rttMs = await withTimeout(client.rtt(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
          return [name, { connected: true, rttMs: Math.round(rttMs * 100) / 100 }];
        } catch {
          return [name, { connected: false }];
        }
      }),
    );
    const connections = Object.fromEntries(checked);
    return checked.every(([, c]) => c.connected) ? session.up({ connections }) : session.down({ connections });
  }
}
