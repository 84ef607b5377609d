import { InMemoryStorageManager, InvalidMessageError, StoredMessageNotFoundError } from '../../lib';

describe('InMemoryStorageManager', () => {
  afterEach(() => jest.useRealTimers());

  it('stores a copy and recovers the same bytes', async () => {
    const storage = new InMemoryStorageManager();
    const body = Buffer.from('{"a":1}');
    const envelope = await storage.storeMessage(body);
    body[2] = 0x62; // later changes by the caller do not reach the stored copy
    expect(Buffer.from(await storage.recoverMessage(envelope)).toString()).toBe('{"a":1}');
    // Not deleted on recovery.
    expect(Buffer.from(await storage.recoverMessage(envelope)).toString()).toBe('{"a":1}');
  });

  it('expires entries after ttlSeconds', async () => {
    jest.useFakeTimers({ now: 1_000_000 });
    const storage = new InMemoryStorageManager({ ttlSeconds: 2 });
    const envelope = await storage.storeMessage(Buffer.from('1'));
    jest.setSystemTime(1_000_000 + 2001);
    await expect(storage.recoverMessage(envelope)).rejects.toBeInstanceOf(StoredMessageNotFoundError);
    expect(storage.size).toBe(0);
  });

  it('refuses tokens of a foreign shape', async () => {
    const storage = new InMemoryStorageManager();
    await expect(storage.recoverMessage({ token: '../x', is_stored: true })).rejects.toBeInstanceOf(InvalidMessageError);
  });
});
