import { Injectable } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { EventBus } from '../event-bus/event-bus';

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
        const rttMs = await withTimeout(client.rtt(), timeoutMs);
        connections[name] = { connected: true, rttMs: Math.round(rttMs * 100) / 100 };
      } catch {
        connections[name] = { connected: false };
        healthy = false;
      }
    }
    return healthy ? session.up({ connections }) : session.down({ connections });
  }
}

export function withTimeout<T>(op: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    op,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
