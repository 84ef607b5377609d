// End to end with telemetry: `OTEL=1 node sample/run.js` (what `OTEL=1 npm run sample` runs) on
// the test's own NATS and Redis. One monitoring cycle must be one trace across the three services:
// the span lines each service writes show the parent links the README draws (request and reply,
// the claim-checked reply and e-mail, the durable notification), the services' other log lines in
// that cycle carry its trace id, and each service's Prometheus /metrics counts what the bus did.
import { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import { NatsServer, RedisServer } from '../harness/local-servers';

let nats: NatsServer;
let redis: RedisServer;
let outboxDir: string;
let ports: Record<SampleService, number>;
let metricsPorts: Record<SampleService, number>;
let runner: ChildProcess | undefined;
let runnerExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
const lines: Line[] = [];
const rawTail: string[] = [];

const waitFor = <T>(what: string, check: () => T | undefined | false, timeoutMs: number) =>
  waitForLog(runner, rawTail, what, check, timeoutMs);

const spans = (traceId: string) => lines.filter((l) => l.hop === 'span' && l.trace_id === traceId);
const span = (traceId: string, service: SampleService, name: string) =>
  spans(traceId).filter((l) => l.service === service && l.msg === name);

/** The trace as the README draws it: a span a line, under its parent, in start order. */
function drawTrace(traceId: string): string {
  const all = spans(traceId).sort((a, b) => a.start_ms - b.start_ms);
  const out: string[] = [];
  const draw = (parent: string | undefined, depth: number) => {
    for (const s of all.filter((x) => x.parent_span_id === parent)) {
      const a = s.attributes ?? {};
      const bytes = a['eventbus.claimcheck.bytes'] ?? a['messaging.message.body.size'];
      const group = a['messaging.consumer.group.name'];
      const extra = [bytes !== undefined ? `${bytes} B` : '', group ? `group ${group}` : ''].filter(Boolean).join(', ');
      const name = `${'  '.repeat(depth)}${s.msg}`.padEnd(48);
      out.push(
        `${name} ${String(s.kind).padEnd(8)} ${String(s.service).padEnd(16)} ${s.duration_ms.toFixed(2).padStart(8)} ms  ${extra}`.trimEnd(),
      );
      draw(s.span_id, depth + 1);
    }
  };
  draw(undefined, 0);
  return out.join('\n');
}

/** The value of the Prometheus sample `name` whose labels include `destination`, or undefined. */
function sample(metrics: string, name: string, destination: string): number | undefined {
  const line = metrics
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && l.includes(`messaging_destination_name="${destination}"`) && !l.includes('error_type='));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

beforeAll(async () => {
  [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
  ports = await freeServicePorts();
  metricsPorts = await freeServicePorts();
  outboxDir = mkdtempSync(join(tmpdir(), 'eventbus-sample-otel-outbox-'));
  const started = startSample(
    {
      ...sampleEnv(nats.url, redis.url, ports, outboxDir),
      OTEL: '1',
      SITES_MONITOR_METRICS_PORT: String(metricsPorts['sites-monitor']),
      VELOCLOUD_BRIDGE_METRICS_PORT: String(metricsPorts['velocloud-bridge']),
      NOTIFIER_METRICS_PORT: String(metricsPorts.notifier),
      OTEL_METRICS_PORT: '',
      EVENTBUS_KEY_PREFIX: 'sample-otel-e2e:',
      // The README's cycle: four edges, edge-001 OFFLINE with a big status and e-mail report.
      FLEET_SIZE: '4',
      REPORT_EVERY_CYCLES: '12',
      EVENTBUS_STORAGE: 'redis',
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
  await Promise.all([nats?.dispose(), redis?.dispose()]);
  if (outboxDir) rmSync(outboxDir, { recursive: true, force: true });
}, 40_000);

test('one monitoring cycle is one trace across the three services, claim-checked hops and the durable e-mail included', async () => {
  // The e-mail report of the OFFLINE edge ends the cycle that found it; its trace is that cycle's.
  const email = await waitFor(
    'the notifier span "process notification.email.request"',
    () => lines.find((l) => l.hop === 'span' && l.service === 'notifier' && l.msg === 'process notification.email.request'),
    40_000,
  );
  const traceId = email.trace_id as string;
  const [cycle] = await waitFor(
    'the "monitoring cycle" span of that trace',
    () => span(traceId, 'sites-monitor', 'monitoring cycle'),
    10_000,
  );
  expect(cycle).toMatchObject({ kind: 'INTERNAL' });
  expect(cycle.parent_span_id).toBeUndefined();

  // Request and reply: each bridge `process` is the child of one monitor `send`, both tagged for NATS.
  const statusSends = span(traceId, 'sites-monitor', 'send edge.status.request');
  expect(statusSends.length).toBe(4);
  for (const s of statusSends) expect(s).toMatchObject({ kind: 'CLIENT', parent_span_id: cycle.span_id });
  const sendIds = new Set(statusSends.map((s) => s.span_id));
  const statusProcesses = await waitFor(
    'four bridge "process edge.status.request" spans',
    () => {
      const found = span(traceId, 'velocloud-bridge', 'process edge.status.request');
      return found.length === 4 && found;
    },
    10_000,
  );
  for (const p of statusProcesses) {
    expect(p).toMatchObject({
      kind: 'SERVER',
      attributes: {
        'messaging.system': 'nats',
        'messaging.destination.name': 'edge.status.request',
        'messaging.consumer.group.name': 'velocloud-bridge',
      },
    });
    expect(sendIds.has(p.parent_span_id)).toBe(true);
  }

  // The big reply: stored inside the bridge's process span, recovered inside the matching monitor send.
  const [replyStore] = span(traceId, 'velocloud-bridge', 'claim-check store edge.status.request');
  expect(replyStore).toBeDefined();
  const bigProcess = statusProcesses.find((p) => p.span_id === replyStore.parent_span_id);
  expect(bigProcess).toBeDefined();
  expect(replyStore.attributes['eventbus.claimcheck.bytes']).toBeGreaterThan(1024 * 1024);
  const [replyRecover] = span(traceId, 'sites-monitor', 'claim-check recover edge.status.request');
  expect(replyRecover).toMatchObject({ parent_span_id: bigProcess!.parent_span_id });
  expect(replyRecover.attributes['eventbus.claimcheck.bytes']).toBe(replyStore.attributes['eventbus.claimcheck.bytes']);

  // The durable e-mail: published (and its body stored) by the monitor, handled (and recovered) by the notifier.
  const [emailSend] = span(traceId, 'sites-monitor', 'send notification.email.request');
  expect(emailSend).toMatchObject({ kind: 'PRODUCER', parent_span_id: cycle.span_id });
  expect(email).toMatchObject({
    kind: 'CONSUMER',
    parent_span_id: emailSend.span_id,
    attributes: { 'messaging.consumer.group.name': 'notifier-email' },
  });
  const [emailStore] = span(traceId, 'sites-monitor', 'claim-check store notification.email.request');
  expect(emailStore).toMatchObject({ parent_span_id: emailSend.span_id });
  const [emailRecover] = span(traceId, 'notifier', 'claim-check recover notification.email.request');
  expect(emailRecover).toMatchObject({ parent_span_id: email.span_id });
  expect(emailRecover.attributes['eventbus.claimcheck.bytes']).toBe(emailStore.attributes['eventbus.claimcheck.bytes']);
  const [slack] = span(traceId, 'notifier', 'process notification.slack.request');
  expect(slack).toMatchObject({ kind: 'CONSUMER', attributes: { 'messaging.consumer.group.name': 'notifier-slack' } });

  const slackSend = span(traceId, 'sites-monitor', 'send notification.slack.request')[0];
  expect(slackSend).toMatchObject({ kind: 'PRODUCER', parent_span_id: cycle.span_id });
  expect(slackSend.attributes['messaging.message.body.size']).toBeGreaterThan(0);
  process.stdout.write(`[sample-otel] trace ${traceId}\n${drawTrace(traceId)}\n`);

  // The services' own log lines written while handling this cycle's messages carry the same id.
  for (const service of SAMPLE_SERVICES) {
    const tagged = lines.filter((l) => l.service === service && l.hop !== 'span' && l.trace_id === traceId);
    expect({ service, tagged: tagged.length > 0 }).toEqual({ service, tagged: true });
  }
});

test('each service serves Prometheus /metrics with what its bus sent, consumed and claim-checked', async () => {
  const scrape = async (service: SampleService) => {
    const res = await fetch(`http://127.0.0.1:${metricsPorts[service]}/metrics`);
    expect({ service, status: res.status }).toEqual({ service, status: 200 });
    return res.text();
  };
  const startedLine = lines.find((l) => l.service === 'sites-monitor' && typeof l.metrics === 'string');
  expect(startedLine?.metrics).toContain(`:${metricsPorts['sites-monitor']}/metrics`);

  const monitor = await scrape('sites-monitor');
  expect(sample(monitor, 'messaging_client_sent_messages_total', 'edge.status.request')).toBeGreaterThanOrEqual(4);
  expect(sample(monitor, 'messaging_client_sent_messages_total', 'notification.email.request')).toBeGreaterThanOrEqual(1);
  expect(sample(monitor, 'eventbus_claimcheck_stored_total', 'notification.email.request')).toBeGreaterThanOrEqual(1);

  const bridge = await scrape('velocloud-bridge');
  expect(sample(bridge, 'messaging_client_consumed_messages_total', 'edge.status.request')).toBeGreaterThanOrEqual(4);
  expect(sample(bridge, 'eventbus_claimcheck_stored_total', 'edge.status.request')).toBeGreaterThanOrEqual(1);

  const notifier = await scrape('notifier');
  expect(sample(notifier, 'messaging_client_consumed_messages_total', 'notification.email.request')).toBeGreaterThanOrEqual(1);
  expect(sample(notifier, 'eventbus_claimcheck_recovered_total', 'notification.email.request')).toBeGreaterThanOrEqual(1);
  expect(notifier).toMatch(/^messaging_process_duration_bucket\{[^}]*messaging_destination_name="notification.email.request"/m);
});
