// What the rest of the app may see of a NATS connection: its state and a read-only view.
import type { ServerInfo } from '@nats-io/transport-node';

/** Connection events others may follow (the microservices transport's `on()`). */
export type BusConnectionEvent = 'disconnect' | 'reconnect' | 'update';

/**
 * Where a connection is:
 * - `new`: `connect()` not called or not finished;
 * - `connected`: publishes go straight out;
 * - `reconnecting`: the server is gone; publishes are held;
 * - `settling`: back, but still holding for one reconnect interval (see `settle`);
 * - `closed`: drained or closed; nothing more is sent.
 */
export type ConnectionState = 'new' | 'connected' | 'reconnecting' | 'settling' | 'closed';

/** What `EventBus.connections()` shows of each connection: a read-only view. */
export interface ConnectionStatus {
  readonly label: string;
  readonly state: ConnectionState;
  readonly isConnected: boolean;
  /** The server this connection is on (`host:port`), once connected. */
  readonly server: string | undefined;
  /** The server's INFO (`max_payload`, `tls_required`, …), once connected. */
  readonly serverInfo: Readonly<ServerInfo> | undefined;
  /** Round-trip time to the server in ms. */
  rtt(): Promise<number>;
  /** Resolves once the server has processed everything sent so far. */
  flush(): Promise<void>;
}
