import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, MessageStorageError, ObjectStoreStorageManager } from '../../lib';
import { NatsCluster } from '../harness/local-servers';
import { sc } from '../harness/text-codec';
import { bigPayload, MiB, waitUntil } from '../harness/wait';

// Issue 16: a 3-node JetStream cluster, bucket with replicas: 3. The node leading the bucket's
// stream is killed (SIGKILL) while bodies are being published. Every publish that resolved must
// have its body recoverable, byte for byte, from the surviving nodes. Compare with the Redis
// Sentinel failover in RELIABILITY.md, which loses acknowledged bodies (asynchronous replication).

const report = (line: string) => process.stdout.write(`[object-store-cluster] ${line}\n`);

describe('object store on a 3-node JetStream cluster: the bucket leader dies mid-flow', () => {
  let cluster: NatsCluster;
  let raw: NatsConnection;
  const buses: EventBus[] = [];

  /** A bus on `first` (then the other nodes), with its own manager on the R3 bucket. */
  async function busOn(first: string): Promise<{ bus: EventBus; storage: ObjectStoreStorageManager }> {
    const urls = [cluster.byName(first)!.url, ...cluster.nodes.filter((n) => n.serverName !== first).map((n) => n.url)];
    const storage = new ObjectStoreStorageManager({ bucket: 'failover', replicas: 3, operationTimeoutMs: 5000 });
    const bus = new EventBus({ nats: { servers: urls, noRandomize: true, reconnectTimeWait: 100, reconnectJitter: 0 } }, storage);
    buses.push(bus);
    await bus.connect();
    return { bus, storage };
  }

  beforeAll(async () => {
    cluster = await NatsCluster.start({ size: 3, jetstream: true });
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
    await raw?.close();
    await cluster?.dispose();
  });

  it('every body a publish reported stored is recoverable after the leader is killed', async () => {
    // Reads are counted, not timed; a publish caught by the election waits up to operationTimeoutMs.
    // The first bus creates the bucket; then we know its leader and keep clients off that node.
    await busOn('n0');
    let leader: string | undefined;
    await waitUntil(async () => !!(leader = await cluster.streamLeader('OBJ_failover')), 'a leader for OBJ_failover', 20_000);
    const other = ['n0', 'n1', 'n2'].find((n) => n !== leader)!;
    const { bus: publisher } = await busOn(other);
    raw = await connect({ servers: cluster.byName(other)!.url });
    const tokens: string[] = [];
    raw.subscribe('osc.flow', { callback: (_e, m) => void tokens.push(JSON.parse(sc.decode(m.data)).token) });
    await raw.flush();

    const total = 40;
    const sent = new Map<string, string>();
    const outcomes: Array<'ok' | unknown> = [];
    let killedAt = -1;
    // Four publishes in flight at a time; the leader is killed once a third have gone out.
    let next = 0;
    const worker = async () => {
      while (next < total) {
        const i = next++;
        const payload = bigPayload(2 * MiB, `b${i}`);
        sent.set(`b${i}`, JSON.stringify(payload));
        outcomes[i] = await publisher.publish('osc.flow', payload).then(
          () => 'ok',
          (e: unknown) => e,
        );
        if (killedAt < 0 && outcomes.filter((o) => o === 'ok').length >= total / 3) {
          killedAt = i;
          await cluster.kill(leader!);
        }
      }
    };
    const started = Date.now();
    await Promise.all([worker(), worker(), worker(), worker()]);
    const elapsed = Date.now() - started;
    const ok = outcomes.filter((o) => o === 'ok').length;
    const refused = outcomes.filter((o) => o !== 'ok');
    for (const r of refused) expect(r).toBeInstanceOf(MessageStorageError);
    expect(killedAt).toBeGreaterThanOrEqual(0);
    await raw.flush();
    await waitUntil(() => tokens.length === ok, 'one envelope per resolved publish', 10_000);
    const newLeader = await cluster.streamLeader('OBJ_failover');

    // Recover every published body with a fresh manager on a surviving node.
    const { storage: reader } = await busOn(other);
    let whole = 0;
    const lost: string[] = [];
    for (const token of tokens) {
      try {
        const body = Buffer.from(await reader.recoverMessage({ token, is_stored: true })).toString('utf8');
        const id = JSON.parse(body).id as string;
        if (sent.get(id) === body) whole++;
        else lost.push(`${token} (differs)`);
      } catch (err) {
        lost.push(`${token} (${(err as Error).message})`);
      }
    }
    report(
      `leader ${leader} killed after ${killedAt + 1} of ${total} publishes; new leader ${newLeader ?? 'none'}; ` +
        `${ok} publishes resolved, ${refused.length} refused (MessageStorageError), ${whole}/${tokens.length} bodies recovered whole, ` +
        `${lost.length} lost; ${elapsed} ms`,
    );
    expect(lost).toEqual([]);
    expect(whole).toBe(ok);
    expect(newLeader).toBeDefined();
    expect(newLeader).not.toBe(leader);
    // Publishing goes on after the failover.
    await publisher.publish('osc.flow', bigPayload(2 * MiB, 'after'));
  });
});
