import { connect, headers, NatsConnection } from '@nats-io/transport-node';
import { BusConnection } from '../../lib/nats/bus-connection';
import { NoRespondersError, NotConnectedError, PayloadTooLargeError, RemoteHandlerError, RpcTimeoutError } from '../../lib';
import { NatsServer } from '../harness/local-servers';
import { sc } from '../harness/text-codec';

// BusConnection.request on the bus's own reply mux (lib/nats/reply-mux.ts, issue 29): what nats.js's
// request() did for it, against a real nats-server.
const CONFIG = `
authorization {
  users = [
    { user: full, password: pw }
    { user: nopub, password: pw, permissions: { publish: { allow: ">", deny: ["denied.>"] }, subscribe: { allow: ">" } } }
    { user: noinbox, password: pw, permissions: { publish: { allow: ">" }, subscribe: { allow: ["svc.>"] } } }
  ]
}
`;

describe('BusConnection.request (reply mux)', () => {
  let nats: NatsServer;
  let responder: NatsConnection;
  const conns: BusConnection[] = [];

  const open = async (user = 'full', extra: Record<string, unknown> = {}) => {
    const conn = new BusConnection(`mux-${user}`, { servers: nats.url, user, pass: 'pw', ...extra });
    conns.push(conn);
    await conn.connect();
    return conn;
  };

  beforeAll(async () => {
    nats = await NatsServer.start({ jetstream: false, config: CONFIG });
    responder = await connect({ servers: nats.url, user: 'full', pass: 'pw' });
    // Echoes after a delay the request names, so that replies come back out of order.
    responder.subscribe('svc.echo', {
      callback: (_e, m) => void setTimeout(() => m.respond(m.data, { headers: m.headers }), Number(sc.decode(m.data)) % 7),
    });
    responder.subscribe('svc.silent', { callback: () => undefined });
    responder.subscribe('svc.late', { callback: (_e, m) => void setTimeout(() => m.respond(sc.encode('late')), 150) });
    responder.subscribe('svc.fails', {
      callback: (_e, m) => {
        const h = headers();
        h.set('Nats-Service-Error', 'boom');
        h.set('Nats-Service-Error-Code', '418');
        m.respond(sc.encode(''), { headers: h });
      },
    });
    responder.subscribe('svc.reply-to', { callback: (_e, m) => void m.respond(sc.encode(m.reply ?? '')) });
    responder.subscribe('denied.echo', { callback: (_e, m) => void m.respond(m.data) });
    await responder.flush();
  });

  afterAll(async () => {
    for (const c of conns) await c.drain(1000).catch(() => undefined);
    await responder?.close();
    await nats?.dispose();
  });

  it('routes each reply to its own request, out of order and with headers, and keeps no request behind', async () => {
    const conn = await open();
    const h = headers();
    h.set('X-Trace', 'abc');
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) => conn.request('svc.echo', sc.encode(String(i)), 5000, i === 7 ? h : undefined)),
    );
    expect(replies.map((r) => sc.decode(r.data))).toEqual(Array.from({ length: 300 }, (_, i) => String(i)));
    expect(replies[7].headers?.get('X-Trace')).toBe('abc');
    expect((conn as unknown as { mux: { size: number } }).mux.size).toBe(0);
  });

  it('times out with RpcTimeoutError naming the subject; a late reply is dropped and the next request still works', async () => {
    const conn = await open();
    const started = Date.now();
    const err = await conn.request('svc.late', sc.encode('x'), 50).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RpcTimeoutError);
    expect(err).toMatchObject({ subject: 'svc.late', timeoutMs: 50 });
    expect(Date.now() - started).toBeLessThan(140);
    await new Promise((r) => setTimeout(r, 200)); // the late reply arrives and finds nobody
    expect(sc.decode((await conn.request('svc.echo', sc.encode('3'), 2000)).data)).toBe('3');
    await expect(conn.request('svc.silent', sc.encode('x'), 30)).rejects.toThrow('no reply on "svc.silent" within 30 ms');
  });

  it('fails at once with NoRespondersError, and with RemoteHandlerError on the service-error headers', async () => {
    const conn = await open();
    const started = Date.now();
    const err = await conn.request('svc.nobody', sc.encode('x'), 5000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoRespondersError);
    expect(err).toMatchObject({ subject: 'svc.nobody' });
    expect(Date.now() - started).toBeLessThan(1000);
    await expect(conn.request('svc.fails', sc.encode('x'), 5000)).rejects.toMatchObject({
      constructor: RemoteHandlerError,
      subject: 'svc.fails',
      remoteMessage: 'boom',
      remoteCode: 418,
    });
  });

  it('replies to an inbox under the inboxPrefix option', async () => {
    const conn = await open('full', { inboxPrefix: 'my.replies' });
    const reply = sc.decode((await conn.request('svc.reply-to', sc.encode('x'), 2000)).data);
    expect(reply).toMatch(/^my\.replies\.[A-Za-z0-9]+\.[A-Za-z0-9]+$/);
  });

  it('refuses a body over max_payload with PayloadTooLargeError, and a request on a draining or closed connection with NotConnectedError', async () => {
    const conn = await open();
    await expect(conn.request('svc.echo', new Uint8Array(conn.maxPayload + 1), 1000)).rejects.toBeInstanceOf(PayloadTooLargeError);
    const waiting = conn.request('svc.silent', sc.encode('x'), 10_000).catch((e: unknown) => e);
    const started = Date.now();
    const drained = conn.drain(2000);
    await expect(conn.request('svc.echo', sc.encode('1'), 1000)).rejects.toBeInstanceOf(NotConnectedError);
    await drained;
    // The request that was waiting fails when the connection closes, not at its timeout.
    expect(await waiting).toBeInstanceOf(NotConnectedError);
    expect(Date.now() - started).toBeLessThan(5000);
    await expect(conn.request('svc.echo', sc.encode('1'), 1000)).rejects.toBeInstanceOf(NotConnectedError);
  });

  it('fails at once when the server refuses the publish, or the reply inbox subscription', async () => {
    const nopub = await open('nopub');
    let started = Date.now();
    const refused = await nopub.request('denied.echo', sc.encode('x'), 5000).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(NotConnectedError);
    expect(String((refused as Error).message)).toMatch(/denied\.echo.*Permissions Violation/i);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(sc.decode((await nopub.request('svc.echo', sc.encode('5'), 2000)).data)).toBe('5');

    const noinbox = await open('noinbox');
    started = Date.now();
    const both = await Promise.all([1, 2].map((i) => noinbox.request('svc.echo', sc.encode(String(i)), 5000).catch((e: unknown) => e)));
    for (const err of both) {
      expect(err).toBeInstanceOf(NotConnectedError);
      expect(String((err as Error).message)).toMatch(/Permissions Violation for Subscription/i);
    }
    expect(Date.now() - started).toBeLessThan(4000);
    // The next request subscribes again (and is refused again), rather than waiting on a dead inbox.
    await expect(noinbox.request('svc.echo', sc.encode('1'), 5000)).rejects.toThrow(/Permissions Violation for Subscription/i);
  });
});
