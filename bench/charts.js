'use strict';
// `node bench/charts.js [results.json] [out dir]`: SVG charts of a bench run's latency percentiles
// and scaling curves, drawn with Vega-Lite's headless renderer (no browser, no canvas). run.js calls
// it after each run; BENCHMARKS.md shows the ones in docs/bench/.
const fs = require('node:fs');
const path = require('node:path');
const { median } = require('./report');

/** Vega-Lite specs for what `results` holds; scenarios that did not run get no chart. */
function chartSpecs(results) {
  const specs = {};
  const L = results.latency;
  if (L) {
    const titles = { events: 'events, 20 k msg/s', rpc: 'rpc, 2 k req/s', large2m: '2 MiB claim-checked, 20/s' };
    const values = [];
    for (const [key, S] of Object.entries(L)) {
      for (const [side, rounds] of Object.entries(S.perSide)) {
        for (const [q, field] of [
          ['p50', 'p50'],
          ['p99', 'p99'],
          ['p99.9', 'p999'],
        ]) {
          values.push({ load: titles[key] || key, side, percentile: q, ms: median(rounds.map((x) => x[field])) });
        }
      }
    }
    specs.latency = {
      title: 'Latency at a fixed offered load (open loop), median of rounds',
      data: { values },
      facet: { column: { field: 'load', type: 'nominal', title: null, sort: Object.values(titles) } },
      spec: {
        width: 170,
        height: 220,
        mark: 'bar',
        encoding: {
          x: { field: 'percentile', type: 'ordinal', sort: ['p50', 'p99', 'p99.9'], title: null, axis: { labelAngle: 0 } },
          xOffset: { field: 'side', type: 'nominal' },
          y: { field: 'ms', type: 'quantitative', title: 'ms from due time to handler / reply' },
          color: { field: 'side', type: 'nominal', title: 'side' },
          tooltip: [{ field: 'side' }, { field: 'percentile' }, { field: 'ms', format: '.2f' }],
        },
      },
      resolve: { scale: { y: 'independent' } },
    };
  }
  const S = results.scale;
  if (S && S.queue) {
    const q = S.queue.perSide;
    const one = median(q['1'].map((x) => x.rate));
    const values = Object.entries(q).flatMap(([members, rounds]) => [
      { members: Number(members), series: 'measured', rate: median(rounds.map((x) => x.rate)) },
      { members: Number(members), series: 'linear', rate: one * Number(members) },
    ]);
    specs.queue = {
      title: `Queue group: msg/s against members (handler awaits ${S.queue.handlerMs} ms, one at a time each)`,
      width: 420,
      height: 240,
      data: { values },
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'members', type: 'quantitative', scale: { domain: [0, 4] }, axis: { values: [1, 2, 4] } },
        y: { field: 'rate', type: 'quantitative', title: 'msg/s at the handlers' },
        color: { field: 'series', type: 'nominal', title: null },
        strokeDash: { field: 'series', type: 'nominal', title: null },
      },
    };
  }
  if (S && (S.subs || S.durables)) {
    const values = [];
    for (const [kind, B] of [
      ['@Subscribe topics', S.subs],
      ['durables', S.durables],
    ].filter(([, x]) => x)) {
      for (const [n, rounds] of Object.entries(B.perSide)) {
        values.push({ kind, n: Number(n), metric: 'bootstrap ms', value: median(rounds.map((x) => x.bootMs)) });
        values.push({ kind, n: Number(n), metric: 'RSS MiB after', value: median(rounds.map((x) => x.rssMiB)) });
      }
    }
    specs.boot = {
      title: 'One app with N subscriptions: bootstrap time and RSS (median of rounds)',
      data: { values },
      facet: { column: { field: 'metric', type: 'nominal', title: null, sort: ['bootstrap ms', 'RSS MiB after'] } },
      spec: {
        width: 220,
        height: 220,
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'n', type: 'quantitative', scale: { type: 'log' }, title: 'N (log scale)' },
          y: { field: 'value', type: 'quantitative', title: null, scale: { zero: true } },
          color: { field: 'kind', type: 'nominal', title: null },
        },
      },
      resolve: { scale: { y: 'independent' } },
    };
  }
  return specs;
}

/** Renders each chart to `<outDir>/<name>.svg`; resolves with the files written. */
async function writeCharts(results, outDir) {
  // vega and vega-lite are ES modules only.
  const vega = await import('vega');
  const vl = await import('vega-lite');
  fs.mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const [name, spec] of Object.entries(chartSpecs(results))) {
    const compiled = vl.compile({ $schema: 'https://vega.github.io/schema/vega-lite/v6.json', background: 'white', ...spec }).spec;
    const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
    const file = path.join(outDir, `${name}.svg`);
    fs.writeFileSync(file, (await view.toSVG()) + '\n');
    view.finalize();
    written.push(file);
  }
  return written;
}

module.exports = { chartSpecs, writeCharts };

if (require.main === module) {
  const input = process.argv[2] || path.join(__dirname, 'results.json');
  const outDir = process.argv[3] || path.join(__dirname, '..', 'docs', 'bench');
  writeCharts(JSON.parse(fs.readFileSync(input, 'utf8')).results, outDir)
    .then((files) => console.log(files.join('\n')))
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
