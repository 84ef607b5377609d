// Configuration from the environment, with the defaults the README lists.

export function envString(name: string, fallback: string): string {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : v;
}

export function envInt(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be a whole number >= ${min}, got "${raw}"`);
  return v;
}

/** What every sample service reads. */
export interface ServiceConfig {
  service: string;
  host: string;
  port: number;
  natsUrl: string;
  redisUrl: string;
  /** `redis` (default) or `objectstore`: where large bodies go (EVENTBUS_STORAGE). */
  storage: 'redis' | 'objectstore';
  keyPrefix: string;
  ttlSeconds: number;
}

export function serviceConfig(service: string, defaultPort: number): ServiceConfig {
  return {
    service,
    host: envString('HOST', '0.0.0.0'),
    port: envInt('PORT', defaultPort, 0),
    natsUrl: envString('NATS_URL', 'nats://127.0.0.1:4222'),
    redisUrl: envString('REDIS_URL', 'redis://127.0.0.1:6379'),
    storage: envStorage(),
    keyPrefix: envString('EVENTBUS_KEY_PREFIX', 'eventbus:'),
    ttlSeconds: envInt('EVENTBUS_TTL_SECONDS', 300, 1),
  };
}

function envStorage(): 'redis' | 'objectstore' {
  const v = envString('EVENTBUS_STORAGE', 'redis');
  if (v !== 'redis' && v !== 'objectstore') throw new Error(`EVENTBUS_STORAGE must be redis or objectstore, got "${v}"`);
  return v;
}
