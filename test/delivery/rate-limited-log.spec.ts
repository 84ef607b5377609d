import { Logger } from '@nestjs/common';
import { RateLimitedLog } from '../../lib/delivery/rate-limited-log';

describe('RateLimitedLog', () => {
  afterEach(() => jest.useRealTimers());

  it('logs at most perSecond lines a second per subject, then counts what it held back', () => {
    jest.useFakeTimers({ now: 0 });
    const error = jest.fn();
    const log = new RateLimitedLog({ error } as unknown as Logger, 3);
    for (let i = 0; i < 10; i++) log.error('a', `bad ${i}`);
    log.error('b', 'other subject');
    expect(error.mock.calls.map((c) => c[0])).toEqual(['bad 0', 'bad 1', 'bad 2', 'other subject']);
    jest.setSystemTime(1000);
    log.error('a', 'bad again');
    expect(error).toHaveBeenCalledWith('"a": 7 more lines like the above were not logged in 1 s');
    expect(error).toHaveBeenLastCalledWith('bad again');
  });
});
