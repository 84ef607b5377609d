import { Controller, INestApplication } from '@nestjs/common';
import { EventPattern, MessagePattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { connect, NatsConnection, Subscription } from '@nats-io/transport-node';
import { firstValueFrom } from 'rxjs';
import { ObjectStoreStorageManager } from '../../lib';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import { NatsServer } from '../harness/local-servers';
import { sc } from '../harness/text-codec';
import { bigPayload, MiB, sha256, waitUntil } from '../harness/wait';

const ENVELOPE = /^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/;
const events: string[] = [];

@Controller()
class Handlers {
  @MessagePattern('osx.digest')
  digest(@Payload() data: unknown) {
    const json = JSON.stringify(data);
    return { sha: sha256(json), bytes: Buffer.byteLength(json) };
  }

  @MessagePattern('osx.big')
  big(@Payload() req: { bytes: number; id: string }) {
    return bigPayload(req.bytes, req.id);
  }

  @EventPattern('osx.event')
  onEvent(@Payload() data: unknown) {
    events.push(sha256(JSON.stringify(data)));
  }
}

// Issue 16: the @nestjs/microservices transport with the object store, each side with its own
// manager on the same bucket (no Redis anywhere).
describe('EventBusTransport and EventBusClientProxy with ObjectStoreStorageManager', () => {
  let nats: NatsServer;
  let app: INestApplication;
  let client: EventBusClientProxy;
  let raw: NatsConnection;

  beforeAll(async () => {
    nats = await NatsServer.start();
    raw = await connect({ servers: nats.url });
    const servers = [nats.url];
    const ref = await Test.createTestingModule({ controllers: [Handlers] }).compile();
    app = ref.createNestApplication({ logger: false });
    app.connectMicroservice({
      strategy: new EventBusTransport({ nats: { servers }, storage: new ObjectStoreStorageManager({ bucket: 'ms' }) }),
    });
    await app.startAllMicroservices();
    await app.init();
    client = new EventBusClientProxy({ nats: { servers }, storage: new ObjectStoreStorageManager({ bucket: 'ms' }) });
    await client.connect();
  });

  afterAll(async () => {
    await client?.close();
    await app?.close();
    await raw?.close();
    await nats?.dispose();
  });

  it('a 3 MiB request and an 8 MiB reply cross as envelopes and arrive byte for byte', async () => {
    const seen: string[] = [];
    const sub: Subscription = raw.subscribe('osx.digest', { callback: (_e, m) => void seen.push(sc.decode(m.data)) });
    try {
      const request = bigPayload(3 * MiB, 'req');
      const json = JSON.stringify(request);
      const answer = await firstValueFrom(client.send('osx.digest', request));
      expect(answer).toEqual({ sha: sha256(json), bytes: Buffer.byteLength(json) });
      await raw.flush();
      expect(seen).toHaveLength(1);
      expect(seen[0]).toMatch(ENVELOPE);
      const reply = await firstValueFrom(client.send('osx.big', { bytes: 8 * MiB, id: 'reply' }));
      expect(JSON.stringify(reply)).toBe(JSON.stringify(bigPayload(8 * MiB, 'reply')));
    } finally {
      sub.unsubscribe();
    }
  });

  it('a 3 MiB event reaches the @EventPattern handler whole', async () => {
    const event = bigPayload(3 * MiB, 'event');
    await firstValueFrom(client.emit('osx.event', event));
    await waitUntil(() => events.length === 1, 'the event handler', 20_000);
    expect(events[0]).toBe(sha256(JSON.stringify(event)));
  });
});
