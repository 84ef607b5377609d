import { createHash } from 'node:crypto';

export const MiB = 1024 * 1024;

/** Poll `check` until it returns true or `timeoutMs` passes; then fail with `what`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

/**
 * A JSON payload whose encoding is about `bytes` bytes, with multi-byte characters so that
 * string length and byte size differ (the threshold is in bytes).
 */
export function bigPayload(bytes: number, id = 'big'): { id: string; text: string; items: number[] } {
  const unit = 'claim-check ✓ ünïcode — ';
  const unitBytes = Buffer.byteLength(unit);
  const text = unit.repeat(Math.ceil(bytes / unitBytes));
  return { id, text, items: [1, 2, 3] };
}
