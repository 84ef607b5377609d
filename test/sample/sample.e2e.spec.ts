// End to end: `node sample/run.js` (what `npm run sample` runs) builds the library and the sample,
// and starts the three services as real processes against a NATS and a Redis of this test's own,
// on free ports. The test watches one monitoring cycle through the JSON log lines and the
// notifier's outbox, then stops everything with SIGTERM and checks that no process is left.
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { EventBus, RemoteHandlerError } from '../../lib';
import { freePort, NatsServer, RedisServer } from '../harness/local-servers';
import { waitUntil } from '../harness/wait';

const ROOT = resolve(__dirname, '..', '..');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SERVICES = ['sites-monitor', 'velocloud-bridge', 'notifier'] as const;

type Line = Record<string, any>;

let nats: NatsServer;
let redis: RedisServer;
let outboxDir: string;
let ports: Record<(typeof SERVICES)[number], number>;
let runner: ChildProcess | undefined;
let runnerExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
const lines: Line[] = [];
const rawTail: string[] = [];

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Wait for `check` to find something in the log; the failure shows the end of the log. */
async function waitFor<T>(what: string, check: () => T | undefined | false, timeoutMs: number): Promise<T> {
  let found: T | undefined | false;
  // Stop early when the runner has exited: nothing more will be logged.
  await waitUntil(() => !!(found = check()) || (!!runner && runner.exitCode !== null), what, timeoutMs).catch(() => undefined);
  if (found) return found;
  throw new Error(`timed out waiting for ${what}; last log lines:\n${rawTail.slice(-40).join('\n')}`);
}

