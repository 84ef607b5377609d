import { INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import Redis from 'ioredis';
import request from 'supertest';
import { EventBus, EventBusModule, EventBusModuleOptions, MessageContext, MessageStorageError, RedisStorageManager } from '../../lib';
import { makeTestCertificates, NatsServer, RedisServer, TestCertificates } from '../harness/local-servers';
import { bigPayload, sha256, waitUntil } from '../harness/wait';
import { captureOutput, CapturedOutput, leaked } from '../harness/log-capture';

// Redis credentials and TLS through `storage.redis` ({ url, options } → ioredis), and what
// /_health and the logs print when things fail.

const secret = (label: string) => `${label}-${randomBytes(12).toString('hex')}`;
const KiB = 1024;

describe('Redis security: requirepass, ACL user confined to the prefix, TLS; no secret in /_health or logs', () => {
  const redisPass = secret('redispass');
  const aclPass = secret('aclpass');
  const natsPass = secret('natspass');
  const wrongPass = secret('wrongpass');
  const allSecrets = [redisPass, aclPass, natsPass, wrongPass];

  let certs: TestCertificates;
  let nats: NatsServer;
  let redis: RedisServer; // requirepass for `default`, plus the ACL user `eventbus`
  let tlsRedis: RedisServer; // TLS only, requirepass
  let out: CapturedOutput;
  const apps: INestApplication[] = [];

  beforeAll(async () => {
    certs = makeTestCertificates();
    [nats, redis, tlsRedis] = await Promise.all([
      NatsServer.start({ jetstream: false, config: `authorization { user: "eventbus", password: "${natsPass}" }\n` }),
      RedisServer.start({
        password: redisPass,
        // The bus needs SET (with EX), GET, DEL and PING, on its own prefix only.
        config: `user eventbus on >${aclPass} resetkeys ~eventbus:* resetchannels -@all +set +get +del +ping +info\n`,
      }),
      RedisServer.start({ password: redisPass, tls: { cert: certs.cert, key: certs.key, ca: certs.ca } }),
    ]);
    out = captureOutput();
  });

  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close().catch(() => undefined)));
    out?.restore();
    await Promise.all([nats, redis, tlsRedis].map((s) => s?.dispose()));
    certs?.dispose();
  });

  const natsOptions = () => ({ servers: nats.url, user: 'eventbus', pass: natsPass, reconnectTimeWait: 100 });

  async function boot(storage: EventBusModuleOptions['storage'], health = false): Promise<{ app?: INestApplication; error?: any }> {
    @Module({
      imports: [
        EventBusModule.forRoot({
          nats: natsOptions(),
          largeMessageThreshold: 4 * KiB,
          storage,
          health: { enabled: health, timeoutMs: 500 },
        }),
      ],
    })
    class AppModule {}
    try {
      // Providers (and so the Redis connection) are made here; NATS connects in init().
      const app = await NestFactory.create(AppModule, { logger: out.logger, abortOnError: false });
      apps.push(app);
      await app.init();
      return { app };
    } catch (error) {
      return { error };
    }
  }

  /** A 64 KiB message goes through Redis and comes back byte for byte. */
  async function largeRoundTrip(app: INestApplication, topic: string) {
    const bus = app.get(EventBus);
    const got: Array<[unknown, MessageContext]> = [];
    const sub = await bus.subscribe(topic, (p, ctx) => void got.push([p, ctx]));
    const payload = bigPayload(64 * KiB, topic);
    await bus.publish(topic, payload);
    await waitUntil(() => got.length === 1, `large message on ${topic}`);
    expect(got[0][1].recovered).toBe(true);
    expect(sha256(JSON.stringify(got[0][0]))).toBe(sha256(JSON.stringify(payload)));
    await sub.unsubscribe();
  }

  function expectCleanFailure(error: any, expected: RegExp) {
    expect(error).toBeInstanceOf(MessageStorageError);
    expect(error.message).toMatch(expected);
    const everything = `${error.message}\n${error.stack}\n${JSON.stringify(error)}\n${out.text()}`;
    expect(leaked(everything, allSecrets)).toEqual([]);
  }

  it('requirepass: the password in the URL or in ioredis options works', async () => {
    const viaUrl = await boot({ redis: { url: `redis://:${redisPass}@127.0.0.1:${redis.port}` } });
    expect(viaUrl.error).toBeUndefined();
    await largeRoundTrip(viaUrl.app!, 'sec.redis.url');
    await viaUrl.app!.close();

    const viaOptions = await boot({ redis: { url: redis.url, options: { password: redisPass } } });
    expect(viaOptions.error).toBeUndefined();
    await largeRoundTrip(viaOptions.app!, 'sec.redis.options');
    await viaOptions.app!.close();
  });

  it('a wrong or missing password fails bootstrap at once with MessageStorageError naming storage.redis, not the secret', async () => {
    const started = Date.now();
    const wrongUrl = await boot({ redis: { url: `redis://:${wrongPass}@127.0.0.1:${redis.port}` }, connectTimeoutMs: 20_000 });
    expectCleanFailure(wrongUrl.error, /storage\.redis.*WRONGPASS/);
    const wrongOption = await boot({
      redis: { url: redis.url, options: { username: 'eventbus', password: wrongPass } },
      connectTimeoutMs: 20_000,
    });
    expectCleanFailure(wrongOption.error, /storage\.redis.*WRONGPASS/);
    const missing = await boot({ redis: { url: redis.url }, connectTimeoutMs: 20_000 });
    expectCleanFailure(missing.error, /storage\.redis.*NOAUTH/);
    // Refused credentials are not retried until the connect timeout.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('ACL user limited to ~eventbus:* with set/get/del/ping (and info, for the ready check) runs the bus; it cannot touch other keys', async () => {
    const storage = { redis: { url: redis.url, options: { username: 'eventbus', password: aclPass } }, keyPrefix: 'eventbus:' };
    const ok = await boot(storage);
    expect(ok.error).toBeUndefined();
    await largeRoundTrip(ok.app!, 'sec.redis.acl');
    const bus = ok.app!.get(EventBus);
    const client = (bus.messageStorage as RedisStorageManager).client as Redis;
    redis.cli('SET', 'secret:key', 'not for the bus');
    await expect(client.get('secret:key')).rejects.toThrow(/NOPERM/);
    await expect(client.set('other:key', 'x')).rejects.toThrow(/NOPERM/);
    await expect(client.keys('*')).rejects.toThrow(/NOPERM/);
    // With +info, ioredis's ready check runs: it does not print its "Skipping the ready check" warning.
    expect(out.text()).not.toMatch(/Skipping the ready check/);
    await ok.app!.close();

    // A bus configured with another prefix cannot store under it: publish fails, nothing is sent.
    const other = await boot({ ...storage, keyPrefix: 'other:' });
    expect(other.error).toBeUndefined();
    await expect(other.app!.get(EventBus).publish('sec.redis.acl.other', bigPayload(64 * KiB))).rejects.toThrow(MessageStorageError);
    await other.app!.close();
  });

  it('TLS (rediss://, verify on against our CA); without the CA bootstrap fails', async () => {
    const ca = fs.readFileSync(certs.ca, 'utf8');
    const ok = await boot({ redis: { url: `rediss://127.0.0.1:${tlsRedis.port}`, options: { password: redisPass, tls: { ca } } } });
    expect(ok.error).toBeUndefined();
    await largeRoundTrip(ok.app!, 'sec.redis.tls');
    await ok.app!.close();

    const noCa = await boot({
      redis: { url: `rediss://127.0.0.1:${tlsRedis.port}`, options: { password: redisPass } },
      connectTimeoutMs: 1500,
    });
    expectCleanFailure(noCa.error, /did not become ready.*(certificate|self[- ]signed|verify)/i);
    // Plain TCP to a TLS-only port never becomes ready either.
    const plain = await boot({
      redis: { url: `redis://127.0.0.1:${tlsRedis.port}`, options: { password: redisPass } },
      connectTimeoutMs: 1500,
    });
    expect(plain.error).toBeInstanceOf(MessageStorageError);
  });

  it('/_health reports storage and then NATS down without printing a secret, in its body or in the logs', async () => {
    const own = await RedisServer.start({ password: redisPass });
    try {
      const { app, error } = await boot({ redis: { url: `redis://:${redisPass}@127.0.0.1:${own.port}` } }, true);
      expect(error).toBeUndefined();
      const up = await request(app!.getHttpServer()).get('/_health');
      expect(up.status).toBe(200);

      await own.stop();
      let down!: request.Response;
      await waitUntil(async () => (down = await request(app!.getHttpServer()).get('/_health')).status === 503, 'storage down in /_health');
      expect(down.body.details.storage.status).toBe('down');
      expect(leaked(JSON.stringify(down.body), allSecrets)).toEqual([]);
      expect(JSON.stringify(down.body)).not.toMatch(/redis:\/\/[^"]*@/);

      await nats.stop();
      await waitUntil(async () => {
        down = await request(app!.getHttpServer()).get('/_health');
        return down.body?.details?.nats?.status === 'down';
      }, 'nats down in /_health');
      expect(leaked(JSON.stringify(down.body), allSecrets)).toEqual([]);

      await Promise.all([nats.start(), own.start()]);
      await waitUntil(async () => (await request(app!.getHttpServer()).get('/_health')).status === 200, '/_health up again', 15_000);
      await app!.close();
    } finally {
      await own.dispose();
    }
    const printed = out.text();
    expect(printed).toMatch(/disconnected|ECONNREFUSED|reconnect/i); // the failures were logged...
    expect(leaked(printed, allSecrets)).toEqual([]); // ...without a secret
    expect(printed).not.toMatch(/rediss?:\/\/[^\s'"]*:[^\s'"]*@/); // nor a URL with credentials
  });
});
