import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EventBus, EventBusModule, Subscribe } from '../../lib';
import { EventBusTestingModule } from '../../lib/testing';
import { waitUntil } from '../harness/wait';

// partitionBy on the testing module's in-process broker: per-key order and in-process retries, no server.

const handled: string[] = [];
let failuresLeft = 2;

@Injectable()
class Ledger {
  @Subscribe('ledger.entry', { durable: 'ledger', partitionBy: (e: { account: string }) => e.account, maxConcurrent: 4, backoffMs: [10] })
  async apply(e: { account: string; n: number }) {
    if (e.account === 'a' && e.n === 0 && failuresLeft-- > 0) throw new Error('not yet');
    // Uneven times: without the order, a later entry of an account would finish first.
    await new Promise((r) => setTimeout(r, (e.n * 7) % 5));
    handled.push(`${e.account}${e.n}`);
  }
}

const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });

@Module({ imports: [Bus], providers: [Ledger] })
class AppModule {}

describe('partitionBy on the testing module', () => {
  it('entries of one account in publish order, retried in place; other accounts go on', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(
        EventBusTestingModule.forRoot({ jetstream: { streams: [{ name: 'LEDGER', subjects: ['ledger.>'], maxAgeSeconds: 3600 }] } }),
      )
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    try {
      const bus = app.get(EventBus);
      for (let n = 0; n < 10; n++) for (const account of ['a', 'b']) await bus.publish('ledger.entry', { account, n }, { persist: true });
      await waitUntil(() => handled.length === 20, 'all 20 entries handled', 10_000);
      const of = (account: string) => handled.filter((h) => h.startsWith(account)).map((h) => Number(h.slice(1)));
      expect(of('a')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(of('b')).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(failuresLeft).toBe(-1);
    } finally {
      await app.close();
    }
  });
});
