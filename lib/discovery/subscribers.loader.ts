import { Injectable, Logger, OnApplicationBootstrap, Optional } from '@nestjs/common';
import { DiscoveryService, ExternalContextCreator, MetadataScanner } from '@nestjs/core';
import { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper';
import { InvalidOptionsError, InvalidSubjectError } from '../errors/event-bus.errors';
import { EventBus } from '../event-bus/event-bus';
import { SubscriberEnhancers } from './subscriber-enhancers';
import { SubscribeMetadataAccessor } from './subscribe-metadata.accessor';
import { ServiceEndpoints } from '../services/service-endpoints';

/**
 * At bootstrap, finds `@Subscribe` methods on providers and controllers and subscribes them.
 * Runs after every `onModuleInit`, so the bus is already connected.
 */
@Injectable()
export class SubscribersLoader implements OnApplicationBootstrap {
  private readonly logger = new Logger('EventBus');
  private readonly enhancers: SubscriberEnhancers;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly accessor: SubscribeMetadataAccessor,
    private readonly bus: EventBus,
    contextCreator: ExternalContextCreator,
    // Present with `forRoot({ service })`: each handler is then counted as a service endpoint.
    @Optional() private readonly serviceEndpoints?: ServiceEndpoints,
  ) {
    this.enhancers = new SubscriberEnhancers(contextCreator);
  }

  async onApplicationBootstrap(): Promise<void> {
    const wrappers = [...this.discovery.getProviders(), ...this.discovery.getControllers()];
    const seen = new Set<object>();
    const pending: Promise<unknown>[] = [];
    for (const wrapper of wrappers) {
      const instance = this.subscribable(wrapper);
      if (!instance || seen.has(instance)) continue;
      seen.add(instance);
      const prototype = Object.getPrototypeOf(instance);
      for (const method of this.scanner.getAllMethodNames(prototype)) {
        for (const meta of this.accessor.getSubscriptions(prototype[method]) ?? []) {
          pending.push(this.subscribeMethod(instance, method, meta.topic, meta.options, wrapper.name));
        }
      }
    }
    await Promise.all(pending);
  }

  private subscribable(wrapper: InstanceWrapper): Record<string, any> | undefined {
    const { instance } = wrapper;
    if (!instance || typeof instance !== 'object' || !Object.getPrototypeOf(instance)) return undefined;
    // Request-scoped and transient providers have no single instance to call.
    if (!wrapper.isDependencyTreeStatic() || wrapper.isTransient) {
      const name = String(wrapper.name);
      const hasSubscriptions = this.scanner
        .getAllMethodNames(Object.getPrototypeOf(instance))
        .some((m) => this.accessor.getSubscriptions(instance[m])?.length);
      if (hasSubscriptions) this.logger.warn(`${name} is not a singleton; its @Subscribe methods are ignored`);
      return undefined;
    }
    return instance;
  }

  private async subscribeMethod(
    instance: Record<string, any>,
    method: string,
    topic: string,
    options: Parameters<EventBus['subscribe']>[2],
    owner: unknown,
  ): Promise<void> {
    const callable = this.enhancers.callable(instance, method);
    const handler = this.serviceEndpoints?.observe(topic, options, String(owner), method, callable) ?? callable;
    try {
      await this.bus.subscribe(topic, handler, options);
    } catch (err) {
      // Bootstrap fails; say which method carries the bad topic or queue.
      const where = `@Subscribe on ${String(owner)}.${method}`;
      if (err instanceof InvalidSubjectError) throw new InvalidSubjectError(err.kind, err.value, `${err.problem} (${where})`);
      if (err instanceof InvalidOptionsError) {
        throw new InvalidOptionsError(err.option, `${err.problem} (${where})`, { cause: err });
      }
      throw err;
    }
    const how = options?.queue ? ` (queue ${options.queue})` : options?.durable ? ` (durable ${options.durable})` : '';
    this.logger.log(`${String(owner)}.${method} subscribed to "${topic}"${how}`);
  }
}
