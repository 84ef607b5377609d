import { Controller, INestApplication, INestMicroservice, Module, Type } from '@nestjs/common';
import {
  ClientNats,
  ClientProxy,
  ClientsModule,
  Ctx,
  EventPattern,
  MessagePattern,
  NatsContext,
  Payload,
  RpcException,
  Transport,
} from '@nestjs/microservices';
import { Test, TestingModule } from '@nestjs/testing';
import Redis from 'ioredis';
import { connect, NatsConnection, Subscription } from '@nats-io/transport-node';
import { sc } from '../harness/text-codec';
import { firstValueFrom, from, lastValueFrom, toArray } from 'rxjs';
import { EventBusClientProxy, EventBusTransport } from '../../lib/microservices';
import {
  MESSAGE_STORAGE_MANAGER,
  MessageStorageManager,
  PayloadTooLargeError,
  REDIS_CLIENT_DEFAULTS,
  RedisStorageManager,
} from '../../lib';
import { NatsServer, RedisServer } from '../harness/local-servers';
import { bigPayload, sha256, waitUntil, MiB } from '../harness/wait';

const ENVELOPE = /^\{"token":"[0-9a-f-]{36}","is_stored":true\}$/;

/** What the @EventPattern handlers received, by pattern. */
const events = new Map<string, unknown[]>();

/** The same handlers under two prefixes: one app runs them on EventBusTransport, one on Transport.NATS. */
function handlersFor(prefix: string): Type<unknown> {
  @Controller()
  class Handlers {
    @MessagePattern(`${prefix}.echo`)
    echo(@Payload() data: unknown) {
      return data;
    }

    @MessagePattern(`${prefix}.sum`)
    async sum(@Payload() numbers: number[]) {
      return numbers.reduce((a, b) => a + b, 0);
    }

    @MessagePattern(`${prefix}.digest`)
    digest(@Payload() data: unknown, @Ctx() ctx: NatsContext) {
      const json = JSON.stringify(data);
      return { sha: sha256(json), bytes: Buffer.byteLength(json), subject: ctx.getSubject() };
    }

    @MessagePattern(`${prefix}.big`)
    big(@Payload() req: { bytes: number; id: string }) {
      return bigPayload(req.bytes, req.id);
    }

    @MessagePattern(`${prefix}.fail`)
    fail(@Payload() req: { kind: 'string' | 'object' }) {
      if (req.kind === 'string') throw new RpcException('edge not found');
      throw new RpcException({ code: 'E_EDGE', message: 'edge not found', edge: 42 });
    }

    @MessagePattern(`${prefix}.stream`)
    stream() {
      return from([{ i: 0, small: true }, bigPayload(2 * MiB, 'item-1'), { i: 2, small: true }, bigPayload(3 * MiB, 'item-3')]);
    }

    @EventPattern(`${prefix}.event`)
    onEvent(@Payload() data: unknown) {
      const list = events.get(`${prefix}.event`) ?? [];
      list.push(data);
      events.set(`${prefix}.event`, list);
    }
  }
  return Handlers;
}

