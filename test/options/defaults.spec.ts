import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULTS } from '../../lib/options/defaults';
import * as lib from '../../lib';
import { EVENT_BUS_DEFAULTS, InvalidOptionsError, REDIS_STORAGE_DEFAULTS } from '../../lib';
import { nonEmptyString, storageManager, string, wholeNumber } from '../../lib/options/rules';

const ROOT = path.resolve(__dirname, '..', '..');

/** The options tables of the docs: the README's main options, and docs/options.md's every option. */
const OPTION_TABLES: Array<{ file: string; from: string; to?: string }> = [
  { file: 'README.md', from: '## Options', to: '<!-- /section:options -->' },
  { file: 'docs/options.md', from: '# Options' },
];

/** One options table: option name → the literal its "default" column gives. */
function tableDefaults(table: { file: string; from: string; to?: string }): Map<string, string> {
  const text = fs.readFileSync(path.join(ROOT, table.file), 'utf8');
  const start = text.indexOf(table.from);
  if (start < 0) throw new Error(`${table.file} has no "${table.from}"`);
  const end = table.to === undefined ? text.length : text.indexOf(table.to, start);
  if (end < 0) throw new Error(`${table.file} has no "${table.to}" after "${table.from}"`);
  const section = text.slice(start, end);
  const out = new Map<string, string>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !cells[1].startsWith('`')) continue;
    const names = [...cells[1].matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    const values = [...cells[2].matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    // "`a` / `b` | `1` / `2`" pairs names and values; a single value with several names is shared.
    names.forEach((n, i) => {
      const v = values.length === names.length ? values[i] : values.length === 1 ? values[0] : undefined;
      if (v !== undefined) out.set(n, v);
    });
  }
  return out;
}

/** Paths under `value` (itself included) of objects and arrays that are not frozen. */
function unfrozenPaths(value: unknown, at: string): string[] {
  if (value === null || typeof value !== 'object') return [];
  const own = Object.isFrozen(value) ? [] : [at];
  return own.concat(...Object.entries(value).map(([k, v]) => unfrozenPaths(v, `${at}.${k}`)));
}

/** Where an option of the docs lives in DEFAULTS. */
function defaultOf(option: string): unknown {
  const [head, ...rest] = option.split('.');
  const key = rest.join('.');
  if (head === 'nats') return (DEFAULTS.nats as Record<string, unknown>)[key];
  if (head === 'storage' && rest[0] === 'objectStore') return (DEFAULTS.objectStore as Record<string, unknown>)[rest[1]];
  if (head === 'storage') return (DEFAULTS.storage as Record<string, unknown>)[key];
  if (head === 'health') return (DEFAULTS.health as Record<string, unknown>)[key];
  if (head === 'jetstream' && rest[0] === 'streams[]') return (DEFAULTS.stream as Record<string, unknown>)[rest[1]];
  if (head === 'jetstream') return (DEFAULTS.jetstream as Record<string, unknown>)[key];
  // Per durable subscription (`@Subscribe(topic, { durable, … })`).
  if (head === 'durable') return (DEFAULTS.durable as Record<string, unknown>)[key];
  return (DEFAULTS.bus as Record<string, unknown>)[option];
}

