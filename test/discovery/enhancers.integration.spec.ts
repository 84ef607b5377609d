import {
  ArgumentsHost,
  CallHandler,
  CanActivate,
  Catch,
  ExceptionFilter,
  ExecutionContext,
  INestApplication,
  Injectable,
  Module,
  NestInterceptor,
  PipeTransform,
  UseFilters,
  UseGuards,
  UseInterceptors,
  UsePipes,
  ValidationPipe,
} from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { IsEmail, IsString, MinLength } from 'class-validator';
import { map, Observable, of } from 'rxjs';
import { EventBus, EventBusModule, MessageContext, RemoteHandlerError, Subscribe } from '../../lib';
import { captureLogs } from '../harness/log-capture';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { MiB, sleep, waitUntil } from '../harness/wait';

// Issue 18: pipes, guards, interceptors and exception filters on @Subscribe methods, bound on the
// method, the class, or globally, for events and requests, small and claim-checked.

class EmailRequest {
  @IsEmail()
  to!: string;
  @IsString()
  @MinLength(1)
  body!: string;
}

const called: string[] = [];
const contexts: Array<{ type: string; data: unknown; subject: string }> = [];

@Injectable()
class DenyGuard implements CanActivate {
  canActivate(): boolean {
    return false;
  }
}

@Injectable()
class WrapInterceptor implements NestInterceptor {
  intercept(_ctx: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((value) => ({ wrapped: value })));
  }
}

@Injectable()
class ContextSpy implements NestInterceptor {
  intercept(ctx: ExecutionContext, next: CallHandler): Observable<unknown> {
    const rpc = ctx.switchToRpc();
    contexts.push({ type: ctx.getType(), data: rpc.getData(), subject: (rpc.getContext() as MessageContext).subject });
    return next.handle();
  }
}

@Catch()
class ToValueFilter implements ExceptionFilter {
  catch(err: Error, host: ArgumentsHost): Observable<unknown> {
    return of({ recovered: err.message, type: host.getType() });
  }
}

class UpperPipe implements PipeTransform {
  transform(value: unknown): unknown {
    return typeof value === 'string' ? value.toUpperCase() : value;
  }
}

let globalCount = 0;
class CountingInterceptor implements NestInterceptor {
  intercept(_ctx: ExecutionContext, next: CallHandler): Observable<unknown> {
    globalCount++;
    return next.handle();
  }
}

@Injectable()
class MethodBound {
  @Subscribe('enh.validate')
  @UsePipes(new ValidationPipe({ transform: true }))
  send(request: EmailRequest, ctx: MessageContext) {
    called.push('validate');
    return { isDto: request instanceof EmailRequest, to: request.to, size: request.body.length, recovered: ctx.recovered };
  }

  @Subscribe('enh.guarded')
  @UseGuards(DenyGuard)
  guarded() {
    called.push('guarded');
    return 'should not run';
  }

  @Subscribe('enh.wrapped')
  @UseInterceptors(WrapInterceptor)
  wrapped(payload: { n: number }) {
    return payload.n + 1;
  }

  @Subscribe('enh.context')
  @UseInterceptors(ContextSpy)
  context(payload: unknown) {
    called.push('context');
    return payload;
  }

  @Subscribe('enh.filtered')
  @UseFilters(ToValueFilter)
  filtered() {
    throw new Error('went wrong');
  }

  @Subscribe('enh.params')
  params(@Payload('id') id: number, @Ctx() ctx: MessageContext) {
    return { id, subject: ctx.subject };
  }

  @Subscribe('enh.plain')
  plain(payload: string) {
    return payload;
  }
}

@Injectable()
@UseGuards(DenyGuard)
class ClassGuarded {
  @Subscribe('enh.class.guarded')
  any() {
    called.push('class-guarded');
    return 'should not run';
  }
}

@Injectable()
@UsePipes(UpperPipe)
class ClassPiped {
  @Subscribe('enh.class.piped')
  echo(payload: string) {
    return payload;
  }
}

