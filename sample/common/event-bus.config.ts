import { AsyncApiSend, EventBus, EventBusModule } from 'nestjs-nats-eventbus';
import { envInt, ServiceConfig } from './config';

/** The stream that keeps notifications until the notifier has handled them, and the subject failed ones go to. */
export const NOTIFICATIONS = {
  stream: 'NOTIFICATIONS',
  subjects: ['notification.>'],
  deadLetter: 'notification.dead',
} as const;

/** The sample's version, as each service reports it to `nats micro` and in its AsyncAPI document. */
export const SAMPLE_VERSION = '1.0.0';

/**
 * The one `EventBusModule.forRoot()` every sample service uses; `/_health` comes with it. With
 * `durable`, the bus also ensures the notifications stream at bootstrap (NATS needs JetStream then).
 * Large e-mails are stored in Redis or the object store, whose bodies expire: the stream needs an age limit, and the
 * bus keeps each stored body a little longer than that.
 */
export function eventBusModule(config: ServiceConfig, opts: { durable?: boolean; description?: string; sends?: AsyncApiSend[] } = {}) {
  const notificationsMaxAge = envInt('NOTIFICATIONS_MAX_AGE_SECONDS', 3600, 1);
  // JetStream drops a repeated msgId within this window (the server's default, 2 minutes, when unset);
  // the notifier's idempotent durables catch repeats after it too, for their 600 s window.
  const duplicateWindow = envInt('NOTIFICATIONS_DUPLICATE_WINDOW_SECONDS', 0, 0);
  return EventBusModule.forRoot({
    nats: { servers: [config.natsUrl], name: config.service },
    // A NATS service per sample service: `nats micro ls` lists the three (docs/services.md).
    service: { name: config.service, version: SAMPLE_VERSION, description: opts.description ?? '' },
    // What it publishes, for its AsyncAPI document (sample/<service>/asyncapi.json).
    ...(opts.sends ? { asyncapi: { sends: opts.sends } } : {}),
    storage:
      config.storage === 'objectstore'
        ? // One bucket per fleet, on the NATS the services already use: no Redis. Every service gives it
          // the same TTL (each brings the bucket to its options at bootstrap), long enough that the
          // body of a persisted e-mail outlives its message in the stream.
          { objectStore: { bucket: 'eventbus-sample', ttlSeconds: Math.max(config.ttlSeconds, notificationsMaxAge + 60) } }
        : { redis: { url: config.redisUrl }, ttlSeconds: config.ttlSeconds, keyPrefix: config.keyPrefix },
    ...(opts.durable
      ? {
          jetstream: {
            streams: [
              {
                name: NOTIFICATIONS.stream,
                subjects: [...NOTIFICATIONS.subjects],
                maxAgeSeconds: notificationsMaxAge,
                ...(duplicateWindow > 0 ? { duplicateWindowSeconds: duplicateWindow } : {}),
              },
            ],
          },
        }
      : {}),
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
