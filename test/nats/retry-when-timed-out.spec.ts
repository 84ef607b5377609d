import { errors } from '@nats-io/transport-node';
import { CREATE_ATTEMPTS, retryWhenTimedOut } from '../../lib/nats/nats-errors';

// Bootstrap creates (streams, consumers, buckets) are tried again when the server does not answer
// in time, and only then: a refusal must reach the caller at once.
describe('retryWhenTimedOut', () => {
  it('tries again after a nats.js timeout and returns what the later try gave', async () => {
    let calls = 0;
    const result = await retryWhenTimedOut(async () => {
      calls++;
      if (calls < CREATE_ATTEMPTS) throw new errors.TimeoutError();
      return 'created';
    });
    expect(result).toBe('created');
    expect(calls).toBe(CREATE_ATTEMPTS);
  });

  it('gives the last timeout to the caller after the last attempt', async () => {
    let calls = 0;
    const last = new errors.TimeoutError();
    const failed = retryWhenTimedOut(async () => {
      calls++;
      throw calls === CREATE_ATTEMPTS ? last : new errors.TimeoutError();
    });
    await expect(failed).rejects.toBe(last);
    expect(calls).toBe(CREATE_ATTEMPTS);
  });

  it('does not try again after any other failure', async () => {
    let calls = 0;
    const refused = new Error('stream name already in use with a different configuration');
    await expect(
      retryWhenTimedOut(async () => {
        calls++;
        throw refused;
      }),
    ).rejects.toBe(refused);
    expect(calls).toBe(1);
  });
});
