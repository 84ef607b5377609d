import { Inject, Injectable, Optional } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { MESSAGE_STORAGE_MANAGER, MessageStorageManager } from '../storage/message-storage-manager';
import { withTimeout } from '../shared/deadline';
import { bodyCodecOf } from '../claim-check/body-codec';

/**
 * Up when the message storage answers its ping (Redis: takes a small write) and, with encryption
 * keys from a provider, the provider answers with the current key; up when no storage is configured.
 */
@Injectable()
export class StorageHealthIndicator {
  constructor(
    @Optional() @Inject(MESSAGE_STORAGE_MANAGER) private readonly storage: MessageStorageManager | null,
    private readonly indicator: HealthIndicatorService,
  ) {}

  async isHealthy(key: string, timeoutMs: number) {
    const session = this.indicator.check(key);
    if (!this.storage) return session.up({ configured: false });
    // A key provider that fails leaves the bus on the keys it has, but with no rotation: say so.
    const codec = bodyCodecOf(this.storage);
    if (codec) {
      try {
        await withTimeout(codec.checkKeys(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
      } catch {
        return session.down({ message: 'encryption key provider is unusable' });
      }
    }
    if (typeof this.storage.ping !== 'function') return session.up({ configured: true });
    try {
      await withTimeout(this.storage.ping(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
      return session.up();
    } catch (err) {
      // The error text can carry hosts; the body of /_health never does, only which of the two it is.
      const refuses = /refuses writes/.test((err as Error)?.message ?? '');
      return session.down({ message: refuses ? 'storage refuses writes' : 'storage is not answering' });
    }
  }
}
