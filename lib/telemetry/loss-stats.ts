// Kept apart from bus-metrics.ts so that the public typings (EventBus.subscriptionStats) never
// reach a file importing @opentelemetry/api, an optional peer an app may not have.

/** One subscription's losses, as `EventBus.subscriptionStats()` reports them. */
export interface LossStats {
  subject: string;
  queue?: string;
  dropped: number;
  shed: number;
  deadLettersFailed?: number;
  duplicatesSkipped?: number;
}
