import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBus, SubscriptionStats } from '../../lib';
import { TestBuses } from '../harness/buses';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { captureLogs } from '../harness/log-capture';
import { MiB, sleep, waitUntil } from '../harness/wait';

// Issue 13, item 5, against real servers: a subscription holds at most its byte budget
// (`maxHeldBytes`), with large inline messages and with forged envelopes naming one large body.
describe('hardening: memory bounded in bytes per subscription', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let raw: NatsConnection;
  const buses = new TestBuses();

  const makeBus = (opts: { maxHeldBytes?: number } = {}) => buses.withRedis(nats.url, redisServer.url, 'budget:', opts);

  const statsOf = (bus: EventBus, subject: string): SubscriptionStats => bus.subscriptionStats().find((s) => s.subject === subject)!;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await buses.closeAll();
    await raw?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('600 inline ~1 MB messages to a handler that never returns: at most the default 64 MiB held, the rest shed with a logged, counted line', async () => {
    const logs = captureLogs();
    const { bus } = await makeBus();
    let calls = 0;
    const release: Array<() => void> = [];
    await bus.subscribe('budget.inline', () => {
      calls++;
      return new Promise<void>((r) => release.push(r));
    });
    const body = JSON.stringify({ text: 'i'.repeat(1_000_000) });
    let peakHeld = 0;
    for (let i = 0; i < 600; i++) {
      raw.publish('budget.inline', body);
      if (i % 50 === 49) {
        await raw.flush();
        peakHeld = Math.max(peakHeld, statsOf(bus, 'budget.inline').heldBytes);
      }
    }
    await raw.flush();
    await waitUntil(
      () => {
        const s = statsOf(bus, 'budget.inline');
        return s.running + s.waiting + s.shed + s.dropped === 600;
      },
      'all 600 accounted for',
      90_000,
    );
    const stats = statsOf(bus, 'budget.inline');
    peakHeld = Math.max(peakHeld, stats.heldBytes);
    expect(stats.maxHeldBytes).toBe(64 * MiB);
    // 64 MiB / ~1 MB: 67 messages held (64 running, 3 waiting); before, up to 10,000 could wait.
    expect(stats.running + stats.waiting).toBe(Math.floor((64 * MiB) / body.length));
    expect(peakHeld).toBeLessThanOrEqual(64 * MiB);
    expect(stats.shed).toBe(600 - stats.running - stats.waiting);
    expect(calls).toBe(64);
    expect(logs.matching(/"budget\.inline" is over its byte budget/).length).toBeGreaterThan(0);
    // Once the handlers return, the bytes are free again and new messages are taken.
    release.forEach((r) => r());
    // The three that waited run next.
    await waitUntil(() => calls === 67, 'the waiting messages run');
    release.forEach((r) => r());
    await waitUntil(() => statsOf(bus, 'budget.inline').heldBytes === 0, 'budget freed', 10_000);
    const shedBefore = statsOf(bus, 'budget.inline').shed;
    raw.publish('budget.inline', body);
    await raw.flush();
    await waitUntil(() => calls === 68, 'a message taken after the budget freed');
    release.forEach((r) => r());
    expect(statsOf(bus, 'budget.inline').shed).toBe(shedBefore);
    logs.restore();
    // 600 MB through loopback: 20 s on a quiet 2-core machine, past 60 s when other suites share it
    // (two fresh-clone CI runs on 2026-12-05 timed out at 101 s and 117 s). No assertion is on time.
  }, 180_000);

  it('64 forged envelopes naming one 4 MiB body: recoveries wait for room (no more than the budget held), and all are delivered once handlers return', async () => {
    const { bus, storage } = await makeBus({ maxHeldBytes: 16 * MiB });
    const bodyBytes = 4 * MiB;
    const envelope = await storage.storeMessage(Buffer.from(JSON.stringify({ text: 'f'.repeat(bodyBytes - 12) })));
    let running = 0;
    let peakRunning = 0;
    let peakHeld = 0;
    let delivered = 0;
    const release: Array<() => void> = [];
    await bus.subscribe('budget.forged', () => {
      running++;
      peakRunning = Math.max(peakRunning, running);
      peakHeld = Math.max(peakHeld, statsOf(bus, 'budget.forged').heldBytes);
      return new Promise<void>((r) =>
        release.push(() => {
          running--;
          delivered++;
          r();
        }),
      );
    });
    for (let i = 0; i < 64; i++) raw.publish('budget.forged', JSON.stringify(envelope));
    await raw.flush();
    await waitUntil(() => running > 0, 'the first recoveries');
    await sleep(500);
    // 16 MiB holds three 4 MiB bodies beside the waiting envelopes; before, all 64 (256 MiB) were fetched at once.
    expect(peakRunning).toBeLessThanOrEqual(4);
    expect(peakHeld).toBeLessThanOrEqual(16 * MiB + bodyBytes);
    expect(statsOf(bus, 'budget.forged').shed).toBe(0);
    // Slowed, not shed: every message gets its turn as handlers return.
    while (delivered < 64) {
      release.shift()?.();
      await sleep(5);
      peakHeld = Math.max(peakHeld, statsOf(bus, 'budget.forged').heldBytes);
      expect(running).toBeLessThanOrEqual(4);
    }
    expect(peakHeld).toBeLessThanOrEqual(16 * MiB + bodyBytes);
    await waitUntil(() => statsOf(bus, 'budget.forged').heldBytes === 0, 'budget freed');
  });

  it('refuses a byte budget that is not a positive whole number, naming the option', async () => {
    expect(() => new EventBus({ nats: { servers: nats.url }, maxHeldBytes: 0 })).toThrow(/maxHeldBytes/);
    const { bus } = await makeBus();
    await expect(bus.subscribe('budget.bad', () => undefined, { maxHeldBytes: -1 })).rejects.toThrow(/maxHeldBytes/);
  });
});
