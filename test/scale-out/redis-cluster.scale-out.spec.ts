import { INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { Cluster } from 'ioredis';
import request from 'supertest';
import { EVENT_BUS_REDIS, EventBus, EventBusModule, MessageContext, RedisStorageManager } from '../../lib';
import { NatsServer, RedisCluster } from '../harness/local-servers';
import { bigPayload, sha256, waitUntil, MiB } from '../harness/wait';

// Redis Cluster with three masters (no replicas), given to the module as
// `storage: { redis: { cluster: { nodes } } }`. Tokens are random, so keys land in different slots.

const report = (line: string) => process.stdout.write(`[redis-cluster] ${line}\n`);

describe('Redis Cluster storage', () => {
  let nats: NatsServer;
  let cluster: RedisCluster;
  let app: INestApplication;

  beforeAll(async () => {
    [nats, cluster] = await Promise.all([NatsServer.start({ jetstream: false }), RedisCluster.start({ size: 3 })]);
    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: { servers: nats.url },
          storage: { redis: { cluster: { nodes: cluster.startupNodes } }, keyPrefix: 'eventbus:', ttlSeconds: 120 },
        }),
      ],
    })
    class AppModule {}
    app = await NestFactory.create(AppModule, { logger: ['error', 'warn'], abortOnError: false });
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    await Promise.all([nats?.dispose(), cluster?.dispose()]);
  });

  it('the module builds an ioredis Cluster that is ready, and /_health pings it', async () => {
    const client = app.get<Cluster>(EVENT_BUS_REDIS);
    expect(client.isCluster).toBe(true);
    expect(client.status).toBe('ready');
    expect((app.get(EventBus).messageStorage as RedisStorageManager).client).toBe(client);
    const res = await request(app.getHttpServer()).get('/_health');
    expect(res.status).toBe(200);
    expect(res.body.details.storage.status).toBe('up');
  });

  it('stores and recovers 1.5 MiB messages whose keys spread over the three masters', async () => {
    const bus = app.get(EventBus);
    const got = new Map<string, { hash: string; ctx: MessageContext }>();
    await bus.subscribe('rc.large', (p: { id: string }, ctx) => void got.set(p.id, { hash: sha256(JSON.stringify(p)), ctx }));
    const N = 12;
    const sent = new Map<string, string>();
    for (let i = 0; i < N; i++) {
      const payload = bigPayload(1.5 * MiB, `m${i}`);
      sent.set(payload.id, sha256(JSON.stringify(payload)));
      await bus.publish('rc.large', payload);
    }
    await waitUntil(() => got.size === N, `${N} large messages recovered`, 30_000);
    for (const [id, hash] of sent) {
      expect(got.get(id)!.hash).toBe(hash);
      expect(got.get(id)!.ctx.recovered).toBe(true);
    }
    // Where did the keys go? Each master holds only its own slots. Bodies only: /_health's write
    // probe (eventbus:eventbus-health-probe, 60 s TTL) may be there too.
    const perNode = cluster.nodes.map(
      (n) =>
        n
          .cli('keys', 'eventbus:*')
          .split('\n')
          .filter((k) => k && k !== 'eventbus:eventbus-health-probe').length,
    );
    const slots = [...got.values()].map((g) => Number(cluster.nodes[0].cli('cluster', 'keyslot', `eventbus:${g.ctx.token}`)));
    report(`keys per master: ${perNode.join(' / ')}; slots: ${slots.join(', ')}`);
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(N);
    expect(perNode.filter((k) => k > 0).length).toBeGreaterThanOrEqual(2);
  });

  it('round-trips a large request and a large reply through the cluster', async () => {
    const bus = app.get(EventBus);
    const reply = bigPayload(2 * MiB, 'reply');
    await bus.subscribe('rc.rpc', (p: { id: string }, ctx) => ({ ...reply, echo: p.id, recovered: ctx.recovered }));
    const got = await bus.rpcRequest<typeof reply & { echo: string; recovered: boolean }>('rc.rpc', bigPayload(1.5 * MiB, 'req'), {
      timeout: 10_000,
    });
    expect(got.echo).toBe('req');
    expect(got.recovered).toBe(true);
    expect(sha256(got.text)).toBe(sha256(reply.text));
  });
});
