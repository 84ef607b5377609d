import { NotConnectedError } from '../errors/event-bus.errors';
import type { NatsConnectionOptions } from './bus-connection.options';

/**
 * A failed first connect as `NotConnectedError` (nats.js's error kept as `cause`), naming what
 * failed without echoing credentials that the options or a server URL may carry.
 */
export function describeConnectError(err: unknown, nats: NatsConnectionOptions): NotConnectedError {
  const servers = ([] as string[]).concat((nats.servers as string | string[] | undefined) ?? []);
  let message = err instanceof Error ? err.message : String(err);
  for (const secret of [nats.pass, nats.token, nats.user].filter((x): x is string => typeof x === 'string' && x.length > 0)) {
    message = message.split(secret).join('***');
  }
  message = message.replace(/(\w+:\/\/)[^@\s/]*@/g, '$1***@');
  return new NotConnectedError(`could not connect to NATS (${servers.length} server(s) configured, see option "nats"): ${message}`, {
    cause: err,
  });
}
