import { InvalidOptionsError, InvalidSubjectError } from '../../lib';
import { backoffFor, durableSettings, subjectMatches, validateJetStreamOptions } from '../../lib/durable/durable.options';

describe('durable options', () => {
  it('applies the documented defaults', () => {
    expect(durableSettings('a.b', { durable: 'n' })).toEqual({
      durable: 'n',
      maxDeliver: 5,
      backoffMs: [1000, 5000, 30000],
      ackWaitMs: 30000,
      deadLetter: undefined,
      storageOutageMaxDeliveries: 20,
    });
    expect(durableSettings('a.b', {})).toBeUndefined();
  });

  it('the backoff step follows the delivery count, and the last step repeats', () => {
    const s = durableSettings('a', { durable: 'n', backoffMs: [10, 20, 30] })!;
    expect([1, 2, 3, 4, 9].map((n) => backoffFor(s, n))).toEqual([10, 20, 30, 30, 30]);
  });

  it('matches subjects as NATS does', () => {
    expect(subjectMatches('a.*', 'a.b')).toBe(true);
    expect(subjectMatches('a.*', 'a.b.c')).toBe(false);
    expect(subjectMatches('a.>', 'a.b.c')).toBe(true);
    expect(subjectMatches('a.>', 'a')).toBe(false);
    expect(subjectMatches('a.b', 'a.b')).toBe(true);
    expect(subjectMatches('a.b', 'a.c')).toBe(false);
  });

  it.each([
    [{ streams: 'x' }, 'jetstream.streams'],
    [{ streams: [{ name: 'a b', subjects: ['x'] }] }, 'jetstream.streams[0].name'],
    [{ streams: [{ name: 'A', subjects: [] }] }, 'jetstream.streams[0].subjects'],
    [{ streams: [{ name: 'A', subjects: ['x'], replicas: 7 }] }, 'jetstream.streams[0].replicas'],
    [{ streams: [{ name: 'A', subjects: ['x'], storage: 'disk' }] }, 'jetstream.streams[0].storage'],
    [{ streams: [{ name: 'A', subjects: ['x'], maxAge: 5 }] }, 'jetstream.streams[0].maxAge'],
    [{ apiTimeout: 5 }, 'jetstream.apiTimeout'],
  ])('refuses %j naming %s', (options, option) => {
    let err: unknown;
    try {
      validateJetStreamOptions(options as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).option).toBe(option);
  });

  it('a stream subject NATS would not accept is an InvalidSubjectError', () => {
    expect(() => validateJetStreamOptions({ streams: [{ name: 'A', subjects: ['a b'] }] })).toThrow(InvalidSubjectError);
  });
});
