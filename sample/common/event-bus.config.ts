import { EventBus, EventBusModule } from 'nestjs-nats-eventbus';
import { ServiceConfig } from './config';

/** The one `EventBusModule.forRoot()` every sample service uses; `/_health` comes with it. */
export function eventBusModule(config: ServiceConfig) {
  return EventBusModule.forRoot({
    nats: { servers: [config.natsUrl], name: config.service },
    storage: { redis: { url: config.redisUrl }, ttlSeconds: config.ttlSeconds, keyPrefix: config.keyPrefix },
  });
}

/**
 * Bytes above which the bus offloads a body. Used only to say in the logs that a message went
 * through claim-check where the sender cannot see it otherwise.
 */
export function claimCheckThreshold(bus: EventBus): number {
  return bus.offloadThreshold;
}

/** Size of a payload as the bus will encode it (JSON, UTF-8). */
export function jsonBytes(payload: unknown): number {
  return Buffer.byteLength(JSON.stringify(payload), 'utf8');
}
