import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Logger } from '@nestjs/common';
import { jetstream } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { InvalidOptionsError, NotConnectedError } from '../errors/event-bus.errors';
import { DEFAULTS } from '../options/defaults';
import type { DurableMessage } from '../nats/jetstream';
import { inboxBucket, inboxKey, isWrongRevision, parseRecord } from './inbox-records';

// Kept importable from here: the specs and the sample's e2e name this module.
export { inboxBucket, inboxKey, parseRecord } from './inbox-records';

/**
 * The inbox of idempotent durables: one JetStream KV record per handled message id (see
 * inbox-records.ts for the records), so a message handled to success is acked without calling the
 * handler again when it comes back. A delivery claims its id with a lease before the handler runs.
 */

/** What to do with one delivery of an idempotent durable. */
export type InboxVerdict =
  /** The id was handled to success: ack without calling the handler. */
  | { kind: 'done' }
  /** Another delivery of the id holds a live lease: try again later (nak with this delay). */
  | { kind: 'busy'; retryInMs: number }
  /** This delivery holds the lease: run the handler, then call `succeeded` or `released`. */
  | { kind: 'run'; claim: InboxClaim };

/** A lease held by one delivery while its handler runs. */
export interface InboxClaim {
  /** The handler resolved: write `done` (before the ack). Never throws; a failed write is logged. */
  succeeded(): Promise<void>;
  /** The handler failed or did not run: give the id back so the redelivery can claim it. Never throws. */
  released(): Promise<void>;
}

/** The KV bucket could not be reached: the handler must not run; the message is nak'ed with backoff. */
export class InboxUnavailableError extends NotConnectedError {}

/** How long a handled message's record is retried (NATS down, say) before it is acked unrecorded. */
const RECORD_RETRY_MS = 60_000;

// One id per process: the instance part of a claim's owner.
const INSTANCE = `${hostname().replace(/[^-\w]/g, '_')}-${process.pid}-${randomBytes(4).toString('hex')}`;
let claims = 0;

/** The inbox of one idempotent durable subscription. */
export class Inbox {
  private bucket?: Promise<KV>;
  // Ids whose handler runs (or whose record is still being written) in this process: a redelivery of
  // one is busy here without asking KV, even after its lease could have expired during an outage.
  private readonly local = new Set<string>();
  private readonly leaseMs: number;

  constructor(
    private readonly nc: NatsConnection,
    readonly durable: string,
    readonly windowSeconds: number,
    private readonly apiTimeoutMs: number,
    private readonly logger: Logger,
    leaseMs: number = DEFAULTS.idempotent.leaseMs,
  ) {
    this.leaseMs = leaseMs;
  }

  /** Open (creating when missing) the bucket; at subscribe, so a server that cannot keep it fails bootstrap. */
  async open(): Promise<void> {
    const kv = await this.kv();
    // Claims rest on create refusing an existing key: check that this server's KV does (the testing
    // module's in-process broker, say, has no KV and would let every delivery run).
    const probe = `_probe.${INSTANCE}.${++claims}`;
    await kv.create(probe, 'probe');
    const second = await kv.create(probe, 'probe').then(
      () => true,
      (err: unknown) => {
        if (isWrongRevision(err)) return false;
        throw err;
      },
    );
    await kv.purge(probe).catch(() => undefined);
    if (second) {
      throw new InvalidOptionsError(
        'idempotent',
        `the JetStream KV bucket ${inboxBucket(this.windowSeconds)} let one key be created twice, so it cannot keep two deliveries of one id apart (durable "${this.durable}"). The testing module's in-process broker has no JetStream KV: test idempotent durables against a nats-server`,
      );
    }
  }

