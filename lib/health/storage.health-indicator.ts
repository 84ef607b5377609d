import { Inject, Injectable, Optional } from '@nestjs/common';
import { HealthIndicatorService } from '@nestjs/terminus';
import { MESSAGE_STORAGE_MANAGER, MessageStorageManager } from '../storage/message-storage-manager';
import { withTimeout } from '../shared/deadline';

/** Up when the message storage answers its ping (Redis PING); up when no storage is configured. */
@Injectable()
export class StorageHealthIndicator {
  constructor(
    @Optional() @Inject(MESSAGE_STORAGE_MANAGER) private readonly storage: MessageStorageManager | null,
    private readonly indicator: HealthIndicatorService,
  ) {}

  async isHealthy(key: string, timeoutMs: number) {
    const session = this.indicator.check(key);
    if (!this.storage) return session.up({ configured: false });
    if (typeof this.storage.ping !== 'function') return session.up({ configured: true });
    try {
      await withTimeout(this.storage.ping(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
      return session.up();
    } catch {
      // The error text can carry hosts; the body of /_health never does.
      return session.down({ message: 'storage is not answering' });
    }
  }
}
