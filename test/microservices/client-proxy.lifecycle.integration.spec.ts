import { firstValueFrom } from 'rxjs';
import { get } from 'node:http';
import { connect, NatsConnection } from '@nats-io/transport-node';
import { EventBusClientProxy } from '../../lib/microservices';
import { InMemoryStorageManager, MessageStorageError, MessageStorageManager, StoredMessageEnvelope } from '../../lib';
import { freePort, NatsServer } from '../harness/local-servers';
import { bigPayload, MiB } from '../harness/wait';

/** A storage that is down: every store fails. */
class DownStorage extends MessageStorageManager {
  async storeMessage(): Promise<StoredMessageEnvelope> {
    throw new MessageStorageError('storage is down (test)');
  }
  async recoverMessage(): Promise<Uint8Array> {
    throw new MessageStorageError('storage is down (test)');
  }
  async deleteMessage(): Promise<void> {}
}

function getJson(port: number, path: string): Promise<any> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(JSON.parse(body)));
    }).on('error', reject);
  });
}

describe('EventBusClientProxy lifecycle against a real nats-server', () => {
  let nats: NatsServer;
  let monitor: number;
  let raw: NatsConnection;

  /** The subscriptions the server holds for the connection named `name`. */
  async function serverSubs(name: string): Promise<string[]> {
    const connz = await getJson(monitor, '/connz?subs=1');
    const conn = (connz.connections ?? []).find((c: any) => c.name === name);
    if (!conn) throw new Error(`no connection named ${name} on the server`);
    return conn.subscriptions_list ?? [];
  }

  beforeAll(async () => {
    monitor = await freePort();
    nats = await NatsServer.start({ jetstream: false, args: ['-m', String(monitor)] });
    raw = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await raw?.close();
    await nats?.dispose();
  });

  it('leaves no _INBOX subscription behind when sends fail, at once or while storing', async () => {
    const name = 'leak-check';
    const client = new EventBusClientProxy({ nats: { servers: [nats.url], name }, storage: new DownStorage() });
    await client.connect();
    try {
      await (client.unwrap() as NatsConnection).flush();
      const before = await serverSubs(name);
      for (let i = 0; i < 5; i++) {
        // Storage down: the 2 MiB packet cannot be stored, so nothing may be published.
        await expect(firstValueFrom(client.send('leak.large', bigPayload(2 * MiB, `l${i}`)))).rejects.toBeInstanceOf(MessageStorageError);
        // nats.js refuses the subject at once (a space in it).
        await expect(firstValueFrom(client.send('leak bad subject', { i }))).rejects.toBeDefined();
      }
      await (client.unwrap() as NatsConnection).flush();
      const after = await serverSubs(name);
      expect(after.filter((s) => s.startsWith('_INBOX.'))).toEqual(before.filter((s) => s.startsWith('_INBOX.')));
      expect(after.length).toBe(before.length);
    } finally {
      await client.close();
    }
  });

  it('close() fails the sends still waiting for a reply with "Connection closed"', async () => {
    // A responder that never answers.
    const silent = raw.subscribe('lifecycle.silent', { callback: () => undefined });
    await raw.flush();
    const client = new EventBusClientProxy({ nats: { servers: [nats.url] }, storage: new InMemoryStorageManager() });
    await client.connect();
    const pending = firstValueFrom(client.send('lifecycle.silent', { n: 1 }));
    const outcome = pending.then(
      () => 'resolved',
      (err: Error) => err.message,
    );
    await new Promise((r) => setTimeout(r, 100));
    await client.close();
    expect(await outcome).toBe('Connection closed');
    silent.unsubscribe();
  });
});
