/**
 * Resolves true when `op` settles within `ms`, false otherwise. Shutdown steps use it so a
 * server that is gone cannot hold `close()` forever.
 */
export async function settleWithin(op: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([op.then(() => true, () => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
