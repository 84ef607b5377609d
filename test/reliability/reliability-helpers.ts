import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** `SOAK=1` selects the long-run sizes (`npm run soak`); otherwise the `npm test` sizes. */
export const SOAK = process.env.SOAK === '1';
export const pick = <T>(normal: T, soak: T): T => (SOAK ? soak : normal);

export { MiB } from '../harness/wait';

/**
 * Record the figures of one scenario: printed, and appended as one JSON line to the file named by
 * `RELIABILITY_FIGURES` (the soak runner reads it back for its summary).
 */
export function report(scenario: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ scenario, soak: SOAK, ...figures });
  process.stdout.write(`[reliability] ${line}\n`);
  if (process.env.RELIABILITY_FIGURES) appendFileSync(process.env.RELIABILITY_FIGURES, line + '\n');
}

export { captureLogs, LogCapture } from '../harness/log-capture';

/** Records uncaught exceptions and unhandled rejections while installed ("nothing crashes"). */
export function watchCrashes(): { errors: unknown[]; stop(): void } {
  const errors: unknown[] = [];
  const onErr = (err: unknown) => errors.push(err);
  process.on('uncaughtException', onErr);
  process.on('unhandledRejection', onErr);
  return {
    errors,
    stop: () => {
      process.off('uncaughtException', onErr);
      process.off('unhandledRejection', onErr);
    },
  };
}

/** Samples RSS every `everyMs` ms; `stop()` returns the peak in MiB. */
export function sampleRss(everyMs = 25): { stop(): number; peakMiB(): number } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    const rss = process.memoryUsage().rss;
    if (rss > peak) peak = rss;
  }, everyMs);
  return {
    peakMiB: () => Math.round(peak / (1024 * 1024)),
    stop: () => {
      clearInterval(timer);
      const rss = process.memoryUsage().rss;
      if (rss > peak) peak = rss;
      return Math.round(peak / (1024 * 1024));
    },
  };
}

export const rssMiB = () => Math.round(process.memoryUsage().rss / (1024 * 1024));

/** Count deliveries by integer id: lost and duplicated ids. */
export class DeliveryCounter {
  private readonly counts: Uint8Array;
  received = 0;
  constructor(readonly total: number) {
    this.counts = new Uint8Array(total);
  }
  hit(id: number): void {
    this.received++;
    if (id >= 0 && id < this.total && this.counts[id] < 255) this.counts[id]++;
  }
  get lost(): number {
    let n = 0;
    for (let i = 0; i < this.total; i++) if (this.counts[i] === 0) n++;
    return n;
  }
  get duplicated(): number {
    let n = 0;
    for (let i = 0; i < this.total; i++) if (this.counts[i] > 1) n++;
    return n;
  }
  lostIds(from = 0, to = this.total): number[] {
    const ids: number[] = [];
    for (let i = from; i < to; i++) if (this.counts[i] === 0) ids.push(i);
    return ids;
  }
}

/** Newest modification time of the `.ts` files under `dir`. */
function newestSource(dir: string): number {
  let latest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) latest = Math.max(latest, newestSource(full));
    else if (e.name.endsWith('.ts')) latest = Math.max(latest, statSync(full).mtimeMs);
  }
  return latest;
}

/**
 * A consumer child runs the built library (dist/), as users do: a child process has no ts-jest.
 * `npm run build` (about 12 s) when dist/ is older than lib/, the rule `npm run sample` uses too.
 */
export function ensureBuilt(): void {
  const root = join(__dirname, '..', '..');
  let built = 0;
  try {
    built = statSync(join(root, 'dist', 'index.js')).mtimeMs;
  } catch {
    /* not built */
  }
  if (built > newestSource(join(root, 'lib'))) return;
  const res = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`npm run build failed:\n${res.stdout}\n${res.stderr}`);
}
