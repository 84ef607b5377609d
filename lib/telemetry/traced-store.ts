import type { StoreHints } from '../claim-check/store-hints';
import type { BodyStore } from '../claim-check/claim-check.codec';
import type { StoredMessageEnvelope } from '../claim-check/envelope';
import type { BusTelemetry } from './bus-telemetry';

/**
 * A claim-check store whose stores and recoveries are child spans of the operation that needs
 * them, and counted (`eventbus.claimcheck.*`). Passes straight through while telemetry is off.
 */
class TracedStore implements BodyStore {
  storeJson?: (json: string, hints?: StoreHints) => Promise<StoredMessageEnvelope>;

  constructor(
    private readonly inner: BodyStore,
    private readonly telemetry: BusTelemetry,
  ) {
    // The codec tests for `storeJson`: offer it only when the store has it.
    if (typeof inner.storeJson === 'function') {
      this.storeJson = (json, hints) =>
        this.telemetry.on
          ? this.telemetry.claimCheck('store', Buffer.byteLength(json, 'utf8'), () => inner.storeJson!(json, hints), noSize)
          : inner.storeJson!(json, hints);
    }
  }

  storeMessage(body: Uint8Array, hints?: StoreHints): Promise<StoredMessageEnvelope> {
    // Only say "reply" when it is one: custom stores written for 0.1 take one argument.
    const store = () => (hints ? this.inner.storeMessage(body, hints) : this.inner.storeMessage(body));
    return this.telemetry.on ? this.telemetry.claimCheck('store', body.byteLength, store, noSize) : store();
  }

  recoverMessage(envelope: StoredMessageEnvelope): Promise<Uint8Array> {
    const recover = () => this.inner.recoverMessage(envelope);
    return this.telemetry.on ? this.telemetry.claimCheck('recover', undefined, recover, (bytes) => bytes.byteLength) : recover();
  }

  deleteMessage(envelope: StoredMessageEnvelope): Promise<void> {
    return this.inner.deleteMessage(envelope);
  }
}

const noSize = () => 0;

/** `store` with telemetry, or null without a store. */
export function tracedStore<S extends BodyStore>(store: S | null, telemetry: BusTelemetry): BodyStore | null {
  return store ? new TracedStore(store, telemetry) : null;
}
