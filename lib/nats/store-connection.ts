import type { NatsConnection } from '@nats-io/transport-node';
import type { ConnectionState } from './bus-connection';

/**
 * The NATS connection a store is handed by `MessageStorageManager.attachConnection`, once the bus
 * or transport it serves has opened it. A store that keeps bodies on NATS itself opens what it
 * needs (JetStream, an object store bucket) on `connection`.
 */
export interface StoreConnection {
  /** nats.js's own connection (`jetstream(connection)`, …). The bus owns it: never drain or close it. */
  readonly connection: NatsConnection;
  /** The server's `max_payload` in bytes. */
  readonly maxPayload: number;
  /** `'closed'` once the bus closed it: a store then stops using it. */
  readonly state: ConnectionState;
}
