import type { NatsOptions } from '@nestjs/microservices';
import { ClaimCheckCodec } from '../claim-check/claim-check.codec';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { MessageStorageManager } from '../storage/message-storage-manager';
import { RedisStorageManager } from '../storage/redis-storage-manager';

/** Everything `Transport.NATS` takes in `options`: `servers`, `queue`, `gracefulShutdown`, `headers`, … */
export type NestNatsOptions = NonNullable<NatsOptions['options']>;

/**
 * Options of `EventBusTransport` (server) and `EventBusClientProxy` (client): the options of
 * Nest's own NATS transport, plus the claim-check storage of `EventBusModule`.
 */
export interface EventBusTransportOptions {
  /** Passed unchanged to Nest's NATS transport (`Transport.NATS` `options`). Default: `nats://localhost:4222`. */
  nats?: NestNatsOptions;
  /**
   * Where packets too large for NATS go, e.g. a `RedisStorageManager` or (one process only) an
   * `InMemoryStorageManager`; inject `MESSAGE_STORAGE_MANAGER` to share `EventBusModule`'s.
   * Without one, a packet over the threshold fails with `PayloadTooLargeError`. The transport
   * does not close it: its owner does.
   */
  storage?: MessageStorageManager | null;
  /**
   * Serialized Nest packets above this many bytes are stored and sent as a claim-check envelope.
   * Default: the server's max_payload minus 8 KiB for headers. Never above that.
   */
  largeMessageThreshold?: number;
}

/** NATS' default max_payload, used until the server's INFO is known. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** Validates the options and builds the claim-check codec both sides share. */
export function claimCheckFor(options: EventBusTransportOptions | undefined, who: string): ClaimCheckCodec {
  if (!options || typeof options !== 'object') throw new InvalidOptionsError('options', `${who} needs { nats, storage }`);
  const { storage, largeMessageThreshold: t, nats } = options;
  if (nats !== undefined && (nats === null || typeof nats !== 'object'))
    throw new InvalidOptionsError('nats', `${who}: must be the options object of Transport.NATS`);
  if (storage != null && !(storage instanceof MessageStorageManager))
    throw new InvalidOptionsError('storage', `${who}: must be a MessageStorageManager (e.g. new RedisStorageManager(redis)) or null`);
  if (t !== undefined && (!Number.isInteger(t) || t < 1))
    throw new InvalidOptionsError('largeMessageThreshold', `must be a whole number >= 1, got ${String(t)}`);
  return new ClaimCheckCodec(storage ?? null, t);
}

/** Wait for a Redis storage that connects lazily; other storages need nothing. */
export async function readyStorage(options: EventBusTransportOptions): Promise<void> {
  if (options.storage instanceof RedisStorageManager) await options.storage.connect();
}

/** max_payload of a connected `nats` connection. */
export function maxPayloadOf(nc: { info?: { max_payload?: number } } | null | undefined): number {
  return nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
}

/** Fails at connect time when `largeMessageThreshold` is above what the server accepts. */
export function checkThreshold(codec: ClaimCheckCodec, options: EventBusTransportOptions, maxPayload: number): void {
  const t = options.largeMessageThreshold;
  const ceiling = codec.thresholdFor(maxPayload);
  if (t !== undefined && t > ceiling) {
    throw new InvalidOptionsError(
      'largeMessageThreshold',
      `${t} bytes is above what the server accepts (max_payload ${maxPayload} minus header room = ${ceiling})`,
    );
  }
}

/** Nest's error packet body (`{ status: 'error', message }`), as its RPC exception filter writes it. */
export function rpcError(message: string): { status: 'error'; message: string } {
  return { status: 'error', message };
}