describe('@nestjs/microservices with claim-check (EventBusTransport, EventBusClientProxy)', () => {
  let nats: NatsServer;
  let redisServer: RedisServer;
  let redis: Redis; // an independent client, to look at what was stored
  let raw: NatsConnection; // an independent NATS client, to see what crosses the wire
  const storages: RedisStorageManager[] = [];

  let oursApp: INestApplication; // EventBusTransport via app.connectMicroservice
  let stockMs: INestMicroservice; // Transport.NATS
  let clientsModule: TestingModule;
  let stockClient: ClientNats;
  let ours: ClientProxy; // ClientsModule.register
  let oursAsync: ClientProxy; // ClientsModule.registerAsync, sharing an injected storage

  function redisStorage(): RedisStorageManager {
    const s = new RedisStorageManager(new Redis(redisServer.url, { ...REDIS_CLIENT_DEFAULTS }), { keyPrefix: 'ms:' });
    storages.push(s);
    return s;
  }

  /** Collects what is published on `subject` until stopped. */
  function capture(subject: string): { bodies: string[]; sub: Subscription } {
    const bodies: string[] = [];
    const sub = raw.subscribe(subject, { callback: (_e, m) => void bodies.push(sc.decode(m.data)) });
    return { bodies, sub };
  }

  const withoutId = (body: string) => body.replace(/"id":"[^"]*"/, '"id":"<id>"');

  beforeAll(async () => {
    [nats, redisServer] = await Promise.all([NatsServer.start({ jetstream: false }), RedisServer.start()]);
    redis = new Redis(redisServer.url);
    raw = await connect({ servers: nats.url });
    const servers = [nats.url];

    const oursModule = await Test.createTestingModule({ controllers: [handlersFor('ours')] }).compile();
    oursApp = oursModule.createNestApplication({ logger: false });
    oursApp.connectMicroservice({ strategy: new EventBusTransport({ nats: { servers }, storage: redisStorage() }) });
    await oursApp.startAllMicroservices();
    await oursApp.init();

    const stockModule = await Test.createTestingModule({ controllers: [handlersFor('stock')] }).compile();
    stockMs = stockModule.createNestMicroservice({ transport: Transport.NATS, options: { servers }, logger: false });
    await stockMs.listen();

    const clientStorage = redisStorage();
    const asyncStorage = redisStorage();
    @Module({ providers: [{ provide: MESSAGE_STORAGE_MANAGER, useValue: asyncStorage }], exports: [MESSAGE_STORAGE_MANAGER] })
    class StorageModule {}
    clientsModule = await Test.createTestingModule({
      imports: [
        ClientsModule.register([
          { name: 'OURS', customClass: EventBusClientProxy, options: { nats: { servers }, storage: clientStorage } },
        ]),
        ClientsModule.registerAsync([
          {
            name: 'OURS_ASYNC',
            imports: [StorageModule],
            inject: [MESSAGE_STORAGE_MANAGER],
            useFactory: (storage: MessageStorageManager) => ({
              customClass: EventBusClientProxy,
              options: { nats: { servers }, storage },
            }),
          },
        ]),
      ],
    }).compile();
    await clientsModule.init();
    ours = clientsModule.get('OURS');
    oursAsync = clientsModule.get('OURS_ASYNC');
    expect(ours).toBeInstanceOf(EventBusClientProxy);
    expect(oursAsync).toBeInstanceOf(EventBusClientProxy);
    stockClient = new ClientNats({ servers });
    await Promise.all([ours.connect(), oursAsync.connect(), stockClient.connect()]);
    await raw.flush();
  });

  afterAll(async () => {
    await stockClient?.close();
    await clientsModule?.close();
    await stockMs?.close();
    await oursApp?.close();
    await raw?.close();
    await Promise.all(storages.map((s) => s.disconnect()));
    redis?.disconnect();
    await Promise.all([nats?.dispose(), redisServer?.dispose()]);
  });

  it('a stock ClientNats talks to EventBusTransport, and EventBusClientProxy to a stock ServerNats (small payloads)', async () => {
    const payload = { request_id: 'r-1', text: 'héllo ✓', list: [1, null, true] };
    expect(await firstValueFrom(stockClient.send('ours.echo', payload))).toEqual(payload);
    expect(await firstValueFrom(stockClient.send('ours.sum', [1, 2, 3]))).toBe(6);
    expect(await firstValueFrom(ours.send('stock.echo', payload))).toEqual(payload);
    expect(await firstValueFrom(ours.send('stock.sum', [4, 5]))).toBe(9);

    await lastValueFrom(stockClient.emit('ours.event', { from: 'stock client' }));
    await lastValueFrom(ours.emit('stock.event', { from: 'our client' }));
    await waitUntil(() => !!events.get('ours.event')?.length && !!events.get('stock.event')?.length, 'both events handled');
    expect(events.get('ours.event')).toEqual([{ from: 'stock client' }]);
    expect(events.get('stock.event')).toEqual([{ from: 'our client' }]);
    events.clear();
  });

  it('puts the same bytes on the wire as Transport.NATS when nothing is large', async () => {
    const payload = { request_id: 'r-2', text: 'ünïcode —', n: 1.5 };
    const requests = capture('stock.echo');
    const emitted = capture('stock.event');
    const replies = capture('_INBOX.>');
    await raw.flush();

    // Requests: stock client and ours, to the same server.
    await firstValueFrom(stockClient.send('stock.echo', payload));
    await firstValueFrom(ours.send('stock.echo', payload));
    // Replies: the same request from the stock client, answered by the stock server and by ours.
    await firstValueFrom(stockClient.send('ours.echo', payload));
    // Events.
    await lastValueFrom(stockClient.emit('stock.event', payload));
    await lastValueFrom(ours.emit('stock.event', payload));
    await waitUntil(() => requests.bodies.length === 2 && replies.bodies.length === 3 && emitted.bodies.length === 2, 'all traffic seen');
    for (const c of [requests, emitted, replies]) c.sub.unsubscribe();
    events.clear();

    expect(withoutId(requests.bodies[0])).toBe(`{"pattern":"stock.echo","data":${JSON.stringify(payload)},"id":"<id>"}`);
    expect(withoutId(requests.bodies[1])).toBe(withoutId(requests.bodies[0]));
    expect(emitted.bodies[1]).toBe(emitted.bodies[0]);
    expect(emitted.bodies[0]).toBe(`{"pattern":"stock.event","data":${JSON.stringify(payload)}}`);
    const replyShapes = replies.bodies.map(withoutId);
    expect(new Set(replyShapes)).toEqual(new Set([`{"response":${JSON.stringify(payload)},"isDisposed":true,"id":"<id>"}`]));
  });

  it('offloads a 5 MiB request: the wire carries the envelope, the handler gets the packet back', async () => {
    const payload = bigPayload(5 * MiB, 'req');
    const json = JSON.stringify(payload);
    const wire = capture('ours.digest');
    await raw.flush();

    const reply = await firstValueFrom(ours.send<{ sha: string; bytes: number; subject: string }>('ours.digest', payload));

    expect(reply).toEqual({ sha: sha256(json), bytes: Buffer.byteLength(json), subject: 'ours.digest' });
    await waitUntil(() => wire.bodies.length === 1, 'envelope seen');
    wire.sub.unsubscribe();
    expect(wire.bodies[0]).toMatch(ENVELOPE);
    // What is stored is the whole serialized Nest packet.
    const stored = JSON.parse((await redis.get(`ms:${JSON.parse(wire.bodies[0]).token}`))!);
    expect(Object.keys(stored).sort()).toEqual(['data', 'id', 'pattern']);
    expect(stored.pattern).toBe('ours.digest');
  });

  it('round-trips a 5 MiB send whose reply is 5 MiB too: envelopes both ways, the same bytes back', async () => {
    const payload = bigPayload(5 * MiB, 'both-ways');
    const requests = capture('ours.echo');
    const replies = capture('_INBOX.>');
    await raw.flush();

    const reply = await firstValueFrom(ours.send('ours.echo', payload));

    expect(sha256(JSON.stringify(reply))).toBe(sha256(JSON.stringify(payload)));
    await waitUntil(() => requests.bodies.length === 1 && replies.bodies.length === 1, 'both envelopes seen');
    requests.sub.unsubscribe();
    replies.sub.unsubscribe();
    expect(requests.bodies[0]).toMatch(ENVELOPE);
    expect(replies.bodies[0]).toMatch(ENVELOPE);
  });

  it('offloads a 5 MiB reply, stored for the short reply TTL (the requester deletes nothing on a responder word)', async () => {
    const expected = sha256(JSON.stringify(bigPayload(5 * MiB, 'reply')));
    const replies = capture('_INBOX.>');
    await raw.flush();

    const reply = await firstValueFrom(ours.send('ours.big', { bytes: 5 * MiB, id: 'reply' }));

    expect(sha256(JSON.stringify(reply))).toBe(expected);
    await waitUntil(() => replies.bodies.length === 1, 'reply envelope seen');
    replies.sub.unsubscribe();
    expect(replies.bodies[0]).toMatch(ENVELOPE);
    const key = `ms:${JSON.parse(replies.bodies[0]).token}`;
    expect(await redis.exists(key)).toBe(1);
    const ttl = await redis.ttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it('delivers a 5 MiB emit to an @EventPattern handler', async () => {
    const payload = bigPayload(5 * MiB, 'event');
    const wire = capture('ours.event');
    await raw.flush();

    await lastValueFrom(ours.emit('ours.event', payload));

    await waitUntil(() => (events.get('ours.event')?.length ?? 0) === 1, 'large event handled');
    wire.sub.unsubscribe();
    expect(wire.bodies).toHaveLength(1);
    expect(wire.bodies[0]).toMatch(ENVELOPE);
    expect(sha256(JSON.stringify(events.get('ours.event')![0]))).toBe(sha256(JSON.stringify(payload)));
    events.clear();
  });

  it('delivers RpcException exactly as the stock transport does', async () => {
    const errorOf = (client: ClientProxy | ClientNats, pattern: string, kind: string) =>
      firstValueFrom(client.send(pattern, { kind })).then(
        () => {
          throw new Error('expected an error');
        },
        (err) => err,
      );
    for (const kind of ['string', 'object']) {
      const reference = await errorOf(stockClient, 'stock.fail', kind);
      expect(reference).toEqual(
        kind === 'string' ? { status: 'error', message: 'edge not found' } : { code: 'E_EDGE', message: 'edge not found', edge: 42 },
      );
      expect(await errorOf(stockClient, 'ours.fail', kind)).toEqual(reference);
      expect(await errorOf(ours, 'ours.fail', kind)).toEqual(reference);
      expect(await errorOf(ours, 'stock.fail', kind)).toEqual(reference);
    }
  });

  it('streams an Observable reply whose items are partly large, in order', async () => {
    const items = await lastValueFrom(ours.send('ours.stream', {}).pipe(toArray()));
    expect(items).toHaveLength(4);
    expect(items[0]).toEqual({ i: 0, small: true });
    expect(sha256(JSON.stringify(items[1]))).toBe(sha256(JSON.stringify(bigPayload(2 * MiB, 'item-1'))));
    expect(items[2]).toEqual({ i: 2, small: true });
    expect(sha256(JSON.stringify(items[3]))).toBe(sha256(JSON.stringify(bigPayload(3 * MiB, 'item-3'))));
  });

  it('works through ClientsModule.registerAsync with an injected storage', async () => {
    expect(await firstValueFrom(oursAsync.send('ours.sum', [1, 1]))).toBe(2);
    const payload = bigPayload(2 * MiB, 'async');
    const reply = await firstValueFrom(oursAsync.send<{ sha: string }>('ours.digest', payload));
    expect(reply.sha).toBe(sha256(JSON.stringify(payload)));
  });

  it('without storage, a large send fails with PayloadTooLargeError and nothing is published', async () => {
    const client = new EventBusClientProxy({ nats: { servers: [nats.url] } });
    try {
      await client.connect();
      const wire = capture('ours.digest');
      await raw.flush();
      const err = await firstValueFrom(client.send('ours.digest', bigPayload(2 * MiB))).catch((e) => e);
      expect(err).toBeInstanceOf(PayloadTooLargeError);
      await raw.flush();
      wire.sub.unsubscribe();
      expect(wire.bodies).toHaveLength(0);
    } finally {
      await client.close();
    }
  });

  it('answers a forged envelope with an error packet instead of calling the handler', async () => {
    const reply = await raw.request('ours.echo', sc.encode('{"token":"../../etc","is_stored":true}'), { timeout: 5000 });
    const packet = JSON.parse(sc.decode(reply.data));
    expect(packet).toMatchObject({ isDisposed: true, err: { status: 'error' } });
  });
});
