/**
 * Bounded waits. Every step that waits on a server (shutdown, health, a storage operation) goes
 * through one of these, so a server that is gone cannot hold the caller forever.
 */

/** `op`, or a rejection with `onTimeout()` after `ms`. The timer never outlives the race. */
export function withTimeout<T>(op: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([op, timedOut]).finally(() => clearTimeout(timer));
}

/** True when `op` settles (either way) within `ms`, false otherwise. For shutdown steps. */
export function settleWithin(op: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = op.then(
    () => true,
    () => true,
  );
  return withTimeout(settled, ms, () => new Error('timeout')).catch(() => false);
}
