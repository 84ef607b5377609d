// The library's public error classes. Usage errors (bad input, options, subjects, state) live here;
// the other families have their own modules and are re-exported so every class stays importable from here.
import { EventBusError, EventBusErrorCode } from './event-bus-error';

export { EventBusError, EventBusErrorCode } from './event-bus-error';
export * from './rpc.errors';
export * from './storage.errors';
export * from './persistence.errors';

/** A body that is not UTF-8 JSON, a payload that cannot be encoded as JSON, or a malformed envelope. */
export class InvalidMessageError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidMessage;
}

/**
 * The encoded body is over the threshold and no storage is configured to take it, or the headers
 * alone leave no room under the server's max_payload for a body or an envelope.
 */
export class PayloadTooLargeError extends EventBusError {
  readonly code = EventBusErrorCode.PayloadTooLarge;
  constructor(
    readonly subject: string,
    /** Bytes that did not fit (NaN when nats.js refused without saying). */
    readonly size: number,
    readonly limit: number,
    reason = 'and no message storage is configured',
    options?: { cause?: unknown },
  ) {
    super(
      Number.isFinite(size)
        ? `payload for "${subject}" is ${size} bytes, over the ${limit}-byte limit, ${reason}`
        : `payload for "${subject}" is too large: ${reason}`,
      options,
    );
  }
}

/** A configuration value is wrong. The message names the option. */
export class InvalidOptionsError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidOptions;
  constructor(
    readonly option: string,
    /** What is wrong with it, without the option's name. */
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`invalid EventBus option "${option}": ${problem}`, options);
  }
}

/** The bus is not connected yet, or is closing/closed. */
export class NotConnectedError extends EventBusError {
  readonly code = EventBusErrorCode.NotConnected;
}

/**
 * A topic or queue name that NATS would not accept as given (whitespace or control characters, an
 * empty token, a wildcard where publishing allows none, too long). Checked before anything reaches
 * the wire, so the connection and every other subscription keep working.
 */
export class InvalidSubjectError extends EventBusError {
  readonly code = EventBusErrorCode.InvalidSubject;
  constructor(
    /** `topic` or `queue`. */
    readonly kind: 'topic' | 'queue',
    readonly value: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`invalid ${kind} ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value)}: ${problem}`, options);
  }
}
