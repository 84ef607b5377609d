import { Logger } from '@nestjs/common';

/**
 * Error lines about bad input, at most `perSecond` a second per subject. A publisher flooding a
 * subject with garbage must not turn into a log flood; what was held back is counted in one line.
 */
export class RateLimitedLog {
  private readonly windows = new Map<string, { start: number; count: number; suppressed: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly perSecond = 20,
  ) {}

  error(subject: string, message: string): void {
    const now = Date.now();
    let w = this.windows.get(subject);
    if (!w || now - w.start >= 1000) {
      if (w?.suppressed) this.logger.error(`"${subject}": ${w.suppressed} more lines like the above were not logged in 1 s`);
      // Wildcard subscriptions can see unboundedly many subjects; forget old windows rather than grow.
      if (!w && this.windows.size >= 1000) this.windows.clear();
      w = { start: now, count: 0, suppressed: 0 };
      this.windows.set(subject, w);
    }
    if (w.count++ < this.perSecond) this.logger.error(message);
    else w.suppressed++;
  }
}
