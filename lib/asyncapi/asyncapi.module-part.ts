import { Controller, DynamicModule, Get, Header, Inject, Optional, Type } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { InvalidOptionsError } from '../errors/event-bus.errors';
import { knownKeys, string } from '../options/rules';
import { EVENT_BUS_SERVICE } from '../services/nats-service';
import type { EventBusServiceOptions } from '../services/service.options';
import { AsyncApiBusOptions, buildAsyncApiDocument } from './asyncapi-document';
import { AsyncApiRouteOptions } from './asyncapi.options';
import { discoverSubscribers } from './subscriber-catalog';

/** Injection token of the module's `asyncapi` option (the CLI reads `sends` from it). */
export const EVENT_BUS_ASYNCAPI = Symbol('EVENT_BUS_ASYNCAPI');

/**
 * `forRoot({ asyncapi })`: checks it, keeps it for the CLI, and serves the document when `path` is
 * given. `moduleOptions` is the token of the module's options (passed in: asyncapi/ imports no module/).
 */
export function withAsyncApi(
  definition: DynamicModule,
  asyncapi: AsyncApiRouteOptions | undefined,
  moduleOptions: string | symbol,
): DynamicModule {
  if (asyncapi === undefined) return definition;
  if (!asyncapi || typeof asyncapi !== 'object') throw new InvalidOptionsError('asyncapi', 'must be an object like { path: "asyncapi" }');
  knownKeys('asyncapi', asyncapi, ['path', 'sends']);
  string('asyncapi.path', asyncapi.path);
  if (asyncapi.sends !== undefined) {
    if (!Array.isArray(asyncapi.sends)) throw new InvalidOptionsError('asyncapi.sends', 'must be an array of { topic, schema?, request? }');
    asyncapi.sends.forEach((s, i) => {
      if (!s || typeof s.topic !== 'string' || !s.topic)
        throw new InvalidOptionsError(`asyncapi.sends[${i}].topic`, 'must be a non-empty string');
    });
  }
  const providers = [...(definition.providers ?? []), { provide: EVENT_BUS_ASYNCAPI, useValue: asyncapi }];
  const controllers =
    asyncapi.path === undefined
      ? definition.controllers
      : [...(definition.controllers ?? []), createAsyncApiController(asyncapi.path, moduleOptions)];
  return { ...definition, providers, ...(controllers ? { controllers } : {}) };
}

/** A controller per module, so its path can come from the options (as `/_health`'s). */
function createAsyncApiController(path: string, moduleOptions: string | symbol): Type<unknown> {
  @Controller(path)
  class EventBusAsyncApiController {
    private document?: string;

    constructor(
      private readonly modules: ModulesContainer,
      @Inject(moduleOptions) private readonly options: AsyncApiBusOptions,
      @Inject(EVENT_BUS_ASYNCAPI) private readonly asyncapi: AsyncApiRouteOptions,
      @Optional() @Inject(EVENT_BUS_SERVICE) private readonly service?: EventBusServiceOptions,
    ) {}

    /** JSON, which is also YAML: no YAML library is needed to serve or read it. */
    @Get()
    @Header('Content-Type', 'application/json; charset=utf-8')
    get(): string {
      // The app's handlers do not change after bootstrap: built once, on first request.
      this.document ??= JSON.stringify(
        buildAsyncApiDocument({
          subscribers: discoverSubscribers(this.modules),
          service: this.service,
          options: this.options,
          sends: this.asyncapi.sends,
        }),
        null,
        2,
      );
      return this.document;
    }
  }
  return EventBusAsyncApiController;
}
