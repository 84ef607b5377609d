import { Controller, Get, Type } from '@nestjs/common';
import { HealthCheck, HealthCheckService } from '@nestjs/terminus';
import { DEFAULTS } from '../options/defaults';
import { NatsHealthIndicator } from './nats.health-indicator';
import { StorageHealthIndicator } from './storage.health-indicator';
import { JetStreamHealthIndicator } from './jetstream.health-indicator';

export const HEALTH_DEFAULTS = DEFAULTS.health;

/**
 * The `/_health` controller, made per module so its path can come from the options.
 * Answers 200 when NATS and storage (and JetStream, for a bus that uses it) are up, 503 otherwise.
 */
export function createHealthController(path: string, timeoutMs: number): Type<unknown> {
  @Controller(path)
  class EventBusHealthController {
    constructor(
      readonly health: HealthCheckService,
      readonly nats: NatsHealthIndicator,
      readonly storage: StorageHealthIndicator,
      readonly jetstream: JetStreamHealthIndicator,
    ) {}

    @Get()
    @HealthCheck()
    check() {
      const checks = [() => this.nats.isHealthy('nats', timeoutMs), () => this.storage.isHealthy('storage', timeoutMs)];
      if (this.jetstream.applies) checks.push(() => this.jetstream.isHealthy('jetstream', timeoutMs));
      return this.health.check(checks);
    }
  }
  return EventBusHealthController;
}
