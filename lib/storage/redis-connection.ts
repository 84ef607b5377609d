// The Redis client's lifecycle for the storage: wait until it is ready (failing fast on refused credentials), and close it.
import type { Redis } from './ioredis-types';
import { MessageStorageError } from '../errors/event-bus.errors';

/** Wait until `client` is ready. Rejects with `MessageStorageError` after `timeoutMs`. */
export async function waitUntilReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return;
  if (client.status === 'wait') {
    client.connect().catch(() => undefined);
  }
  await new Promise<void>((resolve, reject) => {
    let lastError = '';
    const done = (err?: Error) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      client.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onEnd = () => done(new MessageStorageError('Redis connection was closed before it was ready'));
    // Refused credentials do not get better by retrying: fail at once, naming the option, never the secret.
    const onError = (err: unknown) => {
      lastError = describe(err);
      if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(lastError)) {
        done(new MessageStorageError(`Redis refused the credentials (check storage.redis username/password): ${lastError}`));
      }
    };
    const timer = setTimeout(
      () =>
        done(
          new MessageStorageError(
            `Redis did not become ready within ${timeoutMs} ms (check storage.redis)${lastError ? `: ${lastError}` : ''}`,
          ),
        ),
      timeoutMs,
    );
    client.on('ready', onReady);
    client.on('end', onEnd);
    client.on('error', onError);
    if (client.status === 'ready') done();
  });
}

/** Close the connection: QUIT, or drop it when QUIT fails. */
export async function closeRedis(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

// Never echo connection strings: ioredis messages can carry host:port, which is fine, but not URLs.
export function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\b(rediss?):\/\/[^\s]*/g, '$1://***');
}
