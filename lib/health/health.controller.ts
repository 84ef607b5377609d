import { Controller, Get, Type } from '@nestjs/common';
import { HealthCheck, HealthCheckService } from '@nestjs/terminus';
import { DEFAULTS } from '../options/defaults';
import { NatsHealthIndicator } from './nats.health-indicator';
import { StorageHealthIndicator } from './storage.health-indicator';

export const HEALTH_DEFAULTS = DEFAULTS.health;

/**
 * The `/_health` controller, made per module so its path can come from the options.
 * Answers 200 when NATS and storage are up, 503 otherwise.
 */
export function createHealthController(path: string, timeoutMs: number): Type<unknown> {
  @Controller(path)
  class EventBusHealthController {
    constructor(
      readonly health: HealthCheckService,
      readonly nats: NatsHealthIndicator,
      readonly storage: StorageHealthIndicator,
    ) {}

    @Get()
    @HealthCheck()
    check() {
      return this.health.check([() => this.nats.isHealthy('nats', timeoutMs), () => this.storage.isHealthy('storage', timeoutMs)]);
    }
  }
  return EventBusHealthController;
}
