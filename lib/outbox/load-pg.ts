import { InvalidOptionsError } from '../errors/event-bus.errors';
import type { PgPoolLike } from './pg-types';

interface PgModule {
  Pool: new (config: { connectionString: string; max?: number; connectionTimeoutMillis?: number }) => PgPoolLike;
}

/**
 * `pg` is an optional peer: required here, when the outbox makes its own pool, so the main entry
 * and apps without the outbox never load it.
 */
export function loadPg(): PgModule {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy on purpose: pg is an optional peer
    return require('pg') as PgModule;
  } catch (err) {
    if ((err as { code?: string })?.code === 'MODULE_NOT_FOUND') {
      throw new InvalidOptionsError(
        'outbox.connectionString',
        'the outbox needs the PostgreSQL client "pg"; install it with: npm install pg',
        { cause: err },
      );
    }
    throw err;
  }
}
