import { ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { connect, headers as natsHeaders, NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { NatsServer } from '../harness/local-servers';
import { sleep, waitUntil } from '../harness/wait';

const ROOT = path.resolve(__dirname, '../..');
const LETTERS = 3000;

// A replay killed part way and run again (issue 31): `dlq replay --all` as a process, SIGKILLed
// once some of its replays are stored, then run again; the target subject must hold each dead
// letter exactly once (the msgId `<id>:replay` and the stream's duplicate window). Real nats-server.
describe('dlq replay killed mid-way and run again', () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    nats = await NatsServer.start();
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'RDEAD', subjects: ['rdead.>'] });
    await jsm.streams.add({ name: 'RWORK', subjects: ['rwork.>'] });
    // Dead letters as the bus writes them (the service reads only their headers and body).
    const js = jetstream(nc);
    const acks: Array<Promise<unknown>> = [];
    for (let i = 0; i < LETTERS; i++) {
      const h = natsHeaders();
      h.set('Eventbus-Dead-Reason', 'max_deliver');
      h.set('Eventbus-Dead-Subject', 'rwork.orders');
      h.set('Eventbus-Dead-Durable', 'billing');
      h.set('Eventbus-Dead-Deliveries', '5');
      acks.push(js.publish('rdead.orders', JSON.stringify({ i }), { headers: h }));
      if (acks.length >= 256) await Promise.all(acks.splice(0));
    }
    await Promise.all(acks);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  function replay(): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> } {
    const child = spawn(
      process.execPath,
      [
        '-r',
        path.join(ROOT, 'test/cli/ts-transpile.register.js'),
        path.join(ROOT, 'lib/cli/main.ts'),
        'dlq',
        'replay',
        '--all',
        '--stream',
        'RDEAD',
        '--to',
        'rwork.replayed',
        '--json',
      ],
      { cwd: ROOT, env: { ...process.env, NATS_URL: nats.url }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', () => undefined);
    const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal, stdout })),
    );
    return { child, done };
  }

  const stored = async () => (await jsm.streams.info('RWORK')).state.messages;

  it('each dead letter is in the target subject once after a SIGKILL mid-replay and a second run', async () => {
    const first = replay();
    // Kill once a tenth is stored, well before the end.
    await waitUntil(async () => (await stored()) >= LETTERS / 10, 'the first run stores some', 60_000);
    first.child.kill('SIGKILL');
    const killed = await first.done;
    expect(killed.signal).toBe('SIGKILL');
    const atKill = await stored();
    expect(atKill).toBeLessThan(LETTERS);

    const started = Date.now();
    const second = replay();
    const result = await second.done;
    const seconds = (Date.now() - started) / 1000;
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as Array<{ id: string; duplicate: boolean }>;
    expect(report).toHaveLength(LETTERS);
    const duplicates = report.filter((r) => r.duplicate).length;
    await sleep(200);
    expect(await stored()).toBe(LETTERS);
    // Every body once: read the target stream back.
    const seen = new Set<number>();
    for (let seq = 1; seq <= LETTERS; seq++) {
      const m = await jsm.streams.getMessage('RWORK', { seq });
      seen.add((JSON.parse(new TextDecoder().decode(m!.data)) as { i: number }).i);
    }
    expect(seen.size).toBe(LETTERS);
    // For RELIABILITY.md: how many the second run found already replayed, and its rate (process start included).
    console.log(
      `dlq replay: killed after ${atKill}/${LETTERS} stored; second run: ${duplicates} already replayed (duplicate), ${LETTERS - duplicates} published, ${seconds.toFixed(1)} s, stored ${await stored()} = ${LETTERS}`,
    );
    // The ones stored before the kill and those the kill interrupted after the store were found as duplicates.
    expect(duplicates).toBeGreaterThanOrEqual(atKill);
  }, 180_000);
});
