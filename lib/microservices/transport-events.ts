import type { ReplaySubject } from 'rxjs';
import type { BusConnectionEvent } from '../nats/bus-connection';

/**
 * What the stock NATS transports offer through `on()` and `status`: `disconnect`, `reconnect`
 * (with the server) and `update` (cluster changes), fed from the library's connection.
 */
export class TransportEvents {
  private readonly listeners = new Map<string, Array<(data: unknown) => void>>();

  constructor(private readonly status$: ReplaySubject<any>) {}

  on(event: string, callback: (data: unknown) => void): void {
    const list = this.listeners.get(event) ?? [];
    list.push(callback);
    this.listeners.set(event, list);
  }

  emit(event: BusConnectionEvent, data: unknown): void {
    if (event === 'disconnect') this.status$.next('disconnected');
    if (event === 'reconnect') this.status$.next('connected');
    for (const cb of this.listeners.get(event) ?? []) cb(data);
  }

  clear(): void {
    this.listeners.clear();
  }
}
