import { Logger } from '@nestjs/common';
import { DiscoveryService, ExternalContextCreator, MetadataScanner, Reflector } from '@nestjs/core';
import { EventBus, Subscribe } from '../../lib';
import { SubscribeMetadataAccessor } from '../../lib/discovery/subscribe-metadata.accessor';
import { SubscribersLoader } from '../../lib/discovery/subscribers.loader';

// The loader with a fake DiscoveryService and bus: which instances it subscribes, and which it skips.
class Singleton {
  @Subscribe('loader.a', { queue: 'q' })
  @Subscribe('loader.b')
  onA(payload: unknown) {
    return payload;
  }
  notSubscribed() {}
}

class RequestScoped {
  @Subscribe('loader.scoped')
  onScoped() {}
}

class Transient {
  @Subscribe('loader.transient')
  onTransient() {}
}

class Plain {
  helper() {}
}

function wrapper(instance: object, opts: { static?: boolean; transient?: boolean } = {}) {
  return {
    name: instance.constructor.name,
    instance,
    isTransient: opts.transient ?? false,
    isDependencyTreeStatic: () => opts.static ?? true,
  };
}

describe('SubscribersLoader', () => {
  it('subscribes singletons once per @Subscribe, skips request-scoped and transient providers with a warning', async () => {
    const singleton = new Singleton();
    const calls: Array<{ topic: string; queue?: string }> = [];
    const bus = {
      subscribe: async (topic: string, handler: (p: unknown, c: unknown) => unknown, opts?: { queue?: string }) => {
        calls.push({ topic, queue: opts?.queue });
        expect(handler({ n: 1 }, {})).toEqual({ n: 1 });
      },
    } as unknown as EventBus;
    const discovery = {
      getProviders: () => [
        wrapper(singleton),
        wrapper(singleton), // the same instance through another token: subscribed once
        wrapper(new RequestScoped(), { static: false }),
        wrapper(new Transient(), { transient: true }),
        wrapper(new Plain()),
        { name: 'factoryValue', instance: 42, isTransient: false, isDependencyTreeStatic: () => true },
      ],
      getControllers: () => [],
    } as unknown as DiscoveryService;
    const warnings: string[] = [];
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    jest.spyOn(Logger.prototype, 'log').mockImplementation(() => undefined);
    try {
      const loader = new SubscribersLoader(
        discovery,
        new MetadataScanner(),
        new SubscribeMetadataAccessor(new Reflector()),
        bus,
        {} as ExternalContextCreator,
      );
      await loader.onApplicationBootstrap();
    } finally {
      warn.mockRestore();
      jest.restoreAllMocks();
    }
    expect(calls.sort((a, b) => a.topic.localeCompare(b.topic))).toEqual([{ topic: 'loader.a', queue: 'q' }, { topic: 'loader.b' }]);
    expect(warnings).toEqual([
      'RequestScoped is not a singleton; its @Subscribe methods are ignored',
      'Transient is not a singleton; its @Subscribe methods are ignored',
    ]);
  });
});
