import { headers } from '@nats-io/nats-core';
import { InvalidOptionsError } from '../../lib';
import { durableSettings, idempotentSettings } from '../../lib/durable/durable.options';
import { inboxBucket, inboxKey, parseRecord } from '../../lib/durable/inbox';
import { DEFAULTS } from '../../lib/options/defaults';

describe('idempotent durables: options and the id rule', () => {
  it('true takes the default window, above the stream duplicate window of 2 minutes; { windowSeconds } its own', () => {
    expect(DEFAULTS.idempotent.windowSeconds).toBeGreaterThanOrEqual(120);
    expect(idempotentSettings(true)).toEqual({ windowSeconds: 600 });
    expect(idempotentSettings({})).toEqual({ windowSeconds: 600 });
    expect(idempotentSettings({ windowSeconds: 30 })).toEqual({ windowSeconds: 30 });
    expect(idempotentSettings(false)).toBeUndefined();
    expect(durableSettings('a.b', { durable: 'd', idempotent: { windowSeconds: 5 } })?.idempotent).toEqual({ windowSeconds: 5 });
    expect(durableSettings('a.b', { durable: 'd' })?.idempotent).toBeUndefined();
    expect(inboxBucket(600)).toBe('eventbus-inbox-600s');
  });

  it('refuses a window that is not a whole number of seconds >= 1, unknown keys, other types, and idempotent without durable', () => {
    const refused = (value: unknown, option: string) => {
      let err: unknown;
      try {
        durableSettings('a.b', { durable: 'd', idempotent: value as never });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as InvalidOptionsError).option).toBe(option);
    };
    for (const w of [0, -1, 1.5, NaN, '60', 31_536_001]) refused({ windowSeconds: w }, 'idempotent.windowSeconds');
    refused({ window: 60 }, 'idempotent.window');
    for (const v of ['yes', 1, null, [60]]) refused(v, 'idempotent');
    expect(() => durableSettings('a.b', { idempotent: true })).toThrow(/durable subscriptions only/);
    expect(durableSettings('a.b', { idempotent: false })).toBeUndefined();
  });

  it('the id is the Nats-Msg-Id when there is one, else stream and sequence; names KV keys cannot hold are encoded', () => {
    const h = headers();
    h.set('Nats-Msg-Id', 'order 42/ü');
    expect(inboxKey({ stream: 'ORDERS', seq: 7, headers: h }, 'billing')).toBe(
      `ORDERS.billing.m.${Buffer.from('order 42/ü').toString('base64url')}`,
    );
    expect(inboxKey({ stream: 'ORDERS', seq: 7, headers: undefined }, 'billing')).toBe('ORDERS.billing.s.7');
    expect(inboxKey({ stream: 'A$B', seq: 1, headers: undefined }, 'd')).toBe(`=${Buffer.from('A$B').toString('base64url')}.d.s.1`);
  });

  it('reads records: done, a claim with its expiry, and anything else as an expired claim', () => {
    expect(parseRecord('done 1700000000000')).toEqual({ kind: 'done' });
    expect(parseRecord('claim host-1-ab.3 1700000000000')).toEqual({ kind: 'claim', owner: 'host-1-ab.3', expiresAt: 1700000000000 });
    expect(parseRecord('garbage')).toMatchObject({ kind: 'claim', expiresAt: 0 });
  });
});
