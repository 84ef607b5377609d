// The store conformance suite that nestjs-nats-eventbus/testing exports for store authors, run on
// the in-memory store (no servers), and on a store that breaks the rules, which it must catch.
import { InMemoryStorageManager, MessageStorageManager, StoredMessageEnvelope } from '../../lib';
import { describeStorageConformance, StorageConformanceError } from '../../lib/testing';

describeStorageConformance('InMemoryStorageManager', () => new InMemoryStorageManager(), { describe, it });

/** Breaks the contract the way a hand-written store might: short tokens, and a Python-style GETDEL. */
class ReadOnceStore extends MessageStorageManager {
  private readonly bodies = new Map<string, Uint8Array>();
  private next = 0;

  async storeMessage(body: Uint8Array): Promise<StoredMessageEnvelope> {
    const token = String(++this.next);
    this.bodies.set(token, body);
    return { token, is_stored: true };
  }

  async recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    const body = this.bodies.get(envelope.token);
    this.bodies.delete(envelope.token);
    if (!body) throw new Error('not found');
    return body;
  }
}

describe('describeStorageConformance catches a store that breaks the contract', () => {
  /** Runs the suite on `store` with a runner that collects each test's outcome instead of registering it. */
  async function outcomes(store: MessageStorageManager): Promise<Map<string, unknown>> {
    const tests: Array<[string, () => Promise<void>]> = [];
    describeStorageConformance('broken', () => store, {
      describe: (_name, body) => body(),
      it: (name, body) => tests.push([name, body]),
    });
    const results = new Map<string, unknown>();
    for (const [name, body] of tests)
      results.set(
        name,
        await body().then(
          () => 'passed',
          (err: unknown) => err,
        ),
      );
    return results;
  }

  it('fails the token, fan-out and not-found rules, with a message naming the rule', async () => {
    const results = await outcomes(new ReadOnceStore());
    const failed = [...results].filter(([, r]) => r !== 'passed');
    for (const [, err] of failed) expect(err).toBeInstanceOf(StorageConformanceError);
    const messages = failed.map(([, err]) => (err as Error).message).join('\n');
    expect(messages).toMatch(/fails isValidToken/);
    expect(messages).toMatch(/read 2 of the same body/);
    expect(messages).toMatch(/not StoredMessageNotFoundError/);
    expect(results.get('ping resolves while the store is up')).toBe('passed');
  });

  it('passes a store that follows it', async () => {
    const results = await outcomes(new InMemoryStorageManager());
    expect([...results.values()].every((r) => r === 'passed')).toBe(true);
    expect(results.size).toBeGreaterThanOrEqual(9);
  });
});
