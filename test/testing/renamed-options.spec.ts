import { InvalidOptionsError } from '../../lib';
import { EventBusTestingModule, InProcessBroker } from '../../lib/testing';

// The broker's max_payload option has its unit in its name now (issue 28); the old name still works.
describe('maxPayloadBytes and its deprecated name maxPayload', () => {
  const brokers: InProcessBroker[] = [];
  afterAll(() => brokers.forEach((b) => b.close()));

  it('InProcessBroker takes either, defaults to 1 MiB, and refuses both with different values', () => {
    const broker = (options: ConstructorParameters<typeof InProcessBroker>[0]) => {
      const b = new InProcessBroker(options);
      brokers.push(b);
      return b.maxPayload;
    };
    expect(broker({ maxPayloadBytes: 4096 })).toBe(4096);
    expect(broker({ maxPayload: 8192 })).toBe(8192);
    expect(broker({})).toBe(1024 * 1024);
    expect(() => new InProcessBroker({ maxPayloadBytes: 4096, maxPayload: 8192 })).toThrow(InvalidOptionsError);
  });

  it('EventBusTestingModule.forRoot refuses both with different values at once', () => {
    expect(() => EventBusTestingModule.forRoot({ maxPayloadBytes: 4096, maxPayload: 8192 })).toThrow(/maxPayloadBytes/);
    expect(() => EventBusTestingModule.forRoot({ maxPayloadBytes: 4096 })).not.toThrow();
  });
});
