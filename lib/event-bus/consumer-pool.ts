import { Logger } from '@nestjs/common';
import { InvalidOptionsError, NotConnectedError } from '../errors/event-bus.errors';
import { describeThrown } from '../errors/thrown';
import { RELEASE_TIMEOUT_MS } from '../options/defaults';
import { BusConnection } from '../nats/bus-connection';
import type { NatsConnectionOptions } from '../nats/bus-connection.options';

interface Consumer {
  options: Partial<NatsConnectionOptions>;
  client?: BusConnection;
  ready?: Promise<BusConnection>;
}

/**
 * The bus's named consumer connections, in one map. A consumer connects on first use; one that
 * fails to connect or to pass `check` is released (drained) and forgotten, so the next use tries
 * again. After `close()` nothing connects.
 */
export class ConsumerPool {
  private readonly consumers = new Map<string, Consumer>();
  private closed = false;

  constructor(
    /** The bus's connection options, under each connection's own. */
    private readonly busNats: NatsConnectionOptions,
    /** The bus's connection name; connection `x` is named `<busName>:x` unless its options name it. */
    private readonly busName: string,
    /** Runs once a consumer is connected; a throw releases it (e.g. a threshold the server refuses). */
    private readonly check: (client: BusConnection) => void,
    private readonly logger: Logger,
  ) {}

  /** Register `name` with options of its own (before its first use; later calls change nothing), and connect it. */
  add(name: string, options: Partial<NatsConnectionOptions>): Promise<BusConnection> {
    if (typeof name !== 'string' || !name) throw new InvalidOptionsError('connection', 'must be a non-empty string');
    if (!this.consumers.has(name)) this.consumers.set(name, { options });
    return this.get(name);
  }

  /** The connected client of `name`, connecting it on first use. */
  get(name: string): Promise<BusConnection> {
    if (this.closed) return Promise.reject(new NotConnectedError('EventBus is closed'));
    let consumer = this.consumers.get(name);
    if (!consumer) {
      consumer = { options: {} };
      this.consumers.set(name, consumer);
    }
    if (consumer.ready) return consumer.ready;
    const own = consumer.options;
    const client = new BusConnection(`consumer:${name}`, { ...this.busNats, ...own, name: own.name ?? `${this.busName}:${name}` });
    const entry = consumer;
    entry.client = client;
    entry.ready = client.connect().then(() => {
      this.check(client);
      return client;
    });
    entry.ready.catch((err) => {
      // Forget the attempt, keep the options: the next use connects afresh.
      if (entry.client === client) {
        entry.client = undefined;
        entry.ready = undefined;
      }
      this.logger.debug(`connection "${name}" could not start: ${describeThrown(err)}`);
      void client.drain(RELEASE_TIMEOUT_MS);
    });
    return entry.ready;
  }

  /** Live clients by name, for health checks. */
  clients(): Array<[string, BusConnection]> {
    const out: Array<[string, BusConnection]> = [];
    for (const [name, c] of this.consumers) if (c.client) out.push([name, c.client]);
    return out;
  }

  /** Drain every consumer connection (bounded); nothing connects afterwards. */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    await Promise.all(
      [...this.consumers.values()].map(async (c) => {
        // A connection still being made is waited for, then released.
        await c.ready?.catch(() => undefined);
        await c.client?.drain(timeoutMs);
      }),
    );
  }
}
