import { KeyedOrder, Partitions } from '../../lib/durable/partitions';

// The order of a partitioned durable, without servers: who may run when.
describe('KeyedOrder', () => {
  const settled = async (p: Promise<void> | undefined) => {
    let done = p === undefined;
    p?.then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    return done;
  };

  it('a message waits for the earlier messages of its key, and for earlier ones whose key is not known yet', async () => {
    const order = new KeyedOrder();
    const [a1, undecided, a2, b1] = [order.arrive(), order.arrive(), order.arrive(), order.arrive()];
    expect(await settled(order.turn(a1, 'a'))).toBe(true);
    const a2Turn = order.turn(a2, 'a');
    const b1Turn = order.turn(b1, 'b');
    // b1 comes after a message still being decoded: it may be of key b.
    expect(await settled(b1Turn)).toBe(false);
    expect(await settled(order.turn(undecided, 'c'))).toBe(true);
    expect(await settled(b1Turn)).toBe(true);
    expect(await settled(a2Turn)).toBe(false);
    order.leave(a1);
    expect(await settled(a2Turn)).toBe(true);
  });

  it('a message that leaves without a key (not due, a duplicate, undecodable) unblocks the ones behind it', async () => {
    const order = new KeyedOrder();
    const [gone, next] = [order.arrive(), order.arrive()];
    const turn = order.turn(next, 'k');
    expect(await settled(turn)).toBe(false);
    order.leave(gone);
    expect(await settled(turn)).toBe(true);
  });

  it('takes 8 messages per handler slot, at most 512', () => {
    expect(Partitions.windowFor(4)).toBe(32);
    expect(Partitions.windowFor(64)).toBe(512);
    expect(Partitions.windowFor(1000)).toBe(512);
  });
});
