/**
 * `@opentelemetry/api` installed (a devDependency here) but no SDK registered: the bus makes no
 * spans, sends no trace headers and logs no errors; handlers see no active span.
 */
import { connect, NatsConnection } from '@nats-io/transport-node';
import { trace } from '@opentelemetry/api';
import { EventBus } from '../../lib';
import { BusTelemetry } from '../../lib/telemetry/bus-telemetry';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { bigPayload, MiB, waitUntil } from '../harness/wait';

describe('telemetry with the API installed and no SDK', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses = new TestBuses();
  let bus: EventBus;

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    logs = captureLogs();
    bus = (await buses.withRedis(nats.url, redis.url, 'nosdk:')).bus;
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await buses.closeAll();
    logs?.restore();
    await Promise.allSettled([nats?.dispose(), redis?.dispose()]);
  });

  it('publish, a claim-checked publish and an rpc work, with no trace headers and no active span in handlers', async () => {
    const spans: unknown[] = [];
    await bus.subscribe('nosdk.event', () => void spans.push(trace.getActiveSpan()));
    await bus.subscribe('nosdk.rpc', (p: { n: number }) => {
      spans.push(trace.getActiveSpan());
      return { twice: p.n * 2 };
    });
    const wire: Array<string[]> = [];
    const tap = raw.subscribe('nosdk.>', { callback: (_e, m) => void wire.push(m.headers ? [...m.headers.keys()] : []) });
    await raw.flush();
    await bus.publish('nosdk.event', { n: 1 });
    await bus.publish('nosdk.event', bigPayload(2 * MiB));
    expect(await bus.rpcRequest('nosdk.rpc', { n: 21 })).toEqual({ twice: 42 });
    await waitUntil(() => spans.length === 3 && wire.length === 3, 'all handled');
    tap.unsubscribe();
    expect(spans).toEqual([undefined, undefined, undefined]);
    expect(wire).toEqual([[], [], []]);
    expect(logs.lines.filter((l) => l.level === 'error' || l.level === 'warn')).toEqual([]);
  });

  it('stays inert: with no SDK registered the bus makes no spans at all, so the hot path allocates nothing for them', () => {
    const telemetry = new BusTelemetry();
    telemetry.start(true);
    expect(telemetry.on).toBe(false);
  });
});
