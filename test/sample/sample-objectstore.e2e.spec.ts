// End to end, without Redis: `EVENTBUS_STORAGE=objectstore node sample/run.js` runs the three
// services with their large bodies in a JetStream object store bucket on the test's own NATS.
// REDIS_URL points at a port nothing listens on: any use of Redis would fail the services.
import { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  freeServicePorts,
  Line,
  SAMPLE_SERVICES,
  SampleService,
  sampleEnv,
  startSample,
  stopRunner,
  waitForLog,
  waitUntilUp,
} from './sample-log';
import { freePort, NatsServer } from '../harness/local-servers';

let nats: NatsServer;
let outboxDir: string;
let ports: Record<SampleService, number>;
let runner: ChildProcess | undefined;
let runnerExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
const lines: Line[] = [];
const rawTail: string[] = [];

const waitFor = <T>(what: string, check: () => T | undefined | false, timeoutMs: number) =>
  waitForLog(runner, rawTail, what, check, timeoutMs);

beforeAll(async () => {
  nats = await NatsServer.start({ jetstream: true });
  ports = await freeServicePorts();
  outboxDir = mkdtempSync(join(tmpdir(), 'eventbus-sample-os-outbox-'));
  const started = startSample(
    {
      ...sampleEnv(nats.url, `redis://127.0.0.1:${await freePort()}`, ports, outboxDir),
      EVENTBUS_STORAGE: 'objectstore',
      FLEET_SIZE: '12',
      REPORT_EVERY_CYCLES: '12',
    },
    lines,
    rawTail,
  );
  runner = started.child;
  runnerExit = started.exited;
  await waitUntilUp(runner, lines, rawTail);
}, 130_000);

afterAll(async () => {
  await stopRunner(runner, runnerExit);
  await nats?.dispose();
  if (outboxDir) rmSync(outboxDir, { recursive: true, force: true });
}, 40_000);

test('no Redis: /_health is up, and a cycle carries a large status reply and a large e-mail through the object store', async () => {
  expect(lines.some((l) => l.service === 'run' && /Redis is not used/.test(l.msg ?? ''))).toBe(true);
  for (const name of SAMPLE_SERVICES) {
    const res = await fetch(`http://127.0.0.1:${ports[name]}/_health`);
    expect({ name, status: res.status }).toEqual({ name, status: 200 });
    const body = (await res.json()) as { info: Record<string, { status: string }> };
    expect(body.info.storage.status).toBe('up');
  }
  const done = await waitFor(
    'a completed monitoring cycle with an OFFLINE edge',
    () => lines.find((l) => l.service === 'sites-monitor' && l.hop === 'cycle.done' && l.down >= 1),
    30_000,
  );
  expect(done).toMatchObject({ failed: 0, edges: 12 });
  const offloaded = lines.filter((l) => l.service === 'velocloud-bridge' && l.hop === 'reply' && l.offloaded === true);
  expect(offloaded.length).toBeGreaterThanOrEqual(1);
  const email = lines.find((l) => l.service === 'sites-monitor' && l.hop === 'publish' && l.topic === 'notification.email.request');
  expect(email).toMatchObject({ offloaded: true });
  const received = await waitFor(
    'the notifier to receive the e-mail',
    () => lines.find((l) => l.service === 'notifier' && l.hop === 'received' && l.request_id === email!.request_id),
    10_000,
  );
  expect(received).toMatchObject({ recovered: true });
  // The bodies are in the sample's bucket on this NATS.
  const nc = await connect({ servers: nats.url });
  try {
    const info = await (await jetstreamManager(nc)).streams.info('OBJ_eventbus-sample');
    expect(info.state.messages).toBeGreaterThan(0);
  } finally {
    await nc.close();
  }
});

test('SIGTERM stops the services; run.js exits 0', async () => {
  runner!.kill('SIGTERM');
  const exit = await runnerExit;
  expect(exit).toEqual({ code: 0, signal: null });
});
