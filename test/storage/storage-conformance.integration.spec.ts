// The store conformance suite (nestjs-nats-eventbus/testing) on the shipped stores with real
// servers: RedisStorageManager on redis-server, ObjectStoreStorageManager on nats-server -js,
// the latter attached through a StoreConnection made from a plain nats.js connection.
import { connect, NatsConnection } from '@nats-io/transport-node';
import Redis from 'ioredis';
import { ObjectStoreStorageManager, REDIS_CLIENT_DEFAULTS, RedisStorageManager, StoreConnection } from '../../lib';
import { describeStorageConformance } from '../../lib/testing';
import { NatsServer, RedisServer } from '../harness/local-servers';

let redisServer: RedisServer;
let redis: Redis;
let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  [redisServer, nats] = await Promise.all([RedisServer.start(), NatsServer.start()]);
  redis = new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS });
  nc = await connect({ servers: nats.url });
});

afterAll(async () => {
  redis?.disconnect();
  await nc?.close();
  await Promise.all([redisServer?.stop(), nats?.stop()]);
});

describeStorageConformance(
  'RedisStorageManager',
  async () => {
    const store = new RedisStorageManager(redis, { keyPrefix: 'conformance:' });
    await store.open();
    return store;
  },
  { describe, it },
);

describeStorageConformance(
  'RedisStorageManager, bare-token keys (keyPrefix "")',
  async () => {
    const store = new RedisStorageManager(redis, { keyPrefix: '' });
    await store.open();
    return store;
  },
  { describe, it },
);

describeStorageConformance(
  'ObjectStoreStorageManager',
  async () => {
    const store = new ObjectStoreStorageManager({ bucket: 'conformance', storage: 'memory' });
    const handle: StoreConnection = {
      connection: nc,
      maxPayload: nc.info!.max_payload,
      get state() {
        return nc.isClosed() ? 'closed' : 'connected';
      },
    };
    await store.attachConnection(handle);
    return store;
  },
  { describe, it },
);
