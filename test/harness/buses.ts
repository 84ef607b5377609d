import Redis from 'ioredis';
import { EventBus, EventBusCoreOptions, NatsConnectionOptions, RedisStorageManager, REDIS_CLIENT_DEFAULTS } from '../../lib';

type BusOptions = Omit<EventBusCoreOptions, 'nats'> & { nats?: Partial<NatsConnectionOptions> };

/** Connected buses with Redis storage on a test's own servers; `closeAll` releases every one. */
export class TestBuses {
  private readonly buses: EventBus[] = [];
  private readonly storages: RedisStorageManager[] = [];

  /** A connected bus whose storage is the Redis at `redisUrl`, keys under `keyPrefix`. */
  async withRedis(natsUrl: string, redisUrl: string, keyPrefix: string, options: BusOptions = {}) {
    const storage = new RedisStorageManager(new Redis(redisUrl, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix });
    this.storages.push(storage);
    await storage.connect();
    const { nats, ...rest } = options;
    const bus = this.track(new EventBus({ nats: { servers: natsUrl, ...nats }, ...rest }, storage));
    await bus.connect();
    return { bus, storage };
  }

  /** A bus built by hand (a custom storage, say), closed with the others. */
  track(bus: EventBus): EventBus {
    this.buses.push(bus);
    return bus;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.buses.map((b) => b.close()));
    await Promise.all(this.storages.map((s) => s.disconnect()));
  }
}
