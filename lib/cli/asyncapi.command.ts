import 'reflect-metadata';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { MODULE_METADATA } from '@nestjs/common/constants';
import { NestFactory, ModulesContainer } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import { buildAsyncApiDocument } from '../asyncapi/asyncapi-document';
import { EVENT_BUS_ASYNCAPI } from '../asyncapi/asyncapi.module-part';
import type { AsyncApiRouteOptions } from '../asyncapi/asyncapi.options';
import { discoverSubscribers } from '../asyncapi/subscriber-catalog';
import { EVENT_BUS_MODULE_OPTIONS } from '../module/event-bus.module-definition';
import type { EventBusModuleOptions } from '../module/event-bus-module.options';
import { EVENT_BUS_SERVICE } from '../services/nats-service';
import type { EventBusServiceOptions } from '../services/service.options';
import { CliCommand, CliUsageError } from './cli-command';

/**
 * `asyncapi --module dist/app.module.js [--export AppModule]`: print the app's AsyncAPI 3.0
 * document (JSON, which is also YAML) without connecting to anything.
 */
export const asyncApiCommand: CliCommand = {
  summary: "print the app's AsyncAPI 3.0 document (JSON, valid YAML); connects to nothing",
  usage: '--module <compiled module file> [--export <class name, default AppModule>]',
  async run(args, out) {
    let values: { module?: string; export?: string };
    try {
      ({ values } = parseArgs({ args, options: { module: { type: 'string' }, export: { type: 'string' } }, strict: true }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    if (!values.module) throw new CliUsageError('--module is required');
    const document = await asyncApiDocumentOf(values.module, values.export);
    out.write(`${JSON.stringify(document, null, 2)}\n`);
    return 0;
  },
};

/**
 * The document of the module exported by `file`. The app context is made with `{ preview: true }`:
 * Nest resolves the module graph but builds no provider and runs no lifecycle hook, so the bus
 * does not connect, and neither does anything else of the app's.
 */
export async function asyncApiDocumentOf(file: string, exportName?: string): Promise<Record<string, unknown>> {
  const exports = (await import(pathToFileURL(resolve(file)).href)) as Record<string, unknown>;
  const root = pickModule(exports, file, exportName);
  const app = await NestFactory.createApplicationContext(root as never, { preview: true, logger: false, abortOnError: false });
  return buildAsyncApiDocument({
    subscribers: discoverSubscribers(app.get(ModulesContainer)),
    service: valueOf<EventBusServiceOptions>(app, EVENT_BUS_SERVICE),
    options: valueOf<EventBusModuleOptions>(app, EVENT_BUS_MODULE_OPTIONS),
    sends: valueOf<AsyncApiRouteOptions>(app, EVENT_BUS_ASYNCAPI)?.sends,
  });
}

function pickModule(exports: Record<string, unknown>, file: string, exportName?: string): unknown {
  // A CommonJS file imported as ESM has its exports under `default` too.
  const all = { ...((exports.default as Record<string, unknown> | undefined) ?? {}), ...exports };
  if (exportName) {
    if (!all[exportName]) throw new CliUsageError(`${file} has no export "${exportName}"`);
    return all[exportName];
  }
  if (all.AppModule) return all.AppModule;
  const modules = Object.entries(all).filter(([, v]) => typeof v === 'function' && isModule(v));
  if (modules.length === 1) return modules[0][1];
  throw new CliUsageError(`${file} exports ${modules.length ? modules.map(([k]) => k).join(', ') : 'no module'}; name one with --export`);
}

function isModule(value: unknown): boolean {
  return [MODULE_METADATA.IMPORTS, MODULE_METADATA.PROVIDERS, MODULE_METADATA.CONTROLLERS].some(
    (key) => Reflect.getMetadata(key, value as object) !== undefined,
  );
}

/** A `useValue` provider's value; a factory's (`forRootAsync`) is not built in preview, so it is unknown. */
function valueOf<T>(app: INestApplicationContext, token: symbol | string): T | undefined {
  try {
    const value = app.get(token, { strict: false }) as T | undefined;
    return value && typeof value === 'object' && Object.keys(value).length ? value : undefined;
  } catch {
    return undefined;
  }
}
