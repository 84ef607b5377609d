import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import { credsAuthenticator } from '@nats-io/transport-node';
import type { DeadLetterEntry, DeadLetterFilter } from '../durable/dead-letter-store';
import { EventBusError } from '../errors/event-bus.errors';
import { UnknownEncryptionKeyError } from '../errors/storage.errors';
import { EventBus } from '../event-bus/event-bus';
import type { NatsConnectionOptions } from '../nats/bus-connection.options';
import { REDIS_CLIENT_DEFAULTS, RedisStorageManager, REDIS_STORAGE_DEFAULTS } from '../storage/redis-storage-manager';
import { withBodyCodec } from '../claim-check/body-codec';
import { CliCommand, CliUsageError } from './cli-command';

/** Flags, each with the environment variable read when the flag is not given (the `nats` CLI's names for NATS). */
const CONNECTION_FLAGS = {
  server: { type: 'string', env: 'NATS_URL', doc: 'NATS server URL(s), comma-separated (default nats://127.0.0.1:4222)' },
  user: { type: 'string', env: 'NATS_USER', doc: 'user name' },
  password: { type: 'string', env: 'NATS_PASSWORD', doc: 'password' },
  token: { type: 'string', env: 'NATS_TOKEN', doc: 'auth token' },
  creds: { type: 'string', env: 'NATS_CREDS', doc: 'credentials file (JWT and NKey seed)' },
  'tls-ca': { type: 'string', env: 'NATS_CA', doc: 'CA certificate file' },
  'tls-cert': { type: 'string', env: 'NATS_CERT', doc: 'client certificate file' },
  'tls-key': { type: 'string', env: 'NATS_KEY', doc: 'client key file' },
  'redis-url': { type: 'string', env: 'REDIS_URL', doc: 'Redis of claim-checked bodies (needed to show or replay them)' },
  'redis-key-prefix': {
    type: 'string',
    env: 'EVENTBUS_REDIS_KEY_PREFIX',
    doc: `storage.keyPrefix (default ${REDIS_STORAGE_DEFAULTS.keyPrefix})`,
  },
  'encryption-keys': {
    type: 'string',
    env: 'EVENTBUS_ENCRYPTION_KEYS',
    doc: 'storage.encryption keys, to read bodies stored encrypted: id=key,id=key (base64 or 64 hex digits; the first encrypts replays)',
  },
} as const;

