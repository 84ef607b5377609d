import { EventBus, EventBusSubscription } from '../../lib';
import { NatsCluster } from '../harness/local-servers';
import { sleep, waitUntil } from '../harness/wait';

// A 3-node NATS cluster (routes on loopback). The bus is given all three URLs. We kill the node
// the producer and its consumer are connected to and measure the gap and the loss.

const report = (line: string) => process.stdout.write(`[nats-cluster] ${line}\n`);

describe('NATS cluster: failover and queue groups across nodes', () => {
  let cluster: NatsCluster;
  const buses: EventBus[] = [];

  /** A bus whose connections all go to `first` (no randomizing), with the other nodes as fallback. */
  async function busOn(first: number): Promise<EventBus> {
    const urls = cluster.urls;
    const servers = [urls[first], ...urls.filter((_, i) => i !== first)];
    const bus = new EventBus({
      nats: {
        servers,
        noRandomize: true,
        reconnectTimeWait: 100,
        reconnectJitter: 0,
        pingInterval: 2000,
        maxPingOut: 2,
        name: `bus-${first}`,
      },
    });
    await bus.connect();
    buses.push(bus);
    return bus;
  }

  const portOf = (bus: EventBus, conn: string) => Number(bus.connections().get(conn)!.server!.split(':').pop());

  beforeAll(async () => {
    cluster = await NatsCluster.start({ size: 3 });
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
    await cluster?.dispose();
  });

  it('queue-group subscribers on three different nodes share the work, each message once', async () => {
    const [a, b, c] = await Promise.all([busOn(0), busOn(1), busOn(2)]);
    const counts = [0, 0, 0];
    const seen = new Set<number>();
    let duplicates = 0;
    const subs: EventBusSubscription[] = [];
    for (const [i, bus] of [a, b, c].entries()) {
      subs.push(
        await bus.subscribe(
          'so.work',
          (p: { n: number }) => {
            counts[i]++;
            if (seen.has(p.n)) duplicates++;
            seen.add(p.n);
          },
          { queue: 'workers' },
        ),
      );
    }
    // Interest travels over the routes, in order per connection. Each bus then subscribes a probe
    // subject; once every node can reach every probe, it also knows every queue member.
    for (const [i, bus] of [a, b, c].entries()) subs.push(await bus.subscribe(`so.ready.${i}`, () => 'ok'));
    await waitUntil(
      async () => {
        const probes = [a, b, c].flatMap((from) =>
          [0, 1, 2].map((i) => from.rpcRequest(`so.ready.${i}`, {}, { timeout: 500 }).catch(() => null)),
        );
        return (await Promise.all(probes)).every((p) => p === 'ok');
      },
      'queue members known on every node',
      10_000,
    );
    expect(new Set([portOf(a, 'consumer:default'), portOf(b, 'consumer:default'), portOf(c, 'consumer:default')]).size).toBe(3);

    const N = 600;
    // Publish from every node, so no member is favoured by being local to the publisher.
    for (let n = 0; n < N; n++) await [a, b, c][n % 3].publish('so.work', { n });
    await waitUntil(() => seen.size === N, `all ${N} work items`, 20_000);
    await sleep(200);
    report(`queue group over 3 nodes: ${counts.join(' / ')} of ${N}, duplicates ${duplicates}`);
    expect(duplicates).toBe(0);
    expect(counts.reduce((x, y) => x + y, 0)).toBe(N);
    for (const c of counts) expect(c).toBeGreaterThan(N / 10);
    await Promise.all(subs.map((s) => s.unsubscribe()));
  });

  it('fails over when the node of the producer and consumer dies; messages keep flowing (gap and loss reported)', async () => {
    const bus = await busOn(0);
    const remote = await busOn(1); // a subscriber on another node, which stays up
    const local: Array<{ n: number; at: number }> = [];
    const far: Array<{ n: number; at: number }> = [];
    await bus.subscribe('so.flow', (p: { n: number }) => void local.push({ n: p.n, at: Date.now() }));
    await remote.subscribe('so.flow', (p: { n: number }) => void far.push({ n: p.n, at: Date.now() }));
    await remote.subscribe('so.rpc', (p: { n: number }) => ({ n: p.n * 2 }), { queue: 'rpc' });
    const victim = cluster.byPort(portOf(bus, 'producer'))!;
    expect(victim).toBe(cluster.nodes[0]);
    expect(portOf(bus, 'consumer:default')).toBe(victim.port);
    await waitUntil(
      async () => (await bus.rpcRequest('so.rpc', { n: 1 }, { timeout: 500 }).catch(() => null)) !== null,
      'rpc across nodes',
    );

    // Publish every 5 ms for ~1 s, kill the node, and go on for ~2.5 s.
    let n = 0;
    let publishErrors = 0;
    let stop = false;
    const sent: number[] = [];
    const producer = (async () => {
      while (!stop) {
        const seq = n++;
        try {
          await bus.publish('so.flow', { n: seq });
          sent.push(seq);
        } catch {
          publishErrors++;
        }
        await sleep(5);
      }
    })();
    await waitUntil(() => local.length > 100, 'flow before the kill');
    const killedAt = Date.now();
    const lastBefore = n - 1;
    await victim.stop('SIGKILL');
    const movedOn = (conn: string) => bus.connections().get(conn)!.isConnected && portOf(bus, conn) !== victim.port;
    await waitUntil(() => movedOn('producer') && movedOn('consumer:default'), 'bus reconnected to another node', 15_000);
    const reconnectedAt = Date.now();
    const newProducerPort = portOf(bus, 'producer');
    const newConsumerPort = portOf(bus, 'consumer:default');
    await waitUntil(() => local.some((m) => m.at > reconnectedAt + 1500), 'flow after the failover', 15_000);
    stop = true;
    await producer;
    const total = n;
    await waitUntil(
      () => local.some((m) => m.n === total - 1) && far.some((m) => m.n === total - 1),
      'last message at both subscribers',
      10_000,
    );
    await sleep(300);

    const measure = (got: Array<{ n: number; at: number }>) => {
      const ids = new Set(got.map((m) => m.n));
      const lost = sent.filter((s) => !ids.has(s));
      let gap = 0;
      for (let i = 1; i < got.length; i++) if (got[i].at >= killedAt - 50) gap = Math.max(gap, got[i].at - got[i - 1].at);
      return { lost, gap, duplicates: got.length - ids.size };
    };
    const l = measure(local);
    const f = measure(far);
    report(
      `killed node :${victim.port}; producer -> :${newProducerPort}, consumer -> :${newConsumerPort}; reconnected in ${reconnectedAt - killedAt} ms`,
    );
    report(`published ${total} (${sent.length} accepted, ${publishErrors} rejected), the kill after #${lastBefore}`);
    report(
      `subscriber on the killed node's bus: received ${local.length}, lost ${l.lost.length} ${JSON.stringify(l.lost.slice(0, 20))}, max gap ${l.gap} ms, duplicates ${l.duplicates}`,
    );
    report(
      `subscriber on a surviving node:      received ${far.length}, lost ${f.lost.length} ${JSON.stringify(f.lost.slice(0, 20))}, max gap ${f.gap} ms, duplicates ${f.duplicates}`,
    );

    expect(newProducerPort).not.toBe(victim.port);
    expect(newConsumerPort).not.toBe(victim.port);
    expect(publishErrors).toBe(0); // publishes during the reconnect are buffered, not rejected
    // Loss is bounded by the window around the kill: nothing published after both are back is lost.
    const afterBack = sent.filter((s) => s > lastBefore + (reconnectedAt - killedAt) / 5 + 200);
    const localIds = new Set(local.map((m) => m.n));
    expect(afterBack.filter((s) => !localIds.has(s))).toEqual([]);
    expect(l.lost.length).toBeLessThan(sent.length / 4);
    expect(l.duplicates).toBe(0);
    // Request/reply across nodes works after the failover.
    await expect(bus.rpcRequest('so.rpc', { n: 21 }, { timeout: 2000 })).resolves.toEqual({ n: 42 });
  });
});
