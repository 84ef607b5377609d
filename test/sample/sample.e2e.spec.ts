// End to end: `node sample/run.js` (what `npm run sample` runs) builds the library and the sample,
// and starts the three services as real processes against a NATS and a Redis of this test's own,
// on free ports (NATS with JetStream: notifications are durable), and a PostgreSQL of its own for the
// monitor's transactional outbox. The test watches one monitoring cycle through the JSON log lines,
// the alert-decision and outbox tables and the notifier's outbox file, checks that the notifier's
// idempotent durable skips a repeated notification, kills the notifier mid-handling and
// sees every notification land once, then stops everything with SIGTERM and checks that no
// process is left.
import { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { Client } from 'pg';
import { connect } from '@nats-io/transport-node';
import { Svcm, ServiceIdentity, ServiceInfo, ServiceStats } from '@nats-io/services';
import { EventBus } from '../../lib';
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
import { freePort, NatsServer, RedisServer } from '../harness/local-servers';
import { PostgresHandle, PostgresServer } from '../harness/postgres-server';
import { inboxBucket } from '../../lib/durable/inbox';
import { waitUntil } from '../harness/wait';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let nats: NatsServer;
let redis: RedisServer;
let pg: PostgresHandle;
let outboxDir: string;
let ports: Record<SampleService, number>;
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

const waitFor = <T>(what: string, check: () => T | undefined | false, timeoutMs: number) =>
  waitForLog(runner, rawTail, what, check, timeoutMs);

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
  [nats, redis, pg] = await Promise.all([NatsServer.start(), RedisServer.start(), PostgresServer.start()]);
  ports = await freeServicePorts();
  outboxDir = mkdtempSync(join(tmpdir(), 'eventbus-sample-outbox-'));
  const started = startSample(
    {
      ...sampleEnv(nats.url, redis.url, ports, outboxDir),
      EVENTBUS_KEY_PREFIX: 'sample-e2e:',
      // The monitor's alert decisions go through the outbox into this PostgreSQL.
      DATABASE_URL: pg.url,
      // Short, so that a copy of a handled notification can be stored again a moment later: only
      // the notifier's inbox is left to catch it.
      NOTIFICATIONS_DUPLICATE_WINDOW_SECONDS: '1',
      FLEET_SIZE: '12',
      // An e-mail (claim-checked) every other cycle, so some are published while the notifier is down.
      REPORT_EVERY_CYCLES: '2',
      // A killed notifier's unfinished message comes back after 5 s, not the default 30 s.
      NOTIFIER_ACK_WAIT_MS: '5000',
      // Each handler waits this long after writing: the window in which the test kills the notifier.
      NOTIFIER_CONFIRM_DELAY_MS: '1500',
      // Down long enough for two monitoring cycles to publish to nobody.
      SAMPLE_RESTART_DELAY_MS: '4000',
    },
    lines,
    rawTail,
  );
  runner = started.child;
  runnerExit = started.exited;
  await waitUntilUp(runner, lines, rawTail);
}, 130_000);

