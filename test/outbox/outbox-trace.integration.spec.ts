import { trace } from '@opentelemetry/api';
import { Pool } from 'pg';
import { EventBus, MessageContext } from '../../lib';
import { EventBusOutbox, OutboxRelay } from '../../lib/outbox';
import { NatsServer } from '../harness/local-servers';
import { PostgresServer, PostgresHandle } from '../harness/postgres-server';
import { TestBuses } from '../harness/buses';
import { captureLogs, LogCapture } from '../harness/log-capture';
import { waitUntil } from '../harness/wait';
import { registerSdk, TestSdk } from '../telemetry/otel-sdk';
import { freshTable, relayFor } from './outbox-fixture';

// Headers and trace context through the outbox: what publish(tx, …) was given, and the trace active
// when it was called, reach the consumer, although a relay published the message later.
describe('outbox: headers and trace context', () => {
  let nats: NatsServer;
  let postgres: PostgresHandle;
  let pool: Pool;
  let sdk: TestSdk;
  let bus: EventBus;
  let logs: LogCapture;
  let relay: OutboxRelay | undefined;
  const buses = new TestBuses();

  beforeAll(async () => {
    sdk = registerSdk();
    [nats, postgres] = await Promise.all([NatsServer.start(), PostgresServer.start()]);
    pool = new Pool({ connectionString: postgres.url, max: 5 });
    bus = buses.track(
      new EventBus({ nats: { servers: nats.url }, jetstream: { streams: [{ name: 'OBT', subjects: ['obt.>'], maxAgeSeconds: 600 }] } }),
    );
    await bus.connect();
    logs = captureLogs();
  });
  afterAll(async () => {
    await relay?.stop();
    logs?.restore();
    await buses.closeAll();
    await pool?.end();
    await sdk?.shutdown();
    await Promise.all([nats?.dispose(), postgres?.dispose()]);
  });

  it("the writer's trace and headers arrive on the consumer; the publish span is a child of the writer's span; a row written with no active span carries none", async () => {
    await freshTable(pool, 'obt_rows');
    const outbox = new EventBusOutbox(bus, 'obt_rows');
    const got: Array<{ id: string; traceparent?: string; tenant?: string }> = [];
    await bus.subscribe(
      'obt.order',
      (p: { id: string }, ctx: MessageContext) =>
        void got.push({
          id: p.id,
          traceparent: ctx.headers?.get('traceparent') || undefined,
          tenant: ctx.headers?.get('X-Tenant') || undefined,
        }),
    );
    const tracer = trace.getTracer('outbox-test');
    let writerTraceId = '';
    let writerSpanId = '';
    await tracer.startActiveSpan('checkout', async (span) => {
      writerTraceId = span.spanContext().traceId;
      writerSpanId = span.spanContext().spanId;
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await outbox.publish(client, 'obt.order', { id: 'traced' }, { headers: { 'X-Tenant': 't7' } });
        await client.query('COMMIT');
      } finally {
        client.release();
        span.end();
      }
    });
    await outbox.publish(pool, 'obt.order', { id: 'plain' });
    const stored = (await pool.query('SELECT headers::text AS h FROM obt_rows ORDER BY seq')).rows.map((r: { h: string | null }) => r.h);
    expect(JSON.parse(stored[0] as string)).toMatchObject({ 'X-Tenant': 't7', traceparent: expect.stringContaining(writerTraceId) });
    expect(stored[1]).toBeNull();

    relay = relayFor(pool, bus, 'obt_rows');
    relay.start();
    await waitUntil(() => got.length === 2, 'both relayed');

    const traced = got.find((g) => g.id === 'traced')!;
    expect(traced.tenant).toBe('t7');
    // The relay's publish ran inside the writer's trace: same trace id, a new span (the publish) as parent.
    expect(traced.traceparent?.split('-')[1]).toBe(writerTraceId);
    expect(traced.traceparent?.split('-')[2]).not.toBe(writerSpanId);
    // The relay's send span is a child of the writer's span; the consumer's process span is in the same trace.
    await waitUntil(() => sdk.named('process obt.order').length === 2, 'process spans ended');
    const send = sdk.named('send obt.order').find((sp) => sp.spanContext().traceId === writerTraceId);
    expect(send?.parentSpanContext?.spanId).toBe(writerSpanId);
    expect(sdk.named('process obt.order').filter((sp) => sp.spanContext().traceId === writerTraceId)).toHaveLength(1);
    // A row written outside any span: the relay's publish starts a trace of its own.
    const plain = got.find((g) => g.id === 'plain')!;
    expect(plain.traceparent?.split('-')[1]).not.toBe(writerTraceId);
  });
});
