import { Logger } from '@nestjs/common';
import { BoundedDispatcher } from '../../lib/delivery/bounded-dispatcher';

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
      3,
      100,
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
    const d = new BoundedDispatcher<number>('edge.status', 1, 2, () => gate.promise, { warn } as unknown as Logger);
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
      1,
      1_000_000,
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
      1,
      10,
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
});
