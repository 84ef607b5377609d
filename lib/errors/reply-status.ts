import { HttpException } from '@nestjs/common';
import { EventBusError, InvalidMessageError, MessageStorageError, StoredMessageNotFoundError } from './event-bus.errors';

/**
 * The one table from an error to the status a requester is answered with
 * (`Nats-Service-Error-Code`): the caller's fault is 4xx, ours or a dependency's 5xx. Nest's
 * exceptions keep their own status: a guard's refusal is 403, a `ValidationPipe` failure 400.
 */
export function replyStatusOf(err: unknown): number {
  if (err instanceof StoredMessageNotFoundError) return 404;
  if (err instanceof MessageStorageError) return 503;
  if (err instanceof InvalidMessageError) return 400;
  if (err instanceof EventBusError) return 400;
  if (err instanceof HttpException) return err.getStatus();
  return 500;
}

/** The message of a Nest exception as a requester should read it: a `ValidationPipe`'s list of failures, joined. */
export function httpExceptionMessage(err: HttpException): string {
  const response = err.getResponse();
  const message = typeof response === 'object' && response !== null ? (response as { message?: unknown }).message : response;
  if (Array.isArray(message)) return message.join('; ');
  return typeof message === 'string' && message ? message : err.message;
}