  /**
   * Decide for one delivery: already done, busy elsewhere, or claimed for this delivery.
   * Throws `InboxUnavailableError` when the bucket cannot be reached.
   */
  async check(m: DurableMessage): Promise<InboxVerdict> {
    const key = inboxKey(m, this.durable);
    if (this.local.has(key)) return { kind: 'busy', retryInMs: this.leaseMs };
    const owner = `${INSTANCE}.${++claims}`;
    try {
      const kv = await this.kv();
      // Two tries: a lost race on an expired lease reads the winner's record once more.
      for (let attempt = 0; attempt < 2; attempt++) {
        const expiresAt = Date.now() + this.leaseMs;
        const value = `claim ${owner} ${expiresAt}`;
        try {
          const revision = await kv.create(key, value);
          return { kind: 'run', claim: this.claim(kv, key, owner, revision) };
        } catch (err) {
          if (!isWrongRevision(err)) throw err;
        }
        const entry = await kv.get(key);
        // Deleted or aged out between the create and the get: create again.
        if (!entry || entry.operation !== 'PUT') continue;
        const record = parseRecord(entry.string());
        if (record.kind === 'done') return { kind: 'done' };
        const left = record.expiresAt - Date.now();
        if (left > 0) return { kind: 'busy', retryInMs: Math.min(left, this.leaseMs) };
        // A lease left by a crashed instance: take it over, unless another delivery just did.
        try {
          const revision = await kv.update(key, `claim ${owner} ${Date.now() + this.leaseMs}`, entry.revision);
          this.logger.warn(`idempotent durable "${this.durable}": took over the expired claim of ${record.owner} on ${key}`);
          return { kind: 'run', claim: this.claim(kv, key, owner, revision) };
        } catch (err) {
          if (!isWrongRevision(err)) throw err;
        }
      }
      return { kind: 'busy', retryInMs: Math.min(1000, this.leaseMs) };
    } catch (err) {
      // A bucket gone (deleted by an operator) is created again on the next message.
      this.bucket = undefined;
      throw new InboxUnavailableError(
        `inbox bucket ${inboxBucket(this.windowSeconds)} unreachable: ${(err as Error)?.message ?? String(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  private claim(kv: KV, key: string, owner: string, first: number): InboxClaim {
    this.local.add(key);
    let revision = first;
    let settled = false;
    // Renew the lease while the handler runs, so no other instance takes the id over meanwhile.
    const renewing = setInterval(
      () => {
        kv.update(key, `claim ${owner} ${Date.now() + this.leaseMs}`, revision).then(
          (r) => (revision = settled ? revision : r),
          (err: unknown) =>
            this.logger.warn(`idempotent durable "${this.durable}": could not renew the claim on ${key}: ${(err as Error)?.message}`),
        );
      },
      Math.max(100, Math.floor(this.leaseMs / 3)),
    );
    renewing.unref();
    return {
      succeeded: async () => {
        settled = true;
        clearInterval(renewing);
        const done = `done ${Date.now()}`;
        const until = Date.now() + RECORD_RETRY_MS;
        try {
          // The handler ran: keep trying to record it (the message stays in progress meanwhile), so a
          // NATS outage between the handler's end and the record does not run it again afterwards.
          for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
            try {
              await kv.update(key, done, revision);
              return;
            } catch (err) {
              if (isWrongRevision(err)) break;
              if (Date.now() + delay > until) return this.notRecorded(key, err);
              await new Promise((r) => setTimeout(r, delay));
            }
          }
          // Our revision is gone: an earlier try was stored but its answer lost, or the lease was
          // taken over while the handler ran (renewals failed). Record the success anyway.
          await kv.put(key, done).catch((e: unknown) => this.notRecorded(key, e));
        } finally {
          this.local.delete(key);
        }
      },
      released: async () => {
        settled = true;
        clearInterval(renewing);
        this.local.delete(key);
        // Only our own claim: one taken over by another delivery stays. A failure leaves it to expire.
        await kv.delete(key, { previousSeq: revision }).catch(() => undefined);
      },
    };
  }

  private notRecorded(key: string, err: unknown): void {
    // The handler ran: the message is acked anyway, so only a republish with its msgId could run it again.
    this.logger.warn(
      `idempotent durable "${this.durable}": handled ${key} but could not record it: ${(err as Error)?.message ?? String(err)}`,
    );
  }

  private kv(): Promise<KV> {
    this.bucket ??= new Kvm(jetstream(this.nc, { timeout: this.apiTimeoutMs }))
      .create(inboxBucket(this.windowSeconds), { ttl: this.windowSeconds * 1000, history: 1 })
      .catch((err: unknown) => {
        this.bucket = undefined;
        throw err;
      });
    return this.bucket;
  }
}

/** The inbox of an idempotent durable, its bucket open; fails as the subscribe does when JetStream cannot keep it. */
export async function openInbox(
  nc: NatsConnection,
  settings: { durable: string; idempotent?: { windowSeconds: number } },
  apiTimeoutMs: number,
  logger: Logger,
): Promise<Inbox | undefined> {
  if (!settings.idempotent) return undefined;
  const inbox = new Inbox(nc, settings.durable, settings.idempotent.windowSeconds, apiTimeoutMs, logger);
  await inbox.open();
  return inbox;
}
