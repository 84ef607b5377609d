/**
 * The @nestjs/microservices transport with a real OpenTelemetry SDK: a `send` and an `emit`
 * through EventBusClientProxy → EventBusTransport are one trace each, and the handler runs inside
 * the server's process span. Real nats-server and redis-server.
 */
import { Controller, INestApplication } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import Redis from 'ioredis';
import { trace } from '@opentelemetry/api';
import { ReadableSpan } from '@opentelemetry/sdk-trace';
import { firstValueFrom } from 'rxjs';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import { REDIS_CLIENT_DEFAULTS, RedisStorageManager } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, MiB, waitUntil } from '../harness/wait';
import { registerSdk, SpanKind, TestSdk } from './otel-sdk';

const seen: Array<{ pattern: string; traceId?: string; spanId?: string }> = [];
const active = (pattern: string) => {
  const ctx = trace.getActiveSpan()?.spanContext();
  seen.push({ pattern, traceId: ctx?.traceId, spanId: ctx?.spanId });
};

@Controller()
class Handlers {
  @MessagePattern('ms.otel.echo')
  echo(@Payload() data: unknown) {
    active('echo');
    return data;
  }

  @MessagePattern('ms.otel.big')
  big(@Payload() data: unknown) {
    void data;
    active('big');
    return bigPayload(2 * MiB, 'ms-reply');
  }

  @EventPattern('ms.otel.event')
  onEvent(@Payload() data: unknown) {
    void data;
    active('event');
  }
}

describe('microservices transport telemetry', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  let sdk: TestSdk;
  let app: INestApplication;
  let client: EventBusClientProxy;
  const storages: RedisStorageManager[] = [];
  const storage = () => {
    const s = new RedisStorageManager(new Redis(redis.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: 'msotel:' });
    storages.push(s);
    return s;
  };

  beforeAll(async () => {
    [nats, redis] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    sdk = registerSdk();
    const moduleRef = await Test.createTestingModule({ controllers: [Handlers] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    app.connectMicroservice({ strategy: new EventBusTransport({ nats: { servers: [nats.url] }, storage: storage() }) });
    await app.startAllMicroservices();
    await app.init();
    client = new EventBusClientProxy({ nats: { servers: [nats.url] }, storage: storage() });
    await client.connect();
  });

  afterAll(async () => {
    await client?.close();
    await app?.close();
    await Promise.allSettled(storages.map((s) => s.disconnect()));
    await sdk?.shutdown();
    await Promise.allSettled([nats?.dispose(), redis?.dispose()]);
  });

  beforeEach(() => {
    sdk.spans.reset();
    seen.length = 0;
  });

  const one = (name: string): ReadableSpan => {
    const found = sdk.named(name);
    expect({ name, count: found.length }).toEqual({ name, count: 1 });
    return found[0];
  };

  it('a send is one trace: CLIENT send span, SERVER process span, the handler inside it', async () => {
    expect(await firstValueFrom(client.send('ms.otel.echo', { n: 1 }))).toEqual({ n: 1 });
    await waitUntil(() => sdk.named('process ms.otel.echo').length === 1, 'server span ended');
    const send = one('send ms.otel.echo');
    const process = one('process ms.otel.echo');
    expect(send.kind).toBe(SpanKind.CLIENT);
    expect(process.kind).toBe(SpanKind.SERVER);
    expect(send.attributes).toMatchObject({ 'messaging.system': 'nats', 'messaging.destination.name': 'ms.otel.echo' });
    expect(process.parentSpanContext?.spanId).toBe(send.spanContext().spanId);
    expect(process.spanContext().traceId).toBe(send.spanContext().traceId);
    expect(seen).toEqual([{ pattern: 'echo', traceId: send.spanContext().traceId, spanId: process.spanContext().spanId }]);
  });

  it('a send with a 2 MiB reply: stored inside the server span, recovered inside the client span', async () => {
    const reply = await firstValueFrom(client.send<{ id: string }>('ms.otel.big', {}));
    expect(reply.id).toBe('ms-reply');
    await waitUntil(() => sdk.named('process ms.otel.big').length === 1, 'server span ended');
    const send = one('send ms.otel.big');
    const process = one('process ms.otel.big');
    expect(one('claim-check store ms.otel.big').parentSpanContext?.spanId).toBe(process.spanContext().spanId);
    expect(one('claim-check recover ms.otel.big').parentSpanContext?.spanId).toBe(send.spanContext().spanId);
    expect(process.spanContext().traceId).toBe(send.spanContext().traceId);
  });

  it('an emit is one trace: PRODUCER send span, CONSUMER process span', async () => {
    await firstValueFrom(client.emit('ms.otel.event', { e: 1 }), { defaultValue: undefined });
    await waitUntil(() => seen.length === 1 && sdk.named('process ms.otel.event').length === 1, 'event handled');
    const send = one('send ms.otel.event');
    const process = one('process ms.otel.event');
    expect(send.kind).toBe(SpanKind.PRODUCER);
    expect(process.kind).toBe(SpanKind.CONSUMER);
    expect(seen[0].traceId).toBe(send.spanContext().traceId);
  });
});
