import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, jetstreamManager, JetStreamManager } from '@nats-io/jetstream';
import { EventBus, InvalidOptionsError } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { TestBuses } from '../harness/buses';
import { waitUntil } from '../harness/wait';

const STORE_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-bind-'));
// `admin` manages streams and consumers (Terraform's role); `worker` may use them but not create or change any.
const CONFIG = `
jetstream { store_dir: "${STORE_DIR}" }
authorization {
  users = [
    { user: admin, password: pw }
    { user: worker, password: pw, permissions: {
        publish: {
          allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.>", "$JS.API.CONSUMER.INFO.>", "$JS.API.CONSUMER.MSG.NEXT.>", "$JS.ACK.>", "bind.>"]
          deny: ["$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"]
        }
        subscribe: { allow: ["_INBOX.>"] } } }
  ]
}
`;

// jetstream: { manage: false } (issue 31, item 6): durables bind to streams and consumers made
// elsewhere, under a NATS user without stream-admin rights, against a real nats-server.
describe('jetstream: { manage: false } (bind only)', () => {
  let nats: NatsServer;
  let admin: NatsConnection;
  let jsm: JetStreamManager;
  let logs: LogCapture;
  const buses = new TestBuses();

  const workerBus = async (jetstream: Record<string, unknown>) => {
    const bus = buses.track(new EventBus({ nats: { servers: nats.url, user: 'worker', pass: 'pw' }, jetstream }));
    await bus.connect();
    return bus;
  };

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false, config: CONFIG });
    admin = await connect({ servers: nats.url, user: 'admin', pass: 'pw' });
    jsm = await jetstreamManager(admin);
    await jsm.streams.add({ name: 'BIND', subjects: ['bind.>'], max_age: 3600 * 1e9 });
    await jsm.consumers.add('BIND', {
      durable_name: 'billing',
      filter_subject: 'bind.orders',
      ack_policy: AckPolicy.Explicit,
      ack_wait: 10e9,
    });
    await jsm.consumers.add('BIND', { durable_name: 'wide', ack_policy: AckPolicy.Explicit });
    logs = captureLogs();
  });
  afterEach(() => buses.closeAll());
  afterAll(async () => {
    logs.restore();
    await admin?.close();
    await nats?.dispose();
    fs.rmSync(STORE_DIR, { recursive: true, force: true });
  });

  it('a bind-only durable under the restricted user receives persisted messages; no stream or consumer is created or changed', async () => {
    const before = await jsm.consumers.info('BIND', 'billing');
    // maxAgeSeconds differs from the stream's and ackWaitMs from the consumer's: managed elsewhere, neither is touched.
    const bus = await workerBus({ manage: false, streams: [{ name: 'BIND', subjects: ['bind.>'], maxAgeSeconds: 60 }] });
    const got: string[] = [];
    await bus.subscribe('bind.orders', (p: { id: string }) => void got.push(p.id), { durable: 'billing', ackWaitMs: 30_000 });
    for (const id of ['a', 'b', 'c']) await bus.publish('bind.orders', { id }, { persist: true });
    await waitUntil(() => got.length === 3, 'three messages');
    expect(got).toEqual(['a', 'b', 'c']);
    const after = await jsm.consumers.info('BIND', 'billing');
    expect(after.config).toEqual(before.config);
    expect((await jsm.streams.info('BIND')).config.max_age).toBe(3600 * 1e9);
    expect((await jsm.consumers.list('BIND').next()).map((c) => c.name).sort()).toEqual(['billing', 'wide']);
  });

  it('the same user with manage left on fails: the check above can fail', async () => {
    const bus = buses.track(new EventBus({ nats: { servers: nats.url, user: 'worker', pass: 'pw' }, jetstream: {} }));
    await bus.connect();
    const err = await bus.subscribe('bind.orders', () => undefined, { durable: 'fresh' }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/[Pp]ermission/);
    await expect(jsm.consumers.info('BIND', 'fresh')).rejects.toThrow(/consumer not found/);
  });

  it('a missing stream fails bootstrap with InvalidOptionsError naming it', async () => {
    const err = await workerBus({ manage: false, streams: [{ name: 'NOPE', subjects: ['nope.>'] }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err).toMatchObject({ option: 'jetstream.streams (NOPE)' });
    expect((err as Error).message).toMatch(/stream NOPE does not exist, and with jetstream.manage: false/);
    await expect(jsm.streams.info('NOPE')).rejects.toThrow(/stream not found/);
  });

  it('a missing consumer, or one filtering other subjects, fails the subscribe with InvalidOptionsError naming it', async () => {
    const bus = await workerBus({ manage: false });
    await expect(bus.subscribe('bind.orders', () => undefined, { durable: 'shipping' })).rejects.toThrow(
      /consumer "shipping" does not exist on stream BIND, and with jetstream.manage: false/,
    );
    await expect(bus.subscribe('bind.orders', () => undefined, { durable: 'wide' })).rejects.toMatchObject({
      option: 'durable',
      message: expect.stringContaining('consumer "wide" on stream BIND filters nothing (the whole stream), not "bind.orders"'),
    });
  });

  it('manage must be a boolean', async () => {
    expect(() => new EventBus({ nats: { servers: nats.url }, jetstream: { manage: 'no' as never } })).toThrow(InvalidOptionsError);
  });
});
