import { randomBytes, randomUUID } from 'node:crypto';
import { isValidToken, StoredMessageEnvelope } from '../claim-check/envelope';
import { InvalidMessageError, StoredMessageNotFoundError } from '../errors/event-bus.errors';
import type { MessageStorageManager } from '../storage/message-storage-manager';

/**
 * The `describe` and `it` of the test runner (Jest, Vitest and `node:test` all fit). The suite
 * asserts on its own, so it needs no `expect`, and works with whichever runner calls it.
 */
export interface ConformanceRunner {
  describe(name: string, body: () => void): unknown;
  it(name: string, body: () => Promise<void>, timeoutMs?: number): unknown;
}

export interface StorageConformanceOptions {
  /** Called after each test with the store `makeStore` gave it (close a client, remove a bucket). */
  dispose?(store: MessageStorageManager): void | Promise<void>;
  /** Per-test timeout passed to `it` (ms). Default 30000. */
  timeoutMs?: number;
}

/** Thrown when a store breaks the contract; the message says which rule. */
export class StorageConformanceError extends Error {}

/**
 * Declares a `describe(name)` block that checks a store against what the bus relies on: exact
 * bytes back, UUID tokens, bodies kept after they are read (fan-out), `StoredMessageNotFoundError`
 * for an unknown token, no read for a token of an unknown shape, hints taken, `deleteMessage` and
 * `ping` that resolve. `makeStore` is called once per test, with the store ready to use.
 */
export function describeStorageConformance(
  name: string,
  makeStore: () => MessageStorageManager | Promise<MessageStorageManager>,
  runner: ConformanceRunner,
  options: StorageConformanceOptions = {},
): void {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const test = (title: string, body: (store: MessageStorageManager) => Promise<void>) =>
    runner.it(
      title,
      async () => {
        const store = await makeStore();
        try {
          await body(store);
        } finally {
          await options.dispose?.(store);
        }
      },
      timeoutMs,
    );

  runner.describe(name, () => {
    test('gives back exactly the bytes it stored, binary and 1 MiB bodies included', async (store) => {
      const binary = Buffer.concat([Buffer.from([0x00, 0xff, 0xc3, 0x28, 0x0a]), randomBytes(251)]);
      const large = Buffer.alloc(1024 * 1024, 'claim-check ');
      for (const body of [binary, large]) {
        const envelope = await store.storeMessage(new Uint8Array(body));
        sameBytes(await recover(store, envelope, `a ${body.length}-byte body`), body, `a ${body.length}-byte body`);
      }
    });

    test('returns { token, is_stored: true } with a token that passes isValidToken, a new one each time', async (store) => {
      const a = await store.storeMessage(new Uint8Array(Buffer.from('{"n":1}')));
      const b = await store.storeMessage(new Uint8Array(Buffer.from('{"n":1}')));
      for (const envelope of [a, b]) {
        check(envelope.is_stored === true, `envelope.is_stored is ${String(envelope.is_stored)}, not true`);
        check(isValidToken(envelope.token), `token ${JSON.stringify(envelope.token)} fails isValidToken (use crypto.randomUUID())`);
      }
      check(a.token !== b.token, `two stores returned the same token ${a.token}`);
    });

    test('storeJson stores the UTF-8 bytes of the text, as storeMessage would', async (store) => {
      const json = JSON.stringify({ text: 'zażółć gęślą jaźń – ✓ 🚀', n: 42 });
      sameBytes(await recover(store, await store.storeJson(json), 'the storeJson body'), Buffer.from(json, 'utf8'), 'the storeJson body');
    });

    test('keeps a body after it is read: every subscriber of a fan-out reads it', async (store) => {
      const body = Buffer.from(JSON.stringify({ fanOut: randomUUID() }));
      const envelope = await store.storeMessage(new Uint8Array(body));
      for (const reader of [1, 2, 3]) {
        const what = `read ${reader} of the same body`;
        sameBytes(await recover(store, envelope, what), body, what);
      }
    });

    test('takes the hints: a reply, and a body that must live 1 s, are stored and read back', async (store) => {
      const body = Buffer.from('{"hinted":true}');
      sameBytes(await recover(store, await store.storeMessage(new Uint8Array(body), { reply: true }), 'a reply'), body, 'a reply');
      const lasting = await store.storeMessage(new Uint8Array(body), { minTtlSeconds: 1 });
      sameBytes(await recover(store, lasting, 'minTtlSeconds 1'), body, 'minTtlSeconds 1');
    });

    test('rejects an unknown token with StoredMessageNotFoundError', async (store) => {
      const err = await rejection(store.recoverMessage({ token: randomUUID(), is_stored: true }), 'recovering an unknown token');
      check(err instanceof StoredMessageNotFoundError, `an unknown token rejected with ${shown(err)}, not StoredMessageNotFoundError`);
    });

    test('refuses a token of an unknown shape (never reads a key a publisher named)', async (store) => {
      for (const token of ['../etc/passwd', 'eventbus-health-probe', '*', 'a b', '']) {
        const err = await rejection(store.recoverMessage({ token, is_stored: true }), `recovering token ${JSON.stringify(token)}`);
        check(
          err instanceof InvalidMessageError || err instanceof StoredMessageNotFoundError,
          `token ${JSON.stringify(token)} rejected with ${shown(err)}, not InvalidMessageError`,
        );
      }
    });

    test('deleteMessage resolves for a stored, an unknown and a malformed token', async (store) => {
      const envelope = await store.storeMessage(new Uint8Array(Buffer.from('{"delete":true}')));
      for (const e of [envelope, { token: randomUUID(), is_stored: true as const }, { token: '*', is_stored: true as const }]) {
        await store.deleteMessage(e as StoredMessageEnvelope);
      }
    });

    test('ping resolves while the store is up', async (store) => {
      await store.ping();
    });
  });
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new StorageConformanceError(message);
}

/** recoverMessage, with a rejection reported as a broken rule (the store's own error as `cause`). */
async function recover(store: MessageStorageManager, envelope: StoredMessageEnvelope, what: string): Promise<Uint8Array> {
  try {
    return await store.recoverMessage(envelope);
  } catch (err) {
    throw new StorageConformanceError(`${what}: recoverMessage rejected with ${shown(err)}`, { cause: err });
  }
}

function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  check(actual instanceof Uint8Array, `${what}: recoverMessage gave ${shown(actual)}, not a Uint8Array`);
  const same = Buffer.compare(Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength), expected) === 0;
  check(same, `${what}: got ${actual.byteLength} bytes back that differ from the ${expected.byteLength} stored`);
}

async function rejection(promise: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new StorageConformanceError(`${what} resolved; it must reject`);
}

function shown(value: unknown): string {
  if (value instanceof Error) return `${value.constructor.name}: ${value.message}`;
  return typeof value;
}
