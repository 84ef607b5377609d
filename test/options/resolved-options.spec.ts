import { DEFAULTS } from '../../lib/options/defaults';
import { InvalidOptionsError } from '../../lib';
import { resolveBusOptions } from '../../lib/event-bus/event-bus.options';
import { resolveTransportOptions } from '../../lib/microservices/event-bus-transport.options';
import { resolveJetStreamOptions } from '../../lib/durable/durability';

// Options are resolved once, into a frozen object with every default filled in (issue 28).
describe('resolved options', () => {
  it('resolveBusOptions: defaults filled in, an undefined key keeps its default, the deprecated threshold under its new name, frozen', () => {
    const nats = { servers: 'nats://127.0.0.1:4222' };
    const resolved = resolveBusOptions({ nats, rpcTimeoutMs: undefined, maxHeldBytes: 1024, largeMessageThreshold: 2048 });
    expect(resolved).toMatchObject({ rpcTimeoutMs: DEFAULTS.bus.rpcTimeoutMs, maxHeldBytes: 1024, largeMessageThresholdBytes: 2048 });
    expect(resolved).not.toHaveProperty('largeMessageThreshold');
    expect(Object.isFrozen(resolved)).toBe(true);
    expect(() => resolveBusOptions({ nats, maxHeldBytes: 0 })).toThrow(InvalidOptionsError);
  });

  it("resolveTransportOptions: Nest's default server, the bus's limits, Nest-only keys kept out of the connection, frozen", () => {
    const resolved = resolveTransportOptions({ nats: { queue: 'q', gracePeriod: 5 }, largeMessageThresholdBytes: 4096 }, 'test');
    expect(resolved.connection).toEqual({ servers: DEFAULTS.transport.servers });
    expect(resolved.nest).toEqual({ queue: 'q', gracePeriod: 5 });
    expect(resolved.limits).toEqual({
      maxHeldBytes: DEFAULTS.bus.maxHeldBytes,
      maxConcurrent: DEFAULTS.bus.maxConcurrentHandlers,
      maxPending: DEFAULTS.bus.maxPendingMessages,
    });
    expect([resolved.thresholdBytes, resolved.telemetryOn]).toEqual([4096, true]);
    expect([Object.isFrozen(resolved), Object.isFrozen(resolved.limits), Object.isFrozen(resolved.nest)]).toEqual([true, true, true]);
    expect(() => resolveTransportOptions({ maxPendingMessages: -1 }, 'test')).toThrow(InvalidOptionsError);
  });

  it("resolveJetStreamOptions: defaults filled in, frozen, the caller's stream objects left unfrozen", () => {
    const stream = { name: 'S', subjects: ['s.>'] };
    const resolved = resolveJetStreamOptions({ streams: [stream] });
    expect(resolved).toMatchObject({
      configured: true,
      apiTimeoutMs: DEFAULTS.jetstream.apiTimeoutMs,
      allowDestructiveUpdates: DEFAULTS.jetstream.allowDestructiveUpdates,
    });
    expect(Object.isFrozen(resolved.streams[0])).toBe(true);
    expect(Object.isFrozen(stream)).toBe(false);
    expect(resolveJetStreamOptions(undefined)).toMatchObject({ configured: false, streams: [] });
  });
});
