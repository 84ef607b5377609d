// The bench's chart specs, fed made-up results: which charts a run gets and the medians they plot.
// (Rendering is Vega's; vega is ES-module only, which this CommonJS Jest setup does not load.)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { chartSpecs } = require('../../bench/charts');

const open = (p99s: number[]) => p99s.map((p99) => ({ p50: p99 / 4, p99, p999: p99 * 2 }));

describe('bench charts', () => {
  it('draws no chart for scenarios that did not run', () => {
    expect(chartSpecs({})).toEqual({});
  });

  it('plots the median of the rounds: latency percentiles per side, the queue curve against linear, bootstraps', () => {
    const specs = chartSpecs({
      latency: { events: { perSide: { bus: open([4, 8, 6]), raw: open([5, 5, 5]) } } },
      scale: {
        queue: {
          handlerMs: 2,
          perSide: { 1: [{ rate: 400 }, { rate: 500 }, { rate: 450 }], 4: [{ rate: 1600 }, { rate: 1700 }, { rate: 1500 }] },
        },
        subs: { perSide: { 1: [{ bootMs: 300, rssMiB: 90 }], 1000: [{ bootMs: 400, rssMiB: 120 }] } },
      },
    });
    expect(Object.keys(specs).sort()).toEqual(['boot', 'latency', 'queue']);
    const lat = specs.latency.data.values;
    expect(lat).toContainEqual({ load: 'events, 20 k msg/s', side: 'bus', percentile: 'p99', ms: 6 });
    expect(lat).toContainEqual({ load: 'events, 20 k msg/s', side: 'raw', percentile: 'p99.9', ms: 10 });
    expect(specs.queue.data.values).toEqual(
      expect.arrayContaining([
        { members: 4, series: 'measured', rate: 1600 },
        { members: 4, series: 'linear', rate: 1800 },
      ]),
    );
    expect(specs.boot.data.values).toContainEqual({ kind: '@Subscribe topics', n: 1000, metric: 'RSS MiB after', value: 120 });
  });
});
