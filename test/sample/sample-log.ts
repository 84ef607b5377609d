import { ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { freePort } from '../harness/local-servers';
import { waitUntil } from '../harness/wait';

/**
 * Settings every e2e run of the sample pins, so a developer's own environment cannot change what
 * a test expects: a cycle every 2 s, the seeded fleet with one big edge, a fresh build, no outbox.
 */
const PINNED_SAMPLE_ENV: NodeJS.ProcessEnv = {
  MONITOR_INTERVAL_MS: '2000',
  SAMPLE_START_TIMEOUT_MS: '40000',
  FLEET_SEED: '42',
  BIG_EDGE_EVENTS: '8000',
  RPC_TIMEOUT_MS: '10000',
  SAMPLE_SKIP_BUILD: '',
  // No PostgreSQL unless a spec gives one (DATABASE_URL): the monitor then publishes directly.
  DATABASE_URL: '',
  SAMPLE_POSTGRES: '0',
  NOTIFICATIONS_DUPLICATE_WINDOW_SECONDS: '',
};

export const SAMPLE_SERVICES = ['sites-monitor', 'velocloud-bridge', 'notifier'] as const;
export type SampleService = (typeof SAMPLE_SERVICES)[number];

/** A free loopback port for each service. */
export async function freeServicePorts(): Promise<Record<SampleService, number>> {
  return { 'sites-monitor': await freePort(), 'velocloud-bridge': await freePort(), notifier: await freePort() };
}

/** What a test run of the sample always sets: the pinned settings, its servers, its ports and its outbox. */
export function sampleEnv(natsUrl: string, redisUrl: string, ports: Record<SampleService, number>, outboxDir: string): NodeJS.ProcessEnv {
  return {
    ...PINNED_SAMPLE_ENV,
    NATS_URL: natsUrl,
    REDIS_URL: redisUrl,
    SITES_MONITOR_PORT: String(ports['sites-monitor']),
    VELOCLOUD_BRIDGE_PORT: String(ports['velocloud-bridge']),
    NOTIFIER_PORT: String(ports.notifier),
    OUTBOX_DIR: outboxDir,
  };
}

/** One JSON log line of the sample (or `{ service: 'unparsed', msg }`). */
export type Line = Record<string, any>;

const ROOT = resolve(__dirname, '..', '..');

/**
 * Start `node sample/run.js` (what `npm run sample` runs) with `env` over this process's
 * environment. Its JSON log lines are parsed into `lines` as they come; the last 200 raw lines
 * (stderr, where compiler output goes, included) are kept in `rawTail` for failure messages.
 */
export function startSample(
  env: NodeJS.ProcessEnv,
  lines: Line[],
  rawTail: string[],
  /** Its own process group, as a terminal's foreground job is. */
  detached = false,
): { child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [join(ROOT, 'sample', 'run.js')], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
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
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => rawTail.push(`[stderr] ${d.trimEnd()}`));
  return { child, exited };
}

/**
 * Wait for `check` to find something in the log; stop early when `runner` has exited (nothing
 * more will be logged). The failure shows the end of the log.
 */
export async function waitForLog<T>(
  runner: ChildProcess | undefined,
  rawTail: string[],
  what: string,
  check: () => T | undefined | false,
  timeoutMs: number,
): Promise<T> {
  let found: T | undefined | false;
  await waitUntil(() => !!(found = check()) || (!!runner && runner.exitCode !== null), what, timeoutMs).catch(() => undefined);
  if (found) return found;
  throw new Error(`timed out waiting for ${what}; last log lines:\n${rawTail.slice(-40).join('\n')}`);
}

/** Wait for run.js to say every service answers /_health; building the library and the sample takes most of it on a slow machine. */
export function waitUntilUp(runner: ChildProcess, lines: Line[], rawTail: string[]): Promise<Line> {
  return waitForLog(
    runner,
    rawTail,
    '"all services are up"',
    () => lines.find((l) => l.service === 'run' && /^all services are up/.test(l.msg ?? '')),
    110_000,
  );
}

/** True while `runner` has neither exited nor been killed. */
const running = (runner: ChildProcess | undefined): runner is ChildProcess =>
  !!runner && runner.exitCode === null && runner.signalCode === null;

/** Only when a test failed half-way is run.js still running: SIGTERM, up to 20 s to stop, then SIGKILL. */
export async function stopRunner(runner: ChildProcess | undefined, exited: Promise<unknown> | undefined): Promise<void> {
  if (!running(runner)) return;
  runner.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000).unref())]);
  if (running(runner)) runner.kill('SIGKILL');
}
