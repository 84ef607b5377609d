import { ModuleRef } from '@nestjs/core';
import { InMemoryStorageManager, InvalidOptionsError, MessageStorageManager } from '../../lib';
import { storageProvider, toRedisModuleOptions } from '../../lib/module/storage.providers';
import { EventBusModuleOptions } from '../../lib/module/event-bus-module.options';

// The storage provider's factory paths, with a fake ModuleRef (the module tests run them against real servers).
const factory = (storageProvider as { useFactory: (...args: any[]) => Promise<MessageStorageManager | null> }).useFactory;
const nats = { servers: 'nats://127.0.0.1:4222' };

function fakeModuleRef(tokens: Record<string | symbol, unknown> = {}): ModuleRef {
  return {
    create: async (cls: new () => unknown) => new cls(),
    get: (token: string | symbol) => {
      if (!(token in tokens)) throw new Error(`no provider ${String(token)}`);
      return tokens[token as string];
    },
  } as unknown as ModuleRef;
}

const run = (storage: unknown, moduleRef = fakeModuleRef()) =>
  factory({ nats, storage } as EventBusModuleOptions, moduleRef, null).catch((e: unknown) => e);

describe('storage provider factory paths', () => {
  it('no storage gives null', async () => {
    expect(await factory({ nats } as EventBusModuleOptions, fakeModuleRef(), null)).toBeNull();
  });

  it('useClass creates the class through the module', async () => {
    expect(await run({ useClass: InMemoryStorageManager })).toBeInstanceOf(InMemoryStorageManager);
  });

  it('useExisting looks the token up', async () => {
    const existing = new InMemoryStorageManager();
    expect(await run({ useExisting: 'MY_STORE' }, fakeModuleRef({ MY_STORE: existing }))).toBe(existing);
  });

  it('useFactory gets its inject list, optional ones undefined when missing', async () => {
    const made = new InMemoryStorageManager();
    let got: unknown[] = [];
    const result = await run(
      { useFactory: (...deps: unknown[]) => ((got = deps), made), inject: ['CONFIG', { token: 'MISSING', optional: true }] },
      fakeModuleRef({ CONFIG: { ttl: 5 } }),
    );
    expect(result).toBe(made);
    expect(got).toEqual([{ ttl: 5 }, undefined]);
  });

  it('a missing required inject fails bootstrap with the provider error', async () => {
    const err = await run({ useFactory: () => new InMemoryStorageManager(), inject: ['MISSING'] });
    expect((err as Error).message).toContain('MISSING');
  });

  it('refuses what is not a storage, naming the option', async () => {
    for (const [storage, option] of [
      [{ useClass: 42 }, 'storage.useClass'],
      [{ useFactory: () => ({}) }, 'storage.useFactory'],
      [{ useFactory: 'nope' }, 'storage.useFactory'],
      [{ useExisting: 'X' }, 'storage.useExisting'],
      [{ other: true }, 'storage'],
      ['redis://x', 'storage'],
    ] as const) {
      const err = await run(storage, fakeModuleRef({ X: { notAStore: true } }));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toContain(option);
    }
  });

  it('maps redis options onto an ioredis client with the bus defaults, and refuses bad ones', () => {
    expect(toRedisModuleOptions({ redis: { url: 'redis://h:1' } })).toMatchObject({
      type: 'single',
      url: 'redis://h:1',
      options: { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true },
    });
    expect(toRedisModuleOptions({ redis: { cluster: { nodes: [{ host: 'h', port: 1 }] } } })).toMatchObject({ type: 'cluster' });
    expect(() => toRedisModuleOptions({ redis: { url: 'http://h' } })).toThrow(InvalidOptionsError);
    expect(() => toRedisModuleOptions({ redis: { cluster: { nodes: [] } } })).toThrow(/storage\.redis\.cluster\.nodes/);
    expect(() => toRedisModuleOptions({ redis: {} })).toThrow(/storage\.redis/);
  });
});

describe('storage.redis without ioredis installed', () => {
  afterEach(() => jest.dontMock('ioredis'));

  it('fails bootstrap with InvalidOptionsError naming storage.redis and how to install it', () => {
    jest.isolateModules(() => {
      // As Node fails a require of a package that is not installed.
      jest.doMock('ioredis', () => {
        throw Object.assign(new Error("Cannot find module 'ioredis'"), { code: 'MODULE_NOT_FOUND' });
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const isolated = require('../../lib/module/storage.providers') as typeof import('../../lib/module/storage.providers');
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const errors = require('../../lib/errors/event-bus.errors') as typeof import('../../lib/errors/event-bus.errors');
      const make = (isolated.redisConnectionProvider as { useFactory: (o: EventBusModuleOptions) => unknown }).useFactory;
      let err: unknown;
      try {
        make({ nats, storage: { redis: { url: 'redis://127.0.0.1:6379' } } } as EventBusModuleOptions);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(errors.InvalidOptionsError);
      expect(err).toMatchObject({ code: 'INVALID_OPTIONS', option: 'storage.redis' });
      expect((err as Error).message).toMatch(/needs the ioredis package.*npm install ioredis.*storage\.objectStore/);
      // Without Redis storage, ioredis is never asked for.
      expect(make({ nats, storage: { objectStore: {} } } as EventBusModuleOptions)).toBeNull();
    });
  });
});