describe('options: one defaults object', () => {
  /** Checks each row of a table against DEFAULTS; returns the options whose default it states. */
  function checkTable(table: { file: string; from: string; to?: string }): Set<string> {
    const checked = new Set<string>();
    for (const [option, literal] of tableDefaults(table)) {
      const actual = defaultOf(option);
      if (actual === undefined) continue; // e.g. `storage.redis.url`: no default
      const shown = typeof actual === 'string' ? `'${actual}'` : Array.isArray(actual) ? `[${actual.join(', ')}]` : String(actual);
      expect({ file: table.file, option, literal }).toEqual({ file: table.file, option, literal: shown });
      checked.add(option);
    }
    return checked;
  }

  it("the README's main options state the defaults the code uses", () => {
    const checked = checkTable(OPTION_TABLES[0]);
    // The main ones are there (a table that lost its rows would pass the loop above).
    for (const option of ['nats.name', 'storage.ttlSeconds', 'storage.keyPrefix', 'rpcTimeoutMs', 'firstConnectTimeoutMs', 'telemetry']) {
      expect(checked).toContain(option);
    }
  });

  it('docs/options.md states every default the code uses', () => {
    const documented = checkTable(OPTION_TABLES[1]);
    // Every default the library sets for these options appears in the table.
    for (const key of Object.keys(DEFAULTS.bus)) expect(documented).toContain(key);
    for (const key of Object.keys(DEFAULTS.storage)) expect(documented).toContain(`storage.${key}`);
    for (const key of Object.keys(DEFAULTS.health)) expect(documented).toContain(`health.${key}`);
    for (const key of Object.keys(DEFAULTS.jetstream)) expect(documented).toContain(`jetstream.${key}`);
    for (const key of Object.keys(DEFAULTS.stream)) expect(documented).toContain(`jetstream.streams[].${key}`);
    for (const key of Object.keys(DEFAULTS.durable)) expect(documented).toContain(`durable.${key}`);
    for (const key of Object.keys(DEFAULTS.objectStore)) expect(documented).toContain(`storage.objectStore.${key}`);
    for (const key of Object.keys(DEFAULTS.nats).filter((k) => k !== 'reconnect')) expect(documented).toContain(`nats.${key}`);
  });

  it('every exported *_DEFAULTS is deep-frozen: an assignment throws and changes nothing', () => {
    const exported = Object.entries(lib).filter(([name]) => name.endsWith('_DEFAULTS'));
    // The ones users know are among them (a rename would otherwise leave this test with nothing to check).
    expect(exported.map(([name]) => name)).toEqual(
      expect.arrayContaining([
        'EVENT_BUS_DEFAULTS',
        'NATS_CONNECTION_DEFAULTS',
        'REDIS_STORAGE_DEFAULTS',
        'REDIS_CLIENT_DEFAULTS',
        'OBJECT_STORE_STORAGE_DEFAULTS',
        'HEALTH_DEFAULTS',
      ]),
    );
    for (const [name, value] of [...exported, ['DEFAULTS', DEFAULTS] as const]) {
      const unfrozen = unfrozenPaths(value, name);
      expect(unfrozen).toEqual([]);
    }
    // Test files compile to strict-mode CommonJS, where writing a frozen property throws.
    const bus = EVENT_BUS_DEFAULTS as { rpcTimeoutMs: number };
    expect(() => {
      bus.rpcTimeoutMs = 1;
    }).toThrow(TypeError);
    expect(EVENT_BUS_DEFAULTS.rpcTimeoutMs).toBe(10_000);
    const backoff = DEFAULTS.durable.backoffMs as unknown as number[];
    expect(() => backoff.push(1)).toThrow(TypeError);
    expect(DEFAULTS.durable.backoffMs).toEqual([1000, 5000, 30_000]);
    const redis = REDIS_STORAGE_DEFAULTS as { keyPrefix: string };
    expect(() => {
      redis.keyPrefix = '';
    }).toThrow(TypeError);
    expect(REDIS_STORAGE_DEFAULTS.keyPrefix).toBe('eventbus:');
  });

  it('REDIS_STORAGE_DEFAULTS states the same values as DEFAULTS.storage', () => {
    expect(REDIS_STORAGE_DEFAULTS).toEqual({
      ttlSeconds: DEFAULTS.storage.ttlSeconds,
      keyPrefix: DEFAULTS.storage.keyPrefix,
      operationTimeoutMs: DEFAULTS.storage.operationTimeoutMs,
    });
  });
});

describe('options: one rule per kind of value', () => {
  const refused = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err;
    }
    throw new Error('not refused');
  };

  it('wholeNumber refuses fractions, zero, negatives, NaN and non-numbers, naming the option', () => {
    for (const bad of [0, -1, 1.5, NaN, Infinity, '5', null]) {
      const err = refused(() => wholeNumber('rpcTimeoutMs', bad, 1, 'milliseconds')) as InvalidOptionsError;
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.code).toBe('INVALID_OPTIONS');
      expect(err.message).toContain('rpcTimeoutMs');
    }
    expect(() => wholeNumber('x', undefined)).not.toThrow();
    expect(() => wholeNumber('x', 1)).not.toThrow();
    expect(() => wholeNumber('x', 0, 0)).not.toThrow();
  });

  it('nonEmptyString and string', () => {
    expect(refused(() => nonEmptyString('nats.name', ''))).toBeInstanceOf(InvalidOptionsError);
    expect(refused(() => nonEmptyString('nats.name', 5))).toBeInstanceOf(InvalidOptionsError);
    expect(() => nonEmptyString('nats.name', 'svc')).not.toThrow();
    expect(() => string('storage.keyPrefix', '')).not.toThrow();
    expect(refused(() => string('health.path', 42))).toBeInstanceOf(InvalidOptionsError);
  });

  it('storageManager accepts anything with storeMessage and recoverMessage, the same for module and transport', () => {
    const duck = { storeMessage: async () => ({ token: 'x', is_stored: true }), recoverMessage: async () => new Uint8Array() };
    expect(storageManager('storage', duck)).toBe(duck);
    for (const bad of [null, {}, { storeMessage: () => 1 }, 'redis://x']) {
      const err = refused(() => storageManager('storage.useFactory', bad)) as Error;
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(err.message).toContain('storage.useFactory');
    }
  });
});
