import type { NatsConnectionOptions } from '../nats/nats-client.options';

/** How the bus behaves, independent of where its storage comes from. */
export interface EventBusCoreOptions {
  /** NATS connection options; `servers` is required, the rest is defaulted (see `NATS_CONNECTION_DEFAULTS`). */
  nats: NatsConnectionOptions;
  /**
   * Bodies above this many bytes are stored and sent as a claim-check envelope.
   * Default: the server's max_payload minus 8 KiB for headers. Never above that.
   */
  largeMessageThreshold?: number;
  /** Default `rpcRequest` timeout in ms. Default 10000. */
  rpcTimeoutMs?: number;
  /** Handlers running at once, per subscription. Default 64. */
  maxConcurrentHandlers?: number;
  /**
   * Messages waiting for a free handler slot, per subscription. Past this, messages are dropped
   * and a slow-consumer line naming the subject is logged. Default 10000.
   */
  maxPendingMessages?: number;
  /** On close, how long in-flight handlers may run before connections close anyway, in ms. Default 10000. */
  shutdownTimeoutMs?: number;
}

export const EVENT_BUS_DEFAULTS = {
  rpcTimeoutMs: 10_000,
  maxConcurrentHandlers: 64,
  maxPendingMessages: 10_000,
  shutdownTimeoutMs: 10_000,
} as const;

/** Options of one subscription. */
export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. Default: none (every subscriber gets it). */
  queue?: string;
  /** Named consumer connection to subscribe on. Default `'default'`. Created on first use. */
  consumer?: string;
  /** Overrides `maxConcurrentHandlers` for this subscription. */
  maxConcurrent?: number;
}

export interface PublishOptions {
  /** NATS headers to send along. */
  headers?: Record<string, string>;
}

export interface RpcRequestOptions extends PublishOptions {
  /** Milliseconds to wait for the reply. Default `rpcTimeoutMs` (10000). */
  timeout?: number;
}
