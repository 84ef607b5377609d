/** Stable error codes. Match on `err.code`, not on messages. */
export const EventBusErrorCode = {
  RpcTimeout: 'RPC_TIMEOUT',
  NoResponders: 'NO_RESPONDERS',
  RemoteHandler: 'REMOTE_HANDLER_ERROR',
  MessageStorage: 'MESSAGE_STORAGE_ERROR',
  StoredMessageNotFound: 'STORED_MESSAGE_NOT_FOUND',
  InvalidMessage: 'INVALID_MESSAGE',
  PayloadTooLarge: 'PAYLOAD_TOO_LARGE',
  InvalidOptions: 'INVALID_OPTIONS',
  NotConnected: 'NOT_CONNECTED',
  InvalidSubject: 'INVALID_SUBJECT',
  NotPersisted: 'NOT_PERSISTED',
  StoredBodyAuthentication: 'STORED_BODY_AUTHENTICATION_FAILED',
  UnknownEncryptionKey: 'UNKNOWN_ENCRYPTION_KEY',
  DeadLetterNotFound: 'DEAD_LETTER_NOT_FOUND',
} as const;
export type EventBusErrorCode = (typeof EventBusErrorCode)[keyof typeof EventBusErrorCode];

/** Base class of every error this library throws on purpose. */
export abstract class EventBusError extends Error {
  abstract readonly code: EventBusErrorCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
