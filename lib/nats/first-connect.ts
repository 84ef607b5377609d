// A service often starts before NATS does (containers start in no guaranteed order): the first
// connect keeps trying while the server refuses or does not answer, within firstConnectTimeoutMs.
import type { Logger } from '@nestjs/common';
import { errors, type NatsConnection } from '@nats-io/transport-node';
import { NotConnectedError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import type { ResolvedConnectionOptions } from './bus-connection.options';
import { dialNats } from './dial';

/** A first-connect failure that a later attempt may not have: refused, reset, name not resolvable yet, or no answer. */
function worthRetrying(err: unknown): boolean {
  if (err instanceof errors.TimeoutError) return true;
  if (!(err instanceof errors.ConnectionError)) return false;
  const text = `${err.message} ${err.cause === undefined ? '' : describeThrown(err.cause)}`;
  return /refused|ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/i.test(text);
}

/** What a first connect needs of its connection: a name for errors, a log, and whether it was closed meanwhile. */
export interface FirstConnectOwner {
  readonly label: string;
  readonly logger: Logger;
  cancelled(): boolean;
}

/**
 * Dial NATS; while the server refuses or does not answer, try again every `reconnectTimeWait` for up
 * to `firstConnectTimeoutMs`. A refusal that retrying cannot mend (credentials, TLS) fails at once.
 */
export async function dialFirst(
  options: ResolvedConnectionOptions,
  firstConnectTimeoutMs: number,
  owner: FirstConnectOwner,
): Promise<NatsConnection> {
  const deadline = Date.now() + firstConnectTimeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await dialNats(options);
    } catch (err) {
      const waitMs = options.reconnectTimeWait;
      if (owner.cancelled() || !worthRetrying(err) || Date.now() + waitMs > deadline) throw err;
      if (attempt === 1) {
        owner.logger.warn(`NATS is not reachable yet (${describeThrown(err)}); trying again for up to ${firstConnectTimeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, waitMs));
      if (owner.cancelled()) throw new NotConnectedError(`NATS connection "${owner.label}" was closed while connecting`);
    }
  }
}
