/**
 * Tracing and metrics through a real OpenTelemetry SDK (in-memory exporters) against real
 * nats-server and redis-server: one trace per hop, spans per the messaging conventions, exact
 * metric values after a known workload, and trace ids in the bus's log lines.
 */
import { connect, headers as natsHeaders, NatsConnection } from '@nats-io/transport-node';
import { trace } from '@opentelemetry/api';
import { ReadableSpan } from '@opentelemetry/sdk-trace';
import { EventBus, RemoteHandlerError, RpcTimeoutError } from '../../lib';
import { BusTelemetry } from '../../lib/telemetry/bus-telemetry';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { bigPayload, MiB, waitUntil } from '../harness/wait';
import { registerSdk, SpanKind, TestSdk } from './otel-sdk';

const SYSTEM = { 'messaging.system': 'nats' };

describe('telemetry with an OpenTelemetry SDK', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let sdk: TestSdk;
  let raw: NatsConnection;
  let logs: LogCapture;
  const buses = new TestBuses();
  let pub: EventBus;
  let sub: EventBus;

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    // Registered before the buses start, as an app registers it before NestFactory.create.
    sdk = registerSdk();
    logs = captureLogs();
    pub = (await buses.withRedis(nats.url, redis.url, 'otel:')).bus;
    sub = (await buses.withRedis(nats.url, redis.url, 'otel:')).bus;
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await buses.closeAll();
    logs?.restore();
    await sdk?.shutdown();
    await Promise.allSettled([nats?.dispose(), redis?.dispose()]);
  });

  beforeEach(() => sdk.spans.reset());

  it('is on when an SDK was registered before the bus started, off with telemetry: false', () => {
    const on = new BusTelemetry();
    on.start(true);
    expect(on.on).toBe(true);
    const off = new BusTelemetry();
    off.start(false);
    expect(off.on).toBe(false);
  });

  const one = (name: string): ReadableSpan => {
    const found = sdk.named(name);
    expect({ name, count: found.length }).toEqual({ name, count: 1 });
    return found[0];
  };
  const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

  it('publish → handler is one trace: a PRODUCER send span, a CONSUMER process span the handler runs in', async () => {
    const seen: Array<{ traceId?: string; spanId?: string }> = [];
    await sub.subscribe('otel.small', () => {
      const ctx = trace.getActiveSpan()?.spanContext();
      seen.push({ traceId: ctx?.traceId, spanId: ctx?.spanId });
    });
    const wire: string[] = [];
    const tap = raw.subscribe('otel.small', { callback: (_e, m) => void wire.push(m.headers?.get('traceparent') ?? '') });
    await raw.flush();
    await pub.publish('otel.small', { n: 1 });
    await waitUntil(() => seen.length === 1 && sdk.named('process otel.small').length === 1 && wire.length === 1, 'handler ran');
    tap.unsubscribe();

    const send = one('send otel.small');
    const process = one('process otel.small');
    expect(send.kind).toBe(SpanKind.PRODUCER);
    expect(process.kind).toBe(SpanKind.CONSUMER);
    expect(send.attributes).toMatchObject({
      ...SYSTEM,
      'messaging.destination.name': 'otel.small',
      'messaging.operation.type': 'send',
      'messaging.message.body.size': Buffer.byteLength('{"n":1}'),
    });
    expect(process.attributes).toMatchObject({
      ...SYSTEM,
      'messaging.destination.name': 'otel.small',
      'messaging.operation.type': 'process',
      'messaging.message.body.size': 7,
    });
    expect(process.spanContext().traceId).toBe(send.spanContext().traceId);
    expect(parentOf(process)).toBe(send.spanContext().spanId);
    // trace.getActiveSpan() in the handler is the process span, in the publisher's trace.
    expect(seen[0]).toEqual({ traceId: send.spanContext().traceId, spanId: process.spanContext().spanId });
    // On the wire: W3C traceparent of the send span.
    expect(wire[0]).toBe(`00-${send.spanContext().traceId}-${send.spanContext().spanId}-01`);
  });

  it('a 2 MiB claim-checked message: one trace, with store and recover child spans carrying the byte count', async () => {
    const payload = bigPayload(2 * MiB);
    const bytes = Buffer.byteLength(JSON.stringify(payload));
    const got: string[] = [];
    await sub.subscribe('otel.big', (p: { text: string }, ctx) => {
      got.push(`${ctx.recovered}:${p.text.length}:${trace.getActiveSpan()?.spanContext().traceId}`);
    });
    await pub.publish('otel.big', payload);
    await waitUntil(() => got.length === 1 && sdk.named('process otel.big').length === 1, 'big handler ran');

    const send = one('send otel.big');
    const store = one('claim-check store otel.big');
    const process = one('process otel.big');
    const recover = one('claim-check recover otel.big');
    const traceId = send.spanContext().traceId;
    expect(got[0]).toBe(`true:${payload.text.length}:${traceId}`);
    for (const s of [store, process, recover]) expect(s.spanContext().traceId).toBe(traceId);
    expect(parentOf(store)).toBe(send.spanContext().spanId);
    expect(parentOf(process)).toBe(send.spanContext().spanId);
    expect(parentOf(recover)).toBe(process.spanContext().spanId);
    expect(store.attributes['eventbus.claimcheck.bytes']).toBe(bytes);
    expect(recover.attributes['eventbus.claimcheck.bytes']).toBe(bytes);
    // The body size is the message's, not its envelope's.
    expect(send.attributes['messaging.message.body.size']).toBe(bytes);
    expect(process.attributes['messaging.message.body.size']).toBe(bytes);
  });

  it('an rpc with a large reply: CLIENT send and SERVER process in one trace, the reply stored and recovered inside them', async () => {
    const reply = bigPayload(2 * MiB, 'reply');
    await sub.subscribe('otel.rpc', () => reply, { queue: 'workers' });
    const answer = await pub.rpcRequest<{ id: string }>('otel.rpc', { q: 1 });
    expect(answer.id).toBe('reply');
    await waitUntil(() => sdk.named('process otel.rpc').length === 1, 'server span ended');

    const send = one('send otel.rpc');
    const process = one('process otel.rpc');
    const store = one('claim-check store otel.rpc');
    const recover = one('claim-check recover otel.rpc');
    expect(send.kind).toBe(SpanKind.CLIENT);
    expect(process.kind).toBe(SpanKind.SERVER);
    expect(process.attributes['messaging.consumer.group.name']).toBe('workers');
    expect(parentOf(process)).toBe(send.spanContext().spanId);
    // The server stores the reply inside its process span; the client recovers it inside its send span.
    expect(parentOf(store)).toBe(process.spanContext().spanId);
    expect(parentOf(recover)).toBe(send.spanContext().spanId);
    expect(recover.attributes['eventbus.claimcheck.bytes']).toBe(Buffer.byteLength(JSON.stringify(reply)));
    // The body size on both ends is the request's, not the large reply's.
    expect(send.attributes['messaging.message.body.size']).toBe(Buffer.byteLength('{"q":1}'));
    expect(process.attributes['messaging.message.body.size']).toBe(Buffer.byteLength('{"q":1}'));
    for (const s of [process, store, recover]) expect(s.spanContext().traceId).toBe(send.spanContext().traceId);
  });

  it('a throwing handler gives ERROR spans on both ends of an rpc, and its log line carries the trace id', async () => {
    await sub.subscribe('otel.throw', () => {
      throw new Error('boom');
    });
    logs.clear();
    await expect(pub.rpcRequest('otel.throw', {})).rejects.toBeInstanceOf(RemoteHandlerError);
    await waitUntil(() => sdk.named('process otel.throw').length === 1, 'server span ended');

    const send = one('send otel.throw');
    const process = one('process otel.throw');
    expect(send.status.code).toBe(2);
    expect(send.attributes['error.type']).toBe('REMOTE_HANDLER_ERROR');
    expect(process.status).toEqual({ code: 2, message: 'boom' });
    expect(process.attributes['error.type']).toBe('Error');
    expect(process.events.map((e) => e.name)).toContain('exception');
    const traceId = process.spanContext().traceId;
    expect(logs.matching(/handler for "otel.throw" failed: boom/)).toEqual([`handler for "otel.throw" failed: boom (trace_id=${traceId})`]);
  });

  it('an rpc that times out is an ERROR send span', async () => {
    await sub.subscribe('otel.slow', () => new Promise((r) => setTimeout(r, 1500)));
    await expect(pub.rpcRequest('otel.slow', {}, { timeout: 200 })).rejects.toBeInstanceOf(RpcTimeoutError);
    const send = one('send otel.slow');
    expect(send.status.code).toBe(2);
    expect(send.attributes['error.type']).toBe('RPC_TIMEOUT');
  });

  it('a peer that sends no trace headers (the Python services) starts a new trace', async () => {
    const got: string[] = [];
    await sub.subscribe('otel.peer', () => void got.push(trace.getActiveSpan()?.spanContext().traceId ?? 'none'));
    raw.publish('otel.peer', JSON.stringify({ from: 'python' }));
    const h = natsHeaders();
    h.set('x-other', '1');
    raw.publish('otel.peer', JSON.stringify({ from: 'go' }), { headers: h });
    await waitUntil(() => got.length === 2 && sdk.named('process otel.peer').length === 2, 'peer messages handled');
    const spans = sdk.named('process otel.peer');
    for (const s of spans) expect(s.parentSpanContext).toBeUndefined();
    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(2);
    expect(got.sort()).toEqual(spans.map((s) => s.spanContext().traceId).sort());
  });

  it('counts exactly: N sent, N consumed, K offloaded and recovered, their bytes', async () => {
    const N = 7;
    const K = 2;
    const big = bigPayload(MiB + 100_000, 'm');
    const bigBytes = Buffer.byteLength(JSON.stringify(big));
    let handled = 0;
    await sub.subscribe('otel.count', () => void handled++);
    for (let i = 0; i < N - K; i++) await pub.publish('otel.count', { i });
    for (let i = 0; i < K; i++) await pub.publish('otel.count', big);
    await waitUntil(() => handled === N && sdk.named('process otel.count').length === N, 'all handled');

    const at = { 'messaging.destination.name': 'otel.count' };
    const sum = async (name: string, attrs: Record<string, unknown> = {}) =>
      (await sdk.points(name, { ...at, ...attrs })).reduce((n, p) => n + (typeof p.value === 'number' ? p.value : p.value.count), 0);
    expect(await sum('messaging.client.sent.messages', { 'messaging.operation.name': 'publish' })).toBe(N);
    expect(await sum('messaging.client.consumed.messages')).toBe(N);
    expect(await sum('messaging.process.duration')).toBe(N); // histogram: its count
    expect(await sum('messaging.client.operation.duration')).toBe(N);
    expect(await sum('eventbus.claimcheck.stored')).toBe(K);
    expect(await sum('eventbus.claimcheck.recovered')).toBe(K);
    expect(await sum('eventbus.claimcheck.bytes', { 'eventbus.claimcheck.operation': 'store' })).toBe(K * bigBytes);
    expect(await sum('eventbus.claimcheck.bytes', { 'eventbus.claimcheck.operation': 'recover' })).toBe(K * bigBytes);
    // No failure, so no error.type on any of them.
    for (const p of await sdk.points('messaging.client.consumed.messages', at)) expect(p.attributes['error.type']).toBeUndefined();
  });

  it('failures are counted with error.type', async () => {
    await sub.subscribe('otel.fails', () => {
      throw new Error('nope');
    });
    await expect(pub.rpcRequest('otel.fails', {})).rejects.toBeInstanceOf(RemoteHandlerError);
    await waitUntil(
      async () => (await sdk.points('messaging.client.consumed.messages', { 'messaging.destination.name': 'otel.fails' })).length === 1,
      'counted',
    );
    const [consumed] = await sdk.points('messaging.client.consumed.messages', { 'messaging.destination.name': 'otel.fails' });
    expect(consumed.attributes['error.type']).toBe('Error');
    const [sent] = await sdk.points('messaging.client.sent.messages', { 'messaging.destination.name': 'otel.fails' });
    expect(sent.attributes['error.type']).toBe('REMOTE_HANDLER_ERROR');
    expect(sent.value).toBe(1);
  });

  it('reports dropped and shed messages from the byte budgets', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await sub.subscribe('otel.shed', () => gate, { maxConcurrent: 1, maxHeldBytes: 1000 });
    for (let i = 0; i < 5; i++) await pub.publish('otel.shed', { pad: 'x'.repeat(400) });
    await waitUntil(() => sub.subscriptionStats().some((s) => s.subject === 'otel.shed' && s.shed > 0), 'shed');
    const shed = sub.subscriptionStats().find((s) => s.subject === 'otel.shed')!.shed;
    const [point] = await sdk.points('eventbus.messages.shed', { 'messaging.destination.name': 'otel.shed' });
    expect(point.value).toBe(shed);
    release();
  });

  it('a persisted publish to a durable subscription (JetStream) is one trace too', async () => {
    const durableBus = (
      await buses.withRedis(nats.url, redis.url, 'otel:', {
        jetstream: { streams: [{ name: 'OTEL', subjects: ['otel.durable.>'], maxAgeSeconds: 3600 }] },
      })
    ).bus;
    const seen: Array<string | undefined> = [];
    await durableBus.subscribe('otel.durable.x', () => void seen.push(trace.getActiveSpan()?.spanContext().spanId), { durable: 'otel-d' });
    await durableBus.publish('otel.durable.x', { n: 1 }, { persist: true });
    await waitUntil(() => seen.length === 1 && sdk.named('process otel.durable.x').length === 1, 'durable handler ran');
    const send = one('send otel.durable.x');
    const process = one('process otel.durable.x');
    expect(process.spanContext().traceId).toBe(send.spanContext().traceId);
    expect(process.parentSpanContext?.spanId).toBe(send.spanContext().spanId);
    expect(process.attributes['messaging.consumer.group.name']).toBe('otel-d');
    expect(send.attributes['messaging.message.body.size']).toBe(Buffer.byteLength('{"n":1}'));
    expect(seen).toEqual([process.spanContext().spanId]);
  });

  it('with telemetry: false, a bus makes no spans and sends no trace headers', async () => {
    const off = (await buses.withRedis(nats.url, redis.url, 'otel:', { telemetry: false })).bus;
    const got: unknown[] = [];
    await off.subscribe('otel.off', () => void got.push(trace.getActiveSpan()));
    const wire: boolean[] = [];
    const tap = raw.subscribe('otel.off', { callback: (_e, m) => void wire.push(m.headers?.has('traceparent') ?? false) });
    await raw.flush();
    await off.publish('otel.off', { n: 1 });
    await waitUntil(() => got.length === 1 && wire.length === 1, 'handled');
    tap.unsubscribe();
    expect(got).toEqual([undefined]);
    expect(wire).toEqual([false]);
    expect(sdk.spans.getFinishedSpans().filter((s) => s.name.includes('otel.off'))).toEqual([]);
  });
});
