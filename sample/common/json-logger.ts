import { LoggerService } from '@nestjs/common';
import { trace } from '@opentelemetry/api';

type Level = 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';

/**
 * Writes one JSON object a line to stdout: `{ time, service, level, context, msg, ...fields }`.
 * Nest's and the library's own log lines (`Logger` from `@nestjs/common`) come through here too.
 * An object message is spread into the line, so `logger.log({ hop: 'sent', topic })` gives
 * fields that a machine can read.
 */
export class JsonLogger implements LoggerService {
  constructor(private readonly service: string) {}

  log(message: unknown, ...rest: unknown[]) {
    this.write('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]) {
    this.write('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]) {
    this.write('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]) {
    this.write('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]) {
    this.write('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]) {
    this.write('fatal', message, rest);
  }

  private write(level: Level, message: unknown, rest: unknown[]) {
    // Nest passes (message, context) or, for errors, (message, stack, context).
    const params = [...rest];
    const context = params.length > 0 && typeof params[params.length - 1] === 'string' ? (params.pop() as string) : undefined;
    const stack = level === 'error' || level === 'fatal' ? params.find((p) => typeof p === 'string') : undefined;
    const line: Record<string, unknown> = { time: new Date().toISOString(), service: this.service, level };
    if (context) line.context = context;
    if (message instanceof Error) {
      line.msg = message.message;
      line.stack = message.stack;
    } else if (message !== null && typeof message === 'object') {
      Object.assign(line, message);
    } else {
      line.msg = String(message);
    }
    if (stack) line.stack = stack;
    // OTEL=1: a line written while a message is handled names its trace, so one id follows a hop.
    const span = trace.getActiveSpan();
    if (span) line.trace_id = span.spanContext().traceId;
    process.stdout.write(JSON.stringify(line) + '\n');
  }
}
