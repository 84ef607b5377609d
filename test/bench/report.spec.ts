// The bench's report, fed made-up results: no servers, nothing timed. Checks the format of the
// last line (`RATIOS ...`) that scripts read, and that ratios are medians of per-round ratios.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { report, ratiosLine, median } = require('../../bench/report');

const RATIOS_LINE =
  /^RATIOS events_vs_raw=(\d+\.\d\d|nan) events_vs_nestms=(\d+\.\d\d|nan) rpc64_vs_raw=(\d+\.\d\d|nan) large2m_vs_floor=(\d+\.\d\d|nan) large8m_vs_floor=(\d+\.\d\d|nan) durable_vs_rawjs=(\d+\.\d\d|nan) durable_vs_peer=(\d+\.\d\d|nan) objstore2m_vs_redis=(\d+\.\d\d|nan) objstore8m_vs_redis=(\d+\.\d\d|nan) otel_noop_vs_off=(\d+\.\d\d|nan) otel_sdk_vs_off=(\d+\.\d\d|nan)$/;

const rounds = <T>(...xs: T[]) => xs;
const rpcSide = (rate: number) => rounds(...[1, 2, 3].map(() => ({ rate, p50: 1, p99: 2 })));
const large = (bus: number[], floor: number[], busOs?: number[]) => ({
  bytes: 2 * 1024 * 1024,
  count: 3,
  perSide: {
    bus: bus.map((latencyMs) => ({ latencyMs, publishMs: 1, encodesPerPayload: 1, bytes: 2097164 })),
    floor: floor.map((latencyMs) => ({ latencyMs, publishMs: 1, encodesPerPayload: 1, bytes: 2097164 })),
    ...(busOs ? { 'bus-os': busOs.map((latencyMs) => ({ latencyMs, publishMs: 1, encodesPerPayload: 1, bytes: 2097164 })) } : {}),
  },
  nestms: {
    attempts: [{ kind: 'emit', ok: false, ms: 3, name: 'NatsError', code: 'MAX_PAYLOAD_EXCEEDED', message: 'MAX_PAYLOAD_EXCEEDED' }],
    received: 0,
  },
});

const results = {
  events: {
    n: 10,
    bytes: 128,
    perSide: {
      bus: [100, 90, 120].map((rate) => ({ rate, received: 10 })),
      raw: [100, 100, 100].map((rate) => ({ rate, received: 10 })),
      nestms: [25, 30, 40].map((rate) => ({ rate, received: 10 })),
      'bus-off': [100, 100, 100].map((rate) => ({ rate, received: 10 })),
      'bus-otel': [80, 80, 80].map((rate) => ({ rate, received: 10 })),
    },
  },
  rpc: {
    n: 10,
    bytes: 64,
    perInflight: {
      1: { bus: rpcSide(10), raw: rpcSide(10), nestms: rpcSide(5) },
      64: { bus: rpcSide(95), raw: rpcSide(100), nestms: rpcSide(50), 'bus-off': rpcSide(100), 'bus-otel': rpcSide(90) },
    },
  },
  // bus-os (object store) per round against bus: 10/20, 20/10, 10/10 -> 0.50, 2.00, 1.00 -> 1.00; 40/50 x3 -> 0.80.
  large: { '2MiB': large([10, 20, 10], [10, 10, 10], [20, 10, 10]), '8MiB': large([40, 40, 40], [30, 40, 50], [50, 50, 50]) },
  durable: {
    n: 10,
    bytes: 128,
    window: 4,
    perSide: {
      bus: [80, 70, 90].map((rate) => ({ rate, received: 10, sendRate: rate, sendCpuUs: 30, recvCpuUs: 20 })),
      rawjs: [100, 100, 100].map((rate) => ({ rate, received: 10, sendRate: rate, sendCpuUs: 25, recvCpuUs: 15 })),
      peer: [40, 35, 30].map((rate) => ({ rate, received: 10, sendRate: rate, sendCpuUs: 70, recvCpuUs: 15 })),
    },
  },
};

describe('bench report', () => {
  it('ends with a RATIOS line of medians of per-round ratios', () => {
    const { text, ratio } = report(results, 3);
    const line = ratiosLine(ratio);
    expect(line).toMatch(RATIOS_LINE);
    // events bus/raw per round: 1.00, 0.90, 1.20 -> 1.00; bus/nestms: 4.00, 3.00, 3.00 -> 3.00;
    // durable bus/rawjs: 0.80, 0.70, 0.90 -> 0.80; bus/peer: 2.00, 2.00, 3.00 -> 2.00;
    // otel: events bus/bus-off 1.00, rpc64 0.95 -> the lower, 0.95; with the SDK 0.80 and 0.90 -> 0.80.
    expect(line).toBe(
      'RATIOS events_vs_raw=1.00 events_vs_nestms=3.00 rpc64_vs_raw=0.95 large2m_vs_floor=1.00 large8m_vs_floor=1.00 durable_vs_rawjs=0.80 durable_vs_peer=2.00 objstore2m_vs_redis=1.00 objstore8m_vs_redis=0.80 otel_noop_vs_off=0.95 otel_sdk_vs_off=0.80',
    );
    expect(text).toContain('events bus/raw');
    // The durable rows report CPU per message on both ends, and the CPU ratio (50 / 40 µs).
    expect(text).toMatch(/durable 10 x 128 B.*bus \(@Subscribe durable\).*30\.0 \/ 20\.0/);
    expect(text).toMatch(/durable 10 x 128 B.*rawjs \(@nats-io\/jetstream\).*25\.0 \/ 15\.0/);
    expect(text).toMatch(/durable cpu bus\/rawjs .* 1\.25 /);
    expect(text).toContain('MAX_PAYLOAD_EXCEEDED');
    expect(text).toContain('objstore8m bus-os/bus');
  });

  it('writes nan for scenarios that did not run', () => {
    expect(ratiosLine(report({}, 3).ratio)).toBe(
      'RATIOS events_vs_raw=nan events_vs_nestms=nan rpc64_vs_raw=nan large2m_vs_floor=nan large8m_vs_floor=nan durable_vs_rawjs=nan durable_vs_peer=nan objstore2m_vs_redis=nan objstore8m_vs_redis=nan otel_noop_vs_off=nan otel_sdk_vs_off=nan',
    );
  });

  it('takes the median of an even count as the mean of the middle two', () => {
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([NaN, 5])).toBe(5);
  });
});