describe('Nest enhancers on @Subscribe (real servers)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let app: INestApplication;
  let bus: EventBus;

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url },
          storage: { redis: { url: redisServer.url }, keyPrefix: 'enh:' },
          health: { enabled: false },
        }),
      ],
      providers: [MethodBound, ClassGuarded, ClassPiped, DenyGuard],
    })
    class AppModule {}
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    app = moduleRef.createNestApplication({ logger: false });
    app.useGlobalInterceptors(new CountingInterceptor());
    await app.init();
    bus = app.get(EventBus);
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  beforeEach(() => {
    called.length = 0;
    contexts.length = 0;
  });

  it('a ValidationPipe on the method turns the payload into the DTO, small and claim-checked', async () => {
    const small = await bus.rpcRequest('enh.validate', { to: 'a@example.com', body: 'hi' });
    expect(small).toEqual({ isDto: true, to: 'a@example.com', size: 2, recovered: false });
    const big = await bus.rpcRequest('enh.validate', { to: 'a@example.com', body: 'x'.repeat(2 * MiB) });
    expect(big).toEqual({ isDto: true, to: 'a@example.com', size: 2 * MiB, recovered: true });
  });

  it('a validation failure answers a requester at once with remoteCode 400 and the reasons, is logged rate-limited, and the subscription keeps working', async () => {
    const logs = captureLogs();
    try {
      const started = Date.now();
      const err = await bus.rpcRequest('enh.validate', { body: '' }, { timeout: 5000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteHandlerError);
      expect((err as RemoteHandlerError).remoteCode).toBe(400);
      expect((err as RemoteHandlerError).remoteMessage).toMatch(/to must be an email/);
      expect(Date.now() - started).toBeLessThan(1000);
      // An event that fails validation never reaches the handler either.
      await bus.publish('enh.validate', { to: 'nope' });
      await sleep(200);
      expect(called).toEqual([]);
      expect(logs.matching(/message on "enh\.validate" refused \(400\)/).length).toBeGreaterThan(0);
      expect(await bus.rpcRequest('enh.validate', { to: 'b@example.com', body: 'ok' })).toMatchObject({ to: 'b@example.com' });
    } finally {
      logs.restore();
    }
  });

  it('a guard on the method or on the class refuses: the handler is not called, a requester gets remoteCode 403 at once', async () => {
    for (const topic of ['enh.guarded', 'enh.class.guarded']) {
      const err = await bus.rpcRequest(topic, {}, { timeout: 5000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteHandlerError);
      expect((err as RemoteHandlerError).remoteCode).toBe(403);
      await bus.publish(topic, { event: true });
      await bus.publish(topic, { text: 'x'.repeat(2 * MiB) });
    }
    await sleep(300);
    expect(called).toEqual([]);
  });

  it('an interceptor that returns an Observable wraps the reply; the execution context is rpc, with the payload and the MessageContext', async () => {
    expect(await bus.rpcRequest('enh.wrapped', { n: 1 })).toEqual({ wrapped: 2 });
    const large = { text: 'y'.repeat(2 * MiB) };
    expect(await bus.rpcRequest('enh.context', large)).toEqual(large);
    await bus.publish('enh.context', { event: 1 });
    await waitUntil(() => contexts.length === 2, 'the event through the interceptor');
    expect(contexts[0]).toEqual({ type: 'rpc', data: large, subject: 'enh.context' });
    expect(contexts[1]).toEqual({ type: 'rpc', data: { event: 1 }, subject: 'enh.context' });
  });

  it('an exception filter turns a throw into the reply value', async () => {
    expect(await bus.rpcRequest('enh.filtered', {})).toEqual({ recovered: 'went wrong', type: 'rpc' });
  });

  it('pipes bound on the class apply to the payload; @Payload(field) and @Ctx() from @nestjs/microservices work', async () => {
    expect(await bus.rpcRequest('enh.class.piped', 'shout')).toBe('SHOUT');
    expect(await bus.rpcRequest('enh.params', { id: 7, other: 1 })).toEqual({ id: 7, subject: 'enh.params' });
  });

  it('a global interceptor (app.useGlobalInterceptors) runs for every @Subscribe handler, events and requests', async () => {
    const before = globalCount;
    expect(await bus.rpcRequest('enh.plain', 'p')).toBe('p');
    await bus.publish('enh.plain', 'e');
    await waitUntil(() => globalCount === before + 2, 'both through the global interceptor');
  });
});
