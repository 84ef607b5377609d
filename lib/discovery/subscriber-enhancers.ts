import { EXCEPTION_FILTERS_METADATA, GUARDS_METADATA, INTERCEPTORS_METADATA, PIPES_METADATA } from '@nestjs/common/constants';
import { ApplicationConfig, ExternalContextCreator } from '@nestjs/core';
import { isObservable, lastValueFrom } from 'rxjs';
import { MessageContext, MessageHandler } from '../delivery/message-context';
import { DEFAULT_SUBSCRIBE_ARGS, SUBSCRIBE_ARGS_METADATA, SubscribeParamsFactory, SubscribeParamtype } from './subscribe-params.factory';

// Where the defaults of methods without parameter decorators are kept: a key of ours, so that
// Nest's own metadata on the user's class is never written to.
const DEFAULTED_ARGS_METADATA = 'nestjs-nats-eventbus:subscribe-args';

/**
 * Calls a `@Subscribe` method the way Nest calls a `@MessagePattern` one: through its pipes,
 * guards, interceptors and exception filters (bound on the method, the class, or globally), in an
 * execution context of type `'rpc'` whose data is the payload and whose context is the
 * `MessageContext`. A method with no enhancer at all is called directly, at no cost.
 */
export class SubscriberEnhancers {
  private readonly params = new SubscribeParamsFactory();

  private readonly contextCreator: ExternalContextCreator;

  constructor(contextCreator: ExternalContextCreator) {
    this.contextCreator = payloadOnlyPipes(contextCreator);
  }

  /** The function the bus calls for each message of `instance[method]`. */
  callable(instance: Record<string, any>, method: string): MessageHandler {
    const callback = instance[method] as (...args: unknown[]) => unknown;
    const bound = this.boundEnhancers(instance, callback);
    const ctor = instance.constructor;
    // `@Payload('field')` / `@Ctx()` on the parameters need the context machinery too.
    const decorated = Reflect.getMetadata(SUBSCRIBE_ARGS_METADATA, ctor, method);
    if (!bound.pipes && !bound.guards && !bound.interceptors && !bound.filters && !decorated)
      return (payload: unknown, ctx: MessageContext) => callback.call(instance, payload, ctx);
    // Parameters are resolved (one promise each) only when pipes or decorators need them; otherwise
    // Nest passes the call's arguments `(payload, ctx)` through as they are.
    if (decorated || bound.pipes) Reflect.defineMetadata(DEFAULTED_ARGS_METADATA, decorated ?? DEFAULT_SUBSCRIBE_ARGS, ctor, method);
    const call = this.contextCreator.create(
      instance,
      callback,
      method,
      DEFAULTED_ARGS_METADATA,
      this.params,
      undefined,
      undefined,
      // Without filters of its own, a throw goes straight to the bus, which logs it once (Nest's
      // fallback filter would log it again).
      { guards: true, interceptors: true, filters: bound.filters },
      'rpc',
    ) as MessageHandler;
    if (!bound.filters) return call;
    return async (payload: unknown, ctx: MessageContext) => {
      const result = await call(payload, ctx);
      // An exception filter may answer with an Observable, as rpc filters do.
      return isObservable(result) ? lastValueFrom(result) : result;
    };
  }

  /** Which kinds of enhancer apply to this method: bound on it, on its class, or globally. */
  private boundEnhancers(instance: object, callback: object): Record<'pipes' | 'guards' | 'interceptors' | 'filters', boolean> {
    const config = this.applicationConfig();
    const has = (key: string, ...global: Array<unknown[] | undefined>) =>
      global.some((g) => !!g?.length) ||
      !!Reflect.getMetadata(key, callback)?.length ||
      !!Reflect.getMetadata(key, instance.constructor)?.length;
    return {
      pipes: has(PIPES_METADATA, config?.getGlobalPipes(), config?.getGlobalRequestPipes()),
      guards: has(GUARDS_METADATA, config?.getGlobalGuards(), config?.getGlobalRequestGuards()),
      interceptors: has(INTERCEPTORS_METADATA, config?.getGlobalInterceptors(), config?.getGlobalRequestInterceptors()),
      filters: has(EXCEPTION_FILTERS_METADATA, config?.getGlobalFilters(), config?.getGlobalRequestFilters()),
    };
  }

  // The application's global enhancers (`app.useGlobalPipes`, `APP_GUARD`, …) live on its config,
  // which Nest's context creator holds.
  private applicationConfig(): ApplicationConfig | undefined {
    return (this.contextCreator as unknown as { container?: { applicationConfig?: ApplicationConfig } }).container?.applicationConfig;
  }
}

/**
 * Nest's context creator with the pipes bound on the method, the class or the app applied to the
 * payload only, as with `@MessagePattern`: left to itself it runs them on every parameter, so a
 * pipe that returns undefined wiped the `MessageContext`. A `@Ctx(pipe)` keeps the pipes it names.
 */
function payloadOnlyPipes(creator: ExternalContextCreator): ExternalContextCreator {
  const own = creator.createPipesFn as ExternalContextCreator['createPipesFn'] | undefined;
  // Nest 11 and 12 both have it; should a later Nest not, its own behaviour stands.
  if (typeof own !== 'function') return creator;
  const scoped = Object.create(creator) as ExternalContextCreator;
  scoped.createPipesFn = function (pipes, params) {
    const payload = (type: unknown) => Number(type) === SubscribeParamtype.PAYLOAD;
    const moved = params.map((p) => (payload(p.type) ? { ...p, pipes: [...pipes, ...p.pipes] } : p));
    return own.call(this, [], moved);
  };
  return scoped;
}
