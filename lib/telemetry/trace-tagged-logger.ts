import { Logger } from '@nestjs/common';
import type { BusTelemetry } from './bus-telemetry';

/**
 * The bus's logger: a line written while a span is active (about a message being handled) ends
 * with its trace id, so one id follows a message through every service's logs.
 */
export class TraceTaggedLogger extends Logger {
  constructor(
    context: string,
    private readonly telemetry: BusTelemetry,
  ) {
    super(context);
  }

  error(message: any, ...rest: any[]): void {
    super.error(this.tag(message), ...rest);
  }

  warn(message: any, ...rest: any[]): void {
    super.warn(this.tag(message), ...rest);
  }

  log(message: any, ...rest: any[]): void {
    super.log(this.tag(message), ...rest);
  }

  private tag(message: unknown): unknown {
    if (typeof message !== 'string') return message;
    const traceId = this.telemetry.traceId();
    return traceId ? `${message} (trace_id=${traceId})` : message;
  }
}
