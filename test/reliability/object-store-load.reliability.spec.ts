import { randomBytes } from 'node:crypto';
import { EventBus, ObjectStoreStorageManager } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { sha256, waitUntil } from '../harness/wait';
import { DeliveryCounter, MiB, pick, report, rssMiB, sampleRss } from './reliability-helpers';

// Issue 16: many large bodies at once through the object store (no Redis): every one arrives
// whole, once; the RSS figure is reported (no timing or memory asserts: the machine is shared).
const N = pick(200, 1000);
const BODY_BYTES = 1.5 * MiB;

describe('object store under load', () => {
  let nats: NatsServer;
  const buses: EventBus[] = [];

  beforeAll(async () => {
    nats = await NatsServer.start();
  });

  afterAll(async () => {
    await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
    await nats?.dispose();
  });

  it(`${N} large messages published in parallel all arrive whole, once; peak RSS reported`, async () => {
    const bus = (name: string) => {
      const b = new EventBus({ nats: { servers: nats.url, name } }, new ObjectStoreStorageManager({ bucket: 'load' }));
      buses.push(b);
      return b;
    };
    const publisher = bus('os-load-pub');
    const subscriber = bus('os-load-sub');
    await Promise.all([publisher.connect(), subscriber.connect()]);
    // Distinct bodies (random base64), so a mix-up of two objects could not pass the digest check below.
    const data = Array.from({ length: 8 }, () => randomBytes((BODY_BYTES * 3) / 4).toString('base64'));
    const counter = new DeliveryCounter(N);
    const corrupt: number[] = [];
    let recovered = 0;
    await subscriber.subscribe('osl.large', (p: { id: number; sha: string; data: string }, ctx) => {
      if (ctx.recovered) recovered++;
      if (sha256(p.data) !== p.sha) corrupt.push(p.id);
      counter.hit(p.id);
    });
    const baseline = rssMiB();
    const rss = sampleRss(10);
    const started = Date.now();
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, id) => {
        const body = data[id % data.length];
        return publisher.publish('osl.large', { id, sha: sha256(body), data: body });
      }),
    );
    const published = Date.now() - started;
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    await waitUntil(() => counter.received >= N - failed.length, 'every published body to arrive', 120_000);
    const elapsed = Date.now() - started;
    const peak = rss.stop();
    report('objectStore.parallelLarge', {
      messages: N,
      bodyMiB: BODY_BYTES / MiB,
      publishFailed: failed.length,
      firstFailure: failed[0],
      received: counter.received,
      recovered,
      lost: counter.lost,
      duplicated: counter.duplicated,
      corrupt: corrupt.length,
      publishAllMs: published,
      deliverAllMs: elapsed,
      baselineRssMiB: baseline,
      peakRssMiB: peak,
    });
    expect(failed).toEqual([]);
    expect(corrupt).toEqual([]);
    expect(recovered).toBe(N);
    expect(counter.lost).toBe(0);
    expect(counter.duplicated).toBe(0);
    // Room for the 120 s wait above: jest's 60 s default cut it short on a loaded machine.
  }, 180_000);
});
