// How a BusConnection opens its NatsConnection. Production goes straight to nats.js's `connect`;
// the testing module registers in-process hosts here, so that nats.js and everything above it run
// unchanged over a broker that opens no socket.
import { connect, NatsConnection, NatsConnectionImpl, setTransportFactory, Transport } from '@nats-io/transport-node';
import type { NatsConnectionOptions } from './bus-connection.options';
// transport-node has no `exports` map: its socket transport is reachable, and is what `connect` uses.
import { NodeTransport, nodeResolveHost } from '@nats-io/transport-node/lib/node_transport';

/** Transports of in-process brokers by host name (`<name>.nats.invalid`, a name no DNS resolves). */
const inProcessHosts = new Map<string, () => Transport>();

/** Route `hostname` to an in-process transport until the returned function is called. */
export function registerInProcessHost(hostname: string, transport: () => Transport): () => void {
  inProcessHosts.set(hostname, transport);
  return () => {
    if (inProcessHosts.get(hostname) === transport) inProcessHosts.delete(hostname);
  };
}

/**
 * nats.js's `connect`, or, while an in-process host is registered, the same connect with a
 * transport factory that sends in-process host names to their broker and every other server to
 * the socket transport nats.js would use: real connections in the same process are not changed.
 */
export async function dialNats(options: NatsConnectionOptions): Promise<NatsConnection> {
  if (inProcessHosts.size === 0) return connect(options);
  // nats.js keeps one process-wide factory, which a plain `connect()` elsewhere resets; a dial to an
  // in-process host that was handed the socket transport in between fails on the `.invalid` name, so it is tried again.
  for (let attempt = 1; ; attempt++) {
    setTransportFactory({ factory: () => new RoutingTransport(), dnsResolveFn: resolveHost });
    try {
      return await NatsConnectionImpl.connect(options);
    } catch (err) {
      if (attempt >= 3 || !targetsInProcess(options)) throw err;
    }
  }
}

function targetsInProcess(options: NatsConnectionOptions): boolean {
  const servers = Array.isArray(options.servers) ? options.servers : [options.servers ?? ''];
  return servers.some((s) => [...inProcessHosts.keys()].some((host) => s.includes(host)));
}

function resolveHost(hostname: string): Promise<string[]> {
  return inProcessHosts.has(hostname) ? Promise.resolve([hostname]) : nodeResolveHost(hostname);
}

/** Picks its transport when nats.js dials a server: an in-process broker's, or the socket one. */
class RoutingTransport implements Transport {
  private inner?: Transport;
  private readonly whenClosed: Promise<void | Error>;
  private closedNow!: (value: void | Error) => void;

  constructor() {
    this.whenClosed = new Promise((resolve) => (this.closedNow = resolve));
  }

  get lang(): string {
    return this.inner?.lang ?? 'nats.js';
  }

  get version(): string {
    return this.inner?.version ?? '';
  }

  get isClosed(): boolean {
    return this.inner?.isClosed ?? false;
  }

  get closeError(): Error | undefined {
    return this.inner?.closeError;
  }

  connect(server: Parameters<Transport['connect']>[0], opts: Parameters<Transport['connect']>[1]): Promise<void> {
    const inProcess = inProcessHosts.get(server.hostname);
    this.inner = inProcess ? inProcess() : new NodeTransport();
    void this.inner.closed().then(this.closedNow);
    return this.inner.connect(server, opts);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.inner![Symbol.asyncIterator]();
  }

  isEncrypted(): boolean {
    return this.inner?.isEncrypted() ?? false;
  }

  send(frame: Uint8Array): void {
    this.inner?.send(frame);
  }

  close(err?: Error): Promise<void> {
    if (this.inner) return this.inner.close(err);
    this.closedNow(err);
    return Promise.resolve();
  }

  disconnect(): void {
    this.inner?.disconnect();
  }

  closed(): Promise<void | Error> {
    return this.whenClosed;
  }

  discard(): void {
    this.inner?.discard();
  }
}
