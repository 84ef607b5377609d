import { Logger } from '@nestjs/common';
import { BoundedDispatcher } from '../../lib/delivery/bounded-dispatcher';
import { HeldBytes } from '../../lib/delivery/byte-budget';

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('BoundedDispatcher', () => {
  it('never runs more than maxConcurrent at once, and runs everything queued', async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    const gates = new Map<number, ReturnType<typeof deferred>>();
    const d = new BoundedDispatcher<number>(
      's',
      { maxConcurrent: 3, maxPending: 100, maxHeldBytes: 1e9 },
      () => 1,
      async (n) => {
        running++;
        peak = Math.max(peak, running);
        const g = deferred();
        gates.set(n, g);
        await g.promise;
        running--;
        done.push(n);
      },
      new Logger('test'),
    );
    for (let i = 0; i < 10; i++) d.push(i);
    expect(d.inFlight).toBe(3);
    expect(d.pending).toBe(7);
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setImmediate(r));
      gates.get(i)!.resolve();
    }
    await d.whenIdle();
    expect(peak).toBe(3);
    expect(done.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('drops past maxPending and logs a slow consumer naming the subject', async () => {
    const warn = jest.fn();
    const gate = deferred();
    const d = new BoundedDispatcher<number>(
      'edge.status',
      { maxConcurrent: 1, maxPending: 2, maxHeldBytes: 1e9 },
      () => 1,
      () => gate.promise,
      { warn } as unknown as Logger,
    );
    for (let i = 0; i < 5; i++) d.push(i);
    expect(d.pending).toBe(2);
    expect(d.droppedCount).toBe(2);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('slow consumer on "edge.status"'));
    gate.resolve();
    await d.whenIdle();
  });

  it('handles a long queue of synchronous work without growing the stack', async () => {
    let count = 0;
    const gate = deferred();
    let first = true;
    const d = new BoundedDispatcher<number>(
      's',
      { maxConcurrent: 1, maxPending: 1_000_000, maxHeldBytes: 1e9 },
      () => 1,
      () => {
        if (first) {
          first = false;
          return gate.promise;
        }
        count++;
      },
      new Logger('test'),
    );
    for (let i = 0; i < 200_001; i++) d.push(i);
    gate.resolve();
    await d.whenIdle();
    expect(count).toBe(200_000);
  });

  it('keeps going when a run throws synchronously', async () => {
    const seen: number[] = [];
    const d = new BoundedDispatcher<number>(
      's',
      { maxConcurrent: 1, maxPending: 10, maxHeldBytes: 1e9 },
      () => 1,
      (n) => {
        seen.push(n);
        if (n === 0) throw new Error('boom');
      },
      new Logger('test'),
    );
    d.push(0);
    d.push(1);
    await d.whenIdle();
    expect(seen).toEqual([0, 1]);
  });

  describe('byte budget', () => {
    const limits = { maxConcurrent: 10, maxPending: 100, maxHeldBytes: 1000 };

    it('sheds what would take the held bytes past the budget, counts it, names the subject; frees bytes when handlers finish', async () => {
      const warn = jest.fn();
      const gates: Array<ReturnType<typeof deferred>> = [];
      const d = new BoundedDispatcher<number>(
        'big.inline',
        limits,
        (n) => n,
        () => {
          const g = deferred();
          gates.push(g);
          return g.promise;
        },
        { warn } as unknown as Logger,
      );
      for (const n of [400, 400, 400, 100]) d.push(n);
      // 400 + 400 fit; the third 400 would make 1200; the 100 still fits.
      expect(d.inFlight).toBe(3);
      expect(d.heldBytes).toBe(900);
      expect(d.shedCount).toBe(1);
      expect(warn).toHaveBeenCalledWith(expect.stringContaining('"big.inline" is over its byte budget'));
      gates.forEach((g) => g.resolve());
      await d.whenIdle();
      expect(d.heldBytes).toBe(0);
      d.push(400);
      expect(d.shedCount).toBe(1);
      gates[gates.length - 1].resolve();
      await d.whenIdle();
    });

    it('logs a shed line and a slow-consumer line in the same second (one does not hide the other)', async () => {
      const warn = jest.fn();
      const gate = deferred();
      const d = new BoundedDispatcher<number>(
        'both',
        { maxConcurrent: 1, maxPending: 1, maxHeldBytes: 100 },
        (n) => n,
        () => gate.promise,
        {
          warn,
        } as unknown as Logger,
      );
      for (const n of [50, 60, 10, 10]) d.push(n);
      expect({ shed: d.shedCount, dropped: d.droppedCount }).toEqual({ shed: 1, dropped: 1 });
      expect(warn.mock.calls.map(([line]) => String(line).split(':')[0])).toEqual([
        '"both" is over its byte budget',
        'slow consumer on "both"',
      ]);
      gate.resolve();
      await d.whenIdle();
    });

    it('counts queued bodies too, and lets one body larger than the budget through when nothing else is held', async () => {
      const gate = deferred();
      const d = new BoundedDispatcher<number>(
        's',
        { ...limits, maxConcurrent: 1 },
        (n) => n,
        () => gate.promise,
        {
          warn: () => undefined,
        } as unknown as Logger,
      );
      d.push(5000);
      expect(d.inFlight).toBe(1);
      expect(d.heldBytes).toBe(5000);
      d.push(10);
      expect(d.shedCount).toBe(1);
      gate.resolve();
      await d.whenIdle();
      const gate2 = deferred();
      const d2 = new BoundedDispatcher<number>(
        's',
        { ...limits, maxConcurrent: 1 },
        (n) => n,
        () => gate2.promise,
        {
          warn: () => undefined,
        } as unknown as Logger,
      );
      for (const n of [300, 300, 300]) d2.push(n);
      // One running, two waiting: all three count.
      expect(d2.pending).toBe(2);
      expect(d2.heldBytes).toBe(900);
      d2.push(200);
      expect(d2.shedCount).toBe(1);
      gate2.resolve();
      await d2.whenIdle();
    });

    it('makes recoveries of stored bodies wait for room, always letting one proceed, and learns their size', async () => {
      const arrived: number[] = [];
      const gates: Array<ReturnType<typeof deferred>> = [];
      let reserving = 0;
      const d = new BoundedDispatcher<number>(
        'stored',
        { ...limits, maxHeldBytes: 8000 },
        () => 10,
        async (n, held: HeldBytes) => {
          reserving++;
          await held.reserveStored();
          reserving--;
          // Each stored body is 3000 bytes.
          held.storedArrived(3000);
          arrived.push(n);
          const g = deferred();
          gates.push(g);
          await g.promise;
        },
        { warn: () => undefined } as unknown as Logger,
      );
      for (let i = 0; i < 8; i++) d.push(i);
      await new Promise((r) => setImmediate(r));
      // The first goes alone (no size learnt yet); then the budget (8000) holds two 3000-byte bodies: the rest wait, not fetch.
      expect(arrived.length).toBe(2);
      expect(reserving).toBe(8 - arrived.length);
      expect(d.heldBytes).toBeLessThanOrEqual(8000 + 3000);
      while (arrived.length < 8) {
        gates.shift()?.resolve();
        await new Promise((r) => setImmediate(r));
        expect(d.heldBytes).toBeLessThanOrEqual(8000 + 3000);
      }
      gates.forEach((g) => g.resolve());
      await d.whenIdle();
      expect(d.heldBytes).toBe(0);
    });
  });
});
