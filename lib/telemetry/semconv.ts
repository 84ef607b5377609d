// OpenTelemetry messaging semantic conventions (attribute and metric names), and the bus's own.
// Spelled out here rather than taken from @opentelemetry/semantic-conventions: the messaging ones
// are in its unstable entry point, and the library should not depend on it for a dozen strings.

export const ATTR_MESSAGING_SYSTEM = 'messaging.system';
export const ATTR_DESTINATION = 'messaging.destination.name';
export const ATTR_OPERATION_TYPE = 'messaging.operation.type';
export const ATTR_OPERATION_NAME = 'messaging.operation.name';
export const ATTR_CONSUMER_GROUP = 'messaging.consumer.group.name';
export const ATTR_BODY_SIZE = 'messaging.message.body.size';
export const ATTR_ERROR_TYPE = 'error.type';
/** Bytes stored or recovered by claim-check. */
export const ATTR_CLAIMCHECK_BYTES = 'eventbus.claimcheck.bytes';
export const ATTR_CLAIMCHECK_OPERATION = 'eventbus.claimcheck.operation';

export const MESSAGING_SYSTEM = 'nats';

/** The instrumentation scope name of the library's tracer and meter. */
export const INSTRUMENTATION_NAME = 'nestjs-nats-eventbus';

export const METRIC_SENT = 'messaging.client.sent.messages';
export const METRIC_CONSUMED = 'messaging.client.consumed.messages';
export const METRIC_PROCESS_DURATION = 'messaging.process.duration';
export const METRIC_OPERATION_DURATION = 'messaging.client.operation.duration';
export const METRIC_CLAIMCHECK_STORED = 'eventbus.claimcheck.stored';
export const METRIC_CLAIMCHECK_RECOVERED = 'eventbus.claimcheck.recovered';
export const METRIC_CLAIMCHECK_BYTES = 'eventbus.claimcheck.bytes';
export const METRIC_DROPPED = 'eventbus.messages.dropped';
export const METRIC_SHED = 'eventbus.messages.shed';
export const METRIC_DEAD_LETTERS_FAILED = 'eventbus.deadletters.failed';
export const METRIC_DUPLICATES_SKIPPED = 'eventbus.messages.duplicates';

/** The `error.type` of a failure: our errors' stable `code`, else the class name. */
export function errorTypeOf(err: unknown): string {
  try {
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string' && code) return code;
    const name = (err as { constructor?: { name?: unknown } })?.constructor?.name;
    return typeof name === 'string' && name ? name : '_OTHER';
  } catch {
    return '_OTHER';
  }
}
