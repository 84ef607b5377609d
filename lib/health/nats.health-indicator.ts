import { Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { EventBus } from '../event-bus/event-bus';
import { withTimeout } from '../shared/deadline';

/** Up when every live NATS connection of the bus is connected and answers a round trip in time. */
@Injectable()
export class NatsHealthIndicator {
  constructor(
    private readonly bus: EventBus,
    private readonly indicator: HealthIndicatorService,
  ) {}

  async isHealthy(key: string, timeoutMs: number) {
    const session = this.indicator.check(key);
    const connections: Record<string, { connected: boolean; rttMs?: number }> = {};
    let healthy = true;
    for (const [name, client] of this.bus.connections()) {
      if (!client.isConnected) {
        connections[name] = { connected: false };
        healthy = false;
        continue;
      }
      try {
        const rttMs = await withTimeout(client.rtt(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
        connections[name] = { connected: true, rttMs: Math.round(rttMs * 100) / 100 };
      } catch {
        connections[name] = { connected: false };
        healthy = false;
      }
    }
    return healthy ? session.up({ connections }) : session.down({ connections });
  }
}
