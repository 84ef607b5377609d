import { NotConnectedError } from '../errors/event-bus.errors';
import type { NatsConnectionOptions } from './bus-connection.options';

// What nats.js dials when no server is given.
const NATS_DEFAULT_SERVER = '127.0.0.1:4222';

/**
 * A failed first connect as `NotConnectedError` (nats.js's error kept as `cause`), naming the
 * servers it tried without echoing credentials that the options or a server URL may carry.
 */
export function describeConnectError(err: unknown, nats: NatsConnectionOptions): NotConnectedError {
  const configured = ([] as string[]).concat((nats.servers as string | string[] | undefined) ?? []);
  const secrets = [nats.pass, nats.token, nats.user].filter((x): x is string => typeof x === 'string' && x.length > 0);
  const hide = (text: string) => {
    for (const secret of secrets) text = text.split(secret).join('***');
    return text.replace(/(\w+:\/\/)[^@\s/]*@/g, '$1***@').replace(/^[^@\s/:]+(:[^@\s/]*)?@/, '***@');
  };
  const tried = configured.length > 0 ? configured.map((s) => hide(String(s))).join(', ') : `${NATS_DEFAULT_SERVER} (the default)`;
  const message = hide(err instanceof Error ? err.message : String(err));
  return new NotConnectedError(`could not connect to NATS at ${tried} (option "nats.servers"): ${message}`, { cause: err });
}
