import { INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { Redis } from 'ioredis';
import { EVENT_BUS_REDIS, EventBus, EventBusModule, MessageContext, StoredMessageEnvelope } from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, sha256, sleep, waitUntil, MiB } from '../harness/wait';

// Redis Sentinel: one master, one replica, one sentinel (`redis-server <conf> --sentinel`), given to
// the module as ioredis sentinel options. Large messages before and after `SENTINEL FAILOVER`.

const report = (line: string) => process.stdout.write(`[redis-sentinel] ${line}\n`);

describe('Redis Sentinel storage', () => {
  let nats: NatsServer;
  let master: RedisServer;
  let replica: RedisServer;
  let sentinel: RedisServer;
  let app: INestApplication;

  const masterPort = () => Number(sentinel.cli('SENTINEL', 'get-master-addr-by-name', 'mymaster').split('\n')[1]);

  beforeAll(async () => {
    [nats, master] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    replica = await RedisServer.start({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    await waitUntil(() => /master_link_status:up/.test(replica.cli('info', 'replication')), 'replica in sync', 15_000);
    sentinel = await RedisServer.start({
      sentinel: true,
      config: [
        `sentinel monitor mymaster 127.0.0.1 ${master.port} 1`,
        'sentinel down-after-milliseconds mymaster 2000',
        'sentinel failover-timeout mymaster 10000',
        '',
      ].join('\n'),
    });
    // The sentinel learns of the replica from the master's INFO.
    await waitUntil(
      () => sentinel.cli('SENTINEL', 'replicas', 'mymaster').includes(String(replica.port)),
      'sentinel sees the replica',
      20_000,
    );

    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url },
          storage: {
            // failoverDetector: ioredis subscribes to +switch-master and moves at once; without it, it
            // stays on the old master until the sentinel demotes it (about 10 s here), and writes made
            // there in between are discarded when it resyncs as a replica.
            redis: { options: { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'mymaster', failoverDetector: true } },
            keyPrefix: 'eventbus:',
          },
          health: { enabled: false },
        }),
      ],
    })
    class AppModule {}
    app = await NestFactory.create(AppModule, { logger: ['error', 'warn', 'log'], abortOnError: false });
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all([sentinel, replica, master, nats].map((s) => s?.dispose()));
  });

  it('stores and recovers large messages on the master, before and after SENTINEL FAILOVER', async () => {
    const bus = app.get(EventBus);
    const client = app.get<Redis>(EVENT_BUS_REDIS);
    const got = new Map<string, { hash: string; ctx: MessageContext }>();
    await bus.subscribe('rs.large', (p: { id: string }, ctx) => void got.set(p.id, { hash: sha256(JSON.stringify(p)), ctx }));
    const publishLarge = async (id: string) => {
      const payload = bigPayload(1.5 * MiB, id);
      await bus.publish('rs.large', payload);
      return sha256(JSON.stringify(payload));
    };

    // Before: the client talks to the master that the sentinel names.
    expect(masterPort()).toBe(master.port);
    const before = await publishLarge('before');
    await waitUntil(() => got.has('before'), 'large message before the failover');
    expect(got.get('before')!.hash).toBe(before);
    const storedBefore: StoredMessageEnvelope = { token: got.get('before')!.ctx.token!, is_stored: true };

    // Publish continuously through the switch and count what fails.
    let stop = false;
    let ok = 0;
    const accepted: Array<{ id: string; at: number }> = [];
    const failures: string[] = [];
    const loop = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          await publishLarge(`during-${i}`);
          ok++;
          accepted.push({ id: `during-${i}`, at: Date.now() });
        } catch (err) {
          failures.push(`${(err as Error).constructor.name}: ${(err as Error).message}`.slice(0, 160));
        }
        await sleep(20);
      }
    })();
    await waitUntil(() => ok >= 3, 'publishing before the switch');
    const switchAt = Date.now();
    sentinel.cli('SENTINEL', 'FAILOVER', 'mymaster');
    await waitUntil(() => masterPort() === replica.port, 'sentinel names the replica as master', 30_000);
    const promotedAt = Date.now();
    // ioredis learns of the switch (+switch-master, or a READONLY/reconnect) and goes to the new master.
    await waitUntil(
      () => client.options.port === replica.port || (client as any).stream?.remotePort === replica.port,
      'client on the new master',
      30_000,
    );
    const clientMovedAt = Date.now();
    const okAtMove = ok;
    await waitUntil(() => ok >= okAtMove + 3, 'publishing after the switch', 20_000);
    stop = true;
    await loop;

    // After: a large message goes through the new master.
    const after = await publishLarge('after');
    await waitUntil(() => got.has('after'), 'large message after the failover');
    expect(got.get('after')!.hash).toBe(after);
    expect(replica.cli('role').split('\n')[0]).toBe('master');
    expect(Number(replica.cli('dbsize'))).toBeGreaterThan(0);

    // What survived the switch: the message stored before it (replicated before the promotion).
    const beforeSurvived = await bus.messageStorage!.recoverMessage(storedBefore).then(
      () => true,
      () => false,
    );
    // Accepted publishes after the client settled on the new master must all arrive.
    const settled = accepted.filter((a) => a.at > clientMovedAt + 500).map((a) => a.id);
    await waitUntil(() => settled.every((id) => got.has(id)), 'every publish after the switch delivered', 20_000);
    await sleep(500);
    const lost = accepted.filter((a) => !got.has(a.id));
    const deliveredDuring = accepted.length - lost.length;
    // Which stored bodies still exist on the new master (a late reader, e.g. another fan-out subscriber, needs them)?
    const gone: string[] = [];
    for (const a of accepted) {
      const token = got.get(a.id)?.ctx.token;
      if (token && !(await client.exists(`eventbus:${token}`))) gone.push(`${a.id}@+${a.at - switchAt}ms`);
    }
    report(
      `SENTINEL FAILOVER: sentinel promoted :${replica.port} after ${promotedAt - switchAt} ms; client on it after ${clientMovedAt - switchAt} ms`,
    );
    report(`publishing during the switch: ${ok} accepted, ${failures.length} rejected, ${deliveredDuring} delivered and recovered`);
    if (failures.length) report(`first rejection: ${failures[0]}`);
    report(
      `accepted but not recovered (recovery fell in the reconnect window, logged with token): ${lost.length} ${JSON.stringify(lost.map((l) => `${l.id}@+${l.at - switchAt}ms`))}`,
    );
    report(`stored bodies missing from the new master afterwards: ${gone.length} ${JSON.stringify(gone)}`);
    report(`message stored before the switch still readable after it: ${beforeSurvived}`);
    expect(beforeSurvived).toBe(true);
    // A store that fails rejects the publish (nothing is published); it never loses silently on the publisher side.
    for (const f of failures) expect(f).toMatch(/MessageStorageError/);
    // Whatever is lost lies in the switch window, never after the client settled.
    for (const l of lost) expect(l.at).toBeLessThan(clientMovedAt + 500);
  });
});
