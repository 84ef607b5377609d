import type { NatsConnectionOptions } from './bus-connection.options';

/** Name what failed without echoing credentials that a server URL may carry. */
export function describeConnectError(err: unknown, nats: NatsConnectionOptions): Error {
  if (!(err instanceof Error)) return new Error(`could not connect to NATS: ${String(err)}`);
  const servers = ([] as string[]).concat((nats.servers as string | string[] | undefined) ?? []);
  let message = err.message;
  for (const secret of [nats.pass, nats.token, nats.user].filter((x): x is string => typeof x === 'string' && x.length > 0)) {
    message = message.split(secret).join('***');
  }
  message = message.replace(/(\w+:\/\/)[^@\s/]*@/g, '$1***@');
  const wrapped = new Error(`could not connect to NATS (${servers.length} server(s) configured, see option "nats"): ${message}`, {
    cause: err,
  });
  (wrapped as Error & { code?: string }).code = (err as Error & { code?: string }).code;
  return wrapped;
}