/** `promise`, or `'timeout'` after `ms`; the timer never outlives the test. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const startedPids = () =>
  lines.filter((l) => l.service === 'run' && typeof l.pid === 'number' && /^started /.test(l.msg ?? '')).map((l) => l.pid as number);

beforeAll(async () => {
  [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
  ports = { 'sites-monitor': await freePort(), 'velocloud-bridge': await freePort(), notifier: await freePort() };
  outboxDir = mkdtempSync(join(tmpdir(), 'eventbus-sample-outbox-'));
  const child = spawn(process.execPath, [join(ROOT, 'sample', 'run.js')], {
    cwd: ROOT,
    env: {
      ...process.env,
      NATS_URL: nats.url,
      REDIS_URL: redis.url,
      SITES_MONITOR_PORT: String(ports['sites-monitor']),
      VELOCLOUD_BRIDGE_PORT: String(ports['velocloud-bridge']),
      NOTIFIER_PORT: String(ports.notifier),
      OUTBOX_DIR: outboxDir,
      MONITOR_INTERVAL_MS: '2000',
      EVENTBUS_KEY_PREFIX: 'sample-e2e:',
      SAMPLE_START_TIMEOUT_MS: '40000',
      // Pinned, so a developer's own settings cannot change what the test expects.
      FLEET_SEED: '42',
      FLEET_SIZE: '12',
      BIG_EDGE_EVENTS: '8000',
      REPORT_EVERY_CYCLES: '12',
      RPC_TIMEOUT_MS: '10000',
      SAMPLE_SKIP_BUILD: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runner = child;
  runnerExit = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      rawTail.push(text.length > 400 ? text.slice(0, 400) + '…' : text);
      if (rawTail.length > 200) rawTail.shift();
      try {
        lines.push(JSON.parse(text));
      } catch {
        lines.push({ service: 'unparsed', msg: text });
      }
    }
  });
  // Compiler output goes to stderr; keep it for the failure message.
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => rawTail.push(`[stderr] ${d.trimEnd()}`));
  // Building the library and the sample takes most of this on a slow machine.
  await waitFor('"all services are up"', () => lines.find((l) => l.service === 'run' && /^all services are up/.test(l.msg ?? '')), 110_000);
}, 130_000);

afterAll(async () => {
  // Only when the test failed half-way: nothing may outlive it.
  if (runner && runner.exitCode === null && runner.signalCode === null) {
    runner.kill('SIGTERM');
    await within(runnerExit, 20_000);
  }
  for (const pid of startedPids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  if (runner && runner.exitCode === null && runner.signalCode === null) runner.kill('SIGKILL');
  await Promise.all([nats?.dispose(), redis?.dispose()]);
  if (outboxDir) rmSync(outboxDir, { recursive: true, force: true });
}, 40_000);

test('every service answers /_health with 200 on its configured port', async () => {
  for (const name of SERVICES) {
    const res = await fetch(`http://127.0.0.1:${ports[name]}/_health`);
    expect({ name, status: res.status }).toEqual({ name, status: 200 });
    const body = (await res.json()) as { status: string; info: Record<string, { status: string }> };
    expect(body.status).toBe('ok');
    expect(body.info.nats.status).toBe('up');
    expect(body.info.storage.status).toBe('up');
  }
  // Each service says where it listens (0.0.0.0 and the port from the environment).
  for (const name of SERVICES) {
    const listening = lines.find((l) => l.service === name && l.hop === 'listening');
    expect(listening).toMatchObject({ port: ports[name] });
    expect(listening!.msg).toContain('0.0.0.0');
  }
});

test('one full monitoring cycle: list, statuses (a large one through claim-check), alerts in the outbox', async () => {
  const done = await waitFor(
    'a completed monitoring cycle with an OFFLINE edge',
    () => lines.find((l) => l.service === 'sites-monitor' && l.hop === 'cycle.done' && l.down >= 1),
    30_000,
  );
  expect(done).toMatchObject({ failed: 0, edges: 12 });
  const cycle = done.cycle;
  const monitor = lines.filter((l) => l.service === 'sites-monitor' && l.cycle === cycle);
  const bridge = lines.filter((l) => l.service === 'velocloud-bridge');

  // edge.list.request: monitor asks, bridge answers, monitor gets the answer.
  const listReply = monitor.find((l) => l.hop === 'reply' && l.topic === 'edge.list.request');
  expect(listReply).toBeDefined();
  expect(bridge.some((l) => l.hop === 'reply' && l.topic === 'edge.list.request' && l.request_id === listReply!.request_id)).toBe(true);

  // Every edge's status came back in that cycle.
  const statusReplies = monitor.filter((l) => l.hop === 'reply' && l.topic === 'edge.status.request');
  expect(statusReplies).toHaveLength(12);

  // At least one status reply was over 1 MiB, offloaded by the bridge and recovered by the monitor.
  const offloaded = bridge.filter((l) => l.hop === 'reply' && l.topic === 'edge.status.request' && l.offloaded === true);
  const recoveredInCycle = statusReplies.filter((r) => offloaded.some((o) => o.request_id === r.request_id));
  expect(recoveredInCycle.length).toBeGreaterThanOrEqual(1);
  for (const r of recoveredInCycle) {
    const o = offloaded.find((x) => x.request_id === r.request_id)!;
    expect(o.bytes).toBeGreaterThan(1024 * 1024);
    expect(r.events).toBeGreaterThan(1000);
  }

  // The alert: a Slack publish, and an e-mail large enough for claim-check, recovered by the notifier.
  const slack = monitor.find((l) => l.hop === 'publish' && l.topic === 'notification.slack.request');
  const email = monitor.find((l) => l.hop === 'publish' && l.topic === 'notification.email.request');
  expect(slack).toBeDefined();
  expect(email).toMatchObject({ offloaded: true });
  expect(email!.bytes).toBeGreaterThan(1024 * 1024);

  const received = await waitFor(
    'the notifier to receive the e-mail',
    () => lines.find((l) => l.service === 'notifier' && l.hop === 'received' && l.request_id === email!.request_id),
    10_000,
  );
  expect(received).toMatchObject({ topic: 'notification.email.request', recovered: true });
  expect(received.token).toMatch(UUID);
  await waitFor(
    'the notifier to send the e-mail',
    () => lines.find((l) => l.service === 'notifier' && l.hop === 'sent' && l.request_id === email!.request_id),
    10_000,
  );

  // The outbox: one JSON line per notification, the e-mail marked as recovered.
  const outboxFile = join(outboxDir, 'outbox.jsonl');
  const outbox = await waitFor(
    'the outbox to hold the slack and the e-mail notification',
    () => {
      if (!existsSync(outboxFile)) return undefined;
      const entries = readFileSync(outboxFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const s = entries.find((e) => e.request_id === slack!.request_id);
      const e = entries.find((x) => x.request_id === email!.request_id);
      return s && e ? { s, e } : undefined;
    },
    10_000,
  );
  expect(outbox.s).toMatchObject({ kind: 'slack', channel: '#edge-alerts', recovered: false });
  expect(outbox.s.message).toContain('OFFLINE');
  expect(outbox.e).toMatchObject({ kind: 'email', recovered: true, token: received.token });
  expect(outbox.e.attachments.reduce((n: number, a: { bytes: number }) => n + a.bytes, 0)).toBeGreaterThan(1024 * 1024);

  // Nothing went wrong anywhere.
  const errors = lines.filter(
    (l) => (SERVICES as readonly string[]).includes(l.service) && (l.level === 'error' || l.level === 'fatal' || l.level === 'stderr'),
  );
  expect(errors).toEqual([]);
});

test('the notifier validates requests: an e-mail without a recipient is refused at once with a typed 400', async () => {
  const nc = await connect({ servers: nats.url });
  try {
    // Through the library's own requester, as a service would send it.
    const bus = new EventBus({ nats: { servers: nats.url } });
    await bus.connect();
    try {
      const bad = { request_id: 'e2e-bad', subject: 'no recipient', body: 'x', attachments: [] };
      const err = await bus.rpcRequest('notification.email.request', bad, { timeout: 5000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteHandlerError);
      expect((err as RemoteHandlerError).remoteCode).toBe(400);
      expect((err as RemoteHandlerError).remoteMessage).toMatch(/to/);
    } finally {
      await bus.close();
    }
    // A header-less client gets the same as JSON.
    const reply = await nc.request('notification.email.request', JSON.stringify({ request_id: 'e2e-bad-2', to: [] }), { timeout: 5000 });
    expect(JSON.parse(reply.string())).toMatchObject({ status: 400 });
  } finally {
    await nc.close();
  }
  // Refused before the handler: nothing of these reached the outbox.
  const outbox = join(outboxDir, 'outbox.jsonl');
  const written = existsSync(outbox) ? readFileSync(outbox, 'utf8') : '';
  expect(written).not.toContain('e2e-bad');
});

test('SIGTERM stops every service cleanly and leaves no process behind', async () => {
  const pids = startedPids();
  expect(pids).toHaveLength(3); // the test gave it NATS and Redis: it starts no servers of its own
  const runnerPid = runner!.pid!;
  runner!.kill('SIGTERM');
  const exit = await within(runnerExit, 30_000);
  expect(exit).toEqual({ code: 0, signal: null });
  for (const name of SERVICES) {
    expect(lines.some((l) => l.service === 'run' && l.msg === `${name} stopped`)).toBe(true);
  }
  // The monitor let its running cycle finish before its bus closed.
  expect(lines.some((l) => l.service === 'sites-monitor' && l.hop === 'monitor.stop')).toBe(true);
  for (const pid of [...pids, runnerPid]) expect({ pid, alive: alive(pid) }).toEqual({ pid, alive: false });
  // The servers the test started were left alone.
  expect(nats.running && redis.running).toBe(true);
}, 40_000);

test('Ctrl-C (SIGINT to the whole process group) with servers of its own: services stop first, then the servers; no process left', async () => {
  const natsPort = await freePort();
  const redisPort = await freePort();
  const own: Line[] = [];
  // Its own process group, as a terminal's foreground job is: the group signal must not reach jest.
  const child = spawn(process.execPath, [join(ROOT, 'sample', 'run.js')], {
    cwd: ROOT,
    env: {
      ...process.env,
      NATS_URL: `nats://127.0.0.1:${natsPort}`,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      SITES_MONITOR_PORT: String(await freePort()),
      VELOCLOUD_BRIDGE_PORT: String(await freePort()),
      NOTIFIER_PORT: String(await freePort()),
      OUTBOX_DIR: outboxDir,
      MONITOR_INTERVAL_MS: '2000',
      SAMPLE_START_TIMEOUT_MS: '40000',
      FLEET_SIZE: '4',
      SAMPLE_SKIP_BUILD: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        own.push(JSON.parse(text));
      } catch {
        own.push({ service: 'unparsed', msg: text });
      }
    }
  });
  child.stderr!.resume();
  try {
    await waitUntil(
      () => own.some((l) => l.service === 'run' && /^all services are up/.test(l.msg ?? '')) || child.exitCode !== null,
      'up',
      60_000,
    );
    expect(own.filter((l) => l.service === 'run' && /^started a local/.test(l.msg ?? '')).map((l) => l.msg)).toHaveLength(2);
    const pids = own.filter((l) => l.service === 'run' && typeof l.pid === 'number').map((l) => l.pid as number);
    const shutdownFrom = own.length;
    process.kill(-child.pid!, 'SIGINT');
    expect(await within(exited, 40_000)).toEqual({ code: 0, signal: null });
    const after = own.slice(shutdownFrom);
    const at = (msg: string) => after.findIndex((l) => l.service === 'run' && l.msg === msg);
    // Every service stopped before either server did.
    const lastService = Math.max(...SERVICES.map((s) => at(`${s} stopped`)));
    expect(Math.min(...SERVICES.map((s) => at(`${s} stopped`)))).toBeGreaterThanOrEqual(0);
    expect(at('nats-server stopped')).toBeGreaterThan(lastService);
    expect(at('redis-server stopped')).toBeGreaterThan(lastService);
    // The servers were there while the services drained: none of them saw NATS or Redis go away.
    const lostServer = after.filter((l) => SERVICES.includes(l.service) && /disconnected from|Redis connection error/.test(l.msg ?? ''));
    expect(lostServer).toEqual([]);
    for (const pid of pids) expect({ pid, alive: alive(pid) }).toEqual({ pid, alive: false });
    // It started with a fresh outbox: the first run's (same OUTBOX_DIR) was moved aside, whole.
    expect(own.some((l) => l.service === 'run' && /moved the previous run's outbox aside/.test(l.msg ?? ''))).toBe(true);
    expect(readFileSync(join(outboxDir, 'outbox.previous.jsonl'), 'utf8')).toContain('"kind":"email"');
  } finally {
    if (child.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
  }
}, 90_000);
