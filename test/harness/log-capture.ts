import { ConsoleLogger, Logger, LoggerService } from '@nestjs/common';

/** One line given to the Nest logger: its level, context, message, and everything else it carried (stacks, objects). */
export interface CapturedLine {
  level: string;
  context?: string;
  message: string;
  /** The message and every other argument as text, stacks included (what a secret could hide in). */
  raw: string;
}

/** A Nest LoggerService that keeps every line, installed as the static Logger's target. */
export interface LogCapture extends LoggerService {
  lines: CapturedLine[];
  matching(re: RegExp): string[];
  clear(): void;
  restore(): void;
}

export function captureLogs(echo = false): LogCapture {
  const lines: CapturedLine[] = [];
  const keep =
    (level: string) =>
    (message: unknown, ...rest: unknown[]) => {
      const context = typeof rest[rest.length - 1] === 'string' ? (rest[rest.length - 1] as string) : undefined;
      const text = message instanceof Error ? message.message : String(message);
      lines.push({ level, context, message: text, raw: [message, ...rest].map(asText).join(' ') });
      if (echo && (level === 'error' || level === 'warn')) process.stderr.write(`${level} [${context}] ${text}\n`);
    };
  const capture: LogCapture = {
    lines,
    log: keep('log'),
    error: keep('error'),
    warn: keep('warn'),
    debug: keep('debug'),
    verbose: keep('verbose'),
    fatal: keep('fatal'),
    matching: (re) => lines.map((l) => l.message).filter((m) => re.test(m)),
    clear: () => void lines.splice(0),
    restore: () => Logger.overrideLogger(new ConsoleLogger()),
  };
  Logger.overrideLogger(capture);
  return capture;
}

/**
 * Everything a test run could print: the Nest logger (as `captureLogs`), `process.stdout` and
 * `process.stderr` writes, and `console.*`. `text()` joins it all, to grep for secrets.
 */
export interface CapturedOutput {
  readonly logger: LoggerService;
  text(): string;
  clear(): void;
  restore(): void;
}

export function captureOutput(): CapturedOutput {
  const logs = captureLogs();
  const writes: string[] = [];
  const out = process.stdout.write;
  const err = process.stderr.write;
  const consoleMethods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const savedConsole = consoleMethods.map((m) => console[m]);
  process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
    writes.push(String(chunk));
    return out.call(process.stdout, chunk as string, ...(rest as []));
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    writes.push(String(chunk));
    return err.call(process.stderr, chunk as string, ...(rest as []));
  }) as typeof process.stderr.write;
  for (const m of consoleMethods) console[m] = (...args: unknown[]) => void writes.push(args.map(asText).join(' '));
  return {
    logger: logs,
    text: () => [...logs.lines.map((l) => l.raw), ...writes].join('\n'),
    clear: () => {
      logs.clear();
      writes.splice(0);
    },
    restore: () => {
      process.stdout.write = out;
      process.stderr.write = err;
      consoleMethods.forEach((m, i) => (console[m] = savedConsole[i]));
      logs.restore();
    },
  };
}

/** Every string of `secrets` that occurs in `text` (expected: none). */
export function leaked(text: string, secrets: string[]): string[] {
  return secrets.filter((s) => s && text.includes(s));
}

function asText(p: unknown): string {
  if (p instanceof Error) return `${p.message}\n${p.stack ?? ''}`;
  if (typeof p === 'string') return p;
  try {
    return JSON.stringify(p) ?? String(p);
  } catch {
    return String(p);
  }
}
