import { Injectable, INestApplication, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { ConnectionOptions, nkeyAuthenticator, nkeys } from '@nats-io/transport-node';
import { EventBus, EventBusModule, MessageContext, Subscribe } from '../../lib';
import { makeTestCertificates, NatsServer, TestCertificates } from '../harness/local-servers';
import { captureOutput, CapturedOutput, leaked } from '../harness/log-capture';

// NATS authentication and TLS through the module's `nats` option (nats.js ConnectionOptions).
// Each mode gets its own nats-server, configured with a conf file as in production.

const secret = (label: string) => `${label}-${randomBytes(12).toString('hex')}`;

@Injectable()
class EchoHandlers {
  @Subscribe('sec.echo', { queue: 'sec' })
  echo(payload: { n: number }, ctx: MessageContext) {
    return { n: payload.n, subject: ctx.subject };
  }
}

function appModule(nats: ConnectionOptions) {
  @Module({
    imports: [EventBusModule.forRoot({ nats: { reconnectTimeWait: 100, ...nats }, health: { enabled: false } })],
    providers: [EchoHandlers],
  })
  class AppModule {}
  return AppModule;
}

describe('NATS security: user/password, token, nkey, TLS', () => {
  const userPass = secret('natspass');
  const token = secret('natstoken');
  const user = nkeys.createUser();
  const nkeySeed = new TextDecoder().decode(user.getSeed());
  const nkeyPublic = user.getPublicKey();
  const wrong = { pass: secret('wrongpass'), token: secret('wrongtoken'), seed: new TextDecoder().decode(nkeys.createUser().getSeed()) };
  const allSecrets = [userPass, token, nkeySeed, wrong.pass, wrong.token, wrong.seed];

  let certs: TestCertificates;
  let passServer: NatsServer;
  let tokenServer: NatsServer;
  let nkeyServer: NatsServer;
  let tlsServer: NatsServer;
  let out: CapturedOutput;
  const apps: INestApplication[] = [];

  beforeAll(async () => {
    certs = makeTestCertificates();
    [passServer, tokenServer, nkeyServer, tlsServer] = await Promise.all([
      NatsServer.start({ jetstream: false, config: `authorization { user: "eventbus", password: "${userPass}" }\n` }),
      NatsServer.start({ jetstream: false, config: `authorization { token: "${token}" }\n` }),
      NatsServer.start({ jetstream: false, config: `authorization { users: [ { nkey: "${nkeyPublic}" } ] }\n` }),
      NatsServer.start({
        jetstream: false,
        config: `tls {\n  cert_file: "${certs.cert}"\n  key_file: "${certs.key}"\n  timeout: 2\n}\nauthorization { user: "eventbus", password: "${userPass}" }\n`,
      }),
    ]);
    out = captureOutput();
  });

  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close().catch(() => undefined)));
    out?.restore();
    await Promise.all([passServer, tokenServer, nkeyServer, tlsServer].map((s) => s?.dispose()));
    certs?.dispose();
  });

  /** Boot a Nest app on `nats`; returns the app or the bootstrap error. */
  async function boot(nats: ConnectionOptions): Promise<{ app?: INestApplication; error?: any }> {
    const app = await NestFactory.create(appModule(nats), { logger: out.logger, abortOnError: false });
    apps.push(app);
    try {
      await app.init();
      return { app };
    } catch (error) {
      await app.close().catch(() => undefined);
      return { error };
    }
  }

  async function roundTrip(app: INestApplication) {
    const bus = app.get(EventBus);
    await expect(bus.rpcRequest('sec.echo', { n: 7 }, { timeout: 5000 })).resolves.toEqual({ n: 7, subject: 'sec.echo' });
  }

  /** The bootstrap error must be clear and must not carry any secret; nor may anything printed. */
  function expectCleanFailure(error: any, expected: RegExp) {
    expect(error).toBeDefined();
    expect(`${error.code} ${error.message}`).toMatch(expected);
    const everything = `${error.message}\n${error.stack}\n${JSON.stringify(error)}\n${out.text()}`;
    expect(leaked(everything, allSecrets)).toEqual([]);
  }

  it('user/password: the right password works, a wrong one fails bootstrap with AUTHORIZATION_VIOLATION and no echo', async () => {
    const ok = await boot({ servers: passServer.url, user: 'eventbus', pass: userPass });
    expect(ok.error).toBeUndefined();
    await roundTrip(ok.app!);
    await ok.app!.close();

    const bad = await boot({ servers: passServer.url, user: 'eventbus', pass: wrong.pass });
    expectCleanFailure(bad.error, /AUTHORIZATION_VIOLATION|Authorization Violation/);
    const none = await boot({ servers: passServer.url });
    expectCleanFailure(none.error, /AUTHORIZATION_VIOLATION|Authorization Violation/);
  });

  it('token: the right token works, a wrong one fails bootstrap with no echo', async () => {
    const ok = await boot({ servers: tokenServer.url, token });
    expect(ok.error).toBeUndefined();
    await roundTrip(ok.app!);
    await ok.app!.close();

    const bad = await boot({ servers: tokenServer.url, token: wrong.token });
    expectCleanFailure(bad.error, /AUTHORIZATION_VIOLATION|Authorization Violation/);
  });

  it('nkey: a seed made with nats.js nkeys signs the server nonce; a different seed fails with no echo', async () => {
    expect(nkeySeed).toMatch(/^SU[A-Z2-7]+$/);
    const ok = await boot({ servers: nkeyServer.url, authenticator: nkeyAuthenticator(new TextEncoder().encode(nkeySeed)) });
    expect(ok.error).toBeUndefined();
    await roundTrip(ok.app!);
    await ok.app!.close();

    const bad = await boot({ servers: nkeyServer.url, authenticator: nkeyAuthenticator(new TextEncoder().encode(wrong.seed)) });
    expectCleanFailure(bad.error, /AUTHORIZATION_VIOLATION|Authorization Violation/);
  });

  it('TLS: verifies the server against the given CA; without the CA bootstrap fails (verification stays on)', async () => {
    const ca = fs.readFileSync(certs.ca, 'utf8');
    const ok = await boot({ servers: tlsServer.url, user: 'eventbus', pass: userPass, tls: { ca } });
    expect(ok.error).toBeUndefined();
    await roundTrip(ok.app!);
    const producer = ok.app!.get(EventBus).connections().get('producer')!;
    expect(producer.serverInfo?.tls_required).toBe(true);
    await ok.app!.close();

    // The server requires TLS, so nats.js upgrades even without `tls`, and the system CAs do not know ours.
    const noCa = await boot({ servers: tlsServer.url, user: 'eventbus', pass: userPass });
    expectCleanFailure(noCa.error, /certificate|self[- ]signed|verify/i);
    // The right CA but a wrong password: TLS is fine, auth is not.
    const bad = await boot({ servers: tlsServer.url, user: 'eventbus', pass: wrong.pass, tls: { ca } });
    expectCleanFailure(bad.error, /AUTHORIZATION_VIOLATION|Authorization Violation/);
  });

  it('nothing printed during the whole file carries a secret', () => {
    expect(out.text().length).toBeGreaterThan(0);
    expect(leaked(out.text(), allSecrets)).toEqual([]);
  });
});