afterAll(async () => {
  // Only when the test failed half-way: nothing may outlive it.
  await stopRunner(runner, runnerExit);
  for (const pid of startedPids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await Promise.all([nats?.dispose(), redis?.dispose(), pg?.dispose()]);
  if (outboxDir) rmSync(outboxDir, { recursive: true, force: true });
}, 40_000);

test('every service answers /_health with 200 on its configured port', async () => {
  for (const name of SAMPLE_SERVICES) {
    const res = await fetch(`http://127.0.0.1:${ports[name]}/_health`);
    expect({ name, status: res.status }).toEqual({ name, status: 200 });
    const body = (await res.json()) as { status: string; info: Record<string, { status: string }> };
    expect(body.status).toBe('ok');
    expect(body.info.nats.status).toBe('up');
    expect(body.info.storage.status).toBe('up');
    // The two services with durable notifications check JetStream too; the bridge does not use it.
    if (name === 'velocloud-bridge') expect(body.info.jetstream).toBeUndefined();
    else expect(body.info.jetstream).toEqual({ status: 'up' });
  }
  // Each service says where it listens (0.0.0.0 and the port from the environment).
  for (const name of SAMPLE_SERVICES) {
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
  const email = monitor.find((l) => l.hop === 'publish' && l.topic === 'notification.email.request');
  // The Slack alert of the same edge: one decision, committed together with the e-mail.
  const slack = monitor.find((l) => l.hop === 'publish' && l.topic === 'notification.slack.request' && l.edge_id === email?.edge_id);
  expect(slack).toBeDefined();
  // Written through the outbox: committed with the alert decision, published by the relay afterwards.
  expect(slack).toMatchObject({ via: 'outbox' });
  expect(slack!.outbox_id).toMatch(UUID);
  expect(email).toMatchObject({ offloaded: true, via: 'outbox', edge_id: slack!.edge_id });
  expect(email!.bytes).toBeGreaterThan(1024 * 1024);

  const received = await waitFor(
    'the notifier to receive the e-mail',
    () => lines.find((l) => l.service === 'notifier' && l.hop === 'received' && l.request_id === email!.request_id),
    10_000,
  );
  expect(received).toMatchObject({ topic: 'notification.email.request', recovered: true, delivery: 1, stream: 'NOTIFICATIONS' });
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

  // The decision row the two notifications were committed with, and no outbox row left for them:
  // the relay deleted each once JetStream acked it (the notifier's 'received' line says the stream).
  const db = new Client({ connectionString: pg.url });
  await db.connect();
  try {
    const decisions = await db.query('SELECT edge_id, cycle, email_request_id FROM sample_alert_decisions WHERE slack_request_id = $1', [
      slack!.request_id,
    ]);
    expect(decisions.rows).toEqual([{ edge_id: slack!.edge_id, cycle, email_request_id: email!.request_id }]);
    const left = await db.query('SELECT count(*)::int AS n FROM eventbus_outbox WHERE msg_id = ANY($1)', [
      [slack!.request_id, email!.request_id],
    ]);
    expect(left.rows[0].n).toBe(0);
  } finally {
    await db.end();
  }
  // Handled once each: one 'sent' line per id, none a duplicate.
  for (const id of [slack!.request_id, email!.request_id]) {
    expect(lines.filter((l) => l.service === 'notifier' && l.hop === 'sent' && l.request_id === id).map((l) => l.duplicate)).toEqual([
      false,
    ]);
  }

  // Nothing went wrong anywhere.
  const errors = lines.filter(
    (l) =>
      (SAMPLE_SERVICES as readonly string[]).includes(l.service) && (l.level === 'error' || l.level === 'fatal' || l.level === 'stderr'),
  );
  expect(errors).toEqual([]);
});

/** The outbox's notification ids, one per line, in order. */
function outboxIds(): string[] {
  const file = join(outboxDir, 'outbox.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l).request_id as string);
}

test('the three services are NATS services: a plain @nats-io/services client lists them, their endpoints, and counts the requests this test made', async () => {
  const nc = await connect({ servers: nats.url });
  const bus = new EventBus({ nats: { servers: nats.url } });
  try {
    const client = new Svcm(nc as never).client();
    const all = async <T>(replies: Promise<AsyncIterable<T>>): Promise<T[]> => {
      const out: T[] = [];
      for await (const r of await replies) out.push(r);
      return out;
    };
    const pings = await all<ServiceIdentity>(client.ping());
    expect(pings.map((p) => [p.name, p.version]).sort()).toEqual([
      ['notifier', '1.0.0'],
      ['sites-monitor', '1.0.0'],
      ['velocloud-bridge', '1.0.0'],
    ]);
    const infos = await all<ServiceInfo>(client.info());
    const endpoints = Object.fromEntries(
      infos.map((i) => [i.name, i.endpoints.map((e) => [e.name, e.subject, e.queue_group ?? null, e.metadata])]),
    );
    expect(endpoints).toEqual({
      'velocloud-bridge': [
        ['EdgeHandlers-listEdges', 'edge.list.request', 'velocloud-bridge', {}],
        ['EdgeHandlers-edgeStatus', 'edge.status.request', 'velocloud-bridge', {}],
      ],
      notifier: [
        ['NotificationHandlers-slack', 'notification.slack.request', null, { 'eventbus.durable': 'notifier-slack' }],
        ['NotificationHandlers-email', 'notification.email.request', null, { 'eventbus.durable': 'notifier-email' }],
      ],
      'sites-monitor': [],
    });

    const bridgeStats = async () => {
      const [stats] = await all<ServiceStats>(client.stats('velocloud-bridge'));
      const of = (name: string) => stats.endpoints!.find((e) => e.name === name)!;
      return { list: of('EdgeHandlers-listEdges'), status: of('EdgeHandlers-edgeStatus') };
    };
    const before = await bridgeStats();
    await bus.connect();
    for (let i = 0; i < 3; i++) await bus.rpcRequest('edge.list.request', { request_id: `srv-${i}` });
    await expect(bus.rpcRequest('edge.status.request', { request_id: 'srv-x', edge_id: 'no-such-edge' })).rejects.toMatchObject({
      remoteCode: 500,
    });
    const after = await bridgeStats();
    // The monitor's cycles go on asking too: at least the test's 3; its unknown edge is the only error.
    expect(after.list.num_requests - before.list.num_requests).toBeGreaterThanOrEqual(3);
    expect(after.status.num_errors - before.status.num_errors).toBe(1);
    expect(after.status.last_error).toBe('unknown edge "no-such-edge"');
    expect(after.list.processing_time).toBeGreaterThan(before.list.processing_time);
  } finally {
    await bus.close();
    await nc.close();
  }
});

test('the notifier validates notifications: an e-mail without a recipient never reaches the outbox and ends in the dead letter', async () => {
  const nc = await connect({ servers: nats.url });
  const dead: Array<{ body: any; headers: Record<string, string> }> = [];
  nc.subscribe('notification.dead', {
    callback: (_err, m) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of m.headers ?? []) headers[k] = v[0];
      dead.push({ body: JSON.parse(m.string()), headers });
    },
  });
  await nc.flush();
  try {
    // Through the library, persisted, as the monitor sends notifications.
    const bus = new EventBus({ nats: { servers: nats.url } });
    await bus.connect();
    try {
      const bad = { request_id: 'e2e-bad', subject: 'no recipient', body: 'x', attachments: [] };
      expect(await bus.publish('notification.email.request', bad, { persist: true, msgId: 'e2e-bad' })).toMatchObject({
        stream: 'NOTIFICATIONS',
        duplicate: false,
      });
    } finally {
      await bus.close();
    }
    // A header-less client's plain publish on the subject is kept by the stream all the same.
    nc.publish('notification.email.request', JSON.stringify({ request_id: 'e2e-bad-2', to: [] }));
    // ValidationPipe refuses it (400): that will never change, so it goes to the dead letter at once.
    await waitUntil(() => dead.length >= 2, 'two dead letters on notification.dead', 20_000);
  } finally {
    await nc.close();
  }
  expect(dead.map((d) => d.body.request_id).sort()).toEqual(['e2e-bad', 'e2e-bad-2']);
  for (const d of dead) {
    expect(d.headers).toMatchObject({
      'Eventbus-Dead-Reason': 'rejected',
      'Eventbus-Dead-Subject': 'notification.email.request',
      'Eventbus-Dead-Stream': 'NOTIFICATIONS',
      'Eventbus-Dead-Deliveries': '1',
    });
    // The validation messages, not "Bad Request Exception".
    expect(d.headers['Eventbus-Dead-Error']).toMatch(/to/);
    expect(d.headers['Eventbus-Dead-Error']).not.toBe('Bad Request Exception');
  }
  // Refused by ValidationPipe before the handler, each time, saying why: nothing of these reached the outbox.
  expect(lines.some((l) => l.service === 'notifier' && /refused \(400\): .*to/.test(l.msg ?? ''))).toBe(true);
  expect(lines.some((l) => l.service === 'notifier' && l.hop === 'received' && /^e2e-bad/.test(l.request_id))).toBe(false);
  expect(outboxIds().filter((id) => id.startsWith('e2e-bad'))).toEqual([]);
}, 40_000);

test("the notifier's idempotent durable: a handled notification's id is recorded in the inbox, and a copy stored again past the stream's duplicate window is acked without running the handler", async () => {
  const sent = await waitFor(
    'a Slack notification sent by the notifier',
    () => lines.find((l) => l.service === 'notifier' && l.hop === 'sent' && l.kind === 'slack' && l.duplicate === false),
    20_000,
  );
  const id = sent.request_id as string;
  const received = () => lines.filter((l) => l.service === 'notifier' && l.hop === 'received' && l.request_id === id);
  expect(received()).toHaveLength(1);

  const nc = await connect({ servers: nats.url });
  const bus = new EventBus({ nats: { servers: nats.url } });
  try {
    // The record: `done <time>` under <stream>.<durable>.m.<base64url msgId>, in the 600 s window's bucket.
    const kv = await new Kvm(nc).open(inboxBucket(600));
    const key = `NOTIFICATIONS.notifier-slack.m.${Buffer.from(id).toString('base64url')}`;
    const record = await kv.get(key);
    expect(record?.string()).toMatch(/^done \d+$/);

    // The same notification again, with its msgId, after the 1 s duplicate window: the stream stores it anew.
    const original = readFileSync(join(outboxDir, 'outbox.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .find((e) => e.request_id === id);
    await new Promise((r) => setTimeout(r, 1500));
    await bus.connect();
    const stored = await bus.publish(
      'notification.slack.request',
      { request_id: id, channel: original.channel, message: original.message },
      { persist: true, msgId: id },
    );
    expect(stored).toMatchObject({ stream: 'NOTIFICATIONS', duplicate: false });

    // Consumed: the durable's ack floor passes the copy's sequence. Its handler never ran for it.
    const jsm = await jetstreamManager(nc);
    await waitUntil(
      async () => (await jsm.consumers.info('NOTIFICATIONS', 'notifier-slack')).ack_floor.stream_seq >= stored.seq,
      "notifier-slack's ack floor past the copy",
      20_000,
    );
    expect(received()).toHaveLength(1);
    expect(received().some((l) => l.seq === stored.seq)).toBe(false);
    expect(outboxIds().filter((x) => x === id)).toEqual([id]);
  } finally {
    await bus.close();
    await nc.close();
  }
}, 40_000);

test('notifier killed (SIGKILL) mid-handling and restarted: every notification, including those published while it was down, lands in the outbox exactly once by id', async () => {
  const notifierPids = () => lines.filter((l) => l.service === 'run' && l.msg === 'started notifier').map((l) => l.pid as number);
  const [pid] = notifierPids();
  const logged = (hop: string) => lines.filter((l) => l.service === 'notifier' && l.hop === hop);

  // Mid-handling: written to the outbox, not yet done (the handler waits NOTIFIER_CONFIRM_DELAY_MS), so not acked.
  const inFlight = await waitFor(
    'the notifier between writing a notification and finishing its handler',
    () => {
      const written = new Set(outboxIds());
      const sent = new Set(logged('sent').map((l) => l.request_id));
      return logged('received').find((l) => written.has(l.request_id) && !sent.has(l.request_id))?.request_id as string | undefined;
    },
    30_000,
  );
  const killedAt = lines.length;
  process.kill(pid, 'SIGKILL');

  const restartedAt = await waitFor(
    'run.js to restart the notifier and see it healthy',
    () => {
      const i = lines.findIndex((l, j) => j >= killedAt && l.service === 'run' && l.msg === 'notifier is healthy');
      return i >= 0 ? i : undefined;
    },
    40_000,
  );
  expect(lines.slice(killedAt).some((l) => l.service === 'run' && l.msg === 'notifier exited unexpectedly; restarting it')).toBe(true);
  expect(notifierPids()).toHaveLength(2);
  expect(alive(pid)).toBe(false);

  // Published while the notifier was down: stored by the stream, a claim-checked e-mail among them.
  const isNotification = (l: Line) => l.service === 'sites-monitor' && l.hop === 'publish' && /^notification\./.test(l.topic);
  const whileDown = lines.slice(killedAt, restartedAt).filter(isNotification);
  expect(whileDown.length).toBeGreaterThanOrEqual(2);
  expect(whileDown.some((l) => l.topic === 'notification.email.request' && l.offloaded === true)).toBe(true);

  // One more cycle after the restart, then: everything published so far is in the outbox.
  await waitFor(
    'a monitoring cycle after the restart',
    () => lines.slice(restartedAt).find((l) => l.service === 'sites-monitor' && l.hop === 'cycle.done'),
    20_000,
  );
  const published = lines.filter(isNotification).map((l) => l.request_id as string);
  await waitFor(
    'every published notification in the outbox',
    () => {
      const written = new Set(outboxIds());
      return published.every((id) => written.has(id));
    },
    30_000,
  );
  // Exactly once by id: no line repeats an id, though the in-flight one was delivered twice.
  const ids = outboxIds();
  const repeated = ids.filter((id, i) => ids.indexOf(id) !== i);
  expect(repeated).toEqual([]);
  const again = await waitFor(
    'the in-flight notification delivered again to the restarted notifier',
    () => logged('sent').find((l) => l.request_id === inFlight && l.duplicate === true),
    // Its redelivery waits for the dead notifier's inbox claim (a 15 s lease) to expire.
    30_000,
  );
  expect(again).toBeDefined();
  expect(logged('received').find((l) => l.request_id === inFlight && l.delivery >= 2)).toBeDefined();
  // The e-mails published while it was down were recovered from claim-check by the new notifier.
  const outboxEntries = readFileSync(join(outboxDir, 'outbox.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  for (const l of whileDown.filter((x) => x.topic === 'notification.email.request')) {
    expect(outboxEntries.find((e) => e.request_id === l.request_id)).toMatchObject({ kind: 'email', recovered: true });
  }
}, 120_000);

test('SIGTERM stops every service cleanly and leaves no process behind', async () => {
  const pids = startedPids();
  // The test gave it NATS and Redis: it starts no servers of its own; the notifier was started twice.
  const started = lines.filter((l) => l.service === 'run' && /^started /.test(l.msg ?? '')).map((l) => l.msg as string);
  expect(started.sort()).toEqual(['started notifier', 'started notifier', 'started sites-monitor', 'started velocloud-bridge']);
  const runnerPid = runner!.pid!;
  runner!.kill('SIGTERM');
  const exit = await within(runnerExit, 30_000);
  expect(exit).toEqual({ code: 0, signal: null });
  for (const name of SAMPLE_SERVICES) {
    expect(lines.some((l) => l.service === 'run' && l.msg === `${name} stopped`)).toBe(true);
  }
  // The monitor let its running cycle finish before its bus closed.
  expect(lines.some((l) => l.service === 'sites-monitor' && l.hop === 'monitor.stop')).toBe(true);
  for (const pid of [...pids, runnerPid]) expect({ pid, alive: alive(pid) }).toEqual({ pid, alive: false });
  // The servers the test started were left alone.
  expect(nats.running && redis.running).toBe(true);
  // But not the stream the run created there (issue 25): NOTIFICATIONS captures notification.>, and
  // would go on capturing a user's own publishes on a NATS the sample did not start.
  // Nor the notifier's inbox bucket.
  const removed = lines.find((l) => l.service === 'run' && /^removed the streams this run created/.test(l.msg ?? ''));
  expect(removed?.streams).toEqual(['NOTIFICATIONS', 'KV_eventbus-inbox-600s']);
  const nc = await connect({ servers: nats.url });
  try {
    const names: string[] = [];
    for await (const name of (await jetstreamManager(nc)).streams.names()) names.push(name);
    expect(names).toEqual([]);
  } finally {
    await nc.close();
  }
}, 40_000);

test('Ctrl-C (SIGINT to the whole process group) with servers of its own: services stop first, then the servers; no process left', async () => {
  const natsPort = await freePort();
  const redisPort = await freePort();
  const own: Line[] = [];
  // Its own process group, as a terminal's foreground job is: the group signal must not reach jest.
  const { child, exited } = startSample(
    {
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
      // No DATABASE_URL: run.js starts a PostgreSQL of its own for the outbox as well.
      DATABASE_URL: '',
      SAMPLE_POSTGRES: '',
    },
    own,
    [],
    true,
  );
  try {
    await waitUntil(
      () => own.some((l) => l.service === 'run' && /^all services are up/.test(l.msg ?? '')) || child.exitCode !== null,
      'up',
      60_000,
    );
    expect(own.filter((l) => l.service === 'run' && /^started a local/.test(l.msg ?? '')).map((l) => l.msg)).toHaveLength(3);
    const postgresUrl = own.find((l) => l.service === 'run' && /^started a local postgres/.test(l.msg ?? ''))!.url as string;
    // The monitor wrote its first alert decision there before the stop.
    await waitUntil(
      () => own.some((l) => l.service === 'sites-monitor' && l.hop === 'publish' && l.via === 'outbox'),
      'an alert written through the outbox',
      30_000,
    );
    const pids = own.filter((l) => l.service === 'run' && typeof l.pid === 'number').map((l) => l.pid as number);
    const shutdownFrom = own.length;
    process.kill(-child.pid!, 'SIGINT');
    expect(await within(exited, 40_000)).toEqual({ code: 0, signal: null });
    const after = own.slice(shutdownFrom);
    const at = (msg: string) => after.findIndex((l) => l.service === 'run' && l.msg === msg);
    // Every service stopped before either server did.
    const lastService = Math.max(...SAMPLE_SERVICES.map((s) => at(`${s} stopped`)));
    expect(Math.min(...SAMPLE_SERVICES.map((s) => at(`${s} stopped`)))).toBeGreaterThanOrEqual(0);
    expect(at('nats-server stopped')).toBeGreaterThan(lastService);
    expect(at('redis-server stopped')).toBeGreaterThan(lastService);
    expect(at('postgres stopped')).toBeGreaterThan(lastService);
    // Stopped and removed: nothing answers at its port any more.
    const probe = new Client({ connectionString: postgresUrl, connectionTimeoutMillis: 2000 });
    await expect(probe.connect()).rejects.toThrow();
    // The servers were there while the services drained: none of them saw NATS or Redis go away.
    const lostServer = after.filter(
      (l) => SAMPLE_SERVICES.includes(l.service) && /disconnected from|Redis connection error|PostgreSQL connection lost/.test(l.msg ?? ''),
    );
    expect(lostServer).toEqual([]);
    for (const pid of pids) expect({ pid, alive: alive(pid) }).toEqual({ pid, alive: false });
    // It started with a fresh outbox: the first run's (same OUTBOX_DIR) was moved aside, whole.
    expect(own.some((l) => l.service === 'run' && /moved the previous run's outbox aside/.test(l.msg ?? ''))).toBe(true);
    expect(readFileSync(join(outboxDir, 'outbox.previous.jsonl'), 'utf8')).toContain('"kind":"email"');
  } finally {
    if (child.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
  }
}, 90_000);