const FILTER_FLAGS = {
  stream: { type: 'string' },
  topic: { type: 'string' },
  durable: { type: 'string' },
  reason: { type: 'string' },
  since: { type: 'string' },
  limit: { type: 'string' },
  to: { type: 'string' },
  all: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

const USAGE = `ls|show|replay|purge [ids...] [--stream S] [--topic T] [--durable D] [--reason R] [--since <ISO time | 30m | 2h | 1d>]
             [--limit N] [--to SUBJECT (replay)] [--all (replay/purge by filter)] [--json]
             [--server URL] [--user U --password P | --token T | --creds FILE] [--tls-ca F] [--tls-cert F --tls-key F]
             [--redis-url URL] [--redis-key-prefix P] [--encryption-keys id=key,...]   (flags override NATS_URL, NATS_USER,
             NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_CA, NATS_CERT, NATS_KEY, REDIS_URL, EVENTBUS_REDIS_KEY_PREFIX,
             EVENTBUS_ENCRYPTION_KEYS)`;

type Values = Partial<Record<keyof typeof CONNECTION_FLAGS | keyof typeof FILTER_FLAGS, string | boolean>>;

/**
 * `dlq ls|show|replay|purge`: the `DeadLetters` service of a bus made here (no Nest app), on the
 * server and credentials of the flags or the environment. Tables for people, `--json` for scripts.
 */
export const dlqCommand: CliCommand = {
  summary: 'list, show, replay and purge dead letters (tables, or --json)',
  usage: USAGE,
  async run(args, out) {
    let values: Values;
    let positionals: string[];
    try {
      const options = Object.fromEntries(
        [...Object.entries(CONNECTION_FLAGS), ...Object.entries(FILTER_FLAGS)].map(([k, v]) => [k, { type: v.type }]),
      ) as Record<string, { type: 'string' | 'boolean' }>;
      ({ values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true }) as {
        values: Values;
        positionals: string[];
      });
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const [action, ...ids] = positionals;
    if (!['ls', 'show', 'replay', 'purge'].includes(action))
      throw new CliUsageError(`dlq: say ls, show, replay or purge${action ? `, not "${action}"` : ''}`);
    const filter = filterOf(values);
    if (action === 'show' && ids.length !== 1) throw new CliUsageError('dlq show: give one id');
    if ((action === 'replay' || action === 'purge') && !ids.length && !values.all) {
      throw new CliUsageError(`dlq ${action}: give ids, or --all to ${action} every dead letter the filters match`);
    }
    if (ids.length && (action === 'ls' || Object.keys(filter).length))
      throw new CliUsageError(`dlq ${action}: give ids or filters, not both`);
    const setting = (name: keyof typeof CONNECTION_FLAGS) =>
      (values[name] as string | undefined) ?? (process.env[CONNECTION_FLAGS[name].env] || undefined);

    const redisUrl = setting('redis-url');
    const keys = keysOf(setting('encryption-keys'));
    if (keys && !redisUrl) throw new CliUsageError('dlq: --encryption-keys reads stored bodies: give --redis-url (or REDIS_URL) too');
    const redis = redisUrl
      ? new RedisStorageManager(new Redis(redisUrl, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: setting('redis-key-prefix') })
      : null;
    // The CLI reads what the fleet wrote: with keys, every reader of these bodies uses this library.
    const codec = keys && { encryption: { keys, currentKeyId: Object.keys(keys)[0] }, allReadersUseThisLibrary: true };
    const storage =
      redis && codec
        ? await withBodyCodec(redis, codec).catch((err: unknown) => {
            redis.disconnect().catch(() => undefined);
            // A key of the wrong size or shape: said like a bad flag, without a stack.
            throw new CliUsageError(`--encryption-keys: ${(err as Error).message}`);
          })
        : redis;
    const bus = new EventBus({ nats: natsOptionsOf(setting), firstConnectTimeoutMs: 0 }, storage);
    try {
      await storage?.connect();
      await bus.connect();
      const dead = bus.deadLetters;
      const json = values.json === true;
      const write = (value: unknown) => out.write(`${JSON.stringify(value, null, 2)}\n`);
      switch (action) {
        case 'ls': {
          const entries = await dead.list(filter);
          if (json) write(entries);
          else out.write(table(entries));
          break;
        }
        case 'show': {
          const letter = await dead.get(ids[0]);
          const { body, payload, ...rest } = letter;
          const shown = payload !== undefined ? { payload } : { bodyBase64: Buffer.from(body).toString('base64') };
          if (json) write({ ...rest, ...shown });
          else {
            for (const [k, v] of Object.entries(rest))
              if (k !== 'headers') out.write(`${`${k}:`.padEnd(19)} ${v instanceof Date ? v.toISOString() : String(v ?? '')}\n`);
            out.write('headers:\n');
            for (const [k, vs] of Object.entries(letter.headers)) for (const v of vs) out.write(`  ${k}: ${v}\n`);
            out.write(payload !== undefined ? `payload:\n${JSON.stringify(payload, null, 2)}\n` : `body (base64):\n${shown.bodyBase64}\n`);
          }
          break;
        }
        case 'replay': {
          const done = await dead.replay(ids.length ? ids : filter, { to: values.to as string | undefined });
          if (json) write(done);
          else {
            for (const r of done)
              out.write(`${r.id} -> ${r.to} (${r.stream}#${r.seq})${r.duplicate ? ' already replayed: not published again' : ''}\n`);
            out.write(`${done.length} replayed\n`);
          }
          break;
        }
        case 'purge': {
          const purged = await dead.purge(ids.length ? ids : filter);
          if (json) write({ purged });
          else out.write(`${purged.length} purged${purged.length ? `: ${purged.join(' ')}` : ''}\n`);
          break;
        }
      }
      return 0;
    } catch (err) {
      // Our typed errors say what is wrong; a stack would hide it.
      if (err instanceof EventBusError) {
        // A body stored encrypted, read without the keys: say which flag gives them.
        const hint = err instanceof UnknownEncryptionKeyError && !keys ? ' (give --encryption-keys or EVENTBUS_ENCRYPTION_KEYS)' : '';
        process.stderr.write(`nestjs-nats-eventbus dlq ${action}: ${err.code}: ${err.message}${hint}\n`);
        return 1;
      }
      throw err;
    } finally {
      await bus.close().catch(() => undefined);
      await storage?.disconnect().catch(() => undefined);
    }
  },
};

function natsOptionsOf(setting: (name: keyof typeof CONNECTION_FLAGS) => string | undefined): NatsConnectionOptions {
  const options: NatsConnectionOptions = {
    servers: (setting('server') ?? 'nats://127.0.0.1:4222').split(',').map((s) => s.trim()),
    name: 'nestjs-nats-eventbus-dlq',
    // A CLI should fail, not wait for a server forever.
    maxReconnectAttempts: 0,
  };
  const user = setting('user');
  if (user !== undefined) Object.assign(options, { user, pass: setting('password') ?? '' });
  const token = setting('token');
  if (token !== undefined) options.token = token;
  const creds = setting('creds');
  if (creds !== undefined) options.authenticator = credsAuthenticator(readFileSync(creds));
  const [ca, cert, key] = [setting('tls-ca'), setting('tls-cert'), setting('tls-key')];
  if (ca || cert || key) options.tls = { ...(ca && { caFile: ca }), ...(cert && { certFile: cert }), ...(key && { keyFile: key }) };
  return options;
}

function filterOf(values: Values): DeadLetterFilter {
  const f: DeadLetterFilter = {};
  for (const k of ['stream', 'topic', 'durable', 'reason'] as const) if (values[k] !== undefined) f[k] = values[k] as string;
  if (values.limit !== undefined) {
    const n = Number(values.limit);
    if (!Number.isSafeInteger(n) || n < 1) throw new CliUsageError(`--limit must be a positive whole number, not "${values.limit}"`);
    f.limit = n;
  }
  if (values.since !== undefined) f.since = sinceOf(values.since as string);
  return f;
}

/** An ISO time, or a duration back from now: `90s`, `30m`, `2h`, `7d`. */
function sinceOf(text: string): Date {
  const ago = /^(\d+)([smhd])$/.exec(text);
  if (ago) return new Date(Date.now() - Number(ago[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[ago[2] as 's' | 'm' | 'h' | 'd']);
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) throw new CliUsageError(`--since must be an ISO time or a duration like 30m, 2h, 7d, not "${text}"`);
  return at;
}

function table(entries: DeadLetterEntry[]): string {
  const head = ['ID', 'TIME', 'SUBJECT', 'DURABLE', 'REASON', 'DELIVERIES', 'SIZE', 'LAST ERROR'];
  const rows = entries.map((e) => [
    e.id,
    e.time.toISOString(),
    e.subject,
    e.durable ?? '',
    e.reason,
    String(e.deliveries ?? ''),
    `${e.size}${e.claimChecked ? ' (stored)' : ''}`,
    (e.lastError ?? '').slice(0, 60),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ')}`.trimEnd();
  return `${[head, ...rows].map(line).join('\n')}\n${entries.length} dead letter${entries.length === 1 ? '' : 's'}\n`;
}

/** `--encryption-keys id=key,id=key`, in order (the first encrypts); undefined when not given. */
function keysOf(text: string | undefined): Record<string, string> | undefined {
  if (!text) return undefined;
  const keys: Record<string, string> = {};
  for (const pair of text.split(',')) {
    // A base64 key may end in '=': the id is what comes before the first one.
    const at = pair.indexOf('=');
    if (at < 1 || at === pair.length - 1)
      throw new CliUsageError(`--encryption-keys: give id=key pairs separated by commas, not "${pair.slice(0, 16)}…"`);
    keys[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return keys;
}
