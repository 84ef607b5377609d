import { ClaimCheckCodec } from '../../lib/claim-check/claim-check.codec';
import { Outbound } from '../../lib/delivery/outbound';
import { InMemoryStorageManager, InvalidOptionsError, PayloadTooLargeError } from '../../lib';
import { createHeaders } from '../../lib/nats/bus-connection';

// The one way out (issue 28), without a server: what every send site gets from it.
describe('Outbound', () => {
  const maxPayload = 64 * 1024;
  const setup = (threshold?: number) => {
    const store = new InMemoryStorageManager();
    return { store, outbound: new Outbound(new ClaimCheckCodec(store, threshold)) };
  };
  const text = (bytes: number) => JSON.stringify('x'.repeat(bytes - 2));

  it('sends a small body as itself, and stores nothing', () => {
    const { store, outbound } = setup();
    const wire = outbound.plan('t', text(100), maxPayload);
    expect(Buffer.from(wire as Uint8Array).toString()).toBe(text(100));
    expect(store.size).toBe(0);
  });

  it("counts the headers' bytes: a body that fits alone but not beside its headers goes as an envelope", async () => {
    const { store, outbound } = setup();
    // Headers past the 8 KiB kept for them take their excess from the body's share of max_payload.
    const headers = createHeaders({ 'X-Big': 'h'.repeat(10_000) });
    const body = text(maxPayload - 8 * 1024 - 100);
    expect(outbound.fitsInline(body, maxPayload)).toBe(true);
    expect(outbound.fitsInline(body, maxPayload, headers)).toBe(false);
    const envelope = JSON.parse(Buffer.from(await outbound.plan('t', body, maxPayload, headers)).toString());
    expect(envelope).toEqual({ token: expect.any(String), is_stored: true });
    expect(store.size).toBe(1);
  });

  it('deletes the stored body when its envelope cannot be sent (thrown or rejected)', async () => {
    const { store, outbound } = setup();
    const first = await outbound.plan('t', text(80 * 1024), maxPayload);
    expect(store.size).toBe(1);
    expect(() =>
      outbound.sendStored(first, () => {
        throw new Error('closed');
      }),
    ).toThrow('closed');
    await new Promise((r) => setImmediate(r));
    expect(store.size).toBe(0);
    const second = await outbound.plan('t', text(80 * 1024), maxPayload);
    await expect(outbound.sendStored(second, () => Promise.reject(new Error('no responders')))).rejects.toThrow('no responders');
    await new Promise((r) => setImmediate(r));
    expect(store.size).toBe(0);
  });

  it('keeps the stored body when the envelope was sent', async () => {
    const { store, outbound } = setup();
    const envelope = await outbound.plan('t', text(80 * 1024), maxPayload);
    expect(await outbound.sendStored(envelope, () => Promise.resolve('sent'))).toBe('sent');
    expect(store.size).toBe(1);
  });

  it('without storage, a large body is refused before anything happens, by plan and by checkSendable alike', () => {
    const outbound = new Outbound(new ClaimCheckCodec(null));
    expect(() => outbound.checkSendable('t', text(80 * 1024), maxPayload)).toThrow(PayloadTooLargeError);
    expect(() => outbound.plan('t', text(80 * 1024), maxPayload)).toThrow(PayloadTooLargeError);
    expect(() => outbound.checkSendable('t', text(100), maxPayload)).not.toThrow();
  });

  it('refuses a largeMessageThresholdBytes above what the server accepts, naming the option', () => {
    const { outbound } = setup();
    expect(() => outbound.checkThreshold(undefined, maxPayload)).not.toThrow();
    let err: unknown;
    try {
      outbound.checkThreshold(maxPayload, maxPayload);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err).toMatchObject({ option: 'largeMessageThresholdBytes' });
    expect((err as Error).message).toMatch(/65536 bytes is above what the server accepts \(max_payload 65536 minus header room = \d+\)/);
  });
});
