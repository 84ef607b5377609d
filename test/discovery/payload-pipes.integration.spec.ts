import { INestApplication, Injectable, Module, PipeTransform, UsePipes } from '@nestjs/common';
import * as nestCommon from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { z } from 'zod';
import { EventBus, EventBusModule, MessageContext, RemoteHandlerError, Subscribe } from '../../lib';
import { NatsServer } from '../harness/local-servers';

// Pipes apply to the payload only, as with @MessagePattern: never to the MessageContext argument.

/** A pipe that answers undefined for anything: it must not reach the context. */
class WipePipe implements PipeTransform {
  static seen: unknown[] = [];
  transform(value: unknown): unknown {
    WipePipe.seen.push(value);
    return undefined;
  }
}

/** A global pipe that marks the payloads it sees, and notes whether it was ever given a MessageContext. */
class TagPipe implements PipeTransform {
  static sawContext = false;
  transform(value: unknown): unknown {
    if (value instanceof MessageContext) TagPipe.sawContext = true;
    return value && typeof value === 'object' && !(value instanceof MessageContext) ? { ...value, piped: true } : value;
  }
}

@Injectable()
class PipedHandlers {
  @Subscribe('pp.wipe')
  @UsePipes(WipePipe)
  onWipe(payload: unknown, ctx: MessageContext) {
    return { payload: payload ?? null, subject: ctx?.subject ?? null };
  }

  @Subscribe('pp.decorated')
  @UsePipes(WipePipe)
  onDecorated(@Payload() payload: unknown, @Ctx() ctx: MessageContext) {
    return { payload: payload ?? null, subject: ctx?.subject ?? null };
  }

  @Subscribe('pp.tag')
  onTag(payload: unknown, ctx: MessageContext) {
    return { payload, subject: ctx.subject };
  }
}

async function startApp(natsUrl: string, providers: unknown[], globalPipes: PipeTransform[] = []): Promise<INestApplication> {
  @Module({ imports: [EventBusModule.forRoot({ nats: { servers: natsUrl } })], providers: providers as never[] })
  class AppModule {}
  const app = (await Test.createTestingModule({ imports: [AppModule] }).compile()).createNestApplication({ logger: false });
  app.useGlobalPipes(...globalPipes);
  await app.init();
  return app;
}

describe('pipes on @Subscribe handlers run on the payload only', () => {
  let nats: NatsServer;
  let app: INestApplication | undefined;

  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await nats?.dispose();
  });

  it('a method pipe that returns undefined replaces the payload, never the ctx (with and without @Payload/@Ctx); a global pipe sees no MessageContext', async () => {
    WipePipe.seen = [];
    TagPipe.sawContext = false;
    app = await startApp(nats.url, [PipedHandlers], [new TagPipe()]);
    const bus = app.get(EventBus);
    expect(await bus.rpcRequest('pp.wipe', { a: 1 }, { timeout: 3000 })).toEqual({ payload: null, subject: 'pp.wipe' });
    expect(await bus.rpcRequest('pp.decorated', { a: 2 }, { timeout: 3000 })).toEqual({ payload: null, subject: 'pp.decorated' });
    // The global pipe ran on the payload, and only there.
    expect(await bus.rpcRequest('pp.tag', { a: 3 }, { timeout: 3000 })).toEqual({ payload: { a: 3, piped: true }, subject: 'pp.tag' });
    // The method pipe saw payloads only (the global one ran first), never a MessageContext.
    expect(WipePipe.seen).toEqual([
      { a: 1, piped: true },
      { a: 2, piped: true },
    ]);
    expect(TagPipe.sawContext).toBe(false);
  });
});

// StandardSchemaValidationPipe and @Payload({ schema }) came with Nest 12; on Nest 11 there is nothing to test.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the installed major, read at run time
const nest12 = Number((require('@nestjs/common/package.json') as { version: string }).version.split('.')[0]) >= 12;
(nest12 ? describe : describe.skip)('Nest 12 feature: @Payload({ schema }) with a Standard Schema (zod 4) on @Subscribe', () => {
  let nats: NatsServer;
  let app: INestApplication | undefined;
  const Order = z.object({ id: z.string().min(1), qty: z.number().int().positive() });

  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await nats?.dispose();
  });

  const Pipe = (nestCommon as unknown as { StandardSchemaValidationPipe: new () => PipeTransform }).StandardSchemaValidationPipe;

  @Injectable()
  class OrderHandlers {
    @Subscribe('pp.order')
    onOrder(@Payload({ schema: Order } as never) order: z.infer<typeof Order>, @Ctx() ctx: MessageContext) {
      return { ok: order.qty, subject: ctx.subject };
    }
  }

  // Defined when a test runs, not when the file loads: on Nest 11 the pipe does not exist, and
  // @UsePipes(undefined) throws as the class is defined, which would fail the whole file.
  const scopedOrderHandlers = () => {
    @Injectable()
    class ScopedOrderHandlers {
      @Subscribe('pp.order.scoped')
      @UsePipes(Pipe)
      onOrder(@Payload({ schema: Order } as never) order: z.infer<typeof Order>) {
        return { ok: order.qty };
      }
    }
    return ScopedOrderHandlers;
  };

  it('a global StandardSchemaValidationPipe validates: a valid request is answered, an invalid one gets RemoteHandlerError 400 naming the field', async () => {
    app = await startApp(nats.url, [OrderHandlers], [new Pipe()]);
    const bus = app.get(EventBus);
    expect(await bus.rpcRequest('pp.order', { id: 'o1', qty: 2 }, { timeout: 3000 })).toEqual({ ok: 2, subject: 'pp.order' });
    const err = await bus.rpcRequest('pp.order', { id: 'o1', qty: -1 }, { timeout: 3000 }).catch((e: RemoteHandlerError) => e);
    expect(err).toBeInstanceOf(RemoteHandlerError);
    expect((err as RemoteHandlerError).remoteCode).toBe(400);
    expect((err as RemoteHandlerError).remoteMessage).toMatch(/qty/);
  });

  it('@UsePipes(StandardSchemaValidationPipe) on the method validates the same way', async () => {
    app = await startApp(nats.url, [scopedOrderHandlers()]);
    const bus = app.get(EventBus);
    expect(await bus.rpcRequest('pp.order.scoped', { id: 'o2', qty: 1 }, { timeout: 3000 })).toEqual({ ok: 1 });
    const err = await bus.rpcRequest('pp.order.scoped', { id: '', qty: 1 }, { timeout: 3000 }).catch((e: RemoteHandlerError) => e);
    expect(err).toBeInstanceOf(RemoteHandlerError);
    expect((err as RemoteHandlerError).remoteCode).toBe(400);
    expect((err as RemoteHandlerError).remoteMessage).toMatch(/id/);
  });
});
