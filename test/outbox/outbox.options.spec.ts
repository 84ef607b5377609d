import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidOptionsError } from '../../lib';
import { EventBusOutboxModule, OUTBOX_DEFAULTS, OUTBOX_SCHEMA_SQL, outboxSchemaSql } from '../../lib/outbox';
import { resolveOutboxOptions } from '../../lib/outbox/outbox.options';
import * as outboxEntry from '../../lib/outbox';

const ROOT = path.resolve(__dirname, '..', '..');

describe('outbox options and schema (no servers)', () => {
  const refused = (fn: () => unknown): InvalidOptionsError => {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidOptionsError);
      return err as InvalidOptionsError;
    }
    throw new Error('not refused');
  };

  it('defaults are documented values and deep-frozen', () => {
    expect(OUTBOX_DEFAULTS).toEqual({
      table: 'eventbus_outbox',
      pollIntervalMs: 2000,
      batchSize: 100,
      retryBackoffMs: [250, 1000, 5000],
      relay: true,
      ensureSchema: false,
    });
    expect(Object.isFrozen(OUTBOX_DEFAULTS.retryBackoffMs)).toBe(true);
    expect(resolveOutboxOptions({ connectionString: 'postgres://x/y' })).toEqual({ ...OUTBOX_DEFAULTS });
  });

  it('refuses wrong options naming them', () => {
    expect(refused(() => resolveOutboxOptions({})).option).toBe('outbox');
    expect(
      refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', pool: { connect: async () => ({}) } as never })).option,
    ).toBe('outbox');
    expect(refused(() => resolveOutboxOptions({ pool: {} as never })).option).toBe('outbox.pool');
    expect(refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', table: 'Outbox' })).option).toBe('outbox.table');
    expect(refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', table: 'a; DROP TABLE b' })).option).toBe('outbox.table');
    expect(refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', pollIntervalMs: 0 })).option).toBe(
      'outbox.pollIntervalMs',
    );
    expect(refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', retryBackoffMs: [] })).option).toBe(
      'outbox.retryBackoffMs',
    );
    expect(refused(() => resolveOutboxOptions({ connectionString: 'postgres://x', pollInterval: 5 } as never)).message).toMatch(
      /did you mean "pollIntervalMs"/,
    );
    // forRoot checks at once, where the module is declared.
    expect(refused(() => EventBusOutboxModule.forRoot({ connectionString: 'postgres://x', ensureSchema: 'yes' as never })).option).toBe(
      'outbox.ensureSchema',
    );
    expect(resolveOutboxOptions({ connectionString: 'postgres://x', table: 'app.outbox' }).table).toBe('app.outbox');
  });

  it('OUTBOX_SCHEMA_SQL is idempotent DDL, and the package ships the same text as sql/outbox.sql', () => {
    expect(OUTBOX_SCHEMA_SQL).toMatch(/^CREATE TABLE IF NOT EXISTS "eventbus_outbox" \(/m);
    expect(fs.readFileSync(path.join(ROOT, 'sql', 'outbox.sql'), 'utf8')).toBe(OUTBOX_SCHEMA_SQL);
    expect(outboxSchemaSql('app.events_outbox')).toMatch(/CREATE TABLE IF NOT EXISTS "app"."events_outbox"/);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.files).toContain('sql');
    expect(pkg.exports['./outbox']).toEqual({ types: './dist/outbox/index.d.ts', default: './dist/outbox/index.js' });
    expect(pkg.peerDependenciesMeta.pg).toEqual({ optional: true });
  });

  it('the outbox entry exports at run time only what docs/api.md lists', () => {
    const docs = fs.readFileSync(path.join(ROOT, 'docs', 'api.md'), 'utf8');
    const section = /<!-- api:outbox -->([\s\S]*?)<!-- \/api:outbox -->/.exec(docs)![1];
    const listed = new Set([...section.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]));
    const runtime = Object.keys(outboxEntry).filter((k) => k !== '__esModule');
    expect(runtime.filter((k) => !listed.has(k))).toEqual([]);
    expect(runtime.length).toBeGreaterThan(5);
  });

  it('the main entry does not load pg; the outbox entry loads it only when the module makes its own pool', () => {
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a fresh registry, to see what loading the entries requires
      require('../../lib');
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- as above
      require('../../lib/outbox');
      expect(Object.keys(require.cache).filter((f) => f.includes(`${path.sep}node_modules${path.sep}pg${path.sep}`))).toEqual([]);
    });
  });

  it('without pg installed, making the pool fails naming the install command', () => {
    jest.isolateModules(() => {
      jest.doMock('pg', () => {
        const err = new Error("Cannot find module 'pg'") as Error & { code: string };
        err.code = 'MODULE_NOT_FOUND';
        throw err;
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded after the mock, in the isolated registry
      const { loadPg } = require('../../lib/outbox/load-pg');
      // A class of the isolated registry: matched by code, as users are told to.
      let err: { code?: string; option?: string; message?: string } = {};
      try {
        loadPg();
      } catch (e) {
        err = e as typeof err;
      }
      expect(err.code).toBe('INVALID_OPTIONS');
      expect(err.message).toContain('npm install pg');
      jest.dontMock('pg');
    });
  });
});
