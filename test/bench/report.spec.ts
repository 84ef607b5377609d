// The bench's report, fed made-up results: no servers, nothing timed. Checks the format of the
// last line (`RATIOS ...`) that scripts read, and that ratios are medians of per-round ratios.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { report, ratiosLine, median } = require('../../bench/report');

// Every key, in order; each value two decimals or `nan`.
const KEYS = [
  'events_vs_raw',
  'events_vs_nestms',
  'rpc64_vs_raw',
  'large2m_vs_floor',
  'large8m_vs_floor',
  'durable_vs_rawjs',
  'durable_vs_peer',
  'objstore2m_vs_redis',
  'objstore8m_vs_redis',
  'otel_noop_vs_off',
  'otel_sdk_vs_off',
  'events_cpu_vs_raw',
  'events_cpu_vs_nestms',
  'events_icpt_cpu_vs_nestms',
  'rpc64_cpu_vs_raw',
  'large2m_cpu_vs_floor',
  'large8m_cpu_vs_floor',
  'durable_cpu_vs_rawjs',
  'durable_cpu_vs_peer',
  'objstore2m_cpu_vs_redis',
  'objstore8m_cpu_vs_redis',
  'otel_noop_cpu_vs_off',
  'otel_sdk_cpu_vs_off',
  'events_p99_vs_raw',
  'rpc_p99_vs_raw',
  'large2m_p99_vs_floor',
  'queue4_vs_queue1',
  'aa_events',
  'aa_rpc64',
  'aa_events_cpu',
  'aa_rpc64_cpu',
  'idem_vs_durable',
  'idem_cpu_vs_durable',
];
const RATIOS_LINE = new RegExp(`^RATIOS ${KEYS.map((k) => `${k}=(\\d+\\.\\d\\d|nan)`).join(' ')}$`);
/** The RATIOS line as key -> printed value. */
const parse = (line: string) =>
  Object.fromEntries(
    line
      .slice('RATIOS '.length)
      .split(' ')
      .map((kv) => kv.split('=')),
  );

const rounds = <T>(...xs: T[]) => xs;
// CPU µs per request: requester / responder.
const rpcSide = (rate: number, reqCpuUs = 20, respCpuUs = 5) =>
  rounds(...[1, 2, 3].map(() => ({ rate, p50: 1, p99: 2, reqCpuUs, respCpuUs })));
const largeSide = (latencies: number[], sendCpuUs: number, recvCpuUs: number) =>
  latencies.map((latencyMs) => ({ latencyMs, publishMs: 1, encodesPerPayload: 1, bytes: 2097164, sendCpuUs, recvCpuUs }));
const large = (bus: number[], floor: number[], busOs?: number[]) => ({
  bytes: 2 * 1024 * 1024,
  count: 3,
  perSide: {
    // CPU µs per message, both ends: bus 3000, floor 2400, bus-os 4000.
    bus: largeSide(bus, 2000, 1000),
    floor: largeSide(floor, 1400, 1000),
    ...(busOs ? { 'bus-os': largeSide(busOs, 3000, 1000) } : {}),
  },
  nestms: {
    attempts: [{ kind: 'emit', ok: false, ms: 3, name: 'NatsError', code: 'MAX_PAYLOAD_EXCEEDED', message: 'MAX_PAYLOAD_EXCEEDED' }],
    received: 0,
  },
});

// One open-loop round: p99 as given, the rest made up; CPU µs per message of both ends.
const openSide = (p99s: number[], cpuUs: number, n = 10) =>
  p99s.map((p99) => ({
    p50: p99 / 4,
    p99,
    p999: p99 * 2,
    max: p99 * 3,
    count: n,
    received: n,
    sendCpuUs: cpuUs / 2,
    recvCpuUs: cpuUs / 2,
  }));
const openRpcSide = (p99s: number[], cpuUs: number) =>
  p99s.map((p99) => ({ p50: p99 / 4, p99, p999: p99 * 2, max: p99 * 3, count: 10, reqCpuUs: cpuUs / 2, respCpuUs: cpuUs / 2 }));

const queueRound = (rate: number, shares: number[]) => ({ rate, received: 300, shares });
const bootRound = (bootMs: number, rssMiB: number, heapMiB: number) => ({ bootMs, rssMiB, heapMiB });

