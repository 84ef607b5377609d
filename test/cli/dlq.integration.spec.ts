import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Redis from 'ioredis';
import { EventBus, RedisStorageManager } from '../../lib';
import { withBodyCodec } from '../../lib/claim-check/body-codec';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { bigPayload, waitUntil } from '../harness/wait';

const ROOT = path.resolve(__dirname, '../..');
const STORE_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-dlq-cli-'));
// `app` runs the services; `ops` may only read, delete and republish dead letters (no consumer, no stream admin).
const CONFIG = `
jetstream { store_dir: "${STORE_DIR}" }
authorization {
  users = [
    { user: app, password: apppw }
    { user: ops, password: opspw, permissions: {
        publish: { allow: ["$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.MSG.GET.>", "$JS.API.STREAM.MSG.DELETE.>", "cli.work.>", "cli.again.>"] }
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

// `npx nestjs-nats-eventbus dlq …` end to end (issue 31, item 1): the CLI is spawned as a process (its
// TypeScript transpiled on require, no build), against a real nats-server with users and a real Redis.
describe('dlq CLI (issue 31)', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let logs: LogCapture;
  const buses = new TestBuses();
  let bus: EventBus;
  // Dead-letter id by message id: the claim-checked one may be dead-lettered after the next one.
  const idOf: Record<string, string> = {};

  /** Runs the CLI with NATS_URL and the ops user from the environment, unless `env` says otherwise. */
  function dlq(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        ['-r', path.join(__dirname, 'ts-transpile.register.js'), path.join(ROOT, 'lib/cli/main.ts'), 'dlq', ...args],
        {
          cwd: ROOT,
          env: {
            ...process.env,
            NATS_URL: nats.url,
            NATS_USER: 'ops',
            NATS_PASSWORD: 'opspw',
            REDIS_URL: redis.url,
            EVENTBUS_REDIS_KEY_PREFIX: 'cli:',
            ...env,
          },
          timeout: 60_000,
        },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }
  const json = <T>(r: Run): T => {
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false, config: CONFIG }), RedisServer.start()]);
    logs = captureLogs();
    ({ bus } = await buses.withRedis(nats.url, redis.url, 'cli:', {
      nats: { user: 'app', pass: 'apppw' },
      largeMessageThreshold: 64 * 1024,
      jetstream: {
        streams: [
          { name: 'CLIWORK', subjects: ['cli.work.>', 'cli.again.>'], maxAgeSeconds: 3600 },
          { name: 'CLIDEAD', subjects: ['cli.dead.>'], maxAgeSeconds: 3600 },
        ],
      },
    }));
    await bus.subscribe(
      'cli.work.orders',
      (p: { id: string }) => {
        throw new Error(`refused ${p.id}`);
      },
      { durable: 'billing', maxDeliver: 2, backoffMs: [50], deadLetter: 'cli.dead.orders' },
    );
    await bus.publish('cli.work.orders', { id: 'o1' }, { persist: true });
    await bus.publish('cli.work.orders', bigPayload(200_000, 'o2'), { persist: true });
    await bus.publish('cli.work.orders', { id: 'o3' }, { persist: true });
    await waitUntil(async () => (await bus.deadLetters.list({ stream: 'CLIDEAD' })).length === 3, 'three dead letters', 20_000);
    for (const e of await bus.deadLetters.list({ stream: 'CLIDEAD' })) idOf[e.lastError!.replace('refused ', '')] = e.id;
  });
  afterAll(async () => {
    await buses.closeAll();
    logs.restore();
    await Promise.all([nats?.dispose(), redis?.stop()]);
    fs.rmSync(STORE_DIR, { recursive: true, force: true });
  });

  it('ls prints a table for people and JSON with --json; filters apply', async () => {
    const table = await dlq(['ls']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+TIME\s+SUBJECT\s+DURABLE\s+REASON\s+DELIVERIES\s+SIZE\s+LAST ERROR$/);
    expect(lines.find((l) => l.startsWith(`${idOf.o1} `))).toMatch(
      /^CLIDEAD:\d\s+\S+Z\s+cli\.work\.orders\s+billing\s+max_deliver\s+2\s+11\s+refused o1$/,
    );
    expect(lines.find((l) => l.startsWith(`${idOf.o2} `))).toMatch(/ \d{2,3} \(stored\)\s+refused o2$/);
    expect(lines[4]).toBe('3 dead letters');

    const entries = json<Array<{ id: string; reason: string; time: string }>>(
      await dlq(['ls', '--json', '--stream', 'CLIDEAD', '--limit', '2']),
    );
    expect(entries.map((e) => e.id)).toEqual(['CLIDEAD:1', 'CLIDEAD:2']);
    expect(new Date(entries[0].time).getTime()).toBeGreaterThan(0);
    expect(json<unknown[]>(await dlq(['ls', '--json', '--durable', 'nobody']))).toEqual([]);
    expect(json<unknown[]>(await dlq(['ls', '--json', '--since', '1h']))).toHaveLength(3);
  });

  it('show gives headers and the payload, a claim-checked one recovered from Redis; an unknown id exits 1 naming the code', async () => {
    const big = json<{ payload: unknown; claimChecked: boolean; headers: Record<string, string[]> }>(
      await dlq(['show', idOf.o2, '--json']),
    );
    expect(big.claimChecked).toBe(true);
    expect(big.payload).toEqual(bigPayload(200_000, 'o2'));
    expect(big.headers['Eventbus-Dead-Reason']).toEqual(['max_deliver']);
    const text = await dlq(['show', idOf.o1]);
    expect(text.stdout).toContain('reason:             max_deliver');
    expect(text.stdout).toContain('payload:\n{\n  "id": "o1"\n}');

    const unknown = await dlq(['show', 'CLIDEAD:99']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/DEAD_LETTER_NOT_FOUND: dead letter "CLIDEAD:99"/);
  });

  it('credentials from flags override the environment: a wrong password fails, exit 1', async () => {
    const wrong = await dlq(['ls', '--password', 'nope']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/NOT_CONNECTED|[Aa]uthorization/);
    const right = await dlq(['ls', '--json', '--user', 'app', '--password', 'apppw'], { NATS_USER: 'ops', NATS_PASSWORD: 'wrong' });
    expect(json<unknown[]>(right)).toHaveLength(3);
  });

  it('replay twice publishes each once (the second says already replayed); purge --all removes them', async () => {
    let got = 0;
    const ids: string[] = [];
    await bus.subscribe(
      'cli.again.orders',
      (p: { id: string }) => {
        got++;
        ids.push(p.id);
      },
      { durable: 'again' },
    );
    // The first run "crashed" after two; the operator then replays all of them.
    const first = json<Array<{ id: string; duplicate: boolean }>>(
      await dlq(['replay', 'CLIDEAD:1', 'CLIDEAD:2', '--to', 'cli.again.orders', '--json']),
    );
    expect(first.map((r) => r.duplicate)).toEqual([false, false]);
    const second = (await dlq(['replay', '--all', '--to', 'cli.again.orders'])).stdout.split('\n');
    expect(second[0]).toMatch(/^CLIDEAD:1 -> cli\.again\.orders \(CLIWORK#\d+\) already replayed: not published again$/);
    expect(second[1]).toMatch(/^CLIDEAD:2 -> .* already replayed: not published again$/);
    expect(second[2]).toMatch(/^CLIDEAD:3 -> cli\.again\.orders \(CLIWORK#\d+\)$/);
    expect(second[3]).toBe('3 replayed');
    await waitUntil(() => got >= 3, 'three replays handled');
    expect(ids.sort()).toEqual(['o1', 'o2', 'o3']);

    expect((await dlq(['purge'])).code).toBe(2);
    expect(json<{ purged: string[] }>(await dlq(['purge', '--all', '--json']))).toEqual({
      purged: ['CLIDEAD:1', 'CLIDEAD:2', 'CLIDEAD:3'],
    });
    expect((await dlq(['ls'])).stdout).toBe('ID  TIME  SUBJECT  DURABLE  REASON  DELIVERIES  SIZE  LAST ERROR\n0 dead letters\n');
    // The replays went to the stream once each.
    expect(got).toBe(3);
  });

  it('bad usage exits 2 with the usage text', async () => {
    const r = await dlq(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: nestjs-nats-eventbus dlq ls|show|replay|purge');
    expect((await dlq(['ls', '--limit', 'x'])).code).toBe(2);
    expect((await dlq(['show'])).code).toBe(2);
  });

  it('--encryption-keys reads and replays a body stored encrypted; without them show says so; a bad key exits 2', async () => {
    const key = randomBytes(32).toString('base64');
    const storage = await withBodyCodec(new RedisStorageManager(new Redis(redis.url), { keyPrefix: 'cli:' }), {
      encryption: { keys: { k1: key }, currentKeyId: 'k1' },
    });
    await storage.connect();
    try {
      await encryptedLetter(storage, key);
    } finally {
      await storage.disconnect();
    }
  });

  async function encryptedLetter(storage: RedisStorageManager, key: string) {
    const secure = buses.track(
      new EventBus(
        {
          nats: { servers: nats.url, user: 'app', pass: 'apppw' },
          largeMessageThresholdBytes: 64 * 1024,
          jetstream: {
            streams: [
              { name: 'CLIWORK', subjects: ['cli.work.>', 'cli.again.>'], maxAgeSeconds: 3600 },
              { name: 'CLIDEAD', subjects: ['cli.dead.>'], maxAgeSeconds: 3600 },
            ],
          },
        },
        storage,
      ),
    );
    await secure.connect();
    await secure.subscribe(
      'cli.work.secret',
      () => {
        throw new Error('refused secret');
      },
      { durable: 'vault', maxDeliver: 1, deadLetter: 'cli.dead.secret' },
    );
    const replayed: string[] = [];
    await secure.subscribe('cli.again.secret', (p: { id: string }) => void replayed.push(p.id), { durable: 'again-secret' });
    await secure.publish('cli.work.secret', bigPayload(200_000, 's1'), { persist: true });
    const letters = () => bus.deadLetters.list({ stream: 'CLIDEAD', durable: 'vault' });
    await waitUntil(async () => (await letters()).length === 1, 'the encrypted dead letter', 20_000);
    const [entry] = await letters();

    // Without the keys: the typed error, and which flag gives them.
    const blind = await dlq(['show', entry.id, '--json']);
    expect(blind.code).toBe(1);
    expect(blind.stderr).toMatch(/UNKNOWN_ENCRYPTION_KEY: .*encrypted with key "k1".*give --encryption-keys/);
    const withKeys = { EVENTBUS_ENCRYPTION_KEYS: `k1=${key}` };
    const seen = json<{ payload: unknown }>(await dlq(['show', entry.id, '--json'], withKeys));
    expect(seen.payload).toEqual(bigPayload(200_000, 's1'));
    const replay = await dlq(['replay', entry.id, '--to', 'cli.again.secret'], withKeys);
    expect(replay.code).toBe(0);
    await waitUntil(() => replayed.length === 1, 'the replay handled');
    expect(replayed).toEqual(['s1']);

    const bad = await dlq(['show', entry.id, '--encryption-keys', 'k1=c2hvcnQ=']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--encryption-keys');
  }
});
