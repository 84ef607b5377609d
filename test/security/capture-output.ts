import { ConsoleLogger, Logger, LoggerService } from '@nestjs/common';

/**
 * Captures everything a test run could print: the Nest logger (the app's and the static one),
 * `process.stdout`/`process.stderr` writes, and `console.*`. `text()` joins it all, to grep for
 * secrets. `restore()` puts everything back.
 */
export interface CapturedOutput {
  readonly logger: LoggerService;
  text(): string;
  clear(): void;
  restore(): void;
}

export function captureOutput(): CapturedOutput {
  const lines: string[] = [];
  const keep = (...parts: unknown[]) => {
    lines.push(
      parts.map((p) => (p instanceof Error ? `${p.message}\n${p.stack ?? ''}` : typeof p === 'string' ? p : safeJson(p))).join(' '),
    );
  };
  const logger: LoggerService = {
    log: keep,
    error: keep,
    warn: keep,
    debug: keep,
    verbose: keep,
    fatal: keep,
  };
  const out = process.stdout.write;
  const err = process.stderr.write;
  const consoleMethods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const savedConsole = consoleMethods.map((m) => console[m]);
  process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
    keep(String(chunk));
    return out.call(process.stdout, chunk as string, ...(rest as []));
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    keep(String(chunk));
    return err.call(process.stderr, chunk as string, ...(rest as []));
  }) as typeof process.stderr.write;
  for (const m of consoleMethods) console[m] = (...args: unknown[]) => keep(...args);
  Logger.overrideLogger(logger);
  return {
    logger,
    text: () => lines.join('\n'),
    clear: () => void lines.splice(0),
    restore: () => {
      process.stdout.write = out;
      process.stderr.write = err;
      consoleMethods.forEach((m, i) => (console[m] = savedConsole[i]));
      Logger.overrideLogger(new ConsoleLogger());
    },
  };
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Every string of `secrets` that occurs in `text` (expected: none). */
export function leaked(text: string, secrets: string[]): string[] {
  return secrets.filter((s) => s && text.includes(s));
}
