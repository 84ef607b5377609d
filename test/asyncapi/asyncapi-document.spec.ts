import { Parser } from '@asyncapi/parser';
import { Injectable, Module } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Writable } from 'node:stream';
import { resolve } from 'node:path';
import { z } from 'zod';
import { NestFactory, ModulesContainer } from '@nestjs/core';
import { buildAsyncApiDocument, discoverSubscribers, EventBusModule, MessageContext, Subscribe } from '../../lib';
import { asyncApiDocumentOf } from '../../lib/cli/asyncapi.command';
import { main } from '../../lib/cli/main';

const FIXTURE = resolve(__dirname, 'fixtures/orders.module.ts');

/** Errors (severity 0) the AsyncAPI parser finds; warnings are allowed. */
async function parserErrors(document: unknown): Promise<string[]> {
  const { diagnostics } = await new Parser().parse(JSON.stringify(document));
  return diagnostics.filter((d) => d.severity === 0).map((d) => `${d.code}: ${d.message} at ${d.path.join('.')}`);
}

function capture(): { out: Writable; text: () => string } {
  let text = '';
  const out = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { out, text: () => text };
}

describe('AsyncAPI 3.0 document from @Subscribe metadata (no connection)', () => {
  let doc: any;

  beforeAll(async () => {
    doc = await asyncApiDocumentOf(FIXTURE, 'OrdersAppModule');
  });

  it('passes @asyncapi/parser with no errors', async () => {
    expect(await parserErrors(doc)).toEqual([]);
    expect(doc.asyncapi).toBe('3.0.0');
    expect(doc.info).toEqual({ title: 'orders', version: '2.1.0', description: 'Takes and ships orders' });
  });

  it('has one channel per subject, receive operations, and a reply where the handler returns a value', () => {
    const addresses = Object.values(doc.channels).map((c: any) => c.address);
    expect(addresses.filter((a) => a !== null).sort()).toEqual([
      'billing.charge',
      'orders.audit.*',
      'orders.audit.>',
      'orders.place',
      'orders.shipped',
    ]);
    const receive = Object.values(doc.operations).filter((o: any) => o.action === 'receive') as any[];
    expect(receive.map((o) => o.summary).sort()).toEqual([
      'OrderHandlers.audit',
      'OrderHandlers.audit',
      'OrderHandlers.place',
      'OrderHandlers.shipped',
    ]);
    const place = receive.find((o) => o.summary === 'OrderHandlers.place');
    expect(place.reply.channel.$ref).toMatch(/^#\/channels\/orders_place_reply$/);
    expect(doc.channels.orders_place_reply.address).toBeNull();
    // Declared `void`, and a durable (no requester): no reply.
    for (const o of receive.filter((x) => x.summary !== 'OrderHandlers.place')) expect(o.reply).toBeUndefined();
  });

  it('gives queue groups as NATS bindings and durables and consumers as x-eventbus extensions', () => {
    const ops = Object.values(doc.operations) as any[];
    const place = ops.find((o) => o.summary === 'OrderHandlers.place');
    expect(place.bindings).toEqual({ nats: { queue: 'orders', bindingVersion: '0.1.0' } });
    const shipped = ops.find((o) => o.summary === 'OrderHandlers.shipped');
    expect(shipped['x-eventbus-durable']).toMatchObject({ name: 'orders-shipped' });
    expect(shipped['x-eventbus-consumer']).toBe('jobs');
  });

  it('derives payload schemas from a class-validator DTO and a Standard Schema (zod 4), and any JSON where none is known', () => {
    const payloadOf = (address: string) => {
      const channel: any = Object.values(doc.channels).find((c: any) => c.address === address);
      return (Object.values(channel.messages)[0] as any).payload.anyOf[0];
    };
    expect(payloadOf('orders.place')).toEqual({
      type: 'object',
      title: 'PlaceOrder',
      properties: {
        sku: { type: 'string' },
        quantity: { type: 'integer', minimum: 1 },
        notify: { type: 'string', format: 'email' },
        shipping: { enum: ['standard', 'express'] },
      },
      required: ['sku', 'quantity', 'shipping'],
    });
    // Received with an `unknown` payload and sent with a zod schema: the schema describes the channel.
    expect(payloadOf('orders.shipped')).toEqual({
      type: 'object',
      properties: { order_id: { type: 'string' }, carrier: { type: 'string', enum: ['ups', 'dhl'] } },
      required: ['order_id', 'carrier'],
    });
    expect(payloadOf('orders.audit.*')).toEqual({});
    const sends = Object.values(doc.operations).filter((o: any) => o.action === 'send') as any[];
    expect(sends).toHaveLength(2);
    expect(sends.find((o) => o.channel.$ref === '#/channels/billing_charge').reply).toBeDefined();
  });

  it('describes claim-check: the envelope schema, and the Redis key rule with the configured prefix', () => {
    expect(doc.components.schemas.ClaimCheckEnvelope).toMatchObject({
      required: ['token', 'is_stored'],
      properties: { is_stored: { const: true } },
      additionalProperties: false,
    });
    expect(doc['x-eventbus-claim-check'].storage).toEqual({
      kind: 'redis',
      key: 'orders:<token>',
      keyPrefix: 'orders:',
      ttlSeconds: 300,
      read: 'GET <key>',
    });
    // Every message may arrive as the envelope instead.
    const message: any = Object.values(doc.channels.orders_place.messages)[0];
    expect(message.payload.anyOf[1]).toEqual({ $ref: '#/components/schemas/ClaimCheckEnvelope' });
  });

  it('gives the offload threshold under largeMessageThresholdBytes or its deprecated name', () => {
    const threshold = (options: object) => (buildAsyncApiDocument({ subscribers: [], options }) as any)['x-eventbus-claim-check'].threshold;
    expect(threshold({ largeMessageThresholdBytes: 4096 })).toBe(4096);
    expect(threshold({ largeMessageThreshold: 5000 })).toBe(5000);
    expect(threshold({})).toMatch(/max_payload/);
  });

  it('lists the NATS servers without their credentials', () => {
    expect(doc.servers).toEqual({
      nats0: { host: 'nats.internal:4222', protocol: 'nats' },
      nats1: { host: 'nats2.internal:4222', protocol: 'nats' },
    });
    expect(JSON.stringify(doc)).not.toContain('secret');
  });

  it('CLI: `asyncapi --module <file> --export <name>` prints the document; bad arguments exit 2 with the usage', async () => {
    const ok = capture();
    const usage = capture();
    expect(await main(['asyncapi', '--module', FIXTURE, '--export', 'OrdersAppModule'], ok.out, capture().out)).toBe(0);
    expect(JSON.parse(ok.text())).toEqual(doc);
    expect(await main(['asyncapi'], capture().out, usage.out)).toBe(2);
    expect(await main(['asyncapi', '--module', FIXTURE, '--export', 'NoSuchModule'], capture().out, usage.out)).toBe(2);
    expect(await main(['nope'], capture().out, usage.out)).toBe(2);
    expect(usage.text()).toContain('--module is required');
    expect(usage.text()).toContain('has no export "NoSuchModule"');
    const help = capture();
    expect(await main(['--help'], help.out)).toBe(0);
    expect(help.text()).toContain('asyncapi');
  });
});

// StandardSchemaValidationPipe and @Payload({ schema }) came with Nest 12; on Nest 11 there is no schema to read.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const nest12 = Number((require('@nestjs/common/package.json') as { version: string }).version.split('.')[0]) >= 12;
(nest12 ? describe : describe.skip)('Nest 12: @Payload({ schema }) gives the payload schema', () => {
  it('takes the JSON Schema of a zod 4 schema given through @Payload({ schema })', async () => {
    const Charge = z.object({ amount: z.number().int().positive(), currency: z.string().length(3) });
    @Injectable()
    class Billing {
      @Subscribe('billing.charge')
      charge(@Payload({ schema: Charge } as never) req: z.infer<typeof Charge>, @Ctx() _ctx: MessageContext) {
        return { charged: req.amount };
      }
    }
    @Module({ imports: [EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:1' } })], providers: [Billing] })
    class BillingApp {}
    const app = await NestFactory.createApplicationContext(BillingApp, { preview: true, logger: false });
    const document: any = buildAsyncApiDocument({ subscribers: discoverSubscribers(app.get(ModulesContainer)) });
    expect(await parserErrors(document)).toEqual([]);
    const message: any = Object.values(document.channels.billing_charge.messages)[0];
    expect(message.payload.anyOf[0]).toEqual({
      type: 'object',
      properties: {
        amount: { type: 'integer', exclusiveMinimum: 0, maximum: Number.MAX_SAFE_INTEGER },
        currency: { type: 'string', minLength: 3, maxLength: 3 },
      },
      required: ['amount', 'currency'],
    });
  });
});
