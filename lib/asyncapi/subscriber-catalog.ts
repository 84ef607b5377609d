import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { MetadataScanner, ModulesContainer } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper';
import { SUBSCRIBE_METADATA, SubscribeMetadata } from '../discovery/subscribe.decorator';
import { SubscribeParamtype } from '../discovery/subscribe-params.factory';
import type { SubscribeOptions } from '../event-bus/event-bus.options';
import type { DtoClass } from './payload-schema';

/** One `@Subscribe` as the AsyncAPI document describes it. */
export interface DiscoveredSubscriber {
  topic: string;
  options: SubscribeOptions;
  /** The class and method that handle it. */
  owner: string;
  method: string;
  /** The Standard Schema given through `@Payload({ schema })` (Nest 12), if any. */
  schema?: unknown;
  /** The payload parameter's declared class (a DTO), if it is one. */
  payloadType?: DtoClass;
  /** False when the method is declared to return `void`: it cannot reply. */
  mayReply: boolean;
}

// Declared types that say nothing about the payload's shape.
const NOT_A_DTO = new Set<unknown>([Object, String, Number, Boolean, Array, Promise, Function, undefined]);

/**
 * Every `@Subscribe` of the app's providers and controllers, read from their classes (not their
 * instances), so it works on an app context made with `{ preview: true }` that built no provider
 * and opened no connection (the CLI).
 */
export function discoverSubscribers(modules: ModulesContainer): DiscoveredSubscriber[] {
  const scanner = new MetadataScanner();
  const seen = new Set<object>();
  const found: DiscoveredSubscriber[] = [];
  for (const module of modules.values()) {
    for (const wrapper of [...module.providers.values(), ...module.controllers.values()]) {
      const prototype = prototypeOf(wrapper);
      if (!prototype || seen.has(prototype)) continue;
      seen.add(prototype);
      for (const method of scanner.getAllMethodNames(prototype)) {
        const target = (prototype as Record<string, unknown>)[method];
        if (typeof target !== 'function') continue;
        const metas: SubscribeMetadata[] | undefined = Reflect.getMetadata(SUBSCRIBE_METADATA, target);
        if (!metas?.length) continue;
        const payload = payloadOf(prototype, method);
        const returns = Reflect.getMetadata('design:returntype', prototype, method);
        for (const meta of metas) {
          found.push({
            topic: meta.topic,
            options: meta.options ?? {},
            owner: prototype.constructor?.name ?? String(wrapper.name),
            method,
            ...payload,
            // `void` is emitted as undefined; a Promise's inner type is erased, so it may reply.
            mayReply: returns !== undefined && !meta.options?.durable,
          });
        }
      }
    }
  }
  return found;
}

function prototypeOf(wrapper: InstanceWrapper): object | undefined {
  const { instance, metatype, inject } = wrapper;
  if (instance && typeof instance === 'object') return Object.getPrototypeOf(instance) ?? undefined;
  // A class provider not built (preview): its class is its metatype. A factory's metatype is the factory.
  if (!inject && typeof metatype === 'function' && metatype.prototype) return metatype.prototype as object;
  return undefined;
}

/** The payload parameter: its `@Payload({ schema })` schema and declared type. */
function payloadOf(prototype: object, method: string): Pick<DiscoveredSubscriber, 'schema' | 'payloadType'> {
  const args: Record<string, { index: number; schema?: unknown; data?: unknown }> =
    Reflect.getMetadata(ROUTE_ARGS_METADATA, prototype.constructor, method) ?? {};
  const entry = Object.entries(args).find(([key]) => key.split(':')[0] === String(SubscribeParamtype.PAYLOAD))?.[1];
  // Without parameter decorators the payload is the first parameter; `@Payload('field')` is one property only.
  const index = entry ? entry.index : 0;
  const whole = !entry || entry.data === undefined;
  const types: unknown[] = Reflect.getMetadata('design:paramtypes', prototype, method) ?? [];
  const declared = types[index];
  return {
    ...(entry?.schema !== undefined && whole ? { schema: entry.schema } : {}),
    ...(whole && typeof declared === 'function' && !NOT_A_DTO.has(declared) ? { payloadType: declared as DtoClass } : {}),
  };
}
