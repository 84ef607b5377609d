// Errors of a request/reply: no answer in time, nobody listening, or the remote handler threw.
import { EventBusError, EventBusErrorCode } from './event-bus-error';

/** No reply arrived within `timeout` ms. The request was sent once and never re-sent. */
export class RpcTimeoutError extends EventBusError {
  readonly code = EventBusErrorCode.RpcTimeout;
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on "${subject}" within ${timeoutMs} ms`, options);
  }
}

/** The server knew of no subscriber for the request subject (answered at once). */
export class NoRespondersError extends EventBusError {
  readonly code = EventBusErrorCode.NoResponders;
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on "${subject}"`, options);
  }
}

/** The remote handler threw; `remoteMessage` and `remoteCode` come from the NATS service-error headers. */
export class RemoteHandlerError extends EventBusError {
  readonly code = EventBusErrorCode.RemoteHandler;
  constructor(
    readonly subject: string,
    readonly remoteMessage: string,
    readonly remoteCode: number,
  ) {
    super(`remote handler for "${subject}" failed (${remoteCode}): ${remoteMessage}`);
  }
}