const results = {
  // queue 4/1 per round: 1600/400, 1400/400, 2000/400 -> 4.00, 3.50, 5.00 -> 4.00.
  scale: {
    queue: {
      n: 300,
      handlerMs: 2,
      perSide: {
        1: [400, 400, 400].map((rate) => queueRound(rate, [300])),
        4: [1600, 1400, 2000].map((rate) => queueRound(rate, [60, 80, 70, 90])),
      },
    },
    // Fan-out of one 8 MiB message: last handler 600, 700, 650 ms -> 650; one GET of 8 MiB per subscriber.
    fanout: {
      subscribers: 10,
      bytes: 8 * 1024 * 1024,
      perSide: {
        10: [600, 700, 650].map((lastMs) => ({ firstMs: 300, lastMs, readsPerSubscriber: 1, mibPerSubscriber: 8, recovered: 10 })),
      },
    },
    // 1 -> 1,001 subscriptions: RSS 90 -> 100 MiB = 10.2 KiB, heap 1.0 KiB and 100 ms -> 0.10 ms each.
    subs: { counts: [1, 1001], perSide: { 1: [bootRound(400, 90, 14)], 1001: [bootRound(500, 100, 15)] } },
  },
  // raw p99 over bus p99: events 5/4, 5/5, 5/10 -> 1.00; rpc 4/2 x3 -> 2.00; large2m 100/200, 300/200, 100/100 -> 1.00.
  latency: {
    events: { rate: 20000, n: 10, bytes: 128, perSide: { bus: openSide([4, 5, 10], 4), raw: openSide([5, 5, 5], 3) } },
    rpc: { rate: 2000, n: 10, bytes: 64, perSide: { bus: openRpcSide([2, 2, 2], 20), raw: openRpcSide([4, 4, 4], 20) } },
    large2m: { rate: 20, n: 10, bytes: 2097152, perSide: { bus: openSide([200, 200, 100], 1), floor: openSide([100, 300, 100], 1, 9) } },
  },
  events: {
    n: 10,
    bytes: 128,
    // CPU µs per message (sender + receiver): bus 4, raw 3.6, nestms 20, bus-icpt 6, bus-off 4 then 5, bus-otel 8.
    perSide: {
      bus: [100, 90, 120].map((rate) => ({ rate, received: 10, sendCpuUs: 2, recvCpuUs: 2 })),
      raw: [100, 100, 100].map((rate) => ({ rate, received: 10, sendCpuUs: 2, recvCpuUs: 1.6 })),
      nestms: [25, 30, 40].map((rate) => ({ rate, received: 10, sendCpuUs: 10, recvCpuUs: 10 })),
      'bus-icpt': [50, 50, 50].map((rate) => ({ rate, received: 10, sendCpuUs: 2, recvCpuUs: 4 })),
      'bus-off': [100, 100, 100].map((rate, i) => ({ rate, received: 10, sendCpuUs: 2, recvCpuUs: i ? 3 : 2 })),
      'bus-otel': [80, 80, 80].map((rate) => ({ rate, received: 10, sendCpuUs: 4, recvCpuUs: 4 })),
    },
  },
  rpc: {
    n: 10,
    bytes: 64,
    perInflight: {
      1: { bus: rpcSide(10), raw: rpcSide(10), nestms: rpcSide(5) },
      // CPU µs per request (both ends): bus 25, raw 20, nestms 50, bus-off 25, bus-otel 50.
      64: {
        bus: rpcSide(95),
        raw: rpcSide(100, 15, 5),
        nestms: rpcSide(50, 40, 10),
        'bus-off': rpcSide(100),
        'bus-otel': rpcSide(90, 40, 10),
      },
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
      'bus-idem': [60, 63, 45].map((rate) => ({ rate, received: 10, sendRate: rate, sendCpuUs: 30, recvCpuUs: 70 })),
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
      'RATIOS events_vs_raw=1.00 events_vs_nestms=3.00 rpc64_vs_raw=0.95 large2m_vs_floor=1.00 large8m_vs_floor=1.00 durable_vs_rawjs=0.80 durable_vs_peer=2.00 objstore2m_vs_redis=1.00 objstore8m_vs_redis=0.80 otel_noop_vs_off=0.95 otel_sdk_vs_off=0.80' +
        ' events_cpu_vs_raw=0.90 events_cpu_vs_nestms=5.00 events_icpt_cpu_vs_nestms=3.33 rpc64_cpu_vs_raw=0.80 large2m_cpu_vs_floor=0.80 large8m_cpu_vs_floor=0.80 durable_cpu_vs_rawjs=0.80 durable_cpu_vs_peer=1.70 objstore2m_cpu_vs_redis=0.75 objstore8m_cpu_vs_redis=0.75 otel_noop_cpu_vs_off=1.00 otel_sdk_cpu_vs_off=0.50' +
        ' events_p99_vs_raw=1.00 rpc_p99_vs_raw=2.00 large2m_p99_vs_floor=1.00 queue4_vs_queue1=4.00 aa_events=1.00 aa_rpc64=0.95 aa_events_cpu=1.25 aa_rpc64_cpu=1.00' +
        // bus-idem/bus per round: 60/80, 63/70, 45/90 -> 0.75, 0.90, 0.50 -> 0.75; CPU 50 / 100 µs -> 0.50.
        ' idem_vs_durable=0.75 idem_cpu_vs_durable=0.50',
    );
    // CPU ratios are B's CPU per message over A's, both ends added (above 1 the bus spends less):
    // events raw 3.6 / bus 4 µs = 0.90; nestms 20 / bus-icpt 6 = 3.33; rpc64 raw 20 / bus 25 = 0.80;
    // large floor 2400 / bus 3000 = 0.80, Redis 3000 / object store 4000 = 0.75; durable 40 / 50, 85 / 50.
    // A/A and otel CPU: events bus-off 4, 5, 5 / bus 4 -> 1.00, 1.25, 1.25 -> 1.25, rpc64 1.00 -> the lower,
    // 1.00; with the SDK events 0.50, 0.63, 0.63 -> 0.63 and rpc64 25 / 50 = 0.50 -> 0.50.
    expect(text).toContain('events bus/raw');
    // The durable rows report CPU per message on both ends, and the CPU ratio (40 / 50 µs).
    expect(text).toMatch(/durable 10 x 128 B.*bus \(@Subscribe durable\).*30\.0 \/ 20\.0/);
    expect(text).toMatch(/durable 10 x 128 B.*rawjs \(@nats-io\/jetstream\).*25\.0 \/ 15\.0/);
    expect(text).toMatch(/durable cpu bus\/rawjs .* 0\.80 /);
    // Open-loop rows: per-round p99, then median p50 / p99 / p99.9 (max); a side that lost messages says so.
    expect(text).toMatch(
      /open loop: events at 20,000 msg\/s x 128 B \(10 a round\) +\| bus .*\| 4\.00 \/ 5\.00 \/ 10\.00 .*\| 1\.25 \/ 5\.00 \/ 10\.00 \(15\.0\) +\|/,
    );
    expect(text).toMatch(/open loop: large2m .* floor .*\(LOSS\)/);
    expect(text).toMatch(/open events cpu bus\/raw .* 0\.75 /);
    // Scaling rows: the last round's share of each member, and the cost of one more subscription.
    expect(text).toMatch(/queue group, 300 x 128 B, handler awaits 2 ms.*\| 4 members .*\| 1,600 \(60 \/ 80 \/ 70 \/ 90\)/);
    expect(text).toMatch(/each of 1 → 1,001 .*\| 0\.10; 10\.2 \(1\.0\)/);
    expect(text).toMatch(
      /fan-out: one 8 MiB message to 10 subscriber processes +\| 10 subscribers .*\| 650; 300; 1\.0 reads, 8\.0 MiB +\|/,
    );
    // Large rows carry the CPU per message of each end.
    expect(text).toMatch(/large 2MiB .* bus-os .*CPU µs\/msg 3,000 \/ 1,000/);
    expect(text).toContain('MAX_PAYLOAD_EXCEEDED');
    expect(text).toContain('objstore8m bus-os/bus');
  });

  it('writes nan for scenarios that did not run', () => {
    const line = ratiosLine(report({}, 3).ratio);
    expect(line).toMatch(RATIOS_LINE);
    expect(Object.keys(parse(line))).toEqual(KEYS);
    expect(new Set(Object.values(parse(line)))).toEqual(new Set(['nan']));
  });

  it('takes the median of an even count as the mean of the middle two', () => {
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([NaN, 5])).toBe(5);
  });
});
