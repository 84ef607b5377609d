import { EventBusError, InvalidMessageError, MessageStorageError, StoredMessageNotFoundError } from './event-bus.errors';

/**
 * The one table from an error to the status a requester is answered with
 * (`Nats-Service-Error-Code`): the caller's fault is 4xx, ours or a dependency's 5xx.
 */
export function replyStatusOf(err: unknown): number {
  if (err instanceof StoredMessageNotFoundError) return 404;
  if (err instanceof MessageStorageError) return 503;
  if (err instanceof InvalidMessageError) return 400;
  if (err instanceof EventBusError) return 400;
  return 500;
}
